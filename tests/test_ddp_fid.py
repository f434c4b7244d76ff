"""Validation FID from 2 CPU processes equals the single-process FID on the same pairs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "ddp_validate.py"


def validate(tokenizer: Path, devices: int, out: Path, limit: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tokenizer), str(devices), str(out), str(limit)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_ddp_validation_fid_equals_single_process(tiny_tokenizer_path, tmp_path):
    # 9 pairs: the two ranks get 5 and 4; no image may be counted twice.
    single = validate(tiny_tokenizer_path, 1, tmp_path / "single.json", 9)
    ddp = validate(tiny_tokenizer_path, 2, tmp_path / "ddp.json", 9)
    assert "val/fid" in single
    assert ddp["val/fid"] == pytest.approx(single["val/fid"], rel=1e-4, abs=1e-4)
    assert ddp["val/psnr_masked"] == pytest.approx(single["val/psnr_masked"], rel=1e-5)
