"""Speed benchmark: every path in fp32 and bf16, against this machine's own measured peak.

    python benchmarks/speed.py              # the whole table (about 10 minutes on 2 CPU cores)
    python benchmarks/speed.py --compile    # also torch.compile rows (slow first calls)
    python benchmarks/speed.py --only peak  # one section again, the others kept from the JSON

One run, one table, run on a quiet machine:

- the peak: fp32 and bf16 GEMM and 3x3 convolution GFLOP/s, measured first;
- the transformer's MVTM training step at the shipped size and at dim 512 x 8 layers
  (images/s, model TFLOP/s and its share of the measured bf16 GEMM peak), beside the
  lab-style fp32 step (VQGAN encode per batch, manual attention, full logits);
- the tokenizer's training step (reconstruction phase) in NCHW and channels_last, with the
  profiler's share of time per op of its bf16 step;
- decoding at T=8 with the shipped model (random weights where it is absent), batch 1 and 32;
- FID's Inception feature pass, NCHW against channels_last, with the FID difference;
- the quality parity of bf16 against fp32 decoding, read from the ``benchmarks/quality.py``
  table of the shipped model (:data:`PARITY_FILE`, rows :data:`PARITY_RUNS`).

Writes benchmarks/results/speed_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from maskgit.checkpoints import LAB_TRANSFORMER
from maskgit.decoding import IterativeDecoder
from maskgit.inpainting import inpaint
from maskgit.masking import random_token_mask
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.models.vqgan import VQGAN
from maskgit.modules.maskgit import mvtm_loss
from maskgit.schedules import cosine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"
SHIPPED = ROOT / "checkpoints" / "maskgit_cats_local.pt"
FID_WEIGHTS = SHARED / "models" / "inception" / "weights-inception-2015-12-05-6726825d.pth"
LARGE = {"dim": 512, "n_layers": 8, "hidden_dim": 2048, "num_heads": 8}
# Rows of benchmarks/quality.py's table on the 1,000 val pairs: cosine T=8, one option
# changed. Measured on maskgit_cats_local.pt after its chunk 2 (the file keeps that table).
PARITY_FILE = "quality_local_chunk2"
PARITY_RUNS = {
    "bf16, seed 0": "maskgit cosine T=8",
    "bf16, seed 1": "maskgit cosine T=8 bf16 seed=1",
    "fp32, seed 0": "maskgit cosine T=8 fp32",
    "fp32, seed 1": "maskgit cosine T=8 fp32 seed=1",
}
PRECISIONS = ("32", "bf16")
# The previous table (benchmarks/results/speed_cpu.md at commit 6c88df5, this CPU, fp32):
# its fast training path ran dropout on the attention weights, hence the math kernel.
PREVIOUS = {"train_small_fp32": 5.2, "decode_b1_fp32": 4.7, "decode_b32_fp32": 5.6}


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    return timed_interleaved({"fn": fn}, repeat, warmup)["fn"]


def timed_interleaved(
    fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating rounds: on a shared
    machine a slow spell then falls on every variant alike instead of skewing their ratio."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def precision_variants(compile: bool) -> dict[str, dict]:
    """The variants a row compares: fp32 and bf16 eager, and bf16 compiled with ``compile``."""
    variants: dict[str, dict] = {p: {"precision": p} for p in PRECISIONS}
    if compile:
        variants["compiled_bf16"] = {"precision": "bf16", "compile": True}
    return variants


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


# --- peak -------------------------------------------------------------------------------------


def bench_peak(repeat: int) -> dict[str, dict[str, float]]:
    """GFLOP/s per dtype of a 2048^2 GEMM and of 3x3 convolutions on 32 images of 64x64:
    64->64 (the peak) and 32->32 (the tokenizer's full-resolution layers), forward and
    backward (input and weight gradients), NCHW and channels_last."""
    rows: dict[str, dict[str, float]] = {}
    n = 2048
    for dtype, name in ((torch.float32, "32"), (torch.bfloat16, "bf16")):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        rows.setdefault("gemm", {})[name] = 2 * n**3 / timed(lambda: a @ b, repeat * 3) / 1e9
        for channels, layout in itertools.product((64, 32), ("nchw", "channels_last")):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x = torch.randn(32, channels, 64, 64, dtype=dtype).contiguous(memory_format=fmt)
            w = torch.randn(channels, channels, 3, 3, dtype=dtype).contiguous(memory_format=fmt)
            grad = torch.randn_like(x)
            flops = 2 * 32 * 64 * 64 * channels * channels * 9
            suffix = "" if channels == 64 else "_32ch"

            def backward() -> object:
                return torch.ops.aten.convolution_backward(
                    grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                    [True, True, False],
                )  # fmt: skip

            forward_s = timed(lambda: F.conv2d(x, w, padding=1), repeat * 2)
            rows.setdefault(f"conv_{layout}{suffix}", {})[name] = flops / forward_s / 1e9
            backward_s = timed(backward, repeat * 2)
            rows.setdefault(f"conv_bwd_{layout}{suffix}", {})[name] = 2 * flops / backward_s / 1e9
    return rows


def bench_attention(repeat: int) -> dict[str, dict[str, float]]:
    """GFLOP/s of self-attention at the shipped shape (batch 32, 8 heads, 256 tokens, head
    dim 32, forward): PyTorch's fused CPU kernel, its math backend and the written-out
    version (QK^T, softmax, V)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows: dict[str, dict[str, float]] = {}
    flops = 4 * 32 * 8 * 256 * 256 * 32
    for dtype, name in ((torch.float32, "32"), (torch.bfloat16, "bf16")):
        q, k, v = (torch.randn(32, 8, 256, 32, dtype=dtype) for _ in range(3))

        def written_out() -> Tensor:
            return ((q @ k.transpose(-1, -2)) * 32**-0.5).softmax(-1) @ v

        def math() -> Tensor:
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v)

        with torch.inference_mode():
            for label, fn in (
                ("fused", lambda: F.scaled_dot_product_attention(q, k, v)),
                ("math", math),
                ("written_out", written_out),
            ):
                rows.setdefault(label, {})[name] = flops / timed(fn, repeat * 2) / 1e9
    return rows


