"""A tiny random SigLIP fine-tuned on fashion-products: per-epoch time of three text paths, and test macro-F1.

The model is built offline by this script (``benchmarks/work/tiny_siglip/model``): SigLIP with a 128-wide, 4-layer
text tower and a 128-wide, 4-layer ViT (384 px, patch 32), SigLIP's image preprocessing, and a 4,000-piece
sentencepiece (unigram) vocabulary trained on train.csv's titles as SigLIP's tokenizer reads them (lower case, no
punctuation), wrapped as a transformers ``SiglipTokenizer`` (the subset's 6,000 titles alone hold ~2,100 unigram
pieces). aisle loads it as ``hf-siglip:<folder>`` with ``pretrained: false``: random weights, so the text tower masks
its padding. Trained on a 6,000-row stratified subset of train.csv (fold 0 of 5: 4,800 rows train, 1,200 validate),
2 epochs, batch 32, lr 5e-4; scored on the test split.

Variants, one after another (each in its own ``aisle`` subprocess, same machine state):
  before    the code at BASELINE_REV (``git archive`` of src/): masked, every text padded to max_length (64),
            pooled at position -1
  trimmed   this tree: masked, each batch trimmed to its longest row, pooled at each row's last real token
  compiled  trimmed + ``runtime.compile: true``

Seconds per epoch come from each run's history.csv (training + validation of the epoch). The trimmed run predicts the
full 8,686-row test split; the other two predict ``--timing-test-rows`` of it (all by default).

Usage:
  .venv/bin/python benchmarks/tiny_siglip.py [--timing-test-rows 8686] [--keep benchmarks/work/tiny_siglip]
  .venv/bin/python benchmarks/tiny_siglip.py --smoke      # 300 rows, 1 epoch, 200 test rows: checks the plumbing
Writes benchmarks/results/tiny_siglip.json (--smoke: smoke.json in the work folder).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import string
import subprocess
import sys
import tarfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
import yaml
from sklearn.metrics import accuracy_score, f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from aisle.rundir import DEFAULT_STAGE, RunDir
from bench_lib import DATA, stratified_subset

# the last commit before SigLIPs trained here read trimmed batches (src/aisle/models/dual.py pads them to max_length)
BASELINE_REV = "c0813d6a5a4c7afa3bbd384e32837cbe497bec4b"
MAX_LENGTH = 64  # SigLIP's text context
VARIANTS = ("before", "trimmed", "compiled")


def _canonical(text: str) -> str:
    """What ``SiglipTokenizer`` feeds sentencepiece: lower case, punctuation removed, single spaces."""
    return re.sub(r"\s+", " ", text.lower().translate(str.maketrans("", "", string.punctuation))).strip()


def build_tiny_siglip(folder: Path, titles: list[str], vocab: int = 4000) -> Path:
    """Write a random tiny SigLIP's config, tokenizer and image preprocessing into ``folder`` (no weights)."""
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipProcessor, SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([_canonical(t) for t in titles]),
        model_writer=model,
        model_type="unigram",  # sentencepiece's default, and the kind SigLIP's own vocabulary is
        vocab_size=vocab,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        num_threads=1,  # one thread: the same vocabulary every run
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(str(folder / "spiece.model"), model_max_length=MAX_LENGTH)
    image = SiglipImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    SiglipProcessor(image_processor=image, tokenizer=tokenizer).save_pretrained(folder)
    width = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}
    text = {**width, "vocab_size": len(tokenizer), "max_position_embeddings": MAX_LENGTH}
    text.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id)
    config = SiglipConfig(text_config=text, vision_config={**width, "image_size": 384, "patch_size": 32})
    config.save_pretrained(folder)
    return folder


def baseline_src(work: Path, rev: str) -> Path:
    """``src/`` of ``rev`` (``git archive``, nothing in the working tree changes)."""
    out = work / f"baseline-{rev[:10]}"
    if not (out / "src" / "aisle" / "__init__.py").is_file():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(out, filter="data")
    return out / "src"


def run_config(train_csv: Path, model: Path, work: Path, epochs: int, compile_: bool) -> dict:
    return {
        "name": "tiny_siglip",
        "data": {
            "train_csv": str(train_csv),
            "image_dir": str(DATA / "images"),
            "text_cols": ["title"],
            "folds": 5,
        },
        "model": {
            "type": "dual",
            "dual": {"name": f"hf-siglip:{model}", "pretrained": False, "max_length": MAX_LENGTH},
        },
        "train": {"epochs": epochs, "batch_size": 32, "lr": {"default": 5e-4}, "folds": [0]},
        "runtime": {"num_workers": 2, "cache_dir": str(work / "cache"), "compile": compile_},
    }


