"""Speed benchmark: attention, training throughput and decoding, measured in one run.

    python benchmarks/speed.py                    # CPU, small transformer
    python benchmarks/speed.py --transformer lab  # the lab's 72.7 M transformer (slow on CPU)
    python benchmarks/speed.py --compile          # torch.compile the fast paths (default on GPU)

On a GPU the fast paths run under bf16 autocast; model FLOPs utilisation (MFU) is the
transformer's matmul FLOPs per second over the GPU's dense bf16 peak (--peak-tflops).

Prints a table and the ratios behind the targets, and writes
benchmarks/results/speed_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from maskgit.checkpoints import LAB_TRANSFORMER
from maskgit.decoding import IterativeDecoder
from maskgit.inpainting import inpaint
from maskgit.masking import random_token_mask
from maskgit.models.attention import MultiHeadSelfAttention
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.models.vqgan import VQGAN
from maskgit.modules.maskgit import mvtm_loss
from maskgit.schedules import cosine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def transformer_config(name: str) -> dict:
    if name == "lab":
        return dict(LAB_TRANSFORMER)
    sizes = yaml.safe_load((ROOT / "conf" / "transformer" / f"{name}.yaml").read_text())
    return sizes | {"num_codebook_vectors": 1024}


def forward_flops(config: dict, predicted: int, tokens: int = 256) -> float:
    """Matmul FLOPs of one transformer forward over ``tokens`` tokens with the output head
    on ``predicted`` of them (2 FLOPs per multiply-add; embeddings and norms ignored)."""
    d, h, layers = config["dim"], config["hidden_dim"], config["n_layers"]
    per_layer = 2 * tokens * (4 * d * d + 2 * d * h) + 4 * tokens * tokens * d
    head = 2 * predicted * (d * d + d * config["num_codebook_vectors"])
    return layers * per_layer + head


# Dense bf16 tensor-core peaks (no sparsity), for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def build_tokenizer(name: str, device: torch.device) -> VQGAN:
    config = yaml.safe_load((ROOT / "conf" / "tokenizer" / f"{name}.yaml").read_text())
    return VQGAN(**config).to(device).eval().requires_grad_(False)


def bench_attention(device: torch.device, repeat: int) -> list[dict]:
    rows = []
    for label, dim, heads, batch in (("lab", 768, 16, 8), ("small", 256, 8, 32)):
        torch.manual_seed(0)
        attention = MultiHeadSelfAttention(dim, heads, attn_dropout=0.0).to(device)
        x = torch.randn(batch, 256, dim, device=device, requires_grad=True)
        outputs = {}
        for impl in ("manual", "sdpa"):
            attention.impl = impl
            attention.eval()
            with torch.no_grad():
                outputs[impl] = attention(x)
            forward = timed(lambda: attention(x), device, repeat)

            def step() -> None:
                attention(x).sum().backward()

            attention.train()
            backward = timed(step, device, repeat)
            rows.append({"size": label, "impl": impl, "what": "attention op", "batch": batch,
                         "forward_ms": forward * 1e3, "fwd_bwd_ms": backward * 1e3})  # fmt: skip
        diff = (outputs["manual"] - outputs["sdpa"]).abs().max().item()
        rows[-1]["max_abs_diff_vs_manual"] = diff
        rows[-2]["max_abs_diff_vs_manual"] = 0.0
    return rows


def bench_transformer(
    config: dict, label: str, device: torch.device, batch: int, repeat: int
) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    model = BidirectionalTransformer(**config).to(device)
    tokens = torch.randint(0, 1024, (batch, 256), device=device)
    logits = {}
    for impl in ("manual", "sdpa"):
        model.set_attention_impl(impl)
        model.eval()
        with torch.no_grad():
            logits[impl] = model(tokens)
            forward = timed(lambda: model(tokens), device, repeat)
        model.train()
        backward = timed(lambda: model(tokens).sum().backward(), device, repeat)
        rows.append({"size": label, "impl": impl, "what": "whole transformer", "batch": batch,
                     "forward_ms": forward * 1e3, "fwd_bwd_ms": backward * 1e3})  # fmt: skip
    rows[-1]["max_abs_diff_vs_manual"] = (logits["manual"] - logits["sdpa"]).abs().max().item()
    rows[-2]["max_abs_diff_vs_manual"] = 0.0
    return rows


def bench_training(
    config: dict,
    tokenizer: VQGAN,
    device: torch.device,
    batch: int,
    steps: int,
    fast_bf16: bool,
    fast_compile: bool,
) -> dict:
    """images/s of one MVTM training step: lab-style vs this framework's fast path."""
    images = torch.rand(batch, 3, 64, 64, device=device)
    results = {}
    for path in ("lab_style", "fast"):
        torch.manual_seed(0)
        model = BidirectionalTransformer(**config).to(device).train()
        model.set_attention_impl("manual" if path == "lab_style" else "sdpa")
        if path == "fast" and fast_compile:
            model.compile_blocks()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        cached = tokenizer.tokenize(images).flatten(1)
        autocast = path == "fast" and fast_bf16
        masked_tokens = []

        def step() -> None:
            # The lab encodes every batch with the VQGAN; the fast path reads cached tokens.
            tokens = tokenizer.tokenize(images).flatten(1) if path == "lab_style" else cached
            mask = random_token_mask(batch, tokens.shape[1], cosine, device=device)
            masked_tokens.append(int(mask.sum()))
            inputs = tokens.masked_fill(mask, model.mask_token_id)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                if path == "lab_style":  # full logits, then the masked rows
                    logits = model(inputs)[mask]
                else:  # the output head only where there is a loss
                    logits = model.logits_at(inputs, mask)
                loss = mvtm_loss(logits.float(), tokens[mask])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        seconds = timed(step, device, steps, warmup=3 if path == "fast" and fast_compile else 1)
        # forward + backward = 3x the forward FLOPs; the head on the masked tokens on average.
        predicted = statistics.mean(masked_tokens) / batch
        flops = 3 * batch * forward_flops(config, predicted if path == "fast" else 256)
        results[path] = {"images_per_second": batch / seconds, "step_ms": seconds * 1e3,
                         "model_tflops_per_second": flops / seconds / 1e12}  # fmt: skip
    results["ratio_fast_over_lab_style"] = (
        results["fast"]["images_per_second"] / results["lab_style"]["images_per_second"]
    )
    return results


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_decoding(
    config: dict, tokenizer: VQGAN, device: torch.device, repeat: int, compile: bool
) -> list[dict]:
    torch.manual_seed(0)
    model = BidirectionalTransformer(**config).to(device).eval()
    rows = []
    for total_iter in (8, 20):
        # precision "auto": bf16 autocast on a GPU, fp32 on the CPU.
        decoder = IterativeDecoder(cosine, total_iter=total_iter, compile=compile)
        per_image = {}
        for batch in (1, 32):
            images = torch.rand(batch, 3, 64, 64, device=device)
            mask = torch.ones(batch, 1, 64, 64, device=device)
            mask[:, :, 16:48, 16:48] = 0  # a centre hole: 25 % of the pixels, 64 tokens
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = timed(
                lambda: inpaint(tokenizer, model, decoder, images, mask), device, repeat,
                warmup=3 if compile else 1,
            )  # fmt: skip
            per_image[batch] = batch / seconds
            # Each step runs the blocks over all 256 tokens, the head on the 64 missing ones
            # at most: an upper bound on the transformer's share of the work.
            flops = batch * total_iter * forward_flops(config, predicted=64)
            rows.append({"total_iter": total_iter, "batch": batch, "images_per_second": batch / seconds,
                         "model_tflops_per_second": flops / seconds / 1e12,
                         "peak_memory_mb": peak_memory_mb(device)})  # fmt: skip
        rows[-1]["batch32_over_batch1"] = per_image[32] / per_image[1]
    return rows