# --- transformer training ----------------------------------------------------------------------


def transformer_config(name: str) -> dict:
    """The sizes of conf/transformer/<name>.yaml as trained (no dropout on the attention
    weights: the experiments set attention.attn_dropout=0, which keeps the fused kernel)."""
    if name == "lab":
        return dict(LAB_TRANSFORMER)
    sizes = yaml.safe_load((ROOT / "conf" / "transformer" / f"{name}.yaml").read_text())
    return sizes | {"num_codebook_vectors": 1024, "attn_dropout": 0.0}


def forward_flops(config: dict, predicted: float, tokens: int = 256) -> float:
    """Matmul FLOPs of one transformer forward over ``tokens`` tokens with the output head
    on ``predicted`` of them (2 FLOPs per multiply-add; embeddings and norms ignored)."""
    d, h, layers = config["dim"], config["hidden_dim"], config["n_layers"]
    per_layer = 2 * tokens * (4 * d * d + 2 * d * h) + 4 * tokens * tokens * d
    head = 2 * predicted * (d * d + d * config["num_codebook_vectors"])
    return layers * per_layer + head


def transformer_step(
    config: dict,
    batch: int,
    precision: str,
    lab_style: bool = False,
    lab_tokenizer: VQGAN | None = None,
    compile: bool = False,
) -> tuple[Callable[[], None], list[int]]:
    """One MVTM step (forward, backward, AdamW) and the list it appends masked counts to.

    The fast path reads cached tokens, runs fused attention and the output head only on the
    masked tokens; the lab-style path encodes every batch with the VQGAN, runs the manual
    attention and the full logits, in fp32.
    """
    torch.manual_seed(0)
    model = BidirectionalTransformer(**config).train()
    model.set_attention_impl("manual" if lab_style else "sdpa")
    if compile:
        model.compile_blocks()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(batch, 3, 64, 64)
    cached = torch.randint(0, config["num_codebook_vectors"], (batch, 256))
    masked_tokens: list[int] = []

    def step() -> None:
        tokens = lab_tokenizer.tokenize(images).flatten(1) if lab_style else cached
        mask = random_token_mask(batch, tokens.shape[1], cosine, device=tokens.device)
        masked_tokens.append(int(mask.sum()))
        inputs = tokens.masked_fill(mask, model.mask_token_id)
        with autocast(precision):
            logits = model(inputs)[mask] if lab_style else model.logits_at(inputs, mask)
            loss = mvtm_loss(logits.float(), tokens[mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, masked_tokens


def bench_transformer_steps(
    config: dict, batch: int, repeat: int, variants: dict[str, dict]
) -> dict[str, dict[str, float]]:
    """images/s and model TFLOP/s of :func:`transformer_step` for each variant (its keyword
    arguments: ``precision``, ``lab_style``, ``compile`` ...), timed in alternating rounds."""
    steps = {name: transformer_step(config, batch, **options) for name, options in variants.items()}
    compiled = any(options.get("compile") for options in variants.values())
    seconds = timed_interleaved(
        {name: step for name, (step, _) in steps.items()}, repeat, warmup=3 if compiled else 1
    )
    rows = {}
    for name, (_, masked_tokens) in steps.items():
        # forward + backward = 3x the forward FLOPs; the head on the masked tokens on average.
        lab_style = variants[name].get("lab_style")
        predicted = 256 if lab_style else statistics.mean(masked_tokens) / batch
        flops = 3 * batch * forward_flops(config, predicted)
        rows[name] = {"images_per_second": batch / seconds[name], "step_ms": seconds[name] * 1e3,
                      "tflops": flops / seconds[name] / 1e12}  # fmt: skip
    return rows


# --- tokenizer training ------------------------------------------------------------------------


def tokenizer_config(name: str = "local") -> dict:
    return yaml.safe_load((ROOT / "conf" / "tokenizer" / f"{name}.yaml").read_text())


def tokenizer_step(
    batch: int, precision: str, channels_last: bool, compile: bool = False
) -> tuple[Callable[[], None], VQGAN]:
    """One reconstruction-phase step of the shipped tokenizer: L1 + L2 + codebook loss,
    backward, AdamW (as ``VQGANModule.training_step`` before the GAN starts)."""
    torch.manual_seed(0)
    vqgan = VQGAN(**tokenizer_config()).train()
    images = vqgan.normalize(torch.rand(batch, 3, 64, 64))
    if channels_last:
        vqgan = vqgan.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(vqgan.parameters(), lr=1e-4)
    forward = torch.compile(vqgan) if compile else vqgan

    def step() -> None:
        with autocast(precision):
            recon, _, quant_loss = forward(images)
            recon = recon.float()
            loss = F.l1_loss(recon, images) + F.mse_loss(recon, images) + quant_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, vqgan


def bench_tokenizer(batch: int, repeat: int, compile: bool) -> dict[str, dict[str, float]]:
    layouts = ("nchw", "channels_last") + (("nchw_compiled",) if compile else ())
    steps = {
        (layout, precision): tokenizer_step(
            batch, precision, layout == "channels_last", compile=layout == "nchw_compiled"
        )[0]
        for layout in layouts
        for precision in PRECISIONS
    }
    seconds = timed_interleaved(steps, repeat, warmup=3 if compile else 1)
    rows: dict[str, dict[str, float]] = {}
    for (layout, precision), value in seconds.items():
        rows.setdefault(layout, {})[precision] = batch / value
    return rows


def profile_share(step: Callable[[], object], top: int = 8) -> list[dict[str, float | str]]:
    """The ops with the largest share of self CPU time over two steps (after a warm-up)."""
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "share": e.self_cpu_time_total / total} for e in events[:top]]