def aisle(src: Path, *args: str) -> tuple[float, float]:
    """Run ``python -m aisle ARGS`` on the code in ``src``; its wall seconds and CPU seconds (its DataLoader workers
    included: steadier than wall time on a shared machine)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    where = subprocess.run(
        [sys.executable, "-c", "import aisle; print(aisle.__file__)"], env=env, check=True, capture_output=True
    )
    if not Path(where.stdout.decode().strip()).is_relative_to(src):
        raise RuntimeError(f"PYTHONPATH={src} did not win: aisle came from {where.stdout.decode().strip()}")
    t0, cpu0 = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, "-m", "aisle", "-q", *args], env=env, check=True)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished descendant process, waited for
    return usage.ru_utime + usage.ru_stime


def run_variant(
    variant: str, src: Path, cfg: dict, work: Path, test_csv: Path, truth: pd.Series, timing_ids: pd.Series
) -> dict:
    """Train and predict one variant; its per-epoch seconds and test scores (and, for a run that predicted more
    rows than the timing variants, its scores on their rows)."""
    run = work / variant
    (work / f"{variant}.yaml").write_text(yaml.safe_dump(cfg))
    train_s, train_cpu = aisle(src, "train", "-c", str(work / f"{variant}.yaml"), "--run-dir", str(run), "--overwrite")
    images = ["--image-dir", str(DATA / "images")]
    predict_s, _ = aisle(src, "predict", str(run), "--data", str(test_csv), *images, "--out", str(run / "test"))
    history = pd.read_csv(RunDir(run).fold(DEFAULT_STAGE, 0).history)
    labels = pd.read_csv(run / "test" / "submission.csv", dtype=str).set_index("id").iloc[:, 0]
    out = {
        "variant": variant,
        "epoch_seconds": [round(float(s), 1) for s in history["seconds"]],
        "val_macro_f1": round(float(history["val_macro_f1"].iloc[-1]), 4),
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "predict_seconds": round(predict_s, 1),
        "test_rows": len(labels),
        **_scores(truth, labels),
    }
    if len(timing_ids) < len(labels):  # beside the other variants' figures: the same rows
        out["on_timing_rows"] = _scores(truth, labels.loc[timing_ids])
    return out


def _scores(truth: pd.Series, labels: pd.Series) -> dict:
    return {
        "test_acc": round(accuracy_score(truth.loc[labels.index], labels), 4),
        "test_macro_f1": round(f1_score(truth.loc[labels.index], labels, average="macro"), 4),
    }


def earlier_rows(out: Path, rerun: list[str]) -> list[dict]:
    """The rows of ``out`` (an earlier result of this script) for the variants not run again, kept as they were
    (each row says its date; rows written before rows carried a date and revision are from 2026-11-30)."""
    if not out.is_file():
        return []
    return [r for r in json.loads(out.read_text())["table"] if r["variant"] not in rerun]


def _head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=ROOT / "benchmarks" / "work" / "tiny_siglip")
    ap.add_argument("--timing-test-rows", type=int, default=8686, help="test rows the before/compiled runs predict")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--smoke", action="store_true", help="300 rows, 1 epoch, 200 test rows")
    args = ap.parse_args()
    if not (DATA / "train.csv").is_file():
        print(f"skipped: no fashion-products data at {DATA} (train.csv, test.csv, test_labels.csv, images/)")
        return
    work = args.keep
    work.mkdir(parents=True, exist_ok=True)
    rows, epochs, test_rows = (300, 1, 200) if args.smoke else (6000, 2, None)
    train = stratified_subset(rows)
    train.to_csv(work / "train.csv", index=False)
    titles = pd.read_csv(DATA / "train.csv", dtype=str)["title"].fillna("").tolist()
    model = build_tiny_siglip(work / "model", titles, 500 if args.smoke else 4000)
    test = pd.read_csv(DATA / "test.csv", dtype=str)
    truth = pd.read_csv(DATA / "test_labels.csv", dtype=str).set_index("id")["categories"]
    full = test if test_rows is None else test.sample(n=test_rows, random_state=0)
    full.to_csv(work / "test.csv", index=False)
    some = full if args.timing_test_rows >= len(full) else full.sample(n=args.timing_test_rows, random_state=0)
    some.to_csv(work / "test_timing.csv", index=False)
    sources = {"before": baseline_src(work, args.baseline_rev), "trimmed": ROOT / "src", "compiled": ROOT / "src"}
    out = work / "smoke.json" if args.smoke else ROOT / "benchmarks" / "results" / "tiny_siglip.json"
    kept = earlier_rows(out, args.variants.split(","))
    fresh = []
    for variant in [v for v in VARIANTS if v in args.variants.split(",")]:
        cfg = run_config(work / "train.csv", model, work, epochs, compile_=variant == "compiled")
        test_csv = work / ("test.csv" if variant == "trimmed" else "test_timing.csv")
        row = run_variant(variant, sources[variant], cfg, work, test_csv, truth, some["id"])
        fresh.append({**row, "date": date.today().isoformat(), "rev": _head()})
        print(json.dumps(fresh[-1]), flush=True)
    before = next((r["epoch_seconds"] for r in fresh if r["variant"] == "before"), None)
    for r in fresh if before else []:  # speed-ups only within this run: per epoch, and on the mean epoch
        r["speedup_per_epoch"] = [round(b / s, 2) for b, s in zip(before, r["epoch_seconds"], strict=True)]
        r["speedup_mean_epoch"] = round(sum(before) / sum(r["epoch_seconds"]), 2)
    results = sorted([*kept, *fresh], key=lambda r: VARIANTS.index(r["variant"]))
    by = {r["variant"]: r for r in results}
    result = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "command": " ".join(["python benchmarks/tiny_siglip.py", *sys.argv[1:]]),
        "baseline_rev": args.baseline_rev,
        "setup": {
            "train_rows": len(train),
            "fold": "0 of 5",
            "epochs": epochs,
            "batch_size": 32,
            "lr": 5e-4,
            "model": "random SigLIP: text 128 wide x 4 layers, ViT 128 wide x 4 layers, 384 px, patch 32, "
            "4,000-piece sentencepiece unigram vocabulary trained on train.csv's titles, max_length 64",
            "test_rows": {r["variant"]: r["test_rows"] for r in results},
        },
        "table": results,
        "targets": {
            "trimmed macro-F1 >= 0.65 after 2 epochs": bool(by.get("trimmed", {}).get("test_macro_f1", 0) >= 0.65),
        },
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
