"""Data: bad files and folders give errors naming them, masks, generated masks, token cache."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE, tiny_tokenizer_config
from PIL import Image
from torch.utils.data import DataLoader

from maskgit.data import token_cache
from maskgit.data.datamodules import ImageDataModule, InpaintingDataModule
from maskgit.data.datasets import ImageFolderDataset, InpaintingDataset, TokenDataset
from maskgit.data.images import ImageFileError, load_image, load_mask
from maskgit.data.masks import FolderMasks, GeneratedMasks, make_mask_source
from maskgit.data.sampling import ResumableSampler, SampleKey
from maskgit.fingerprint import tokenizer_fingerprint
from maskgit.models.vqgan import VQGAN

SIZE = 64


def write(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def rgb(color: tuple[int, int, int], size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    return Image.new("RGB", size, color)


def pairs(root: Path, stems: list[str], mask_stems: list[str] | None = None) -> Path:
    """root/val/<stem>.png images and root/val_masks/<stem>.png masks (hole in the middle)."""
    for i, stem in enumerate(stems):
        write(root / "val" / f"{stem}.png", rgb((40 * i, 100, 200)))
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[16:48, 16:48] = 0
    for stem in stems if mask_stems is None else mask_stems:
        write(root / "val_masks" / f"{stem}.png", Image.fromarray(mask))
    return root


# --- unreadable files ------------------------------------------------------------------


def test_corrupt_image_names_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageFileError, match="not a readable image") as error:
        load_image(path, SIZE)
    assert str(path) in str(error.value)


def test_truncated_jpeg_names_the_file(tmp_path):
    good = write(tmp_path / "good.jpg", rgb((10, 20, 30), (128, 128)))
    path = tmp_path / "truncated.jpg"
    path.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageFileError) as error:
        load_image(path, SIZE)
    assert str(path) in str(error.value)


def test_non_image_with_an_image_extension_names_the_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n")
    dataset = ImageFolderDataset(tmp_path, SIZE)  # listed by its extension ...
    assert dataset.files == [path]
    with pytest.raises(ImageFileError, match="not a readable image") as error:
        dataset[0]  # ... and refused when read
    assert str(path) in str(error.value)


# --- image modes and sizes ----------------------------------------------------------------


def test_grayscale_is_converted_to_rgb(tmp_path):
    gray = np.tile(np.arange(SIZE, dtype=np.uint8) * 4, (SIZE, 1))
    path = write(tmp_path / "gray.png", Image.fromarray(gray, mode="L"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # grayscale converts silently
        image = load_image(path, SIZE)
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    expected = torch.from_numpy(gray).float() / 255
    for channel in image:
        torch.testing.assert_close(channel, expected)


def test_rgba_is_composited_on_white_with_a_warning(tmp_path):
    pixels = np.zeros((SIZE, SIZE, 4), np.uint8)
    pixels[..., 0] = 255  # red ...
    pixels[:, : SIZE // 2, 3] = 255  # ... opaque on the left, transparent on the right
    path = write(tmp_path / "alpha.png", Image.fromarray(pixels, mode="RGBA"))
    with pytest.warns(UserWarning, match="alpha") as record:
        image = load_image(path, SIZE)
    assert str(path) in str(record[0].message)
    assert image.shape == (3, SIZE, SIZE)
    left, right = image[:, :, : SIZE // 2], image[:, :, SIZE // 2 :]
    assert torch.all(left[0] == 1) and torch.all(left[1:] == 0)  # red stays red
    assert torch.all(right == 1)  # transparent becomes white


def test_wrong_size_is_resized_or_refused(tmp_path):
    # 192x64: a green centre third between black sides; resizing keeps the centre square.
    pixels = np.zeros((SIZE, 3 * SIZE, 3), np.uint8)
    pixels[:, SIZE : 2 * SIZE, 1] = 255
    path = write(tmp_path / "wide.png", Image.fromarray(pixels))
    image = load_image(path, SIZE)
    assert image.shape == (3, SIZE, SIZE)
    assert torch.allclose(image[1], torch.ones(SIZE, SIZE), atol=0.02)
    assert image[0].abs().max() < 0.02

    big = write(tmp_path / "big.png", rgb((1, 2, 3), (100, 80)))
    assert load_image(big, SIZE).shape == (3, SIZE, SIZE)
    with pytest.raises(ImageFileError, match="image is 100x80, expected 64x64") as error:
        load_image(big, SIZE, resize=False)
    assert str(big) in str(error.value)
    with pytest.raises(ImageFileError, match="100x80"):
        ImageFolderDataset(tmp_path, SIZE, resize=False)[0]


def test_sample_photos_load_as_unit_range_tensors():
    dataset = ImageFolderDataset(SAMPLE / "train", SIZE, flip=True)
    assert len(dataset) == len(list((SAMPLE / "train").glob("*.jpg")))
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE)
    assert float(batch["image"].min()) >= 0 and float(batch["image"].max()) <= 1
    assert batch["image"].std() > 0.05  # real content, not a constant


# --- masks and their pairing --------------------------------------------------------------


def test_mask_of_the_wrong_size_names_the_file(tmp_path):
    root = pairs(tmp_path, ["a", "b"])
    small = write(root / "val_masks" / "b.png", Image.new("L", (32, 40), 255))
    dataset = InpaintingDataset(root / "val", FolderMasks(root / "val_masks"), SIZE)
    assert dataset[0]["mask"].shape == (1, SIZE, SIZE)
    with pytest.raises(ImageFileError, match="mask is 32x40, expected 64x64") as error:
        dataset[1]
    assert str(small) in str(error.value)


def test_mask_file_values(tmp_path):
    root = pairs(tmp_path, ["a"])
    mask = load_mask(root / "val_masks" / "a.png", SIZE)
    assert mask.shape == (1, SIZE, SIZE)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert float(mask[0, 16:48, 16:48].max()) == 0.0  # the black hole is missing
    assert float(1 - mask.mean()) == pytest.approx(0.25)
    inverted = load_mask(root / "val_masks" / "a.png", SIZE, invert=True)
    assert torch.equal(inverted, 1 - mask)


def test_image_without_a_mask_is_named(tmp_path):
    root = pairs(tmp_path, ["a", "b", "c"], mask_stems=["a", "c"])
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) without a mask, e.g. \['b'\]"):
        InpaintingDataset(root / "val", make_mask_source(str(root / "val_masks")), SIZE)


def test_mask_without_an_image_is_named(tmp_path):
    root = pairs(tmp_path, ["a"], mask_stems=["a", "zz"])
    with pytest.raises(FileNotFoundError, match=r"1 mask\(s\) without an image, e.g. \['zz'\]"):
        InpaintingDataset(root / "val", FolderMasks(root / "val_masks"), SIZE)


def test_empty_and_missing_folders_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="holds no images") as error:
        ImageFolderDataset(empty, SIZE)
    assert str(empty) in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"mask folder .* holds no images"):
        FolderMasks(empty)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        ImageFolderDataset(missing, SIZE)
    assert str(missing) in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"mask folder .* does not exist"):
        make_mask_source(str(missing))


def test_shipped_sample_pairs_up():
    dataset = InpaintingDataset(SAMPLE / "val", FolderMasks(SAMPLE / "val_masks"), SIZE, limit=3)
    assert len(dataset) == 3
    item = dataset[0]
    assert item["mask"].shape == (1, SIZE, SIZE)
    assert 0 < float(item["mask"].mean()) < 1  # some pixels known, some missing


def test_all_known_and_all_missing_masks(tiny_maskgit, tmp_path):
    root = pairs(tmp_path, ["known", "missing"])
    write(root / "val_masks" / "known.png", Image.new("L", (SIZE, SIZE), 255))
    write(root / "val_masks" / "missing.png", Image.new("L", (SIZE, SIZE), 0))
    for i, stem in enumerate(["known", "missing"]):
        photo = sorted((SAMPLE / "val").iterdir())[i]
        shutil.copy(photo, root / "val" / f"{stem}.png")  # a JPEG under a .png name reads too
    dataset = InpaintingDataset(root / "val", FolderMasks(root / "val_masks"), SIZE)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["name"] == ["known", "missing"]
    assert float(batch["mask"][0].min()) == 1.0 and float(batch["mask"][1].max()) == 0.0

    module = tiny_maskgit.eval()
    module.decoder.precision = "32"  # compared with an fp32 detokenize below
    result = module.inpaint(batch["image"], batch["mask"], keys=batch["index"])
    tokens = module.tokenizer.tokenize(batch["image"])
    # All known: nothing to decode, the image comes back unchanged.
    assert not result.token_mask[0].any()
    assert torch.equal(result.tokens[0], tokens[0])
    assert torch.equal(result.images[0], batch["image"][0])
    # All missing: every token generated (none left as [MASK]), the image is the decoding.
    assert result.token_mask[1].all()
    assert int(result.tokens[1].max()) < module.mask_token_id
    decoded = module.tokenizer.detokenize(result.tokens[1:])
    torch.testing.assert_close(result.images[1:], decoded)
    assert not torch.allclose(result.images[1], batch["image"][1], atol=0.05)


# --- generated masks ----------------------------------------------------------------------


def hole_share(mask: torch.Tensor) -> float:
    return 1.0 - float(mask.mean())


@pytest.mark.parametrize("kind", ["boxes", "strokes", "mixed", "half", "center"])
def test_seeded_masks_repeat(kind):
    masks = GeneratedMasks(kind=kind, seed=7)
    first = [masks.mask(i, str(i), SIZE) for i in range(6)]
    again = [GeneratedMasks(kind=kind, seed=7).mask(i, "other", SIZE) for i in range(6)]
    for i, (a, b) in enumerate(zip(first, again)):
        assert a.shape == (1, SIZE, SIZE) and a.dtype == torch.float32
        assert set(a.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(a, b)
        assert torch.equal(a, masks.mask(i, "x", SIZE))
    if kind != "half":  # half has only 4 layouts; the others vary per image and per seed
        assert len({tuple(m.flatten().tolist()) for m in first}) == len(first)
        other_seed = GeneratedMasks(kind=kind, seed=8).mask(0, "0", SIZE)
        assert not torch.equal(first[0], other_seed)


def test_unseeded_masks_are_fresh_each_call():
    masks = GeneratedMasks(kind="mixed", seed=None)
    drawn = [masks.mask(0, "0", SIZE) for _ in range(4)]
    assert len({tuple(m.flatten().tolist()) for m in drawn}) > 1


@pytest.mark.parametrize(
    ("kind", "slack_low", "slack_high"),
    [("center", 0.02, 0.02), ("boxes", 0.1, 0.02), ("strokes", 0.0, 0.12), ("mixed", 0.1, 0.12)],
)
def test_hole_share_within_range(kind, slack_low, slack_high):
    low, high = 0.15, 0.45
    masks = GeneratedMasks(kind=kind, hole_range=(low, high), seed=0)
    shares = np.array([hole_share(masks.mask(i, str(i), SIZE)) for i in range(40)])
    assert shares.min() >= low - slack_low, shares.min()
    assert shares.max() <= high + slack_high, shares.max()
    assert shares.std() > 0.03  # the range is used, not one size
    narrow = GeneratedMasks(kind=kind, hole_range=(0.3, 0.3), seed=0)
    narrow_shares = [hole_share(narrow.mask(i, str(i), SIZE)) for i in range(10)]
    assert np.mean(narrow_shares) == pytest.approx(0.3, abs=0.08)


def test_half_and_center_shapes():
    half = SIZE // 2
    layouts = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
    layouts[0, :, :half] = layouts[1, :, half:] = layouts[2, :half] = layouts[3, half:] = True
    halves = GeneratedMasks(kind="half", seed=0)
    seen = set()
    for i in range(16):
        missing = (1 - halves.mask(i, str(i), SIZE)[0]).bool()
        matches = [j for j in range(4) if torch.equal(missing, layouts[j])]
        assert len(matches) == 1, f"mask {i} is not one whole half"
        seen.add(matches[0])
    assert len(seen) >= 3  # left, right, top and bottom all occur

    center = GeneratedMasks(kind="center", hole_range=(0.25, 0.25), seed=0).mask(0, "0", SIZE)
    missing = (1 - center[0]).bool()
    assert missing[16:48, 16:48].all() and int(missing.sum()) == 32 * 32


def test_invalid_mask_settings_are_refused():
    with pytest.raises(ValueError, match="mask kind"):
        GeneratedMasks(kind="circles")
    with pytest.raises(ValueError, match="hole_range"):
        GeneratedMasks(hole_range=(0.6, 0.2))


def test_training_images_get_inpainting_masks(tmp_path):
    dataset = ImageFolderDataset(SAMPLE / "train", SIZE, masks=GeneratedMasks(seed=None))
    item = dataset[0]
    assert item["mask"].shape == (1, SIZE, SIZE)
    assert 0 < hole_share(item["mask"]) < 1


# --- token cache ---------------------------------------------------------------------------


def tiny_tokenizer(seed: int) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(**tiny_tokenizer_config()).eval()


@pytest.fixture()
def few_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((SAMPLE / "train").iterdir())[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def test_token_cache_is_built_once_per_tokenizer(few_images, tmp_path):
    cache = tmp_path / "cache"
    tokenizer = tiny_tokenizer(0)
    dataset = ImageFolderDataset(few_images, SIZE)
    tokens = token_cache.load_or_build(tokenizer, dataset, cache)

    files = list(cache.glob("*.pt"))
    assert len(files) == 1
    assert tokenizer_fingerprint(tokenizer) in files[0].name
    assert files[0] == token_cache.cache_path(cache, tokenizer, dataset)
    # [images, views (image, flipped), 16, 16] as the tokenizer encodes them.
    images = torch.stack([dataset[i]["image"] for i in range(3)])
    assert tokens.shape == (3, 2, 16, 16) and tokens.dtype == torch.int16
    assert torch.equal(tokens[:, 0].long(), tokenizer.tokenize(images))
    assert torch.equal(tokens[:, 1].long(), tokenizer.tokenize(images.flip(-1)))

    # A second call reads the file: it returns what the file holds, without encoding again.
    stamp = files[0].stat().st_mtime_ns
    assert torch.equal(token_cache.load_or_build(tokenizer, dataset, cache), tokens)
    assert files[0].stat().st_mtime_ns == stamp
    marker = torch.full_like(tokens, 5)
    torch.save(marker, files[0])
    assert torch.equal(token_cache.load_or_build(tokenizer, dataset, cache), marker)

    # A setting without weights that changes every token changes the key as well.
    cosine = tiny_tokenizer(0)
    cosine.codebook.l2_normalize = not tokenizer.codebook.l2_normalize
    assert tokenizer_fingerprint(cosine) != tokenizer_fingerprint(tokenizer)

    # Another tokenizer builds its own cache file next to the first.
    other = tiny_tokenizer(1)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    other_tokens = token_cache.load_or_build(other, dataset, cache)
    assert len(list(cache.glob("*.pt"))) == 2
    assert torch.equal(other_tokens[:, 0].long(), other.tokenize(images))

    # So does a changed image list.
    shutil.copy(sorted((SAMPLE / "train").iterdir())[5], few_images / "extra.jpg")
    grown = ImageFolderDataset(few_images, SIZE)
    assert token_cache.load_or_build(tokenizer, grown, cache).shape[0] == 4
    assert len(list(cache.glob("*.pt"))) == 3


def test_token_cache_follows_image_bytes_not_file_times(few_images, tmp_path):
    tokenizer = tiny_tokenizer(0)
    key = token_cache.cache_path(tmp_path, tokenizer, ImageFolderDataset(few_images, SIZE))
    # A copy elsewhere, with new mtimes (plain cp, rsync without -t): the same cache.
    copy = tmp_path / "copy"
    shutil.copytree(few_images, copy, copy_function=shutil.copyfile)
    first = sorted(copy.iterdir())[0]
    os.utime(first, ns=(1, 1))
    assert token_cache.cache_path(tmp_path, tokenizer, ImageFolderDataset(copy, SIZE)) == key
    # One image replaced by another under the same name: a new cache.
    shutil.copyfile(sorted((SAMPLE / "train").iterdir())[7], first)
    assert token_cache.cache_path(tmp_path, tokenizer, ImageFolderDataset(copy, SIZE)) != key


def test_datamodule_encodes_the_cache_with_the_tokenizer_it_is_given(few_images, tmp_path):
    data = InpaintingDataModule(
        train_dir=str(few_images), val_dir=str(few_images), val_masks=GeneratedMasks(seed=0),
        num_workers=0, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="set_tokenizer"):
        data.setup("fit")
    tokenizer = tiny_tokenizer(0)
    data.set_tokenizer(tokenizer)
    data.setup("fit")
    (cached,) = (tmp_path / "cache").glob("*.pt")
    assert tokenizer_fingerprint(tokenizer) in cached.name
    assert len(data.train_set) == 3


def test_token_dataset_serves_cached_views():
    image = torch.randint(0, 63, (2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    tokens = torch.cat([image, image + 1], dim=1).short()  # the two views differ everywhere
    dataset = TokenDataset(tokens, masks=GeneratedMasks(seed=0))
    item = dataset[1]
    assert item["tokens"].dtype == torch.long
    assert any(torch.equal(item["tokens"], tokens[1, v].long()) for v in range(2))
    assert item["mask"].shape == (1, SIZE, SIZE)
    views = {int(dataset[0]["tokens"][0, 0]) for _ in range(20)}
    assert views == {int(tokens[0, 0, 0, 0]), int(tokens[0, 1, 0, 0])}  # both views drawn
    unflipped = TokenDataset(tokens, flip=False)
    assert all(torch.equal(unflipped[0]["tokens"], tokens[0, 0].long()) for _ in range(10))


def test_token_dataset_serves_the_image_of_the_drawn_view(few_images):
    tokenizer = tiny_tokenizer(0)
    stored = ImageFolderDataset(few_images, SIZE)
    tokens = token_cache.encode_dataset(tokenizer, stored)
    dataset = TokenDataset(tokens, GeneratedMasks(seed=0), SIZE, flip=True, images=stored)
    flips = set()
    for seed in range(12):
        item = dataset[SampleKey(1, seed)]
        assert torch.equal(tokenizer.tokenize(item["image"][None])[0], item["tokens"])
        flips.add(torch.equal(item["image"], stored[1]["image"].flip(-1)))
    assert flips == {True, False}
    (few_images / stored.files[0].name).unlink()
    with pytest.raises(ValueError, match=r"3 grids but .* has 2 images"):
        TokenDataset(tokens, images=ImageFolderDataset(few_images, SIZE))


def test_token_cache_refuses_augmented_images(few_images):
    # A randomly flipped "stored" view would make the cache depend on the RNG.
    flipping = ImageFolderDataset(few_images, SIZE, flip=True)
    with pytest.raises(ValueError, match=r"stored images.*flip=True"):
        token_cache.encode_dataset(tiny_tokenizer(0), flipping)


# --- the resumable training sampler ---------------------------------------------------------


def drawn(sampler: ResumableSampler, passes: int) -> list[SampleKey]:
    return [key for _ in range(passes) for key in sampler]


def test_sampler_passes_are_permutations_that_differ():
    sampler = ResumableSampler(range(10), batch_size=2, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(k.index for k in first) == sorted(k.index for k in second) == list(range(10))
    assert first != second
    assert drawn(ResumableSampler(range(10), batch_size=2, seed=3), 2) == first + second


def test_sampler_resumes_mid_pass_where_it_stopped():
    straight = drawn(ResumableSampler(range(10), batch_size=2, seed=3), 3)
    for batches_done in (0, 3, 5, 7, 12):
        resumed = ResumableSampler(range(10), batch_size=2, seed=3)
        resumed.resume(batches_done, batches_per_pass=5)
        tail = drawn(resumed, 3 - batches_done // 5)
        assert tail == straight[batches_done * 2 :], batches_done


def test_sampler_ranks_split_each_pass_without_overlap():
    ranks = [ResumableSampler(range(11), batch_size=2, num_replicas=2, rank=r) for r in (0, 1)]
    shards = [[k.index for k in sampler] for sampler in ranks]
    assert len(shards[0]) == len(shards[1]) == len(ranks[0]) == 5
    assert not set(shards[0]) & set(shards[1])


def test_sample_seed_fixes_flip_and_generated_mask(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    write(
        root / "a.png",
        Image.fromarray(np.arange(SIZE * SIZE * 3, dtype=np.uint8).reshape(SIZE, SIZE, 3)),
    )
    dataset = ImageFolderDataset(root, SIZE, flip=True, masks=GeneratedMasks(seed=None))
    items = [dataset[SampleKey(0, seed)] for seed in range(8)]
    for seed, item in enumerate(items):
        again = dataset[SampleKey(0, seed)]
        assert torch.equal(item["image"], again["image"]) and torch.equal(
            item["mask"], again["mask"]
        )
    # Eight seeds give both orientations and several masks.
    assert len({item["image"][0, 0, 0].item() for item in items}) == 2
    assert len({item["mask"].sum().item() for item in items}) > 1


def sample_datamodule(seed: int | None = 3) -> ImageDataModule:
    datamodule = ImageDataModule(str(SAMPLE / "train"), str(SAMPLE / "val"), SIZE, seed=seed)
    datamodule.train_set = range(10)
    return datamodule


def test_rebuilt_loaders_go_on_to_the_next_pass():
    # reload_dataloaders_every_n_epochs builds a new sampler each epoch: not pass 0 again.
    datamodule = sample_datamodule()
    first = list(datamodule.train_sampler(2))
    second = list(datamodule.train_sampler(2))
    assert first + second == drawn(ResumableSampler(range(10), batch_size=2, seed=3), 2)


def test_resume_with_another_batch_size_starts_the_next_pass_with_a_warning(caplog):
    saved = {"seed": 3, "batches_done": 3, "batches_per_pass": 5, "batch_size": 2,
             "world_size": 1, "dataset_size": 10}  # fmt: skip
    same = sample_datamodule(seed=None)
    same.load_state_dict(saved)
    assert list(same.train_sampler(2)) == list(ResumableSampler(range(10), 2, seed=3))[6:]

    changed = sample_datamodule(seed=None)
    changed.load_state_dict(saved)
    with caplog.at_level(logging.WARNING, logger="maskgit.data.datamodules"):
        keys = list(changed.train_sampler(4))
    assert "batch_size 2 -> 4" in caplog.text and "pass 1" in caplog.text
    assert keys == drawn(ResumableSampler(range(10), batch_size=4, seed=3), 2)[10:]