# --- decoding ----------------------------------------------------------------------------------


def decoding_model() -> tuple[VQGAN, BidirectionalTransformer, str]:
    if SHIPPED.is_file():
        from maskgit.loading import load_maskgit

        module = load_maskgit(SHIPPED)
        return module.tokenizer, module.transformer, SHIPPED.name
    torch.manual_seed(0)
    tokenizer = VQGAN(**tokenizer_config()).eval()
    transformer = BidirectionalTransformer(**transformer_config("small")).eval()
    return tokenizer, transformer, "random weights (shipped checkpoint absent)"


def centre_hole_batch(batch: int) -> tuple[Tensor, Tensor]:
    """Random images with a centre hole: 25 % of the pixels, 64 of the 256 tokens."""
    images = torch.rand(batch, 3, 64, 64)
    mask = torch.ones(batch, 1, 64, 64)
    mask[:, :, 16:48, 16:48] = 0
    return images, mask


def decode_once(
    tokenizer: VQGAN, transformer: BidirectionalTransformer, batch: int, precision: str
) -> object:
    images, mask = centre_hole_batch(batch)
    decoder = IterativeDecoder(cosine, total_iter=8, precision=precision)
    return inpaint(tokenizer, transformer, decoder, images, mask)


def bench_decoding(
    tokenizer: VQGAN, transformer: BidirectionalTransformer, repeat: int, compile: bool
) -> dict[int, dict[str, float]]:
    """Inpainted images/s at T=8 over a centre hole (25 % of the pixels, 64 tokens), fp32 and
    bf16 (and bf16 with torch.compile), timed in alternating rounds."""
    variants = precision_variants(compile)
    rows: dict[int, dict[str, float]] = {}
    for batch in (1, 32):
        images, mask = centre_hole_batch(batch)
        decoders = {
            name: IterativeDecoder(cosine, total_iter=8, **options)
            for name, options in variants.items()
        }
        seconds = timed_interleaved(
            {
                name: lambda decoder=decoder: inpaint(tokenizer, transformer, decoder, images, mask)
                for name, decoder in decoders.items()
            },
            repeat,
            warmup=3 if compile else 1,
        )
        rows[batch] = {name: batch / value for name, value in seconds.items()}
    return rows


