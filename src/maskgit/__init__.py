"""MaskGIT image inpainting on PyTorch Lightning + Hydra.

The Python API (imported on first use, so ``import maskgit`` stays light)::

    from maskgit import inpaint, load_maskgit, save_image

    model = load_maskgit("checkpoints/maskgit_cats_local.safetensors")
    save_image(inpaint(model, "cat.jpg", "cat_mask.png"), "cat_inpainted.png")
"""

from importlib import import_module

# Registers the `trainer_precision` config resolver used by conf/trainer/.
import maskgit.precision  # noqa: F401

__version__ = "0.1.0"

# Public name -> the module that defines it.
_API = {
    "load_maskgit": "maskgit.loading",
    "inpaint": "maskgit.api",
    "decoder_for": "maskgit.api",
    "load_image": "maskgit.data.images",
    "load_mask": "maskgit.data.images",
    "save_image": "maskgit.data.images",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'maskgit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
