"""``aisle serve``: the HTTP service gives ``aisle predict``'s probabilities, keeps order, refuses bad input with
a 4xx naming the item and field, and keeps serving."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

pytest.importorskip("fastapi", reason="serving needs its extra: pip install 'aisle[serve]'")
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aisle.cli import main
from aisle.data.demo import write_demo_catalogue
from aisle.inference import predict
from aisle.serve import ServeSettings
from aisle.serve.app import create_app
from conftest import TINY_FUSION

MAX_PIXELS = 5000  # the run's decompression-bomb limit: its 32 px images pass, a 100 x 100 image does not


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    write_demo_catalogue(root / "cat", n_train=40, n_test=10, seed=6, image_size=32)
    cfg = {
        "data": {"train_csv": str(root / "cat" / "train.csv"), "folds": 2, "max_image_pixels": MAX_PIXELS},
        "model": TINY_FUSION,
        "train": {"epochs": 1, "batch_size": 8},
        "runtime": {"num_workers": 0, "cache_dir": str(root / "cache")},
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(root / "cfg.yaml"), "--run-dir", str(root / "run")]) == 0
    return root / "run", root / "cat"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _items(cat: Path) -> list[dict]:
    test = pd.read_csv(cat / "test.csv", dtype=str, keep_default_na=False)
    items = []
    for row in test.to_dict("records"):
        path = cat / "images" / f"{row['id']}.jpg"
        items.append({**row, "image": _b64(path.read_bytes()) if path.exists() else None})
    return items


def _probs(body: dict, classes: list[str]) -> np.ndarray:
    return np.array(
        [[{x["label"]: x["probability"] for x in p["labels"]}[c] for c in classes] for p in body["predictions"]]
    )


@pytest.fixture
def client(run):
    with TestClient(create_app(ServeSettings(run[0]), load_in_background=False)) as c:
        yield c


def test_predictions_equal_aisle_predict_in_request_order(run, client) -> None:
    run_dir, cat = run
    expected = predict(run_dir, cat / "test.csv")
    classes = list(expected.label_map.classes)
    good = [i for i in _items(cat) if i["image"] is None or _decodes(i["image"])]
    keep = [k for k, i in enumerate(_items(cat)) if i in good]
    r = client.post("/v1/predict", params={"k": len(classes)}, json={"items": good[::-1]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["id"] for p in body["predictions"]] == [i["id"] for i in good[::-1]]
    assert np.allclose(_probs(body, classes)[::-1], expected.probs[keep], atol=1e-5)
    top = client.post("/v1/predict", params={"k": 2}, json={"items": good[:1]}).json()["predictions"][0]["labels"]
    assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]


def _decodes(b64: str) -> bool:
    try:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.load()
        return True
    except (OSError, ValueError):
        return False


def _png(size: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buf, format="PNG")
    return _b64(buf.getvalue())


BAD = {
    "bad_base64": ({"image": "not base64!!"}, 422, "image", "not valid base64"),
    "not_an_image": ({"image": _b64(b"plain text, not pixels")}, 422, "image", "not_an_image"),
    "bomb": ({"image": _png(100)}, 422, "image", "decompression_bomb"),
    "missing_text_field": ({"title": None, "drop": "description"}, 422, "description", "is missing"),
    "text_wrong_type": ({"title": 12}, 422, "title", "must be a string"),
    "no_id": ({"drop": "id"}, 422, "id", "'id' is missing"),
    "text_too_long": ({"title": "w" * 30_000}, 413, "title", "characters"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_item_gets_a_4xx_naming_it_and_the_server_keeps_serving(run, client, case) -> None:
    change, status, field, words = BAD[case]
    items = _items(run[1])[:3]
    bad = {**items[1], **{k: v for k, v in change.items() if k != "drop"}}
    bad.pop(change.get("drop", "-"), None)
    r = client.post("/v1/predict", json={"items": [items[0], bad, items[2]]})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["item"] == 1 and body["field"] == field and words in body["error"]
    assert client.post("/v1/predict", json={"items": items}).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status"),
    [(b"{not json", 400), (b'{"items": []}', 422), (b'{"rows": [1]}', 422), (b'{"items": [1]}', 422)],
)
def test_malformed_bodies(client, payload: bytes, status: int) -> None:
    r = client.post("/v1/predict", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status and "error" in r.json()


def test_limits_on_body_size_and_item_count(run) -> None:
    settings = ServeSettings(run[0], max_body_mb=0.01, max_items=2)
    with TestClient(create_app(settings, load_in_background=False)) as c:
        big = c.post("/v1/predict", json={"items": [{"id": "x", "title": "w" * 20_000, "description": ""}]})
        assert big.status_code == 413 and "--max-body-mb" in big.json()["error"]
        many = c.post("/v1/predict", json={"items": _items(run[1])[:3]})
        assert many.status_code == 413 and "--max-items" in many.json()["error"]


def test_ready_is_false_until_the_model_is_loaded(run, monkeypatch) -> None:
    import aisle.inference.predictor as predictor

    gate, real = threading.Event(), predictor.Predictor

    def slow(*a, **k):
        gate.wait(10)
        return real(*a, **k)

    monkeypatch.setattr(predictor, "Predictor", slow)
    with TestClient(create_app(ServeSettings(run[0]))) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").status_code == 503
        assert c.post("/v1/predict", json={"items": _items(run[1])[:1]}).status_code == 503
        gate.set()
        for _ in range(200):
            if c.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        assert c.get("/ready").json()["ready"] is True
        model = c.get("/v1/model").json()
        assert model["uses_images"] and model["text_fields"] == ["title", "description"] and model["classes"]


def test_metrics_parse_as_prometheus_text(run, client) -> None:
    client.post("/v1/predict", json={"items": _items(run[1])[:2]})
    client.post("/v1/predict", json={"items": []})
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"aisle_requests", "aisle_request_seconds", "aisle_batch_items", "aisle_items"} <= set(families)
    statuses = {s.labels.get("status") for s in families["aisle_requests"].samples if s.name.endswith("_total")}
    assert {"200", "422"} <= statuses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_process_answers_concurrent_clients(run) -> None:
    import httpx

    run_dir, cat = run
    port = _free_port()
    cmd = [sys.executable, "-m", "aisle", "serve", str(run_dir), "--port", str(port), "--max-wait-ms", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail(f"the server did not become ready: {proc.stdout.read1().decode() if proc.stdout else ''}")
        items = [i for i in _items(cat) if i["image"] is None or _decodes(i["image"])]
        alone = [httpx.post(f"{url}/v1/predict", json={"items": [i]}).json()["predictions"][0] for i in items]
        results: dict[int, dict] = {}

        def call(k: int) -> None:
            results[k] = httpx.post(f"{url}/v1/predict", json={"items": [items[k]]}, timeout=30).json()

        threads = [threading.Thread(target=call, args=(k,)) for k in range(len(items))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, item in enumerate(items):
            got = results[k]["predictions"][0]
            assert got["id"] == item["id"]
            assert got["labels"][0]["label"] == alone[k]["labels"][0]["label"]
            assert abs(got["labels"][0]["probability"] - alone[k]["labels"][0]["probability"]) < 1e-5
        metrics = httpx.get(f"{url}/metrics").text
        assert "aisle_batch_items" in metrics
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_batcher_gathers_concurrent_requests_and_returns_each_its_rows() -> None:
    import asyncio

    from aisle.serve.batcher import Batcher

    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        return np.array([[float(i), -float(i)] for i in items])

    async def scenario(max_batch: int, max_wait_ms: float) -> list[np.ndarray]:
        b = Batcher(run, max_batch, max_wait_ms)
        b.start()
        out = await asyncio.gather(b.predict([1]), b.predict([2, 3]), b.predict([4]), b.predict([5, 6, 7]))
        await b.stop()
        return out

    out = asyncio.run(scenario(4, 50))
    assert [o[:, 0].tolist() for o in out] == [[1], [2, 3], [4], [5, 6, 7]]
    assert calls == [[1, 2, 3, 4], [5, 6, 7]]  # gathered up to 4 items; the job that did not fit starts the next
    calls.clear()
    out = asyncio.run(scenario(1, 50))
    assert calls == [[1], [2, 3], [4], [5, 6, 7]]  # off: each request alone (a larger one still runs whole)
