"""The body of evaluate.py: inpaint a test set with one method, write images and metrics.

Runs as ``Trainer.test`` of :class:`InpaintingEvaluator`, so devices, DDP and the progress
bar are Lightning's. Outputs are named after their inputs (``inpainted/<stem>.png``) and
written atomically. Each carries the key of what produced it (``maskgit.provenance``): a
rerun into the same folder (``resume``) reuses exactly the images whose settings and inputs
match and inpaints the rest; a rerun with other settings is refused, naming them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from maskgit.atomic import remove_stale_temp_files, write_json
from maskgit.baselines import Inpainter
from maskgit.data.datamodules import InpaintingDataModule, make_loader
from maskgit.data.datasets import ImageFolderDataset
from maskgit.data.images import list_images, load_image, read_png_text, save_image
from maskgit.hardware import warn_if_cpu_oversubscribed
from maskgit.inpainting import masked_input
from maskgit.metrics.fid import WEIGHTS_HINT, BucketedFID, build_fid
from maskgit.metrics.inpainting import NUM_BUCKETS, InpaintingQuality, area_bucket, bucket_name
from maskgit.metrics.real_features import (
    cache_file,
    load_real_statistics,
    real_set_key,
    save_real_statistics,
)
from maskgit.precision import accelerator_device_type
from maskgit.precision import resolve as resolve_precision
from maskgit.provenance import (
    KEY_FIELD,
    claim_output_folder,
    input_digest,
    output_key,
    settings_digest,
    weights_digest,
)

log = logging.getLogger(__name__)


def image_path(output_dir: Path, name: str) -> Path:
    return output_dir / "inpainted" / f"{name}.png"


class InpaintingEvaluator(L.LightningModule):
    """Test loop: inpaint, write ``inpainted/<stem>.png`` and step grids, score.

    Dataloader 0 gives (image, mask) pairs; an optional dataloader 1 gives the reference
    images for FID's real side (default: the test images themselves).
    """

    def __init__(
        self,
        method: Inpainter,
        output_dir: str | Path,
        fid: BucketedFID | None,
        seed: int = 0,
        num_step_grids: int = 4,
        resume: bool = True,
        reference_is_test_set: bool = True,
        run_digest: str = "",
        real_cache: Path | None = None,
    ) -> None:
        super().__init__()
        self.method = method
        self.output_dir = Path(output_dir)
        self.fid = fid
        self.quality = InpaintingQuality()
        self.seed = seed
        self.num_step_grids = num_step_grids
        self.resume = resume
        self.reference_is_test_set = reference_is_test_set
        self.run_digest = run_digest
        # The real side of FID from a cache file when it exists, else saved there at the end.
        self.real_cache = real_cache
        self.real_cached = real_cache is not None and real_cache.is_file()
        self.inpaint_seconds = 0.0
        self.num_inpainted = 0
        self.num_reused = 0
        self.num_replaced = 0
        self.num_without_hole = 0
        self.results: dict[str, Any] = {}

    def on_test_start(self) -> None:
        if self.fid is None or not self.real_cached:
            return
        if self.trainer.is_global_zero:
            load_real_statistics(self.fid, self.real_cache)  # one rank: DDP sums them
            log.info("FID real features from %s", self.real_cache)
        else:  # an empty share, so the per-image features gather across ranks
            dims = self.fid.real_features_sum.numel()
            self.fid.real_features = [self.fid.real_features_sum.new_zeros(0, dims).float()]

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 1:  # reference images for FID
            if self.fid is not None and not self.real_cached:
                self.fid.update(batch["image"], real=True)
            return
        images, pixel_mask, keys = batch["image"], batch["mask"], batch["index"]
        names = list(batch["name"])
        paths = [image_path(self.output_dir, name) for name in names]
        output_keys = [
            output_key(self.run_digest, input_digest(image, mask))
            for image, mask in zip(images, pixel_mask)
        ]
        written = [read_png_text(path).get(KEY_FIELD) for path in paths]
        # Reuse exactly the outputs made by this run's settings from these very inputs.
        done = torch.tensor(
            [self.resume and old == new for old, new in zip(written, output_keys)],
            device=images.device,
        )
        self.num_replaced += sum(
            old is not None and old != new for old, new in zip(written, output_keys)
        )
        self.num_without_hole += int((pixel_mask.flatten(1) >= 1).all(1).sum())
        output = images.clone()
        if done.any():
            for row in done.nonzero().flatten().tolist():
                output[row] = load_image(paths[row], images.shape[-1]).to(images.device)
            self.num_reused += int(done.sum())
        todo = (~done).nonzero().flatten()
        if todo.numel():
            want_steps = bool((keys[todo] < self.num_step_grids).any())
            if images.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = self.method(images[todo], pixel_mask[todo], keys[todo], self.seed, want_steps)
            if images.is_cuda:
                torch.cuda.synchronize()
            self.inpaint_seconds += time.perf_counter() - start
            self.num_inpainted += todo.numel()
            # Scored as written (8-bit): a resumed run scores reused images identically.
            output[todo] = result.images.float().clamp(0, 1).mul(255).round().div(255)
            for row in todo.tolist():
                save_image(output[row], paths[row], text={KEY_FIELD: output_keys[row]})
            if want_steps and result.step_images is not None:
                todo_names = [names[row] for row in todo.tolist()]
                self._write_step_grids(
                    result, images[todo], pixel_mask[todo], keys[todo], todo_names
                )
        if self.fid is not None:
            if self.reference_is_test_set and not self.real_cached:
                self.fid.update(images, real=True)
            self.fid.update(output, real=False, groups=area_bucket(pixel_mask))
        self.quality.update(output, images, pixel_mask)

    def _write_step_grids(
        self, result, images: Tensor, pixel_mask: Tensor, keys: Tensor, names: list[str]
    ) -> None:
        """One PNG per image (``steps/<stem>.png``). Top row: the latent mask (black =
        masked) of the input and after each step. Bottom row: the masked input, then the
        predicted image of each step."""
        size = images.shape[-1]
        for row, (key, name) in enumerate(zip(keys.tolist(), names)):
            if key >= self.num_step_grids:
                continue
            masks = torch.stack([m[row] for m in result.step_masks]).float().unsqueeze(1)
            masks = 1.0 - F.interpolate(masks, size=size, mode="nearest").expand(-1, 3, -1, -1)
            shown = masked_input(images[row : row + 1], pixel_mask[row : row + 1])
            predicted = torch.stack([s[row] for s in result.step_images])
            tiles = torch.cat([masks.to(shown.device), shown, predicted.float()]).cpu()
            grid = make_grid(tiles, nrow=masks.shape[0], padding=2, pad_value=1.0)
            save_image(grid, self.output_dir / "steps" / f"{name}.png")

    def on_test_epoch_end(self) -> None:
        metrics: dict[str, Any] = dict(self.quality.compute())
        buckets: dict[str, Any] = self.quality.compute_buckets()
        if self.fid is not None:
            metrics["fid"] = float(self.fid.compute())
            if self.real_cache is not None and not self.real_cached:
                save_real_statistics(self.fid, self.real_cache)
            note = self.fid.small_sample_note()
            if note:
                metrics["fid_note"] = note
            # FID from MIN_GROUP_FID_IMAGES images on; smaller buckets: "n/a" and the KID.
            for bucket, scores in self.fid.compute_group_scores().items():
                buckets.setdefault(bucket_name(bucket), {}).update(scores)
        seconds = self.trainer.strategy.reduce(
            torch.tensor(self.inpaint_seconds, device=self.device), reduce_op="max"
        )
        count = self.trainer.strategy.reduce(
            torch.tensor(float(self.num_inpainted), device=self.device), reduce_op="sum"
        )
        metrics["images_per_second"] = float(count / seconds) if seconds > 0 else None
        metrics["num_inpainted"] = int(count)
        for name in ("num_reused", "num_replaced", "num_without_hole"):
            total = self.trainer.strategy.reduce(
                torch.tensor(float(getattr(self, name)), device=self.device), reduce_op="sum"
            )
            metrics[name] = int(total)
        order = [bucket_name(b) for b in range(NUM_BUCKETS)]
        self.results = {
            "metrics": metrics,
            "buckets": {name: buckets[name] for name in order if name in buckets},
        }


def run_settings(cfg: DictConfig, method: Inpainter) -> dict[str, Any]:
    """Everything that decides the inpainted images, for ``maskgit.provenance``: the method
    and its settings (files by their weights, not their paths), the precision it runs in on
    this device, the seed and the image size."""
    method_config = OmegaConf.to_container(cfg.method, resolve=True)
    for path_option in ("ckpt", "tokenizer_ckpt"):
        method_config.pop(path_option, None)
    device_type = accelerator_device_type(cfg.trainer.accelerator)
    return {
        "method": getattr(method, "name", type(method).__name__),
        "method_config": method_config,
        "weights": weights_digest(method),
        "precision": resolve_precision(cfg.precision, device_type),
        "seed": cfg.seed,
        "image_size": cfg.data.image_size,
    }


def claim_run(cfg: DictConfig, method: Inpainter, output_dir: Path, trainer: L.Trainer) -> str:
    """The run's digest; rank 0 records it in (or checks it against) the output folder
    before any other process starts."""
    settings = run_settings(cfg, method)
    if trainer.global_rank != 0:
        return settings_digest(settings)
    digest = claim_output_folder(output_dir, settings)
    for folder in ("inpainted", "steps"):  # what a killed run was writing
        remove_stale_temp_files(output_dir / folder)
    return digest


def reference_loader(
    reference_dir: str, image_size: int, batch_size: int, trainer: L.Trainer
) -> DataLoader:
    dataset = ImageFolderDataset(reference_dir, image_size)
    return make_loader(dataset, batch_size, num_workers=0, trainer=trainer)


def evaluate(cfg: DictConfig) -> float | None:
    start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    warn_if_cpu_oversubscribed(
        cfg.trainer.devices, cfg.trainer.accelerator, cfg.data.get("num_workers", 0)
    )

    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[RichProgressBar()],
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    datamodule: InpaintingDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    hp = datamodule.hparams
    # With the trainer, the evaluation sampler splits the images across ranks.
    loaders = [make_loader(datamodule.test_set, hp.eval_batch_size, hp.num_workers, trainer)]
    if cfg.get("reference_dir"):
        loaders.append(
            reference_loader(
                cfg.reference_dir,
                datamodule.hparams.image_size,
                datamodule.hparams.eval_batch_size,
                trainer,
            )
        )

    method: Inpainter = hydra.utils.instantiate(cfg.method)
    run_digest = claim_run(cfg, method, output_dir, trainer)
    fid = None
    if cfg.metrics.fid.enabled:
        fid = build_fid(
            cfg.metrics.fid.weights_path, cfg.metrics.fid.feature, required=cfg.metrics.fid.required
        )
    real_cache = None
    if fid is not None and cfg.metrics.fid.get("cache", True):
        real_files = (
            list_images(cfg.reference_dir)
            if cfg.get("reference_dir")
            else datamodule.test_set.files
        )
        key = real_set_key(
            real_files, datamodule.hparams.image_size, cfg.metrics.fid.weights_path,
            cfg.metrics.fid.feature,
        )  # fmt: skip
        real_cache = cache_file(Path(cfg.paths.cache_dir) / "fid", key)
        if real_cache.is_file() and len(loaders) > 1:
            loaders = loaders[:1]  # the reference images' features are cached
    evaluator = InpaintingEvaluator(
        method=method,
        output_dir=output_dir,
        fid=fid,
        seed=cfg.seed,
        num_step_grids=cfg.num_step_grids,
        resume=cfg.resume,
        reference_is_test_set=not cfg.get("reference_dir"),
        run_digest=run_digest,
        real_cache=real_cache,
    )
    trainer.test(evaluator, dataloaders=loaders, verbose=False)

    results = evaluator.results
    results["method"] = getattr(method, "name", type(method).__name__)
    results["overrides"] = list(cfg.get("overrides", []))
    # The outputs in the test set's order (inpainted/<name>.png).
    results["images"] = [path.stem for path in datamodule.test_set.files]
    if fid is None:
        results["metrics"]["fid"] = None
        results["fid_note"] = WEIGHTS_HINT
    results["config"] = OmegaConf.to_container(cfg, resolve=True)
    # End to end: loading, inpainting, every metric, FID's real side (cached or not).
    results["metrics"]["wall_seconds"] = time.perf_counter() - start
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", results)
        print_summary(results, output_dir)
    return results["metrics"].get("fid")


def print_summary(results: dict[str, Any], output_dir: Path) -> None:
    metrics = results["metrics"]

    def show(value: Any, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        f"method: {results['method']}",
        f"FID: {show(metrics.get('fid'))}"
        + ("" if metrics.get("fid") is not None else f"  ({WEIGHTS_HINT})")
        + (f"  (note: {metrics['fid_note']})" if metrics.get("fid_note") else ""),
        f"masked PSNR: {show(metrics.get('psnr'), 2)} dB   masked SSIM: {show(metrics.get('ssim'))}",
        f"images/s: {show(metrics.get('images_per_second'), 1)}   "
        f"wall time: {show(metrics.get('wall_seconds'), 1)} s   "
        f"inpainted: {metrics['num_inpainted']} (replacing {metrics['num_replaced']} made from "
        f"other inputs)   reused: {metrics['num_reused']}   "
        f"without a hole: {metrics['num_without_hole']}",
        f"inpainted images: {output_dir / 'inpainted'}",
        f"step grids:       {output_dir / 'steps'}",
        f"metrics:          {output_dir / 'metrics.json'}",
    ]
    log.info("\n".join(lines))