# --- FID features ------------------------------------------------------------------------------


def fid_images(count: int) -> tuple[Tensor, Tensor]:
    """Real val photos (random images without ../shared) and a degraded copy as the fakes."""
    folder = SHARED / "data" / "cat_faces" / "val"
    if folder.is_dir():
        from maskgit.data.images import load_image

        files = sorted(folder.iterdir())[:count]
        real = torch.stack([load_image(f, 64) for f in files])
    else:
        real = torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fake = F.avg_pool2d(real, 3, stride=1, padding=1)  # blurred: a FID far from 0
    return real, fake


def bench_fid_features(count: int, batch: int = 50) -> dict[str, float] | None:
    """Images/s of the Inception pass in NCHW and channels_last, and |FID difference|."""
    from maskgit.metrics.fid import build_fid

    if not FID_WEIGHTS.is_file():
        return None
    real, fake = fid_images(count)
    result: dict[str, float] = {}
    scores = {}
    for layout in ("nchw", "channels_last"):
        fid = build_fid(str(FID_WEIGHTS))
        fid.inception.to(
            memory_format=torch.channels_last
            if layout == "channels_last"
            else torch.contiguous_format
        )
        with torch.inference_mode():  # warm-up: one-time costs out of the timing
            fid.inception((real[:batch] * 255).byte())
        start = time.perf_counter()
        with torch.inference_mode():
            for chunk in range(0, count, batch):
                fid.update(real[chunk : chunk + batch], real=True)
                fid.update(fake[chunk : chunk + batch], real=False)
        result[layout] = 2 * count / (time.perf_counter() - start)
        scores[layout] = float(fid.compute())
    result["fid_nchw"] = scores["nchw"]
    result["fid_difference"] = abs(scores["nchw"] - scores["channels_last"])
    result["images"] = count
    return result


