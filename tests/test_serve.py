"""``aisle serve``: the HTTP service gives ``aisle predict``'s probabilities, keeps order, refuses bad input with
a 4xx naming the item and field, and keeps serving."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def _multipart(items: list[dict], keep_b64: int | None = None) -> tuple[dict, list]:
    """``items`` (JSON items with base64 images) as a form: the ``items`` field without the images, which go as
    files ``image.<i>`` (except item ``keep_b64``'s, left as base64 in the JSON)."""
    bare = [{**item, "image": None} if k != keep_b64 else item for k, item in enumerate(items)]
    files = [
        (f"image.{k}", (f"{item['id']}.jpg", base64.b64decode(item["image"]), "image/jpeg"))
        for k, item in enumerate(items)
        if item["image"] is not None and k != keep_b64
    ]
    return {"items": json.dumps(bare)}, files


def _good(cat: Path) -> list[dict]:
    return [i for i in _items(cat) if i["image"] is None or _decodes(i["image"])]


def test_multipart_answers_equal_the_json_body_in_request_order(run, client) -> None:
    items = _good(run[1])[::-1]
    items[2] = {**items[2], "image": None}  # the missing-image path
    with_image = [k for k, i in enumerate(items) if i["image"] is not None]
    assert len(with_image) >= 3  # one image stays base64 in the JSON, the others go as files
    classes = client.get("/v1/model").json()["classes"]
    as_json = client.post("/v1/predict", params={"k": len(classes)}, json={"items": items})
    data, files = _multipart(items, keep_b64=with_image[0])
    as_form = client.post("/v1/predict", params={"k": len(classes)}, data=data, files=files)
    assert as_json.status_code == 200 and as_form.status_code == 200, as_form.text
    assert [p["id"] for p in as_form.json()["predictions"]] == [i["id"] for i in items]
    assert np.allclose(_probs(as_form.json(), classes), _probs(as_json.json(), classes), atol=1e-6, rtol=0)


def test_a_one_item_form_is_its_fields_and_one_image_file(run, client) -> None:
    item = next(i for i in _good(run[1]) if i["image"] is not None)
    classes = client.get("/v1/model").json()["classes"]
    fields = {k: item[k] for k in ("id", "title", "description")}
    image = ("x.jpg", base64.b64decode(item["image"]), "image/jpeg")
    as_form = client.post("/v1/predict", params={"k": len(classes)}, data=fields, files={"image": image})
    as_json = client.post("/v1/predict", params={"k": len(classes)}, json={"items": [item]})
    assert as_form.status_code == 200, as_form.text
    assert as_form.json()["predictions"][0]["id"] == item["id"]
    assert np.allclose(_probs(as_form.json(), classes), _probs(as_json.json(), classes), atol=1e-6, rtol=0)
    text_only = [(k, (None, v)) for k, v in fields.items()]  # multipart with no file: the missing-image path
    no_image = client.post("/v1/predict", files=text_only)
    assert (
        no_image.status_code == 200
        and no_image.json() == client.post("/v1/predict", json={"items": [{**item, "image": None}]}).json()
    )


def test_a_browser_form_with_no_file_chosen_takes_the_missing_image_path(client) -> None:
    fields = [("id", "a"), ("title", "t"), ("description", "")]
    parts = [f'Content-Disposition: form-data; name="{k}"\r\n\r\n{v}' for k, v in fields]
    parts.append(
        'Content-Disposition: form-data; name="image"; filename=""\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    body = "".join(f"--b0\r\n{p}\r\n" for p in parts) + "--b0--\r\n"
    r = client.post("/v1/predict", content=body.encode(), headers={"content-type": "multipart/form-data; boundary=b0"})
    assert r.status_code == 200, r.text
    assert r.json() == client.post("/v1/predict", json={"items": [{**dict(fields), "image": None}]}).json()


def test_a_file_for_an_item_that_is_not_there_is_a_400_naming_it(run, client) -> None:
    data, files = _multipart(_good(run[1])[:2])
    r = client.post("/v1/predict", data=data, files=[*files, ("image.5", ("x.jpg", b"pixels", "image/jpeg"))])
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["item"] == 5 and body["field"] == "image.5" and "'image.5'" in body["error"]


@pytest.mark.parametrize(
    ("data", "reason"), [(b"plain text, not pixels", "not_an_image"), (base64.b64decode(_png(100)), "bomb")]
)
def test_a_bad_image_file_gets_a_4xx_naming_it_and_the_server_keeps_serving(run, client, data, reason) -> None:
    items = _good(run[1])[:3]
    form, files = _multipart(items)
    files = [f for f in files if f[0] != "image.1"] + [("image.1", ("bad.jpg", data, "image/jpeg"))]
    r = client.post("/v1/predict", data=form, files=files)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["item"] == 1 and body["field"] == "image" and reason in body["error"]
    assert client.post("/v1/predict", data=form, files=_multipart(items)[1]).status_code == 200


def _item_fields() -> dict:
    return {"id": "a", "title": "t", "description": ""}


MALFORMED_FORMS = {
    "items_not_json": ({"items": "[{not json"}, [], 400, "items"),
    "items_not_a_list": ({"items": '{"id": "a"}'}, [], 422, "items"),
    "unknown_file_name": ({"items": json.dumps([_item_fields()])}, [("photo", b"x")], 400, "photo"),
    "bare_image_next_to_items": ({"items": json.dumps([_item_fields()])}, [("image", b"x")], 400, "image"),
    "two_files_for_one_item": ({"items": json.dumps([_item_fields()])}, [("image.0", b"x")] * 2, 400, "image.0"),
    "field_next_to_items": ({"items": json.dumps([_item_fields()]), "title": "t"}, [], 400, "title"),
    "indexed_file_without_items": (_item_fields(), [("image.0", b"x")], 400, "image.0"),
    "base64_and_file": (
        {"items": json.dumps([{**_item_fields(), "image": _png(8)}])},
        [("image.0", b"x")],
        400,
        "image",
    ),
    "too_many_items": ({"items": json.dumps([_item_fields()] * 65)}, [], 413, None),
    "text_too_long": ({**_item_fields(), "title": "w" * 30_000}, [], 413, "title"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_FORMS))
def test_malformed_forms_get_a_4xx_naming_the_part(client, case) -> None:
    data, files, status, field = MALFORMED_FORMS[case]
    parts = [(k, (None, v)) for k, v in data.items()] + [(k, ("f.jpg", b, "image/jpeg")) for k, b in files]
    r = client.post("/v1/predict", files=parts)  # multipart even without a file
    assert r.status_code == status, r.text
    assert r.json()["field"] == field


def test_a_form_without_files_must_be_multipart(client) -> None:
    r = client.post("/v1/predict", data=_item_fields())  # x-www-form-urlencoded
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]


def test_an_oversize_multipart_body_is_a_413(run) -> None:
    data = _multipart(_good(run[1])[:1])[0]
    files = [("image.0", ("x.png", b"\0" * 20_000, "image/png"))]
    with TestClient(create_app(ServeSettings(run[0], max_body_mb=0.01), load_in_background=False)) as c:
        sized = c.post("/v1/predict", data=data, files=files)  # refused on its Content-Length
        size = int(sized.request.headers["content-length"])
        assert sized.status_code == 413 and f"request body of {size:,} bytes" in sized.json()["error"]
        request = c.build_request("POST", "/v1/predict", data=data, files=files)
        body, content_type = request.read(), request.headers["content-type"]
        streamed = c.post("/v1/predict", content=iter([body]), headers={"content-type": content_type})
        assert "content-length" not in streamed.request.headers  # refused while the body is read
        assert streamed.status_code == 413 and "--max-body-mb" in streamed.json()["error"]
        assert (
            c.post(
                "/v1/predict", files={"id": (None, "a"), "title": (None, "t"), "description": (None, "")}
            ).status_code
            == 200
        )


class _DiskWrites:
    """Files opened for writing (and temporary files made) while a test watches, seen by an audit hook; Python
    cannot remove one, so it is installed once and idles when no test watches."""

    def __init__(self) -> None:
        self.seen: list[str] | None = None
        self.installed = False

    def __call__(self, event: str, args: tuple) -> None:
        if self.seen is None:
            return
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        if (event == "open" and isinstance(args[2], int) and args[2] & writing) or event.startswith("tempfile."):
            self.seen.append(f"{event} {args[0]!r}")

    @contextmanager
    def watch(self) -> Iterator[list[str]]:
        if not self.installed:
            sys.addaudithook(self)
            self.installed = True
        self.seen = []
        try:
            yield self.seen
        finally:
            self.seen = None


_DISK_WRITES = _DiskWrites()


def test_a_multipart_request_never_touches_disk(run, client) -> None:
    item = next(i for i in _good(run[1]) if i["image"] is not None)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buf, format="PNG")
    # past Starlette's 1 MB spool: request.form() would roll this file over to a temporary file on disk
    big = buf.getvalue() + b"\0" * (2 * 2**20)
    data = _multipart([item])[0]
    files = [("image.0", ("big.png", big, "image/png"))]
    with _DISK_WRITES.watch() as writes:
        r = client.post("/v1/predict", data=data, files=files)
    assert r.status_code == 200, r.text
    assert writes == []


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
