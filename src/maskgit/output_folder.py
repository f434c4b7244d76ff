"""A Hydra callback that checks the run's output folder before Hydra creates it, so that an
unwritable folder gets one line naming it and the option that moves it, not a traceback."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def check_writable(folder: Path) -> str | None:
    """None when ``folder`` can be created (if missing) and written; else the reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


class WritableOutputFolder(Callback):
    def _check(self, config: DictConfig, folder: str, option: str) -> None:
        reason = check_writable(Path(folder))
        if reason is not None:
            task = config.get("task_name", "the run")
            print(
                f"{task}: error: the output folder {folder!r} cannot be written ({reason}); "
                f"choose another with {option}=<folder> (or paths.log_dir=<folder>)",
                file=sys.stderr,
            )
            raise SystemExit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, config.hydra.sweep.dir, "hydra.sweep.dir")
