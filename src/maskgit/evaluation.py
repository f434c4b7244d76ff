"""The body of evaluate.py: inpaint a test set with one method, write images and metrics.

Runs as ``Trainer.test`` of :class:`InpaintingEvaluator`, so devices, DDP and the progress
bar are Lightning's. Outputs are named after their inputs (``inpainted/<stem>.png``; with
``num_seeds=N`` the seeds after the first as ``<stem>_s<k>.png``) and written atomically.
Every score is the mean over the seeds, with its per-seed values and 95 % intervals
(``maskgit.metrics.intervals``); ``per_image.safetensors`` keeps what paired comparisons
of runs need (``maskgit.compare``). Each carries the key of what produced it (``maskgit.provenance``): a
rerun into the same folder (``resume``) reuses exactly the images whose settings and inputs
match and inpaints the rest; a rerun with other settings is refused, naming them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor
from torch.utils.data import DataLoader

from maskgit.atomic import remove_stale_temp_files, write_json
from maskgit.baselines import Inpainter, MaskGitInpainter
from maskgit.data.datamodules import InpaintingDataModule, make_loader
from maskgit.data.datasets import ImageFolderDataset
from maskgit.data.images import list_images, load_image, read_png_text, save_image
from maskgit.hardware import warn_if_cpu_oversubscribed
from maskgit.inpainting import masked_input
from maskgit.metrics.diversity import SampleDiversity
from maskgit.metrics.fid import (
    MIN_GROUP_FID_IMAGES,
    NOT_AVAILABLE,
    WEIGHTS_HINT,
    BucketedFID,
    build_fid,
    kernel_inception_distance,
)
from maskgit.metrics.inpainting import (
    NUM_BUCKETS,
    SCORES,
    InpaintingQuality,
    area_bucket,
    bucket_name,
)
from maskgit.metrics.intervals import bootstrap, percentile_interval, seed_mean_fid, t_interval
from maskgit.metrics.per_image import PER_IMAGE_FILE, write_per_image
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
from maskgit.step_pictures import save_picture, step_grid, strip
from maskgit.trajectory_cache import TRAJECTORY_VERSION, TrajectoryCache

log = logging.getLogger(__name__)


def image_path(output_dir: Path, name: str, seed_index: int = 0) -> Path:
    """The output of the ``seed_index``-th seed: ``<stem>.png`` for the first, then
    ``<stem>_s<k>.png``."""
    suffix = f"_s{seed_index}" if seed_index else ""
    return output_dir / "inpainted" / f"{name}{suffix}.png"


def with_intervals(target: dict[str, Any], name: str, values: list[float]) -> None:
    """``name`` = the mean of the per-seed ``values``, with ``<name>_per_seed`` and the
    t-interval ``<name>_ci95`` (None under two seeds)."""
    target[name] = sum(values) / len(values)
    target[f"{name}_per_seed"] = values
    target[f"{name}_ci95"] = t_interval(values)


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
        num_seeds: int = 1,
        bootstrap: int = 100,
        real_features_ready: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
            raise ValueError(f"num_seeds must be an integer >= 1, got {num_seeds!r}")
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
            raise ValueError(
                f"metrics.bootstrap must be an integer >= 0 (image resamples; 0: none), "
                f"got {bootstrap!r}"
            )
        self.num_seeds = num_seeds
        self.bootstrap = bootstrap
        self.method = method
        self.output_dir = Path(output_dir)
        self.fid = fid
        self.quality = InpaintingQuality()
        self.diversity = SampleDiversity()
        self.seed = seed
        self.num_step_grids = num_step_grids
        self.resume = resume
        self.reference_is_test_set = reference_is_test_set
        self.run_digest = run_digest
        # The real side of FID from a cache file when it exists, else saved there at the end.
        self.real_cache = real_cache
        # ``real_features_ready``: ``fid`` already holds them (a benchmark sharing one pass).
        self.real_cached = real_features_ready or (real_cache is not None and real_cache.is_file())
        self.inpaint_seconds = 0.0
        self.num_inpainted = 0
        self.num_reused = 0
        self.num_replaced = 0
        self.num_without_hole = 0
        self.results: dict[str, Any] = {}

    def on_test_start(self) -> None:
        if self.fid is None or not self.real_cached or self.real_cache is None:
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
        self.num_without_hole += int((pixel_mask.flatten(1) >= 1).all(1).sum())
        if self.fid is not None and self.reference_is_test_set and not self.real_cached:
            self.fid.update(images, real=True, keys=keys)
        digests = [input_digest(image, mask) for image, mask in zip(images, pixel_mask)]
        fills = []
        for seed_index in range(self.num_seeds):
            output = self._inpaint_seed(images, pixel_mask, keys, names, digests, seed_index)
            fills.append(output)
            if self.fid is not None:
                self.fid.update(
                    output, real=False, groups=area_bucket(pixel_mask), keys=keys,
                    sample=seed_index,
                )  # fmt: skip
            self.quality.update(output, images, pixel_mask, keys=keys, sample=seed_index)
        if self.num_seeds > 1:
            self.diversity.update(torch.stack(fills), pixel_mask)
            self._write_sample_grids(images, pixel_mask, fills, names)

    def _write_sample_grids(
        self, images: Tensor, pixel_mask: Tensor, fills: list[Tensor], names: list[str]
    ) -> None:
        """``grids/<stem>.png``: photo | masked | the fill of each seed, labelled."""
        for row, name in enumerate(names):
            image, mask = images[row].float().cpu(), pixel_mask[row].float().cpu()
            outputs = [fill[row].float().cpu() for fill in fills]
            save_picture(
                strip(image, masked_input(image, mask), outputs),
                self.output_dir / "grids" / f"{name}.png",
            )

    def _inpaint_seed(
        self,
        images: Tensor,
        pixel_mask: Tensor,
        keys: Tensor,
        names: list[str],
        digests: list[str],
        seed_index: int,
    ) -> Tensor:
        """The batch inpainted with seed ``seed + seed_index``: outputs already written by
        this run's settings are read back, the rest inpainted and written."""
        paths = [image_path(self.output_dir, name, seed_index) for name in names]
        run = self.run_digest if seed_index == 0 else f"{self.run_digest}:seed+{seed_index}"
        output_keys = [output_key(run, digest) for digest in digests]
        written = [read_png_text(path).get(KEY_FIELD) for path in paths]
        # Reuse exactly the outputs made by this run's settings from these very inputs.
        done = torch.tensor(
            [self.resume and old == new for old, new in zip(written, output_keys)],
            device=images.device,
        )
        self.num_replaced += sum(
            old is not None and old != new for old, new in zip(written, output_keys)
        )
        output = images.clone()
        if done.any():
            for row in done.nonzero().flatten().tolist():
                output[row] = load_image(paths[row], images.shape[-1]).to(images.device)
            self.num_reused += int(done.sum())
        todo = (~done).nonzero().flatten()
        if not todo.numel():
            return output
        want_steps = seed_index == 0 and bool((keys[todo] < self.num_step_grids).any())
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        seed = self.seed + seed_index
        result = self.method(images[todo], pixel_mask[todo], keys[todo], seed, want_steps)
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
            self._write_step_grids(result, images[todo], pixel_mask[todo], keys[todo], todo_names)
        return output

    def _write_step_grids(
        self, result, images: Tensor, pixel_mask: Tensor, keys: Tensor, names: list[str]
    ) -> None:
        """Per image: ``steps/<stem>.png``, the labelled step grid (latent mask and predicted
        image of each step), and ``strips/<stem>.png``, photo | masked | output."""
        for row, (key, name) in enumerate(zip(keys.tolist(), names)):
            if key >= self.num_step_grids:
                continue
            image, mask = images[row].float().cpu(), pixel_mask[row].float().cpu()
            grid = step_grid(
                image, mask, [m[row].cpu() for m in result.step_masks],
                [s[row].float().cpu() for s in result.step_images],
            )  # fmt: skip
            save_picture(grid, self.output_dir / "steps" / f"{name}.png")
            output = result.images[row].float().cpu()
            save_picture(
                strip(image, masked_input(image, mask), [output]),
                self.output_dir / "strips" / f"{name}.png",
            )

    def on_test_epoch_end(self) -> None:
        seeds = [self.seed + index for index in range(self.num_seeds)]
        metrics: dict[str, Any] = {"seeds": seeds}
        per_seed = self.quality.compute_per_sample()
        if per_seed:
            for name in SCORES:
                with_intervals(metrics, name, [per_seed[i][name] for i in sorted(per_seed)])
        if self.num_seeds > 1:  # how far apart the fills of one hole are (README: diversity)
            diversity = self.diversity.compute()
            metrics["diversity_l1"], metrics["diversity_changed"] = (
                diversity["l1"],
                diversity["changed"],
            )
        buckets: dict[str, Any] = self.quality.compute_buckets()
        for entry in buckets.values():
            for name in SCORES:
                with_intervals(entry, name, entry.pop(f"{name}_per_sample"))
        self.features = None
        if self.fid is not None:
            self._fid_metrics(metrics, buckets)
        quality_rows = self.quality.per_image()  # on every rank: it gathers
        if self.trainer.is_global_zero:
            path = self.output_dir / PER_IMAGE_FILE
            write_per_image(path, self.features, quality_rows, seeds)
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

    def _fid_metrics(self, metrics: dict[str, Any], buckets: dict[str, Any]) -> None:
        """FID and KID per seed with their seed intervals, FID's image interval, the same per
        hole-area bucket, and the per-image file for paired comparisons."""
        assert self.fid is not None
        num_real = int(self.fid.real_features_num_samples)
        num_fake = int(self.fid.fake_features_num_samples) // self.num_seeds
        if min(num_real, num_fake) < 2:
            metrics["fid"] = None
            metrics["fid_note"] = (
                f"FID skipped: it needs at least two real and two inpainted images, got "
                f"{num_real} and {num_fake}"
            )
            log.warning(metrics["fid_note"])
            return
        fid_per_seed = self.fid.compute_per_sample()
        with_intervals(metrics, "fid", [fid_per_seed[i] for i in sorted(fid_per_seed)])
        if self.real_cache is not None and not self.real_cached:
            save_real_statistics(self.fid, self.real_cache)
        note = self.fid.small_sample_note()
        if note:
            metrics["fid_note"] = note
        real_keys, real, fakes = self.fid.per_image_features()
        kids = [kernel_inception_distance(real, fake)[0] for _, fake in fakes.values()]
        if all(kid is not None for kid in kids):
            with_intervals(metrics, "kid", kids)
        paired = self.reference_is_test_set and all(
            torch.equal(keys, real_keys) for keys, _ in fakes.values()
        )
        metrics["fid_ci95_images"] = None
        if self.bootstrap and paired and real.shape[0] >= MIN_GROUP_FID_IMAGES:
            score = seed_mean_fid(real, [fake for _, fake in fakes.values()])
            samples = bootstrap(score, real.shape[0], self.bootstrap)
            metrics["fid_ci95_images"] = percentile_interval(samples, metrics["fid"])
        # FID from MIN_GROUP_FID_IMAGES images on; smaller buckets: "n/a" and the KID.
        per_bucket: dict[str, dict[str, list]] = {}
        for index in range(self.num_seeds):
            for bucket, scores in self.fid.compute_group_scores(sample=index).items():
                entry = per_bucket.setdefault(bucket_name(bucket), {})
                entry["fid_images"] = scores["fid_images"]
                for name in ("fid", "kid"):
                    if name in scores:
                        entry.setdefault(name, []).append(scores[name])
        for name, entry in per_bucket.items():
            target = buckets.setdefault(name, {})
            target["fid_images"] = entry["fid_images"]
            for score in ("fid", "kid"):
                values = entry.get(score)
                if values and all(isinstance(v, float) for v in values):
                    with_intervals(target, score, values)
                elif values:
                    target[score] = NOT_AVAILABLE if score == "fid" else None
        self.features = (real_keys, real, fakes)


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


