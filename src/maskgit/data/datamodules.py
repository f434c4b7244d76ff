"""LightningDataModules: images for the tokenizer; tokens/images + masks for MaskGIT."""

from __future__ import annotations

import logging
import signal
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Subset

from maskgit.data import token_cache
from maskgit.data.datasets import ImageFolderDataset, InpaintingDataset, TokenDataset
from maskgit.data.masks import MaskSource
from maskgit.data.sampling import ResumableSampler
from maskgit.models.vqgan import VQGAN

log = logging.getLogger(__name__)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    trainer: L.Trainer | None = None,
    sampler: ResumableSampler | None = None,
) -> DataLoader:
    """A training loader when given a ``sampler``, else an evaluation loader."""
    if sampler is None and trainer is not None and trainer.world_size > 1:
        # Lightning's default evaluation sampler pads ranks with repeated images, which would
        # count them twice in FID; this one gives every image to exactly one rank.
        sampler = UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        # Drop a ragged last batch, unless that would leave none (a rank's share is small).
        drop_last=isinstance(sampler, ResumableSampler) and len(sampler) > batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=ignore_sigterm if num_workers > 0 else None,
    )


def ignore_sigterm(worker_id: int) -> None:
    """Data workers leave SIGTERM to the main process: a signal sent to the whole process
    group (``pkill -f``, a scheduler) then stops training after its step, with a checkpoint
    (``maskgit.callbacks.graceful_stop``), instead of killing a worker first. Workers end
    with the main process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class ResumableTrainingData(L.LightningDataModule):
    """Training batches a function of (seed, pass, position); checkpoints say where it stands.

    ``state_dict`` records how many training batches were drawn when the checkpoint was
    written; a run resumed from it (even one killed mid-epoch) skips those and continues
    with exactly the batches the uninterrupted run would have drawn.
    """

    train_set: Dataset | None
    _train_seed: int | None = None
    _resume: dict[str, int] | None = None
    _sampler: ResumableSampler | None = None

    def train_sampler(self, batch_size: int) -> ResumableSampler:
        trainer = self.trainer
        world_size = trainer.world_size if trainer else 1
        if self._train_seed is None:
            # An unseeded run draws its data seed once (the same on every rank: rank 0's);
            # checkpoints keep it for the resume.
            seed = int(torch.randint(2**31, ()))
            self._train_seed = trainer.strategy.broadcast(seed) if world_size > 1 else seed
        sampler = ResumableSampler(
            self.train_set,
            batch_size,
            num_replicas=world_size,
            rank=trainer.global_rank if trainer else 0,
            seed=self._train_seed,
        )
        if self._resume:
            self._resume_sampler(sampler, self._resume)
            self._resume = None
        elif self._sampler is not None:  # loaders rebuilt (reload_dataloaders_every_n_epochs)
            sampler.next_pass = self._sampler.next_pass
        self._sampler = sampler
        return sampler

    def _resume_sampler(self, sampler: ResumableSampler, state: dict[str, int]) -> None:
        now = {
            "batch_size": sampler.batch_size,
            "world_size": sampler.num_replicas,
            "dataset_size": len(sampler.dataset),
        }
        changed = {k: (state[k], v) for k, v in now.items() if k in state and state[k] != v}
        if not changed:
            sampler.resume(state["batches_done"], state["batches_per_pass"])
            return
        # The saved position means other samples now: go on at the next whole pass.
        passes = -(-state["batches_done"] // state["batches_per_pass"])
        sampler.resume(passes, 1)
        described = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
        log.warning(
            "training data changed since the checkpoint (%s): resuming at the start of "
            "pass %d instead of mid-pass, so this run's batches differ from the saved run's",
            described, passes,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or self._sampler is None:
            return {}
        # Lightning's cumulative batch count survives resumes; its epoch number may not.
        progress = trainer.fit_loop.epoch_loop.batch_progress.total
        return {
            "seed": self._train_seed,
            "batches_done": progress.processed,
            "batches_per_pass": trainer.num_training_batches,
            "batch_size": self._sampler.batch_size,
            "world_size": self._sampler.num_replicas,
            "dataset_size": len(self._sampler.dataset),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._train_seed = state_dict["seed"]
            self._resume = dict(state_dict)
            # Lightning only knows loaders that are stateful themselves; this one resumes
            # through the datamodule, so its "not resumable" warning does not apply.
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")


class ImageDataModule(ResumableTrainingData):
    """Train/val image folders for the stage-1 tokenizer."""

    def __init__(
        self,
        train_dir: str,
        val_dir: str,
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 2,
        flip: bool = True,
        val_limit: int | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self._train_seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and self.train_set is None:
            self.train_set = ImageFolderDataset(hp.train_dir, hp.image_size, flip=hp.flip)
        if self.val_set is None:
            val = ImageFolderDataset(hp.val_dir, hp.image_size)
            self.val_set = Subset(val, range(min(hp.val_limit, len(val)))) if hp.val_limit else val

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(
            self.train_set, hp.batch_size, hp.num_workers, sampler=self.train_sampler(hp.batch_size)
        )

    def val_dataloader(self) -> DataLoader:
        return make_loader(
            self.val_set, self.hparams.batch_size, self.hparams.num_workers, self.trainer
        )


class InpaintingDataModule(ResumableTrainingData):
    """Stage 2: training tokens (cached) or images, and (image, mask) pairs for val/test.

    ``token_cache``: encode the training set once with the model's frozen tokenizer (in
    ``prepare_data``, rank 0) and train from the cached grids, flips included; the tokenizer
    is given by :meth:`set_tokenizer` (``training.py`` passes the model's).
    ``train_masks``: an unseeded mask source that gives each training sample an
    inpainting-shaped mask (the model decides per sample whether to use it).
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str,
        val_masks: MaskSource,
        test_dir: str | None = None,
        test_masks: MaskSource | None = None,
        image_size: int = 64,
        batch_size: int = 64,
        eval_batch_size: int = 32,
        num_workers: int = 2,
        flip: bool = True,
        token_cache: bool = True,
        cache_dir: str = ".cache/tokens",
        train_masks: MaskSource | None = None,
        val_limit: int | None = None,
        test_limit: int | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["val_masks", "test_masks", "train_masks"])
        self._train_seed = seed
        self.val_masks = val_masks
        # Without a test_dir the test set is the val set, with its masks.
        self.test_masks = test_masks if (test_dir and test_masks is not None) else val_masks
        self.train_masks = train_masks
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.tokenizer: VQGAN | None = None

    def set_tokenizer(self, tokenizer: VQGAN | None) -> None:
        """The frozen tokenizer the token cache encodes the training images with: the
        model's own, so the cached tokens are the ones it is trained on."""
        self.tokenizer = tokenizer

    def _train_images(self) -> ImageFolderDataset:
        hp = self.hparams
        return ImageFolderDataset(hp.train_dir, hp.image_size, flip=hp.flip, masks=self.train_masks)

    def _stored_train_images(self) -> ImageFolderDataset:
        """What the token cache encodes: the training images as stored, no augmentation."""
        return ImageFolderDataset(self.hparams.train_dir, self.hparams.image_size)

    def _cache_tokenizer(self) -> VQGAN:
        if self.tokenizer is None:
            raise RuntimeError(
                "data.token_cache=true needs the model's frozen tokenizer to encode the "
                "training images: call InpaintingDataModule.set_tokenizer(model.tokenizer) "
                "before fitting (training.py does), or set data.token_cache=false"
            )
        return self.tokenizer

    def prepare_data(self) -> None:
        if (
            self.hparams.token_cache
            and self.trainer is not None
            and self.trainer.state.fn == TrainerFn.FITTING
        ):
            tokenizer = self._cache_tokenizer()
            device = self.trainer.strategy.root_device
            tokenizer.to(device)
            token_cache.load_or_build(
                tokenizer, self._stored_train_images(), self.hparams.cache_dir,
                num_workers=self.hparams.num_workers,
            )  # fmt: skip
            tokenizer.cpu()

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and self.train_set is None:
            if hp.token_cache:
                stored = self._stored_train_images()
                tokens = token_cache.load_or_build(self._cache_tokenizer(), stored, hp.cache_dir)
                # With inpainting masks the images come along: training hides their holes.
                images = stored if self.train_masks is not None else None
                self.train_set = TokenDataset(
                    tokens, self.train_masks, hp.image_size, hp.flip, images=images
                )
            else:
                self.train_set = self._train_images()
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = InpaintingDataset(
                hp.val_dir, self.val_masks, hp.image_size, hp.val_limit
            )
        if stage in ("test", "predict") and self.test_set is None:
            root = hp.test_dir or hp.val_dir
            self.test_set = InpaintingDataset(root, self.test_masks, hp.image_size, hp.test_limit)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(
            self.train_set, hp.batch_size, hp.num_workers, sampler=self.train_sampler(hp.batch_size)
        )

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.val_set, hp.eval_batch_size, hp.num_workers, self.trainer)

    def test_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.test_set, hp.eval_batch_size, hp.num_workers, self.trainer)
