"""``maskgit-app``: a local web page to inpaint your own photo with a brushed hole.

    maskgit-app                       # http://127.0.0.1:7860, the shipped model
    maskgit-app --ckpt my.safetensors --port 8000
    python -m maskgit.app --host 0.0.0.0   # reachable from other machines: you ask for it

Upload a photo (or pick a sample), brush over what to fill, choose the decoding (T, schedule,
sampler, seed, number of fills) and press Fill: the fills (known pixels exact, PNG) and an
animation of the decoding steps (latent mask and predicted image per step) appear. The model
loads once; requests queue one at a time on the CPU, each with a progress bar. Offline:
no analytics, no share link, assets served by the app itself (Gradio ships them).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from maskgit.cli import default_checkpoint

SAMPLERS = ("confidence", "lab", "margin", "entropy", "random", "halton")
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_UPLOAD = "25mb"
MAX_STEPS = 32
MAX_FILLS = 8
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "data" / "sample" / "val"


def named_path(value: dict | str | None) -> object:
    """What a browser value names as its file: Gradio FileData's ``path``, or the value."""
    return value.get("path") if isinstance(value, dict) else value


def uploaded_file(value: dict | str | None, folders: list[Path]) -> Path | None:
    """The path of a file the browser names (Gradio's FileData, or a path), which must lie in
    one of the app's own ``folders`` (its upload cache, the sample photos): a client that
    names any other file of the machine gets an error, not the file."""
    if value is None:
        return None
    raw = named_path(value)
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"expected an uploaded file, got {type(value).__name__}")
    path = Path(raw).resolve()
    if not any(path.is_relative_to(folder.resolve()) for folder in folders):
        raise ValueError(f"{raw!r} is not a file uploaded to this app")
    return path


def has_photo(editor: dict | None) -> bool:
    """Whether an ImageMask value (as the browser sends it) holds an uploaded photo."""
    return bool(named_path((editor or {}).get("background")))


