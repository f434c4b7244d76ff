"""MaskGIT image inpainting on PyTorch Lightning + Hydra."""

__version__ = "0.1.0"

# Registers the `trainer_precision` config resolver used by conf/trainer/.
import maskgit.precision  # noqa: F401
