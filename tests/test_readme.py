"""The README's commands work as printed: each shell command of its bash blocks and its
Python example run here on the shipped sample (outputs redirected under a temporary folder;
`make` and the long-running app are covered elsewhere)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def shell_commands() -> list[str]:
    commands = []
    for block in blocks("bash"):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith(("make ", ".venv/bin/maskgit-app")):
                commands.append(command)
    return commands


def test_the_readme_shows_the_main_paths():
    commands = shell_commands()
    assert any("maskgit-inpaint" in c and "--box" in c for c in commands)
    assert any(c.startswith("python train.py experiment=tokenizer") for c in commands)
    assert any(c.startswith("python evaluate.py") for c in commands)
    assert "make demo" in README and "make test" in README and "maskgit-app" in README


@pytest.mark.parametrize("command", shell_commands())
def test_each_readme_command_runs_as_printed(command, tmp_path):
    args = shlex.split(command)
    if args[0].endswith("maskgit-inpaint"):
        args = [sys.executable, "-m", "maskgit.cli", *args[1:]]
        for flag in ("-o", "--steps-gif"):  # outputs into the temporary folder
            if flag in args:
                index = args.index(flag) + 1
                args[index] = str(tmp_path / args[index])
    elif args[0] == "python":
        args = [sys.executable, *args[1:], f"paths.log_dir={tmp_path}/logs",
                f"paths.cache_dir={tmp_path}/cache", "data.num_workers=0"]  # fmt: skip
    else:
        pytest.fail(f"a README command this test does not know how to run: {command}")
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
    if "-o" in args:  # the fill, or with --samples K the first of K
        out = Path(args[args.index("-o") + 1])
        assert out.is_file() or out.with_name(f"{out.stem}_s0.png").is_file()


def test_the_readme_python_example_runs(tmp_path):
    (code,) = blocks("python")
    code = code.replace('"00126_filled.png"', repr(str(tmp_path / "00126_filled.png")))
    namespace: dict = {}
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "00126_filled.png").is_file()
    assert tuple(namespace["fills"].shape) == (4, 3, 64, 64)