def brushed_missing(editor: dict | None, folders: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The photo [H,W,3] uint8 and the brushed hole [H,W] (True = missing) of an ImageMask
    value as the browser sends it: the hole is wherever a layer has paint (alpha > 0)."""
    from maskgit.photo import read_photo

    background = uploaded_file((editor or {}).get("background"), folders)
    if background is None:
        raise ValueError("upload a photo (or pick a sample) first")
    try:
        photo = read_photo(background, "upload")
    except (ValueError, OSError) as error:  # names the upload and what was wrong
        raise ValueError(f"the upload is not an image this app can read: {error}") from error
    missing = np.zeros(photo.shape[:2], dtype=bool)
    for layer in editor.get("layers") or []:
        try:
            with Image.open(uploaded_file(layer, folders)) as picture:
                alpha = np.asarray(picture.convert("RGBA"))[..., 3]
        except OSError as error:
            raise ValueError(f"a brush layer is not a readable image: {error}") from error
        if alpha.shape != missing.shape:
            raise ValueError(
                f"a brush layer is {alpha.shape[1]}x{alpha.shape[0]}, the photo "
                f"{missing.shape[1]}x{missing.shape[0]}"
            )
        missing |= alpha > 0
    if not missing.any():
        raise ValueError("brush over the part of the photo to fill first")
    return photo, missing


def checked_options(total_iter, schedule, sampler, seed, num_samples) -> dict:
    """The decoding options as sent (unchecked by the browser's widgets when a client calls
    the API directly), or a ValueError naming the one out of range."""
    from maskgit.schedules import SCHEDULES

    def integer(name, value, low, high):
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number != value or not low <= number <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        return number

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
    return {
        "total_iter": integer("steps T", total_iter, 1, MAX_STEPS),
        "schedule": schedule,
        "sampler": sampler,
        "seed": integer("seed", seed, 0, 2**31 - 1),
        "num_samples": integer("fills", num_samples, 1, MAX_FILLS),
    }


def build_app(model, max_pixels: int = DEFAULT_MAX_PIXELS, samples_dir: Path = SAMPLES_DIR):
    """The Gradio Blocks of the app around a loaded MaskGIT ``model``."""
    import gradio as gr
    from gradio.utils import get_upload_folder

    from maskgit.api import inpaint_photo
    from maskgit.schedules import SCHEDULES
    from maskgit.step_pictures import save_animation

    work_dir = Path(get_upload_folder()) / "maskgit-app"
    folders = [Path(get_upload_folder()), samples_dir]

    # gr.Progress() as a default is how Gradio injects the progress bar.
    def fill(editor, total_iter, schedule, sampler, seed, num_samples, progress=gr.Progress()):  # noqa: B008
        # Inputs arrive unprocessed (preprocess=False): this function reads and checks them,
        # so that a bad upload gets a message naming it, not a traceback in the server log.
        try:
            photo, missing = brushed_missing(editor, folders)
            options = checked_options(total_iter, schedule, sampler, seed, num_samples)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        height, width = missing.shape
        if height * width > max_pixels:
            raise gr.Error(
                f"the photo is {width}x{height} = {width * height / 1e6:.1f} MP; this app takes "
                f"up to {max_pixels / 1e6:.1f} MP (scale it down, or start the app with a "
                "larger --max-pixels)"
            )
        progress(0.1, desc="decoding")
        result = inpaint_photo(model, photo, missing=missing, return_steps=True, **options)
        progress(0.9, desc="writing")
        animation = Path(tempfile.mkdtemp(dir=_ensure(work_dir))) / "decoding_steps.gif"
        save_animation(result.decoding_frames(), animation)
        captions = [f"seed {options['seed'] + k}" for k in range(len(result.fills))]
        return list(zip(result.fills, captions)), str(animation)

    samples = sorted(samples_dir.glob("*.jpg"))[:6] if samples_dir.is_dir() else []
    with gr.Blocks(title="MaskGIT inpainting") as app:
        gr.Markdown(
            "## MaskGIT inpainting\nUpload a photo or pick a sample, **brush over what to "
            "fill**, press **Fill**. Every pixel you did not brush stays exactly as it was."
        )
        with gr.Row():
            editor = gr.ImageMask(
                label="photo: brush the hole", type="filepath", image_mode="RGBA", format="png",
                sources=["upload", "clipboard"], layers=False, transforms=(),
                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=8),
                elem_id="photo",
            )  # fmt: skip
            with gr.Column():
                total_iter = gr.Slider(1, MAX_STEPS, value=8, step=1, label="steps T")
                schedule = gr.Dropdown(sorted(SCHEDULES), value="cosine", label="schedule")
                sampler = gr.Dropdown(list(SAMPLERS), value="confidence", label="sampler")
                seed = gr.Number(0, precision=0, label="seed")
                num_samples = gr.Slider(
                    1, MAX_FILLS, value=1, step=1, label="fills (seeds seed, seed+1, ...)"
                )
                # Off until the editor holds a photo: pressed earlier, Fill would find none.
                button = gr.Button("Fill", variant="primary", elem_id="fill", interactive=False)
        with gr.Row():
            fills = gr.Gallery(label="fills", format="png", columns=4, elem_id="fills")
            steps = gr.Image(label="decoding steps", type="filepath", elem_id="steps")
        if samples:
            gr.Examples([[str(p)] for p in samples], inputs=[editor], label="sample photos")
        # The editor's change event can fire before the browser has uploaded the photo, and
        # its answer can arrive after upload's: so a photo enables Fill, and only clear
        # disables it (fill() checks the photo again anyway).
        gr.on(
            [editor.upload, editor.change], inputs=[editor], outputs=[button],
            fn=lambda value: gr.Button(interactive=True) if has_photo(value) else gr.skip(),
            queue=False, preprocess=False, show_progress="hidden",
        )  # fmt: skip
        editor.clear(lambda: gr.Button(interactive=False), outputs=[button], queue=False)
        button.click(
            fill, inputs=[editor, total_iter, schedule, sampler, seed, num_samples],
            outputs=[fills, steps], concurrency_limit=1, preprocess=False,
        )  # fmt: skip
    app.queue(default_concurrency_limit=1, max_size=64)
    return app


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskgit-app",
        description="A local web page to inpaint your own photo: upload, brush the hole, fill.",
    )
    parser.add_argument("--ckpt", type=Path, default=None,
                        help="MaskGIT checkpoint (default: $MASKGIT_CKPT or the shipped model)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="largest photo accepted, in pixels (default 4096x4096)")  # fmt: skip
    parser.add_argument("--max-upload", default=DEFAULT_MAX_UPLOAD,
                        help="largest upload accepted (default 25mb)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from maskgit.loading import load_maskgit

    ckpt = args.ckpt or default_checkpoint()
    if not ckpt.exists():
        raise SystemExit(
            f"maskgit-app: error: checkpoint {str(ckpt)!r} does not exist; pass --ckpt"
        )
    app = build_app(load_maskgit(ckpt), max_pixels=args.max_pixels)
    app.launch(
        server_name=args.host, server_port=args.port, share=False, inbrowser=False,
        max_file_size=args.max_upload, allowed_paths=[str(SAMPLES_DIR)], footer_links=[],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
