"""LightningDataModules: images for the tokenizer; tokens/images + masks for MaskGIT."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Subset

from maskgit.data import token_cache
from maskgit.data.datasets import ImageFolderDataset, InpaintingDataset, TokenDataset
from maskgit.data.masks import MaskSource


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    train: bool,
    trainer: L.Trainer | None = None,
) -> DataLoader:
    sampler = None
    if not train and trainer is not None and trainer.world_size > 1:
        # Lightning's default evaluation sampler pads ranks with repeated images, which would
        # count them twice in FID; this one gives every image to exactly one rank.
        sampler = UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class ImageDataModule(L.LightningDataModule):
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
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
        return make_loader(self.train_set, self.hparams.batch_size, self.hparams.num_workers, True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(
            self.val_set, self.hparams.batch_size, self.hparams.num_workers, False, self.trainer
        )


class InpaintingDataModule(L.LightningDataModule):
    """Stage 2: training tokens (cached) or images, and (image, mask) pairs for val/test.

    ``token_cache``: encode the training set once with the model's frozen tokenizer (in
    ``prepare_data``, rank 0) and train from the cached grids, flips included.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["val_masks", "test_masks", "train_masks"])
        self.val_masks = val_masks
        self.test_masks = test_masks or val_masks
        self.train_masks = train_masks
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _train_images(self) -> ImageFolderDataset:
        hp = self.hparams
        return ImageFolderDataset(hp.train_dir, hp.image_size, flip=hp.flip, masks=self.train_masks)

    def _tokenizer(self):
        return self.trainer.lightning_module.tokenizer

    def prepare_data(self) -> None:
        if (
            self.hparams.token_cache
            and self.trainer is not None
            and self.trainer.state.fn == TrainerFn.FITTING
        ):
            tokenizer = self._tokenizer()
            device = self.trainer.strategy.root_device
            tokenizer.to(device)
            token_cache.load_or_build(
                tokenizer, self._train_images(), self.hparams.cache_dir,
                num_workers=self.hparams.num_workers,
            )  # fmt: skip
            tokenizer.cpu()

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and self.train_set is None:
            images = self._train_images()
            if hp.token_cache:
                tokens = token_cache.load_or_build(self._tokenizer(), images, hp.cache_dir)
                self.train_set = TokenDataset(tokens, self.train_masks, hp.image_size)
            else:
                self.train_set = images
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = InpaintingDataset(
                hp.val_dir, self.val_masks, hp.image_size, hp.val_limit
            )
        if stage in ("test", "predict") and self.test_set is None:
            root = hp.test_dir or hp.val_dir
            self.test_set = InpaintingDataset(root, self.test_masks, hp.image_size, hp.test_limit)

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.hparams.batch_size, self.hparams.num_workers, True)

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.val_set, hp.eval_batch_size, hp.num_workers, False, self.trainer)

    def test_dataloader(self) -> DataLoader:
        hp = self.hparams
        return make_loader(self.test_set, hp.eval_batch_size, hp.num_workers, False, self.trainer)
