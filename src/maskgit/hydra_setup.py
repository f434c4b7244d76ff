"""What the entry points add to Hydra's composition of ``conf/``.

- :func:`register_gamma_groups`: ``conf/gamma/`` (the schedules gamma(r)) is one group, used
  twice: as the training mask schedule (``mask=cosine``) and as the decoding schedule
  (``schedule=square``). Hydra's own package syntax, ``gamma@mask: cosine``, would make the
  command-line key ``gamma@mask=`` (and leave ``mask=cosine`` silently replacing the node by a
  string), so the two names are registered as groups whose every option mounts the gamma
  config of the same name (``/gamma/<name>@_here_``): ``mask=`` and ``schedule=`` keep
  working, and a gamma file added to ``conf/gamma/`` is an option of both.
- :func:`single_decoding_names`: the decoding options ``total_iter``, ``sweet_spot``,
  ``choice_temperature``, ``schedule`` and ``paste_feather`` (every method's compositing) are
  set at the top level; the ``decoding`` group
  takes them by interpolation. ``decoding.<option>=...`` is the old second name: it warns
  once and moves the value to the top level, so the run's config never says two things.
- the resolver ``run_folder`` (registered on import): a named training run's Hydra folder is
  ``runs/<time>_<run_name>``, so two runs started in the same second (the arms of an A/B
  launched together) keep their own ``.hydra/`` config and log.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GAMMA_GROUP = "gamma"
GAMMA_MOUNTS = ("mask", "schedule")
DECODING_OPTIONS = ("total_iter", "sweet_spot", "choice_temperature", "schedule", "paste_feather")

_warned: set[str] = set()


def run_folder(time: str, run_name: str | None) -> str:
    """``<time>`` for a run without a name of its own (no ``run_name``, or the default one: that
    time), else ``<time>_<run_name>``."""
    return time if run_name in (None, time) else f"{time}_{run_name}"


OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)


def register_gamma_groups(conf_dir: str | Path | None = None) -> list[str]:
    """Register the groups ``mask`` and ``schedule``, each option mounting
    ``conf/gamma/<option>.yaml`` in place. Idempotent; returns the option names."""
    folder = Path(conf_dir) if conf_dir is not None else CONF_DIR
    names = sorted(path.stem for path in (folder / GAMMA_GROUP).glob("*.yaml"))
    if not names:
        raise FileNotFoundError(f"no gamma configs in {folder / GAMMA_GROUP}")
    store = ConfigStore.instance()
    for group in GAMMA_MOUNTS:
        for name in names:
            store.store(
                group=group, name=name, node={"defaults": [f"/{GAMMA_GROUP}/{name}@_here_"]}
            )
    return names


def single_decoding_names(cfg: DictConfig) -> DictConfig:
    """Make the top-level decoding options the only ones: a ``decoding.<option>`` that no
    longer interpolates ``${<option>}`` (set by its old name) warns once, its value moves to
    the top level and the interpolation is restored. Changes ``cfg`` in place."""
    decoding = cfg.get("decoding")
    if not isinstance(decoding, DictConfig):
        return cfg
    for option in DECODING_OPTIONS:
        if option not in decoding or option not in cfg:
            continue
        link = "${" + option + "}"
        node = decoding._get_node(option)
        if OmegaConf.is_interpolation(decoding, option) and node._value() == link:
            continue
        if option not in _warned:
            _warned.add(option)
            warnings.warn(
                f"decoding.{option} is an old name: set {option}=... (the top-level option, "
                f"which the decoding group reads); using the value given to decoding.{option}",
                FutureWarning,
                stacklevel=2,
            )
        with open_dict(cfg):
            cfg[option] = decoding[option]
            decoding[option] = link
    return cfg
