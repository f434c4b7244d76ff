"""Sweeps that decode once: each image's decoding trajectory, kept for the jobs that share it.

With the same model, inputs, T, schedule, seed and every other decoding setting, ``sweet_spot=s``
only stops the same trajectory at step s: the random numbers are keyed on (seed, image key,
step, position), so the steps before s are those of the full run, and stopping at s fills every
token still masked with step s's prediction. A job therefore decodes all T steps once, keeps
per image the prediction of every step and the masks between them (a few KB), and a job with
another ``sweet_spot`` reads its tokens from them: its outputs are those of a separate run.

Files: ``<cache_dir>/<settings digest>/<image digest>-<key>-<seed>.safetensors``, where the
settings digest covers everything that decides the trajectory (the weights, the decoding
settings but ``sweet_spot`` and the compositing, the precision) and the image digest the
image and its mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from maskgit.atomic import atomic_write
from maskgit.decoding import DecodingSteps


@dataclass
class Trajectory:
    """One image's full decoding: masks [S+1,N] (True = still masked; the input's first),
    the prediction of each step tokens [S,N], and the final tokens [N]."""

    masks: Tensor
    tokens: Tensor
    final: Tensor

    def stopped_at(self, sweet_spot: int | None) -> Tensor:
        """The tokens a run stopping after ``sweet_spot`` steps (None: all) ends with."""
        steps = self.tokens.shape[0]
        if steps == 0:
            return self.final
        stop = steps if sweet_spot is None else min(sweet_spot, steps)
        return self.tokens[stop - 1]

    def finished_at(self) -> int:
        """The step after which nothing of this image was masked (0: nothing missing)."""
        open_steps = self.masks.flatten(1).any(1).nonzero()
        return 0 if open_steps.numel() == 0 else int(open_steps.max()) + 1


def split(steps: DecodingSteps, final: Tensor) -> list[Trajectory]:
    """A batch's per-step states -> one Trajectory per image."""
    masks = torch.stack(steps.masks, 1).cpu()  # [B,S+1,N]
    tokens = (
        torch.stack(steps.tokens, 1).cpu()
        if steps.tokens
        else torch.zeros(masks.shape[0], 0, masks.shape[-1], dtype=torch.long)
    )
    return [
        Trajectory(masks[b], tokens[b], final[b].flatten().cpu()) for b in range(masks.shape[0])
    ]


def batch_steps(trajectories: list[Trajectory], sweet_spot: int | None) -> DecodingSteps:
    """The per-step states a batch stopping after ``sweet_spot`` steps records: the batch
    loop runs until its last image is done or the stop; an image done earlier keeps an empty
    mask and its final prediction; the last step reveals everything."""
    finished = max(t.finished_at() for t in trajectories)
    count = finished if sweet_spot is None else min(sweet_spot, finished)
    steps = DecodingSteps(masks=[torch.stack([t.masks[0] for t in trajectories])])
    for step in range(1, count + 1):
        masks, tokens = [], []
        for trajectory in trajectories:
            last = step == count or step > trajectory.tokens.shape[0]
            masks.append(torch.zeros_like(trajectory.masks[0]) if last else trajectory.masks[step])
            tokens.append(trajectory.stopped_at(step))
        steps.masks.append(torch.stack(masks))
        steps.tokens.append(torch.stack(tokens))
    return steps


# Part of every cache key: bump it whenever decoding's arithmetic changes, so trajectories
# written by an older loop or sampler are never read back.
TRAJECTORY_VERSION = 1


class TrajectoryCache:
    """Per-image trajectories under ``folder/<settings_digest>``."""

    def __init__(self, folder: str | Path, settings_digest: str) -> None:
        self.folder = Path(folder) / settings_digest[:32]

    def path(self, image_digest: str, key: int, seed: int) -> Path:
        return self.folder / f"{image_digest[:32]}-{key}-{seed}.safetensors"

    def get(self, image_digest: str, key: int, seed: int) -> Trajectory | None:
        path = self.path(image_digest, key, seed)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                return Trajectory(
                    file.get_tensor("masks").bool(),
                    file.get_tensor("tokens").long(),
                    file.get_tensor("final").long(),
                )
        except (SafetensorError, OSError, KeyError):
            return None  # a torn or foreign file: decode again, and replace it

    def put(self, image_digest: str, key: int, seed: int, trajectory: Trajectory) -> None:
        tensors = {
            "masks": trajectory.masks.to(torch.uint8).contiguous(),
            "tokens": trajectory.tokens.to(torch.int16).contiguous(),
            "final": trajectory.final.to(torch.int16).contiguous(),
        }
        payload = save(tensors)
        atomic_write(self.path(image_digest, key, seed), lambda file: file.write(payload))