def markdown(results: dict) -> str:
    lines = [f"# Speed ({results['device']}, torch {results['torch']})", ""]
    lines += [
        "## Attention (manual vs sdpa)",
        "",
        "| size | what | impl | batch | forward ms | fwd+bwd ms | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["attention"]:
        lines.append(
            f"| {r['size']} | {r['what']} | {r['impl']} | {r['batch']} | {r['forward_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | {r['max_abs_diff_vs_manual']:.2e} |"
        )
    t = results["training"]
    peak = results.get("peak_tflops")

    def mfu(row: dict) -> str:
        return f"{100 * row['model_tflops_per_second'] / peak:.1f} %" if peak else "n/a"

    extras = "".join(f", {x}" for x in results["fast_options"])
    lines += ["", f"## Training throughput ({results['transformer']} transformer, {results['tokenizer']} VQGAN, batch {results['train_batch']})", "",
              "| path | images/s | step ms | model TFLOP/s | MFU |", "|---|---|---|---|---|",
              f"| lab-style (VQGAN encode per batch, manual attention, full logits, fp32) | {t['lab_style']['images_per_second']:.1f} | {t['lab_style']['step_ms']:.0f} | {t['lab_style']['model_tflops_per_second']:.3f} | {mfu(t['lab_style'])} |",
              f"| fast (cached tokens, sdpa, masked-only head{extras}) | {t['fast']['images_per_second']:.1f} | {t['fast']['step_ms']:.0f} | {t['fast']['model_tflops_per_second']:.3f} | {mfu(t['fast'])} |",
              "", f"**fast / lab-style: {t['ratio_fast_over_lab_style']:.2f}x** (target >= 3x on CPU)"]  # fmt: skip
    lines += [
        "",
        f"## Decoding (inpainted images/s, 25 % hole{extras})",
        "",
        "| total_iter | batch | images/s | transformer TFLOP/s | MFU | peak memory MB (GPU: allocated; CPU: process peak RSS) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["decoding"]:
        lines.append(
            f"| {r['total_iter']} | {r['batch']} | {r['images_per_second']:.1f} | {r['model_tflops_per_second']:.3f} | {mfu(r)} | {r['peak_memory_mb']:.0f} |"
        )
    for r in results["decoding"]:
        if "batch32_over_batch1" in r:
            lines.append(
                f"\nT={r['total_iter']}: **batch 32 / batch 1 per-image throughput: {r['batch32_over_batch1']:.1f}x** (target >= 5x)"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--transformer", default="small", help="small | tiny | lab")
    parser.add_argument("--tokenizer", default="lab", choices=["lab", "small"],
                        help="the VQGAN the lab-style path encodes every batch with (lab: its 70.8 M one)")  # fmt: skip
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the fast paths (default: on a GPU only)")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak for MFU (default: known GPUs)")  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    compile = on_gpu if args.compile is None else args.compile
    torch.manual_seed(0)
    # Random weights: speed does not depend on them. The lab-style training path encodes with
    # --tokenizer; decoding uses this framework's shipped tokenizer size (tokenizer/small).
    lab_path_tokenizer = build_tokenizer(args.tokenizer, device)
    decode_tokenizer = build_tokenizer("small", device)
    config = transformer_config(args.transformer)

    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "device_type": device.type,
        "torch": torch.__version__,
        "transformer": args.transformer,
        "tokenizer": args.tokenizer,
        "train_batch": args.train_batch,
        "fast_options": (["bf16 autocast"] if on_gpu else []) + (["torch.compile"] if compile else []),
        "peak_tflops": peak_tflops(device, args.peak_tflops),
    }  # fmt: skip
    results["attention"] = bench_attention(device, args.repeat)
    results["attention"] += bench_transformer(config, args.transformer, device, 8, args.repeat)
    results["training"] = bench_training(
        config, lab_path_tokenizer, device, args.train_batch, args.repeat, on_gpu, compile
    )
    results["decoding"] = bench_decoding(config, decode_tokenizer, device, args.repeat, compile)

    report = markdown(results)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"speed_{device.type}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{stem}.md").write_text(report)
    print(f"wrote {RESULTS / stem}.{{json,md}}")


if __name__ == "__main__":
    main()