def read_parity() -> dict[str, dict[str, float]]:
    path = RESULTS / f"{PARITY_FILE}.json"
    if not path.is_file():
        return {}
    runs = {row["run"]: row for row in json.loads(path.read_text())["runs"]}
    return {
        label: {key: runs[run][key] for key in ("fid", "psnr", "ssim", "wall_seconds")}
        for label, run in PARITY_RUNS.items()
        if run in runs
    }


# --- report ------------------------------------------------------------------------------------


def ratio(row: dict[str, float]) -> str:
    return f"{row['bf16'] / row['32']:.2f}x" if "bf16" in row and "32" in row else ""


def markdown(r: dict) -> str:
    peak = r["peak"]["gemm"]["bf16"]
    share = lambda tflops: f"{100 * tflops * 1e3 / peak:.1f} %"  # noqa: E731
    lines = [
        f"# Speed ({r['device']}, torch {r['torch']})",
        "",
        f"bf16 units: {r['bf16_units']}. Peak = the measured bf16 GEMM, {peak:.0f} GFLOP/s.",
        "",
        "| what | unit | fp32 | bf16 | bf16 / fp32 | bf16 share of peak | target |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"gemm": "GEMM 2048x2048"}
    for suffix, channels in (("", 64), ("_32ch", 32)):
        for layout, layout_name in (("nchw", "NCHW"), ("channels_last", "channels_last")):
            for kind, pass_name in (("conv", "forward"), ("conv_bwd", "backward")):
                names[f"{kind}_{layout}{suffix}"] = (
                    f"conv 3x3 {channels}->{channels}, 32x64x64, {layout_name}, {pass_name}"
                )
    for key, label in names.items():
        if key not in r["peak"]:  # results written before this row existed
            continue
        row = r["peak"][key]
        lines.append(
            f"| {label} | GFLOP/s | {row['32']:.0f} | {row['bf16']:.0f} | {ratio(row)} | "
            f"{100 * row['bf16'] / peak:.0f} % | |"
        )
    for label, row in r["attention"].items():
        lines.append(
            f"| self-attention, batch 32 x 8 heads x 256 tokens x 32, {label.replace('_', ' ')}, "
            f"forward | GFLOP/s | {row['32']:.0f} | {row['bf16']:.0f} | {ratio(row)} | "
            f"{100 * row['bf16'] / peak:.0f} % | |"
        )
    lab = r["training"]["lab_style"]
    sizes = r["training"]["sizes"]
    lines.append(
        f"| transformer train step, small, lab-style (VQGAN encode, manual attention, full "
        f"logits) | images/s | {lab['images_per_second']:.1f} | | | | |"
    )
    for size, target in (
        ("small", ">= 3x the previous fp32 (below)"),
        ("large", ">= 30 % of peak"),
    ):
        steps = r["training"][size]
        fp32, bf16 = steps["32"], steps["bf16"]
        lines.append(
            f"| transformer train step, {sizes[size]}, batch {r['train_batch']} | images/s "
            f"| {fp32['images_per_second']:.1f} | {bf16['images_per_second']:.1f} | "
            f"{bf16['images_per_second'] / fp32['images_per_second']:.2f}x | "
            f"{share(bf16['tflops'])} ({bf16['tflops']:.3f} TFLOP/s; fp32 "
            f"{fp32['tflops']:.3f}) | {target} |"
        )
        if "compiled_bf16" in steps:
            c = steps["compiled_bf16"]
            lines.append(
                f"| ... same, torch.compile | images/s | | {c['images_per_second']:.1f} | "
                f"{c['images_per_second'] / fp32['images_per_second']:.2f}x | "
                f"{share(c['tflops'])} | |"
            )
    for layout in [k for k in ("nchw", "channels_last", "nchw_compiled") if k in r["tokenizer"]]:
        row = r["tokenizer"][layout]
        vs_nchw = row["bf16"] / r["tokenizer"]["nchw"]["32"]
        lines.append(
            f"| tokenizer train step, local, batch {r['train_batch']}, "
            f"{layout.replace('_compiled', ', torch.compile')} | images/s | "
            f"{row['32']:.1f} | {row['bf16']:.1f} | {ratio(row)} (over fp32 NCHW: "
            f"{vs_nchw:.2f}x) | | >= 2.5x |"
        )
    for batch, row in r["decoding"]["rows"].items():
        lines.append(
            f"| decoding T=8, batch {batch} ({r['decoding']['model']}) | images/s | "
            f"{row['32']:.1f} | {row['bf16']:.1f} | {ratio(row)} | | >= 2.5x |"
        )
        if "compiled_bf16" in row:
            lines.append(
                f"| ... same, torch.compile | images/s | | {row['compiled_bf16']:.1f} | "
                f"{row['compiled_bf16'] / row['32']:.2f}x | | |"
            )
    fid = r.get("fid_features")
    if fid:
        lines.append(
            f"| FID Inception features (fp32), NCHW vs channels_last | images/s | "
            f"{fid['nchw']:.1f} NCHW | {fid['channels_last']:.1f} channels_last | "
            f"{fid['channels_last'] / fid['nchw']:.2f}x | | same FID to 1e-3: "
            f"|diff| = {fid['fid_difference']:.1e} |"
        )
    for label, row in r["parity"].items():
        lines.append(
            f"| quality, 1,000 val pairs, cosine T=8, {label} | FID / masked PSNR | "
            f"{row['fid']:.2f} / {row['psnr']:.2f} dB | | | | inpainting + metrics "
            f"{row['wall_seconds']:.0f} s |"
        )
    train = r["training"]["small"]["bf16"]["images_per_second"]
    decode = r["decoding"]["rows"]
    lines += [
        "",
        f"Against the previous table (fp32; training {PREVIOUS['train_small_fp32']} images/s, "
        f"decoding {PREVIOUS['decode_b1_fp32']} / {PREVIOUS['decode_b32_fp32']} images/s at "
        f"batch 1 / 32): bf16 training {train / PREVIOUS['train_small_fp32']:.2f}x, decoding "
        f"{decode_rate(decode, 1) / PREVIOUS['decode_b1_fp32']:.2f}x / "
        f"{decode_rate(decode, 32) / PREVIOUS['decode_b32_fp32']:.2f}x. Most of the training "
        f"factor is the fused attention kernel (no dropout on the attention weights, as the "
        f"experiments train): fp32 alone went from {PREVIOUS['train_small_fp32']} to "
        f"{r['training']['small']['32']['images_per_second']:.1f} images/s.",
    ]
    for title, profile in (
        ("Tokenizer bf16 training step (NCHW)", r["tokenizer"].get("profile")),
        (
            "Tokenizer bf16 training step (channels_last)",
            r["tokenizer"].get("profile_channels_last"),
        ),
        ("Transformer bf16 training step (shipped size)", r["training"].get("profile")),
        ("Decoding in bf16, T=8, batch 32", r["decoding"].get("profile")),
    ):
        if profile:
            lines += ["", f"{title}, share of self CPU time per op:", ""]
            lines += [f"- `{p['op']}`: {100 * p['share']:.1f} %" for p in profile]
    if fid:
        lines += ["", f"FID features over {fid['images']} real + {fid['images']} blurred val "
                  f"photos, batch 50; FID {fid['fid_nchw']:.3f}."]  # fmt: skip
    if r["parity"]:
        lines += ["", f"Quality rows: benchmarks/results/{PARITY_FILE}.md (`benchmarks/quality.py`); "
                  "their time is inpainting + metrics, without loading and FID's real side."]  # fmt: skip
    return "\n".join(lines) + "\n"


def decode_rate(rows: dict, batch: int) -> float:
    """bf16 images/s of a decoding row (keys are ints in a run, strings read back from JSON)."""
    return (rows.get(batch) or rows[str(batch)])["bf16"]


def bf16_units() -> str:
    avx512 = torch.cpu._is_avx512_bf16_supported()
    amx = torch.cpu._is_amx_tile_supported()
    return f"AVX-512 BF16 {'yes' if avx512 else 'no'}, AMX {'yes' if amx else 'no'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fid-images", type=int, default=200)
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--report", action="store_true",
                        help="no measuring: rewrite the table from the last run's JSON with the "
                             "current parity results")  # fmt: skip
    parser.add_argument("--lab-tokenizer", default="lab", choices=["lab", "small"],
                        help="the VQGAN the lab-style step encodes every batch with")  # fmt: skip
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                        help="measure these sections again and keep the others from the last "
                             f"run's JSON (sections: {', '.join(SECTIONS)})")  # fmt: skip
    args = parser.parse_args()
    if args.report or args.only:
        last = RESULTS / "speed_cpu.json"
        if not last.is_file():
            parser.error(f"--report / --only: {last} does not exist; run the whole table first")
        results = json.loads(last.read_text())
    else:
        results = {}
    if not args.report:
        torch.manual_seed(0)
        results |= {
            "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__,
            "bf16_units": bf16_units(),
            "train_batch": args.train_batch,
        }  # fmt: skip
        for section in args.only or SECTIONS:
            print(f"{section} ...", flush=True)
            results[section] = MEASURE[section](args)
    results["parity"] = read_parity()
    write(results)


