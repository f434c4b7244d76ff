"""Config layout: one gamma group mounted as mask= and schedule=, the transformer size group,
one name per decoding option, the sweep summary on evaluate.py multiruns only, and the
decoding noise scale of both rules."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import warnings

import hydra
import pytest
import torch
from conftest import CONF, ROOT, compose_config
from omegaconf import OmegaConf

from maskgit import hydra_setup
from maskgit.checkpoints import read_checkpoint
from maskgit.hydra_setup import single_decoding_names
from maskgit.sweep import sweep_figure

GAMMAS = sorted(path.stem for path in (CONF / "gamma").glob("*.yaml"))


def gamma_file(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "gamma" / f"{name}.yaml"))


def resolved(cfg, key: str):
    return OmegaConf.to_container(cfg[key], resolve=True)


# --- one gamma group, mounted twice ---------------------------------------------------------


def test_gamma_is_one_group_of_files():
    assert GAMMAS == ["arccos", "cosine", "cubic", "linear", "log", "power", "sqrt", "square"]
    assert not (CONF / "mask").exists() and not (CONF / "schedule").exists()


@pytest.mark.parametrize("name", GAMMAS)
def test_mask_and_schedule_options_are_the_gamma_configs(name):
    cfg = compose_config("train", [f"mask={name}", "schedule=linear"])
    assert resolved(cfg, "mask") == gamma_file(name)
    assert resolved(cfg, "schedule") == gamma_file("linear")
    assert OmegaConf.to_container(cfg.model, resolve=True)["mask_schedule"] == gamma_file(name)
    evaluate = compose_config("evaluate", [f"schedule={name}"])
    assert resolved(evaluate, "decoding")["schedule"] == gamma_file(name)
    assert evaluate.hydra.runtime.choices["schedule"] == name


def test_readme_commands_compose():
    train = compose_config("train", ["trainer.devices=4", "mask=cosine"])
    assert resolved(train, "mask")["_target_"] == "maskgit.schedules.cosine"
    evaluate = compose_config(
        "evaluate",
        ["ckpt=checkpoints/maskgit_cats_local.safetensors", "schedule=square", "total_iter=20"],
    )
    decoder = hydra.utils.instantiate(evaluate.decoding)
    assert decoder.total_iter == 20
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(decoder.schedule(grid), 1 - grid**2)
    # The group's options keep their own settings: power's exponent, overridable by name.
    power = compose_config("evaluate", ["schedule=power", "schedule.exponent=3"])
    assert resolved(power, "decoding")["schedule"]["exponent"] == 3


def test_gamma_is_no_option_of_its_own():
    with pytest.raises(hydra.errors.ConfigCompositionException, match="gamma"):
        compose_config("train", ["gamma=cosine"])


# --- transformer sizes + one module config --------------------------------------------------


def test_shipped_size_composes_to_the_checkpoint_architecture():
    """experiment=maskgit_cats_local gives the transformer the shipped checkpoint records."""
    checkpoint = read_checkpoint(ROOT / "checkpoints" / "maskgit_cats_local.safetensors")
    cfg = compose_config("train", ["experiment=maskgit_cats_local"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["_target_"] == "maskgit.modules.maskgit.MaskGitModule"
    recorded = dict(checkpoint["hyper_parameters"]["transformer"])
    # The token count is not a second setting: it follows from the image size (64 / 4)^2
    # (older files record the count, newer ones the image size).
    assert model["transformer"].pop("num_image_tokens") is None
    tokens = (
        recorded.pop("num_image_tokens") or (checkpoint["hyper_parameters"]["image_size"] // 4) ** 2
    )
    assert (model["image_size"] // 4) ** 2 == tokens == 256
    assert list(model["transformer"].items()) == list(recorded.items())


@pytest.mark.parametrize(
    ("size", "dims"),
    [("tiny", (32, 2, 64, 4)), ("small", (256, 6, 512, 8)), ("lab", (768, 15, 1536, 16))],
)
def test_transformer_group_sets_the_sizes(size, dims):
    cfg = compose_config("train", [f"transformer={size}", "tokenizer=tiny", "attention=manual"])
    transformer = OmegaConf.to_container(cfg.model, resolve=True)["transformer"]
    got = tuple(transformer[k] for k in ("dim", "n_layers", "hidden_dim", "num_heads"))
    assert got == dims
    # The wiring is the module config's: codes from the tokenizer, attention from its group.
    assert transformer["num_codebook_vectors"] == 64 and transformer["attn_impl"] == "manual"
    sizes = OmegaConf.to_container(OmegaConf.load(CONF / "transformer" / f"{size}.yaml"))
    assert set(sizes) == {
        "num_image_tokens",
        "dim",
        "n_layers",
        "hidden_dim",
        "num_heads",
        "dropout",
    }


# --- one name per decoding option -----------------------------------------------------------


@pytest.fixture()
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(hydra_setup, "_warned", set())


def test_top_level_decoding_options_need_no_fixing(fresh_warnings):
    cfg = compose_config("evaluate", ["choice_temperature=3.0", "total_iter=12", "sweet_spot=6"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single_decoding_names(cfg)
    decoding = resolved(cfg, "decoding")
    assert (decoding["choice_temperature"], decoding["total_iter"], decoding["sweet_spot"]) == (
        3.0,
        12,
        6,
    )


def test_old_decoding_names_warn_once_and_move_to_the_top_level(fresh_warnings):
    overrides = ["decoding.choice_temperature=3.0", "decoding.total_iter=12"]
    overrides.append("decoding.schedule={_target_:maskgit.schedules.linear,_partial_:true}")
    cfg = compose_config("evaluate", overrides)
    assert cfg.choice_temperature == 4.5  # what the run would otherwise record: a second value
    with pytest.warns(FutureWarning) as record:
        single_decoding_names(cfg)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 3
    assert "set choice_temperature=..." in messages[0] and "decoding.total_iter" in messages[2]
    assert (cfg.choice_temperature, cfg.total_iter) == (3.0, 12)
    assert cfg.schedule._target_ == "maskgit.schedules.linear"
    # The decoding group reads the top-level options again: one value each.
    assert OmegaConf.to_container(cfg.decoding)["total_iter"] == "${total_iter}"
    cfg.total_iter = 16
    assert cfg.decoding.total_iter == 16
    # Once per option: the next run of the process (a multirun job) does not warn again.
    again = compose_config("evaluate", ["decoding.choice_temperature=2.0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single_decoding_names(again)
    assert again.choice_temperature == 2.0


# --- the decoding noise scale of both rules -------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # paper: 4.5 * (1 - t/8)
        ("default", {0: 4.5, 2: 3.375, 4: 2.25, 8: 0.0}),
        # lab: 4.5 * (1 - cos(pi/2 * t/8)); t=2: 4.5 * (1 - cos(pi/8)) = 4.5 * 0.0761204675
        ("lab", {0: 0.0, 2: 0.34254210369920967, 4: 1.3180194846605362, 8: 4.5}),
    ],
)
def test_noise_scale_of_each_rule(rule, expected):
    cfg = compose_config(
        "evaluate",
        [f"decoding={rule}", "choice_temperature=4.5", "total_iter=8", "schedule=cosine"],
    )
    decoder = hydra.utils.instantiate(cfg.decoding)
    assert decoder.sampler.noise == ("paper" if rule == "default" else "lab")
    for step, value in expected.items():
        scale = decoder.sampler.noise_scale(step, 8, decoder.schedule)
        assert scale == pytest.approx(value, abs=1e-12), step
    # The literals are the formulas' values.
    formula = 4.5 * (1 - math.cos(math.pi / 8)) if rule == "lab" else 4.5 * (1 - 2 / 8)
    assert expected[2] == pytest.approx(formula, abs=1e-15)


def test_named_training_runs_started_in_the_same_second_get_their_own_run_folders():
    # Two arms of an A/B launched together: one Hydra folder would hold one arm's config/log.
    time = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
    unnamed = compose_config("train")
    assert unnamed.hydra.run.dir == f"{unnamed.paths.log_dir}/train/runs/{unnamed.run_name}"
    assert re.fullmatch(time, unnamed.run_name)
    for arm in ("arm_a", "arm_b"):
        named = compose_config("train", [f"run_name={arm}"])
        folder = named.hydra.run.dir.removeprefix(f"{named.paths.log_dir}/train/runs/")
        assert re.fullmatch(f"{time}_{arm}", folder), folder
    evaluate = compose_config("evaluate").hydra.run.dir
    assert re.fullmatch(time, evaluate.rsplit("/", 1)[1]), evaluate


# --- the sweep summary: evaluate.py multiruns only, integer ticks ---------------------------


def test_sweep_summary_is_attached_to_evaluate_only():
    assert "sweep_summary" not in (compose_config("train").hydra.callbacks or {})
    callbacks = compose_config("evaluate").hydra.callbacks
    assert callbacks.sweep_summary._target_ == "maskgit.sweep.SweepSummary"


@pytest.mark.parametrize("x_key", ["sweet_spot", "total_iter"])
def test_sweep_plot_has_integer_ticks(x_key):
    import matplotlib.pyplot as plt

    # Two close integers: matplotlib's default ticks would be 1.0, 1.2, ..., 2.0.
    rows = [{"schedule": "cosine", "total_iter": "8", x_key: value, "psnr": 15.0 + i}
            for i, value in enumerate(["1", "2"])]  # fmt: skip
    figure = sweep_figure(rows)
    try:
        axis = figure.axes[0]
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert axis.get_xlabel() == x_key
    finally:
        plt.close(figure)


@pytest.mark.slow
def test_readme_multirun_writes_the_summary(tmp_path):
    """`evaluate.py -m sweet_spot=... schedule=cosine,linear,...` as in the README (with the
    cheap masked-input method on 2 images), and an old decoding name, which warns."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable, "evaluate.py", "-m", "sweet_spot=1,2", "schedule=cosine,linear",
            "total_iter=2", "decoding.choice_temperature=3.0", "method=masked_input",
            "metrics.fid.enabled=false", "data.test_limit=2", "data.num_workers=0",
            "num_step_grids=0", f"paths.log_dir={tmp_path}/logs", f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("decoding.choice_temperature is an old name") == 1
    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["sweet_spot"], r["schedule"]) for r in rows] == [
        ("1", "cosine"),
        ("1", "linear"),
        ("2", "cosine"),
        ("2", "linear"),
    ]
    assert (sweep / "summary.png").is_file()
    config = json.loads((sweep / "0" / "metrics.json").read_text())["config"]
    assert config["choice_temperature"] == config["decoding"]["choice_temperature"] == 3.0
    assert config["decoding"]["schedule"]["_target_"] == "maskgit.schedules.cosine"


@pytest.mark.parametrize(
    ("script", "says", "options"),
    [
        (
            "evaluate.py",
            "evaluate.py: inpaint a test set",
            ["ckpt=PATH", "num_seeds=N", "sampler="],
        ),
        ("train.py", "train.py: train the tokenizer", ["experiment=NAME", "data.image_size=N"]),
    ],
)
def test_help_says_what_the_script_does_and_names_its_main_options(script, says, options):
    result = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith(says)
    assert all(option in result.stdout for option in options)
    assert "Configuration groups" not in result.stdout  # not Hydra's stock dump of every group