def trajectory_settings(settings: dict[str, Any], method: Inpainter) -> dict[str, Any]:
    """What decides a decoding trajectory: the run's settings without ``sweet_spot`` (where
    it stops), the compositing and compilation (what is done with it), and the seed (each
    trajectory file names its own); the weights without the tokenizer's mask-aware head,
    which composites pixels after the tokens are chosen (a new head reuses the trajectories)."""
    settings = json.loads(json.dumps(settings))
    settings["weights"] = weights_digest(method, skip="mask_aware")
    settings.pop("seed", None)
    decoder = settings.get("method_config", {}).get("decoder", {})
    for option in ("sweet_spot", "paste", "paste_feather", "mask_aware_head", "compile"):
        decoder.pop(option, None)
    settings["trajectory_version"] = TRAJECTORY_VERSION
    return settings


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def claim_run(cfg: DictConfig, method: Inpainter, output_dir: Path, trainer: L.Trainer) -> str:
    """The run's digest; rank 0 records it in (or checks it against) the output folder
    before any other process starts."""
    settings = run_settings(cfg, method)
    if trainer.global_rank != 0:
        return settings_digest(settings)
    digest = claim_output_folder(output_dir, settings)
    for folder in ("inpainted", "steps", "strips", "grids"):  # what a killed run was writing
        remove_stale_temp_files(output_dir / folder)
    return digest


