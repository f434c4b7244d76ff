"""train.py end to end: loggers, trainers, stage 1, every config option, errors, DDP, resume."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from conftest import CONF, FID_WEIGHTS, ROOT, SAMPLE, compose_config, tiny_tokenizer_config
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from maskgit.checkpoints import CheckpointError, load_tokenizer
from maskgit.data.images import load_image
from maskgit.fingerprint import tokenizer_fingerprint
from maskgit.modules.maskgit import NonFiniteLossError
from maskgit.modules.tokenizer import VQGANModule
from maskgit.training import train

# Groups composed into evaluate.yaml; every other group belongs to train.yaml.
EVALUATE_GROUPS = {"method"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """8 training photos and 4 validation pairs copied from the shipped sample."""
    root = tmp_path_factory.mktemp("data")
    for sub, count in (("train", 8), ("val", 4)):
        (root / sub).mkdir()
        for path in sorted((SAMPLE / sub).iterdir())[:count]:
            shutil.copy(path, root / sub / path.name)
    (root / "val_masks").mkdir()
    for path in (root / "val").iterdir():
        mask = SAMPLE / "val_masks" / f"{path.stem}.png"
        shutil.copy(mask, root / "val_masks" / mask.name)
    return root


def stage2(tokenizer: Path, data: Path, tmp: Path, steps: int = 1) -> list[str]:
    """Overrides for a tiny stage-2 run of ``steps`` optimizer steps, writing only under tmp."""
    return [
        "transformer=tiny",
        # The tiny size trains at a higher rate with a short warmup (model/maskgit.yaml).
        "model.lr=1e-3",
        "model.warmup_steps=10",
        "tokenizer=tiny",
        f"tokenizer_ckpt={tokenizer}",
        f"data_root={data}",
        f"paths.log_dir={tmp}/logs",
        f"paths.cache_dir={tmp}/cache",
        "callbacks.inpainting_fid=null",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.val_limit=2",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "+trainer.num_sanity_val_steps=0",
        "run_name=test",
    ]


def run_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose train.yaml and run maskgit.training.train as train.py does (no hydra node)."""
    cfg = compose_config("train", [*overrides, f"paths.output_dir={output_dir}"])
    with open_dict(cfg):
        del cfg["hydra"]
    train(cfg)
    return cfg