def measure_training(args) -> dict:
    small, large = transformer_config("small"), transformer_config("small") | LARGE
    lab_tokenizer = VQGAN(**tokenizer_config(args.lab_tokenizer)).eval().requires_grad_(False)
    lab = {"precision": "32", "lab_style": True, "lab_tokenizer": lab_tokenizer}
    lab_row = bench_transformer_steps(small, args.train_batch, args.repeat, {"lab": lab})["lab"]
    training: dict = {
        "sizes": {
            "small": f"shipped ({small['dim']} x {small['n_layers']})",
            "large": f"{large['dim']} x {large['n_layers']} layers",
        },
        "lab_style": lab_row,
    }
    variants = precision_variants(args.compile)
    for name, config in (("small", small), ("large", large)):
        training[name] = bench_transformer_steps(config, args.train_batch, args.repeat, variants)
    training["profile"] = profile_share(transformer_step(small, args.train_batch, "bf16")[0])
    return training


def measure_tokenizer(args) -> dict:
    rows = bench_tokenizer(args.train_batch, args.repeat, args.compile)
    rows["profile"] = profile_share(tokenizer_step(args.train_batch, "bf16", False)[0])
    # Why channels_last loses in the whole step although its convolutions are faster.
    rows["profile_channels_last"] = profile_share(tokenizer_step(args.train_batch, "bf16", True)[0])
    return rows


def measure_decoding(args) -> dict:
    tokenizer, transformer, model_name = decoding_model()
    return {
        "model": model_name,
        "rows": bench_decoding(tokenizer, transformer, args.repeat, args.compile),
        "profile": profile_share(lambda: decode_once(tokenizer, transformer, 32, "bf16")),
    }


# The table's sections, in the order a whole run measures them (the peak first).
MEASURE: dict[str, Callable[[argparse.Namespace], dict]] = {
    "peak": lambda args: bench_peak(args.repeat),
    "attention": lambda args: bench_attention(args.repeat),
    "training": measure_training,
    "tokenizer": measure_tokenizer,
    "decoding": measure_decoding,
    "fid_features": lambda args: bench_fid_features(args.fid_images),
}
SECTIONS = tuple(MEASURE)


def write(results: dict) -> None:
    report = markdown(results)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed_cpu.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "speed_cpu.md").write_text(report)
    print(f"wrote {RESULTS / 'speed_cpu'}.{{json,md}}")


if __name__ == "__main__":
    main()