def reference_loader(
    reference_dir: str, image_size: int, batch_size: int, trainer: L.Trainer
) -> DataLoader:
    dataset = ImageFolderDataset(reference_dir, image_size)
    return make_loader(dataset, batch_size, num_workers=0, trainer=trainer)


def check_evaluate_options(cfg: DictConfig) -> None:
    """Errors naming the option before anything is loaded or written; ``num_samples=K`` is
    resolved into ``num_seeds=K`` (K fills per input are K seeds)."""
    for option, low in (("num_seeds", 1), ("metrics.bootstrap", 0), ("num_samples", 1)):
        value = OmegaConf.select(cfg, option)
        if option == "num_samples" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{option} must be an integer >= {low}, got {value!r}")
    samples = OmegaConf.select(cfg, "num_samples")
    if samples is not None:
        if cfg.num_seeds not in (1, samples):
            raise ValueError(
                f"num_samples={samples} and num_seeds={cfg.num_seeds}: both set the fills per "
                "input (one seed each); give one of them"
            )
        with open_dict(cfg):
            cfg.num_seeds = samples


def evaluate(cfg: DictConfig) -> float | None:
    start = time.perf_counter()
    check_evaluate_options(cfg)
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
    if cfg.get("sweep_cache") and isinstance(method, MaskGitInpainter):
        key = settings_digest(trajectory_settings(run_settings(cfg, method), method))
        cache = TrajectoryCache(Path(cfg.paths.cache_dir) / "trajectories", key)
        method.use_trajectories(cache, decode_full=is_multirun())
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
        num_seeds=cfg.num_seeds,
        bootstrap=cfg.metrics.bootstrap,
    )
    trainer.test(evaluator, dataloaders=loaders, verbose=False)

    results = evaluator.results
    results["method"] = getattr(method, "name", type(method).__name__)
    results["overrides"] = list(cfg.get("overrides", []))
    # The outputs in the test set's order (inpainted/<name>.png).
    results["images"] = [path.stem for path in datamodule.test_set.files]
    if fid is None:
        results["metrics"]["fid"] = None
        if cfg.metrics.fid.enabled:
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

    def interval(name: str, digits: int = 3, key: str | None = None) -> str:
        bounds = metrics.get(key or f"{name}_ci95")
        if not bounds:
            return ""
        over = "images" if key else f"{len(metrics['seeds'])} seeds"
        return f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}] (95 %, {over})"

    fid_note = results.get("fid_note") or metrics.get("fid_note")
    lines = [
        f"method: {results['method']}   seeds: {metrics.get('seeds')}",
        f"FID: {show(metrics.get('fid'))}{interval('fid')}{interval('fid', key='fid_ci95_images')}"
        + (f"  (note: {fid_note})" if fid_note else ""),
        f"masked PSNR: {show(metrics.get('psnr'), 2)} dB{interval('psnr', 2)}   "
        f"masked SSIM: {show(metrics.get('ssim'))}{interval('ssim')}",
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
