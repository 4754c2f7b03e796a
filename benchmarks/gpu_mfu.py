"""Training throughput and model FLOP utilisation (MFU) of a fusion model on one GPU.

Model: ``timm:convnext_tiny`` image tower + a BERT-base-sized text tower (12 layers, 768 wide, 12 heads, 3072
FFN; random weights of the real shapes: nothing is downloaded), concat fusion, MLP head, 84 classes, 224 px,
32-token titles. One training step = aisle's own model, loss (label-smoothed CE) and AdamW parameter groups,
under the switches aisle uses on GPUs (bf16 autocast, channels-last image tower, uint8 pixels normalised on the
GPU, optional ``torch.compile``). Batches are synthetic tensors already on the GPU, so this measures the model
step, not the data path (see ``datapath`` in run.py for that).

MFU = (FLOPs of one training step, counted by ``torch.utils.flop_counter.FlopCounterMode``) x steps/s over the
card's bf16 matmul rate measured here (a large bf16 matmul, timed the same way).

Usage:
  .venv/bin/python benchmarks/gpu_mfu.py                 # on a GPU machine; writes benchmarks/results/gpu_mfu.json
  .venv/bin/python benchmarks/gpu_mfu.py --compile       # with torch.compile on both towers
  .venv/bin/python benchmarks/gpu_mfu.py --smoke         # tiny shapes on CPU: checks the script runs (no figures)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig

from aisle.config import LearningRates
from aisle.models import IMAGE_TOWERS, ProductClassifier
from aisle.models.text_towers import HFTextTower
from aisle.models.tokenizer import train_word_tokenizer
from aisle.training.losses import LOSSES
from aisle.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def build_model(smoke: bool) -> tuple[ProductClassifier, int, int]:
    """(model, image size, text length): the real shapes, or tiny ones for ``--smoke``."""
    texts = [f"product title word{i} colour{i % 7}" for i in range(2000)]
    tok = train_word_tokenizer(texts, vocab_size=30522)
    if smoke:
        image = IMAGE_TOWERS.create("timm", "test_convnext", pretrained=False, image_size=64)
        cfg = BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
        size, length = 64, 16
    else:
        image = IMAGE_TOWERS.create("timm", "convnext_tiny", pretrained=False, image_size=224)
        cfg = BertConfig(
            vocab_size=30522,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
        )
        size, length = 224, 32
    text = HFTextTower("bert-base-shaped", config=cfg, tokenizer=tok, max_length=length)
    return ProductClassifier(image, text, num_classes=84, fusion="concat", head_hidden=512), size, length


def matmul_rate(device: str, n: int, dtype: torch.dtype, iters: int = 20) -> float:
    """Measured FLOP/s of an n x n x n matmul in ``dtype``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: the script runs; no figures kept")
    args = ap.parse_args()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.smoke:
        print("SKIP: no GPU here (use --smoke to check the script on CPU)")
        return 0
    batch_size, steps = (4, 3) if args.smoke else (args.batch, args.steps)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model, size, length = build_model(args.smoke)
    model = model.to(device).train()
    model.image_encoder.use_channels_last()
    criterion = LOSSES.create("ce", label_smoothing=0.1)
    opt = build_optimizer(model, LearningRates(image_encoder=1e-4, text_encoder=5e-5, head=1e-3), 0.01)
    batch = {
        "image": torch.randint(0, 256, (batch_size, 1, 3, size, size), dtype=torch.uint8, device=device),
        "image_mask": torch.ones(batch_size, 1, dtype=torch.bool, device=device),
        "input_ids": torch.randint(5, len(model.text_encoder.tokenizer), (batch_size, length), device=device),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long, device=device),
        "label": torch.randint(0, 84, (batch_size,), device=device),
    }
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        with autocast:
            loss = criterion(model(batch), batch["label"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()  # counted eagerly: the FLOPs are the model's, compiled or not
    if args.compile:
        model.image_encoder.compile()
        model.text_encoder.compile()
    for _ in range(2 if args.smoke else 5):  # warm-up (and compilation)
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    secs = (time.perf_counter() - t0) / steps
    peak = matmul_rate(device, 256 if args.smoke else 8192, torch.bfloat16 if device == "cuda" else torch.float32)
    achieved = flops / secs
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
        "batch": batch_size,
        "image_size": size,
        "text_length": length,
        "compile": args.compile,
        "params": sum(p.numel() for p in model.parameters()),
        "train_flops_per_step": flops,
        "step_seconds": round(secs, 4),
        "train_images_per_s": round(batch_size / secs, 1),
        "achieved_tflops": round(achieved / 1e12, 2),
        "measured_bf16_matmul_tflops": round(peak / 1e12, 1),
        "mfu": round(achieved / peak, 3),
        "date": date.today().isoformat(),
        "machine": platform.machine(),
        "command": "python benchmarks/gpu_mfu.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if not args.smoke:
        name = "gpu_mfu_compile.json" if args.compile else "gpu_mfu.json"
        (ROOT / "benchmarks" / "results" / name).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