def resolve(cfg: DictConfig) -> dict:
    """The whole job config resolved (the hydra node itself needs a real run)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


def targets(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for value in node.values() for t in targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in targets(value)]
    return []


def last_checkpoint(log_dir: Path) -> dict:
    path = log_dir / "checkpoints" / "test" / "last.ckpt"
    assert path.is_file(), f"no checkpoint at {path}"
    return torch.load(path, map_location="cpu", weights_only=True)


# --- one-batch fits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logger", "trainer"),
    [("csv", "default"), ("tensorboard", "cpu"), ("wandb", "cpu"), ("many", "default")],
)
def test_stage2_fit_with_each_logger(
    logger, trainer, tiny_tokenizer_path, data_root, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_home").mkdir()
    out = tmp_path / "out"
    overrides = [*stage2(tiny_tokenizer_path, data_root, tmp_path), f"logger={logger}"]
    one_batch = ["+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"]
    run_train([*overrides, f"trainer={trainer}", *one_batch], out)

    # One optimizer step happened and the last checkpoint holds it.
    assert last_checkpoint(tmp_path / "logs")["global_step"] == 1
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    if logger in ("csv", "many"):
        metrics = (out / "csv" / "version_0" / "metrics.csv").read_text()
        assert "train/loss" in metrics.splitlines()[0]
        assert "val/loss" in metrics.splitlines()[0]
        hparams = (out / "csv" / "version_0" / "hparams.yaml").read_text()
        assert "tokenizer_ckpt" in hparams
    if logger in ("tensorboard", "many"):
        assert any(p.startswith("tensorboard/") and "events.out.tfevents" in p for p in written)
    if logger == "wandb":
        runs = list((out / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, written
        assert list(runs[0].glob("*.wandb")), "the offline run holds no data file"
    if logger == "csv":
        assert not any(p.startswith(("tensorboard/", "wandb/")) for p in written)


def test_validation_inpaints_with_fid_disabled(tiny_tokenizer_path, data_root, tmp_path):
    out = tmp_path / "out"
    overrides = [
        o for o in stage2(tiny_tokenizer_path, data_root, tmp_path) if "callbacks" not in o
    ]
    overrides += ["metrics.fid.enabled=false", "total_iter=2", "logger=csv"]
    cfg = run_train([*overrides, "+trainer.limit_train_batches=1"], out)
    assert cfg.callbacks.inpainting_fid is not None
    header = (out / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/loss", "val/psnr_masked", "val/ssim_masked"} <= set(header)
    assert "val/fid" not in header  # no Inception network was built
    # Checkpoints fall back to monitoring val/loss.
    checkpoint = last_checkpoint(tmp_path / "logs")
    states = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert states and states[0]["monitor"] == "val/loss"


def test_debug_fdr_runs_one_batch_and_writes_nothing(tiny_tokenizer_path, data_root, tmp_path):
    out = tmp_path / "out"
    overrides = [
        o for o in stage2(tiny_tokenizer_path, data_root, tmp_path) if "callbacks" not in o
    ]
    cfg = run_train([*overrides, "debug=fdr"], out)
    assert cfg.trainer.fast_dev_run is True
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.callbacks is None and cfg.logger is None
    # fast_dev_run: no checkpoints, no logs (only the token cache is built).
    assert not (tmp_path / "logs").exists()
    assert not out.exists() or not any(out.rglob("*.ckpt"))
    assert list((tmp_path / "cache" / "tokens").glob("tokens-*.pt"))


def test_stage1_tokenizer_fit(data_root, tmp_path):
    out = tmp_path / "out"
    overrides = [
        "experiment=tokenizer",
        "tokenizer=tiny",
        f"data_root={data_root}",
        f"paths.log_dir={tmp_path}/logs",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.val_limit=2",
        "trainer.max_steps=1",
        "trainer.log_every_n_steps=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "+trainer.num_sanity_val_steps=0",
        "run_name=test",
    ]
    cfg = run_train(overrides, out)
    assert cfg.model._target_ == "maskgit.modules.tokenizer.VQGANModule"
    checkpoint = last_checkpoint(tmp_path / "logs")
    assert checkpoint["global_step"] == 1
    assert checkpoint["hyper_parameters"]["vqgan"]["num_codebook_vectors"] == 64
    assert any(k.startswith("vqgan.codebook.") for k in checkpoint["state_dict"])
    # The checkpoint monitor follows the tokenizer's metric.
    assert "val/psnr" in (out / "csv" / "version_0" / "metrics.csv").read_text()


def decoder_finetune(
    tokenizer: Path, data: Path, tmp: Path, fid: bool, experiment: str = "tokenizer_cats_local_gan"
) -> list[str]:
    """Overrides for two batches of a decoder fine-tune experiment over the tiny tokenizer."""
    return [
        f"experiment={experiment}",
        "tokenizer=tiny",
        f"init_from={tokenizer}",
        f"data_root={data}",
        f"paths.log_dir={tmp}/logs",
        f"metrics.fid.enabled={str(fid).lower()}",
        f"metrics.fid.weights_path={FID_WEIGHTS}",
        "metrics.fid.required=true",
        "model.lr=1e-2",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.val_limit=4",
        "trainer.max_epochs=1",
        "trainer.max_time=null",
        "trainer.log_every_n_steps=1",
        "+trainer.limit_train_batches=2",
        "+trainer.num_sanity_val_steps=0",
        "run_name=test",
    ]


@pytest.mark.parametrize("experiment", ["tokenizer_cats_local_gan"])
def test_decoder_finetune_keeps_every_token(experiment, tiny_tokenizer_path, data_root, tmp_path):
    # A decoder fine-tune (patch-GAN with adaptive weight, frozen encoder and codebook) from
    # a trained tokenizer: the decoder moves, no token changes.
    out = tmp_path / "out"
    overrides = decoder_finetune(tiny_tokenizer_path, data_root, tmp_path, False, experiment)
    run_train(overrides, out)
    checkpoint = tmp_path / "logs" / "checkpoints" / "test" / "last.ckpt"
    tuned = load_tokenizer(checkpoint)
    original = load_tokenizer(tiny_tokenizer_path)
    changed = {
        key for key, value in original.state_dict().items()
        if not torch.equal(value, tuned.state_dict()[key])
    }  # fmt: skip
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    images = torch.stack([load_image(p, 64) for p in sorted((data_root / "train").iterdir())])
    assert torch.equal(tuned.tokenize(images), original.tokenize(images))
    assert tokenizer_fingerprint(tuned) == tokenizer_fingerprint(original)

    metrics = (out / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/g_adv" in metrics and "train/d_loss" in metrics and "train/gan_weight" in metrics
    if experiment == "tokenizer_cats_local_gan":  # its regularisers ran, and were finite
        header, *rows = metrics.splitlines()
        for name in ("train/lecam", "train/feature_matching"):
            column = header.split(",").index(name)
            values = [float(r.split(",")[column]) for r in rows if r.split(",")[column]]
            assert values and all(math.isfinite(v) and v >= 0 for v in values)
    # Without FID the best checkpoint follows val/psnr instead of val/rfid.
    assert list((tmp_path / "logs" / "checkpoints" / "test").glob("epoch*.ckpt"))


def test_tokenizer_init_from_refuses_other_token_settings(tiny_tokenizer_path):
    config = tiny_tokenizer_config()
    config["l2_normalize_codes"] = not config.get("l2_normalize_codes", False)
    module = VQGANModule(vqgan=config)
    with pytest.raises(CheckpointError, match=r"init_from=.*l2_normalize_codes"):
        module.init_from(tiny_tokenizer_path)
    with pytest.raises(CheckpointError, match=r"init_from=.*does not exist"):
        module.init_from(tiny_tokenizer_path.with_name("missing.pt"))


def test_decoder_finetune_logs_reconstruction_fid(tiny_tokenizer_path, data_root, tmp_path):
    if not FID_WEIGHTS.is_file():
        pytest.skip(f"needs the TF-FID Inception weights at {FID_WEIGHTS} (../shared/models)")
    out = tmp_path / "out"
    run_train(decoder_finetune(tiny_tokenizer_path, data_root, tmp_path, fid=True), out)
    rows = (out / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("val/rfid")
    values = [float(row.split(",")[column]) for row in rows[1:] if row.split(",")[column]]
    # One value per validation (tokenizer_cats_local_gan validates twice an epoch).
    assert values and all(value > 0 for value in values)


# --- configuration -----------------------------------------------------------------------


# conf/gamma/ is mounted as these two groups (maskgit.hydra_setup); it is no group of its own.
GAMMA_MOUNTS = ("mask", "schedule")


def all_options() -> list[tuple[str, str]]:
    options = []
    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        names = [path.stem for path in sorted(group.glob("*.yaml"))]
        for name in GAMMA_MOUNTS if group.name == "gamma" else (group.name,):
            options += [(name, stem) for stem in names]
    return options


@pytest.mark.parametrize(("group", "option"), all_options(), ids=lambda v: str(v))
def test_every_config_option_composes_and_resolves(group, option, tmp_path):
    name = "evaluate" if group in EVALUATE_GROUPS else "train"
    overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}"]
    if name == "evaluate":
        overrides.append(f"output_dir={tmp_path}")
    cfg = compose_config(name, overrides)
    assert cfg.hydra.runtime.choices[group] == option
    resolved = resolve(cfg)
    # Every _target_ the option brings in can be imported.
    for target in targets(resolved):
        assert hydra.utils.get_object(target) is not None, target
    if group == "method":
        assert resolved["method"]["_target_"].startswith("maskgit.baselines.")
        assert resolved["overrides"] == overrides
    if group in ("model", "transformer") and option not in ("vqgan", "mask_aware"):
        # The transformer's classes are the tokenizer's codes.
        assert (
            resolved["model"]["transformer"]["num_codebook_vectors"]
            == resolved["tokenizer"]["num_codebook_vectors"]
        )
    if group == "transformer":
        # Sizes from transformer/<option>.yaml, wired by model/maskgit.yaml.
        sizes = OmegaConf.to_container(OmegaConf.load(CONF / "transformer" / f"{option}.yaml"))
        assert sizes and {k: resolved["model"]["transformer"][k] for k in sizes} == sizes
    if group in ("mask", "schedule"):
        # The gamma config of that name, mounted in place (and used where each is read).
        gamma = OmegaConf.to_container(OmegaConf.load(CONF / "gamma" / f"{option}.yaml"))
        assert resolved[group] == gamma
        assert resolved[group]["_target_"] == f"maskgit.schedules.{option}"
        used = (
            resolved["model"]["mask_schedule"]
            if group == "mask"
            else resolved["decoding"]["schedule"]
        )
        assert used == gamma


def test_option_lists_cover_the_known_groups():
    groups = {g for g, _ in all_options()}
    expected = {"attention", "callbacks", "data", "debug", "decoding", "experiment", "hydra"}
    expected |= {"logger", "mask", "method", "metrics", "model", "paths", "schedule"}
    assert expected | {"tokenizer", "trainer", "transformer"} <= groups
    assert "gamma" not in groups  # only mounted, as mask and schedule


@pytest.mark.parametrize(
    ("override", "named"),
    [("mask=nope", "mask/nope"), ("model.nonexistent=1", "model.nonexistent")],
)
def test_unknown_option_is_a_clear_hydra_error(override, named, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", override, f"paths.log_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert result.returncode != 0
    assert named in result.stderr, result.stderr[-2000:]
    # A composition error: nothing was trained.
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()


# --- multi-process and resuming ------------------------------------------------------------


@pytest.mark.slow
def test_ddp_cpu_two_processes_fit(tiny_tokenizer_path, data_root, tmp_path):
    overrides = stage2(tiny_tokenizer_path, data_root, tmp_path, steps=2)
    overrides += ["trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=2", "logger=csv"]
    result = subprocess.run(
        [sys.executable, "train.py", *overrides, f"paths.output_dir={tmp_path}/out"],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    assert "All distributed processes registered. Starting with 2 processes" in (
        result.stderr + result.stdout
    )
    checkpoint = last_checkpoint(tmp_path / "logs")
    assert checkpoint["global_step"] == 2
    assert not any(k.startswith("tokenizer.") for k in checkpoint["state_dict"])


def transformer_weights(log_dir: Path) -> dict[str, torch.Tensor]:
    state = last_checkpoint(log_dir)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("transformer.")}


@pytest.mark.parametrize("token_cache", [True, False])
def test_resume_matches_an_uninterrupted_run(token_cache, tiny_tokenizer_path, data_root, tmp_path):
    # 8 images, batches of 4: 2 steps per epoch; the interrupted run stops after epoch 0.
    def overrides(run: Path, steps: int) -> list[str]:
        return [
            *stage2(tiny_tokenizer_path, data_root, run, steps=steps),
            "trainer.deterministic=true",
            f"data.token_cache={str(token_cache).lower()}",
            "model.lr_decay_steps=4",
            "logger=csv",
        ]

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_train(overrides(straight, 4), straight / "out")
    run_train(overrides(resumed, 2), resumed / "out1")
    first_leg = transformer_weights(resumed / "logs")
    run_train([*overrides(resumed, 4), "ckpt_path=last"], resumed / "out2")

    expected, got = transformer_weights(straight / "logs"), transformer_weights(resumed / "logs")
    assert last_checkpoint(resumed / "logs")["global_step"] == 4
    # The second leg trained (weights moved) and ended where the straight run did.
    assert any(not torch.equal(first_leg[k], got[k]) for k in got)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(
            got[key], expected[key], rtol=0, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}"
        )


def periodic_checkpoint(log_dir: Path) -> dict:
    path = log_dir / "checkpoints" / "test" / "periodic" / "last.ckpt"
    assert path.is_file(), f"no checkpoint at {path}"
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_run_ending_between_validations_leaves_its_final_step_in_last_ckpt(
    tiny_tokenizer_path, data_root, tmp_path
):
    # 8 images, batches of 4: 2 steps per epoch, validation every second epoch (as the
    # fine-tuning experiments run). Validation after epoch 1 saves step 4; max_steps=5 ends
    # the run in epoch 2, which validates nothing, and no periodic save falls on step 5.
    overrides = [
        *stage2(tiny_tokenizer_path, data_root, tmp_path, steps=5),
        "trainer.check_val_every_n_epoch=2",
        "logger=csv",
    ]
    run_train(overrides, tmp_path / "out")
    folder = tmp_path / "logs" / "checkpoints" / "test"
    assert sorted(p.name for p in folder.glob("epoch*.ckpt")) == ["epoch001-step000004.ckpt"]
    last, periodic = last_checkpoint(tmp_path / "logs"), periodic_checkpoint(tmp_path / "logs")
    # What `python -m maskgit.export ... last.ckpt` ships is the step the run ended at.
    assert last["global_step"] == periodic["global_step"] == 5
    for key, value in periodic["state_dict"].items():
        assert torch.equal(last["state_dict"][key], value), key


@pytest.mark.parametrize(
    ("token_cache", "num_workers", "signal_name"),
    [
        (True, 0, "SIGKILL"),
        (False, 1, "SIGKILL"),
        (True, 0, "SIGTERM"),
        (False, 1, "SIGTERM-group"),
    ],
    ids=["tokens", "images-worker", "sigterm", "sigterm-to-group-with-worker"],
)
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_state(
    token_cache, num_workers, signal_name, tiny_tokenizer_path, data_root, tmp_path
):
    # 8 images, batches of 2: 4 steps per epoch. The killed run gets SIGKILL during step 3
    # (mid-epoch 0, its last checkpoint is from step 2); the resumed run goes on to step 6,
    # across the epoch boundary. Flips and generated training masks are random per sample.
    def overrides(run: Path) -> list[str]:
        return [
            *stage2(tiny_tokenizer_path, data_root, run, steps=6),
            "trainer.deterministic=true",
            f"data.token_cache={str(token_cache).lower()}",
            f"data.num_workers={num_workers}",
            "data.batch_size=2",
            "data.train_masks={_target_:maskgit.data.masks.GeneratedMasks,seed:null}",
            "model.inpaint_mask_fraction=0.5",
            "model.lr_decay_steps=6",
            "callbacks.periodic_checkpoint.every_n_train_steps=1",
            "logger=csv",
        ]

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_train(overrides(straight), straight / "out")

    killed = subprocess.run(
        [
            sys.executable, "train.py", *overrides(resumed),
            "+callbacks.kill_switch._target_="
            + ("faults.KillAtStep" if signal_name == "SIGKILL" else "faults.SigtermDuringStep"),
            "+callbacks.kill_switch.step=3",
            *(["+callbacks.kill_switch.group=true"] if signal_name == "SIGTERM-group" else []),
            f"paths.output_dir={resumed}/out1",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        start_new_session=True,  # its own process group: a group signal stays inside it
    )  # fmt: skip
    if signal_name == "SIGKILL":
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert periodic_checkpoint(resumed / "logs")["global_step"] == 2
    else:  # stopped at the end of the step, which is saved
        assert killed.returncode == 143, killed.stderr[-3000:]
        assert "SIGTERM: stopped after step 3" in killed.stdout + killed.stderr
        assert periodic_checkpoint(resumed / "logs")["global_step"] == 3

    run_train([*overrides(resumed), "ckpt_path=last"], resumed / "out2")

    expected, got = periodic_checkpoint(straight / "logs"), periodic_checkpoint(resumed / "logs")
    assert got["global_step"] == expected["global_step"] == 6
    transformer = [k for k in expected["state_dict"] if k.startswith("transformer.")]
    assert transformer
    for key in transformer:
        torch.testing.assert_close(
            got["state_dict"][key], expected["state_dict"][key], rtol=0, atol=1e-6,
            msg=lambda m, key=key: f"{key}: {m}",
        )  # fmt: skip


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_tokenizer_path, data_root, tmp_path
):
    overrides = [
        *stage2(tiny_tokenizer_path, data_root, tmp_path, steps=4),
        "callbacks.periodic_checkpoint.every_n_train_steps=1",
        "+callbacks.poison._target_=faults.PoisonAt",
        "+callbacks.poison.step=2",
    ]
    with pytest.raises(NonFiniteLossError, match=r"at step 2"):
        run_train(overrides, tmp_path / "out")
    kept = periodic_checkpoint(tmp_path / "logs")
    assert kept["global_step"] == 2
    weights = [v for k, v in kept["state_dict"].items() if k.startswith("transformer.")]
    assert weights and all(torch.isfinite(w).all() for w in weights)


def test_resume_with_another_architecture_lists_what_does_not_fit(
    tiny_tokenizer_path, data_root, tmp_path
):
    run_train(stage2(tiny_tokenizer_path, data_root, tmp_path, steps=1), tmp_path / "out1")
    wider = [*stage2(tiny_tokenizer_path, data_root, tmp_path, steps=2), "ckpt_path=last"]
    with pytest.raises(CheckpointError) as error:
        run_train([*wider, "transformer.dim=48"], tmp_path / "out2")
    message = str(error.value)
    assert "last.ckpt" in message and "MaskGitModule" in message
    assert "transformer.tok_emb.weight: expected (65, 48), got (65, 32)" in message


def test_init_from_starts_a_fresh_run_from_another_runs_weights(
    tiny_tokenizer_path, data_root, tmp_path
):
    source, tuned = tmp_path / "source", tmp_path / "tuned"
    run_train(stage2(tiny_tokenizer_path, data_root, source, steps=2), source / "out")
    source_ckpt = source / "logs" / "checkpoints" / "test" / "last.ckpt"
    # lr 1e-30: the fine-tune run takes one step that changes nothing, so it ends on exactly the
    # source weights (a run from the seed's initialisation would not), at its own step 1.
    run_train(
        [
            *stage2(tiny_tokenizer_path, data_root, tuned, steps=1),
            f"init_from={source_ckpt}",
            "model.lr=1e-30",  # too small to move fp32 weights (lr must be > 0)
        ],
        tuned / "out",
    )
    expected, got = transformer_weights(source / "logs"), transformer_weights(tuned / "logs")
    assert last_checkpoint(tuned / "logs")["global_step"] == 1
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key

    with pytest.raises(CheckpointError) as error:
        run_train(
            [
                *stage2(tiny_tokenizer_path, data_root, tmp_path / "wider", steps=1),
                f"init_from={source_ckpt}",
                "model.transformer.dim=48",
            ],
            tmp_path / "wider" / "out",
        )
    message = str(error.value)
    assert "init_from=" in message and "last.ckpt" in message
    assert "tok_emb.weight: expected (65, 48), got (65, 32)" in message


def test_128_pixel_images_end_to_end(data_root, tmp_path):
    """data.image_size=128 alone: a tokenizer, then stage 2 over it (its token grid follows
    from the image size), then evaluate.py, on the sample photos; tiny configs."""
    from maskgit.export import main as export

    # The sample's masks are 64x64: generated masks at 128 (the README's command for them).
    size = ["data.image_size=128", "data.num_workers=0", "data.batch_size=4", "data.val_limit=2"]
    short = ["trainer.max_steps=1", "+trainer.limit_val_batches=1",
             "+trainer.num_sanity_val_steps=0", "run_name=test"]  # fmt: skip
    run_train(
        ["experiment=tokenizer", "tokenizer=tiny", f"data_root={data_root}",
         f"paths.log_dir={tmp_path}/tok", *size, *short],
        tmp_path / "out_tok",
    )  # fmt: skip
    tokenizer = tmp_path / "tokenizer.safetensors"
    export(
        ["tokenizer", str(tmp_path / "tok" / "checkpoints" / "test" / "last.ckpt"), str(tokenizer)]
    )
    overrides = [o for o in stage2(tokenizer, data_root, tmp_path) if not o.startswith("data.")]
    generated = ["data.val_masks.folder=null", "data.val_masks.kind=boxes"]
    run_train([*overrides, *size, *generated], tmp_path / "out_stage2")
    checkpoint = last_checkpoint(tmp_path / "logs")
    state = checkpoint["state_dict"]
    assert state["transformer.pos_emb"].shape[-2] == (128 // 4) ** 2  # 32 x 32 tokens
    model = tmp_path / "maskgit.safetensors"
    export(["maskgit", str(tmp_path / "logs" / "checkpoints" / "test" / "last.ckpt"), str(model),
            "--tokenizer", str(tokenizer)])  # fmt: skip
    run = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "evaluate.py", f"ckpt={model}", f"data_root={data_root}",
         "data.image_size=128", "data.val_masks.folder=null", "data.val_masks.kind=boxes",
         "data.num_workers=0", "total_iter=2", "metrics.fid.enabled=false",
         f"paths.log_dir={tmp_path}/eval_logs", f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = sorted((run / "inpainted").iterdir())
    assert len(outputs) == 4 and Image.open(outputs[0]).size == (128, 128)
    # A pinned token count that disagrees with the image size is named.
    with pytest.raises(Exception, match=r"num_image_tokens=256, but data.image_size=128"):
        run_train([*overrides, *size, *generated, "transformer.num_image_tokens=256"],
                  tmp_path / "out_bad")  # fmt: skip
