"""Start-up checks of what the run asks of the machine."""

from __future__ import annotations

import os
import warnings

from maskgit.precision import accelerator_device_type


def warn_if_cpu_oversubscribed(devices: object, accelerator: object, num_workers: int) -> None:
    """More DDP processes than CPU cores run, but each gets a fraction of a core."""
    if accelerator_device_type(accelerator) != "cpu" or not isinstance(devices, int):
        return
    cores = os.cpu_count() or 1
    if devices > cores:
        processes = devices * (1 + num_workers)
        warnings.warn(
            f"trainer.devices={devices} starts {devices} CPU processes ({processes} with "
            f"{num_workers} data loader worker(s) each) on a machine with {cores} CPU "
            f"core(s): they share the cores and run slower than one process; use "
            f"trainer.devices<={cores}",
            stacklevel=2,
        )
