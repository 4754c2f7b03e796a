"""``aisle export``: each kind of tower exports to one ONNX graph whose probabilities are torch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("onnxruntime", reason="export needs its extra: pip install 'aisle[onnx]'")
import onnxruntime as ort

from aisle.api import Classifier
from aisle.cli import main
from aisle.data.demo import write_demo_catalogue
from aisle.inference.export import export_onnx
from aisle.inference.predictor import Predictor

IMAGE = {"name": "timm:test_resnet", "pretrained": False}
BERT = {"name": "tiny:bert", "max_length": 16}
MODELS = {
    "image": {"type": "image", "image": IMAGE},
    "text": {"type": "text", "text": BERT},
    "fusion": {"type": "fusion", "image": IMAGE, "text": BERT, "fusion": "gated"},
    "fusion_frozen": {"type": "fusion", "image": IMAGE, "text": BERT},
    "ngram": {"type": "fusion", "image": IMAGE, "text": {"name": "ngram:word1-2,char2-4", "embed_dim": 16}},
    "dual_clip": {"type": "dual", "dual": {"name": "hf-clip:tiny", "pretrained": False}},
    "dual_siglip": {"type": "dual", "dual": {"name": "hf-siglip:tiny", "pretrained": False}},
    "dual_blip": {"type": "dual", "dual": {"name": "hf-blip:tiny", "pretrained": False}},
    "linear": {"type": "linear"},
    "linear_image": {"type": "linear", "image": IMAGE, "linear": {"image_weight": 1.0}},  # image weights not 0
}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    write_demo_catalogue(root / "cat", n_train=30, n_test=8, seed=4, image_size=32, n_broken=0)
    return root / "cat"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_an_exported_run_gives_torchs_probabilities(catalogue: Path, tmp_path: Path, kind: str) -> None:
    cfg = {
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 2},
        "model": {**MODELS[kind], "image_size": 32, "head_hidden": 16},
        "train": {"epochs": 1, "batch_size": 8, "stages": [{"name": "s", "freeze_encoders": kind.endswith("frozen")}]},
        "runtime": {"num_workers": 0, "cache_dir": str(tmp_path / "cache")},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    test = pd.read_csv(catalogue / "test.csv", dtype=str, keep_default_na=False)
    assert main(["export", str(tmp_path / "run"), "--data", str(catalogue / "test.csv")]) == 0
    # the graph, loaded on its own, against the in-memory predictor on other rows (batch size and length vary)
    p = Predictor(tmp_path / "run")
    from aisle.inference.items import frame_items

    items = frame_items(test.iloc[2:7], p, catalogue / "images", {})
    inputs = p.members[0][2].inputs(items)
    session = ort.InferenceSession(str(tmp_path / "run" / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    expected = p.predict_proba(items)
    assert np.abs(got - expected).max() < 1e-4
    onnx = Classifier.load(tmp_path / "run", backend="onnx").predict_proba(items)
    assert np.abs(onnx.to_numpy() - expected).max() < 1e-4


def test_export_refuses_a_graph_that_differs(catalogue: Path, tmp_path: Path, monkeypatch) -> None:
    import aisle.inference.export as ex

    cfg = {
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 2},
        "model": {**MODELS["image"], "image_size": 32, "head_hidden": 16},
        "train": {"epochs": 1, "batch_size": 8},
        "runtime": {"num_workers": 0},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    real = ex.FoldAverage.forward
    monkeypatch.setattr(ex.FoldAverage, "forward", lambda self, *t: real(self, *t) * 1.01)  # torch side only
    test = pd.read_csv(catalogue / "test.csv", dtype=str, keep_default_na=False)
    orig_export = ex.torch.onnx.export

    def export_unchanged(module, *a, **k):
        monkeypatch.setattr(ex.FoldAverage, "forward", real)
        orig_export(module, *a, **k)
        monkeypatch.setattr(ex.FoldAverage, "forward", lambda self, *t: real(self, *t) * 1.01)

    monkeypatch.setattr(ex.torch.onnx, "export", export_unchanged)
    with pytest.raises(ex.ExportError, match="differs from torch"):
        export_onnx(tmp_path / "run", tmp_path / "onnx", test.head(4), catalogue / "images")


def test_onnx_backend_without_an_export_says_what_to_do(catalogue: Path, tmp_path: Path) -> None:
    cfg = {
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 2},
        "model": {**MODELS["text"], "head_hidden": 16},
        "train": {"epochs": 1, "batch_size": 8},
        "runtime": {"num_workers": 0},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    with pytest.raises(FileNotFoundError, match="export the run first"):
        Classifier.load(tmp_path / "run", backend="onnx")
    assert main(["serve", str(tmp_path / "run"), "--backend", "onnx"]) == 2


def test_serve_with_the_onnx_backend_answers_as_torch(catalogue: Path, tmp_path: Path) -> None:
    import base64

    from fastapi.testclient import TestClient

    from aisle.serve import ServeSettings
    from aisle.serve.app import create_app

    cfg = {
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 2},
        "model": {**MODELS["fusion"], "image_size": 32, "head_hidden": 16},
        "train": {"epochs": 1, "batch_size": 8},
        "runtime": {"num_workers": 0},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), "--data", str(catalogue / "test.csv")]) == 0
    test = pd.read_csv(catalogue / "test.csv", dtype=str, keep_default_na=False).head(4)
    items = [
        {**r, "image": base64.b64encode((catalogue / "images" / f"{r['id']}.jpg").read_bytes()).decode()}
        for r in test.to_dict("records")
    ]
    answers = {}
    for backend in ("torch", "onnx"):
        with TestClient(create_app(ServeSettings(tmp_path / "run", backend=backend), load_in_background=False)) as c:
            answers[backend] = c.post("/v1/predict", params={"k": 3}, json={"items": items}).json()["predictions"]
    for a, b in zip(answers["torch"], answers["onnx"]):
        assert [x["label"] for x in a["labels"]] == [x["label"] for x in b["labels"]]
        assert np.allclose([x["probability"] for x in a["labels"]], [x["probability"] for x in b["labels"]], atol=1e-4)
