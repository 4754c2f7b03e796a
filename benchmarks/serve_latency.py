"""One product at a time: the Python API and ``aisle serve`` against the per-call batch path, and a load test.

For each run: 200 warm single-item calls through (1) the old way (``aisle.inference.predict`` on a one-row
DataFrame, which rebuilds the fold models on every call; fewer calls, it is slow), (2) the Python API
(``Classifier.predict_proba`` on a list with one item, models held in memory; torch, and the ONNX export through
onnxruntime, side by side), (3) HTTP (``aisle serve``, one
client). Each call's wall time and the process's CPU time are recorded; on this shared 2-core machine the
CPU-milliseconds per call and the ratios between paths measured in the same run are the figures to quote.
Then a bounded load test on 127.0.0.1: N concurrent clients (asyncio + httpx) for ``--seconds`` each, with
micro-batching on (``--max-batch 32 --max-wait-ms 2``) and off (``--max-batch 1``): requests/s, items/s, p50/p99,
errors (must be 0) and the server's RSS at start, after a 5 s warm-up at 32 clients (its working set at full
load) and at the end (growth past the warm-up would be a leak).

Usage:
  .venv/bin/python benchmarks/serve_latency.py --run demo=runs/demo-fusion:demo/test.csv \
      --run lite0=/tmp/bench/lite0:/tmp/bench/fashion_test.csv --image-dir lite0=../shared/data/fashion-products/images
Writes benchmarks/results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _items(table: Path, image_dir: Path, n: int) -> list[dict]:
    df = pd.read_csv(table, dtype=str, keep_default_na=False).head(n)
    out = []
    for row in df.to_dict("records"):
        found = [image_dir / f"{row['id']}{e}" for e in (".jpg", ".png")]
        path = next((p for p in found if p.exists()), None)
        out.append({**row, "image": path.read_bytes() if path else None})
    return out


def _stats(wall: list[float], cpu: list[float]) -> dict:
    w = np.array(wall) * 1000
    return {
        "calls": len(wall),
        "wall_ms_p50": float(np.percentile(w, 50)),
        "wall_ms_p99": float(np.percentile(w, 99)),
        "cpu_ms_per_call": float(np.mean(cpu) * 1000),
    }


def _time(fn, calls: int, warm: int = 3) -> dict:
    for _ in range(warm):
        fn(0)
    wall, cpu = [], []
    for i in range(calls):
        t, c = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return _stats(wall, cpu)


def python_paths(run: Path, items: list[dict], image_dir: Path, calls: int) -> dict:
    from aisle.api import Classifier
    from aisle.inference import predict

    clf = Classifier.load(run)
    with_bytes = [dict(i) for i in items]
    fast = _time(lambda i: clf.predict_proba([with_bytes[i % len(items)]]), calls)
    frame = pd.DataFrame([{k: v for k, v in i.items() if k != "image"} for i in items])
    old = _time(lambda i: predict(run, frame.iloc[[i % len(items)]], image_dir=image_dir), max(5, calls // 20), warm=1)
    return {"old_predict_per_call": old, "python_api": fast, **onnx_path(run, with_bytes, image_dir, calls)}


def onnx_path(run: Path, items: list[dict], image_dir: Path, calls: int) -> dict:
    """The Python API on the exported graph (exported now when the run has none), timed beside torch."""
    from aisle.api import Classifier
    from aisle.inference.export import export_onnx

    if not (run / "onnx" / "model.onnx").is_file():
        export_onnx(run, None, items[:8])
    onnx = Classifier.load(run, backend="onnx")
    torch_clf = Classifier.load(run)
    both = {}
    for name, clf in (("python_api_torch_again", torch_clf), ("python_api_onnx", onnx)):
        both[name] = _time(lambda i, c=clf: c.predict_proba([items[i % len(items)]]), calls)
    both["ratio_onnx_vs_torch_cpu"] = (
        both["python_api_onnx"]["cpu_ms_per_call"] / (both["python_api_torch_again"]["cpu_ms_per_call"])
    )
    return both


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, run: Path, *args: str) -> None:
        self.port = _free_port()
        cmd = [sys.executable, "-m", "aisle", "serve", str(run), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(1200):
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"aisle serve {run} did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _payload(item: dict) -> dict:
    b = item.get("image")
    return {"items": [{**item, "image": base64.b64encode(b).decode() if b else None}]}


def http_single(server: Server, items: list[dict], calls: int) -> dict:
    bodies = [_payload(i) for i in items]
    with httpx.Client() as client:
        cpu0 = _cpu_s(server.proc.pid)

        def call(i: int) -> None:
            r = client.post(f"{server.url}/v1/predict", json=bodies[i % len(bodies)])
            r.raise_for_status()

        out = _time(call, calls)
        out["server_cpu_ms_per_call"] = (_cpu_s(server.proc.pid) - cpu0) / (calls + 3) * 1000
    return out


async def _load(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=60) as c:
            i = k
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await c.post(f"{url}/v1/predict", json=bodies[i % len(bodies)])
                lat.append(time.perf_counter() - t)
                errors += r.status_code != 200
                i += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    took = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {
        "clients": clients,
        "requests_per_s": len(lat) / took,
        "items_per_s": len(lat) / took,
        "wall_ms_p50": float(np.percentile(ms, 50)),
        "wall_ms_p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def load_test(run: Path, items: list[dict], seconds: float) -> dict:
    bodies = [_payload(i) for i in items]
    out = {}
    modes = {"batching_on": ["--max-batch", "32", "--max-wait-ms", "2"], "batching_off": ["--max-batch", "1"]}
    for mode, args in modes.items():
        server = Server(run, *args)
        try:
            rss0 = _rss_mb(server.proc.pid)
            asyncio.run(_load(server.url, bodies, 32, min(5.0, seconds)))  # warm-up: the working set at full load
            warm = _rss_mb(server.proc.pid)
            rows = [asyncio.run(_load(server.url, bodies, n, seconds)) for n in (1, 8, 32)]
            end = _rss_mb(server.proc.pid)
            out[mode] = {"rss_mb_start": rss0, "rss_mb_after_warmup": warm, "rss_mb_end": end, "levels": rows}
        finally:
            server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="name=RUN_DIR:TEST_TABLE")
    ap.add_argument("--image-dir", action="append", default=[], help="name=FOLDER (default: images/ beside the table)")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--parts", default="python,http,load", help="which measurements (python is always run)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_latency.json")
    args = ap.parse_args()
    dirs = dict(d.split("=", 1) for d in args.image_dir)
    results: dict = {"date": str(date.today()), "command": " ".join(sys.argv), "machine": f"{os.cpu_count()} CPU cores"}
    for spec in args.run:
        name, rest = spec.split("=", 1)
        run, table = (Path(p) for p in rest.split(":", 1))
        image_dir = Path(dirs.get(name, table.parent / "images"))
        items = _items(table, image_dir, 50)
        r = python_paths(run, items, image_dir, args.calls)
        if "http" in args.parts:
            server = Server(run, "--max-batch", "1")
            try:
                r["http_one_client"] = http_single(server, items, args.calls)
            finally:
                server.stop()
        if "load" in args.parts:
            r["load_test"] = load_test(run, items, args.seconds)
        old, fast = r["old_predict_per_call"], r["python_api"]
        r["ratio_python_api_vs_old_cpu"] = fast["cpu_ms_per_call"] / old["cpu_ms_per_call"]
        r["ratio_python_api_vs_old_wall_p50"] = fast["wall_ms_p50"] / old["wall_ms_p50"]
        results[name] = r
        print(json.dumps({name: r}, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
