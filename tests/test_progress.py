"""Long steps show progress where the caller asked for it; epochs count from 1; the Python API prints no library
banners."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from aisle import Classifier
from aisle.cache.encode import tower_features
from aisle.config import DataConfig
from aisle.data.demo import write_demo_catalogue
from aisle.data.image_report import scan_image_issues
from aisle.data.products import load_products
from aisle.models import IMAGE_TOWERS, TEXT_TOWERS
from aisle.progress import _SINK, Kind, show_progress, step


class _Recorder:
    """A progress sink that remembers every step opened and every row advanced."""

    kind: Kind = "rich"

    def __init__(self) -> None:
        self.steps: dict[str, list] = {}
        self.closed: list[str] = []

    def open(self, description, total):
        self.steps[description] = [total, 0]
        return (lambda k: self.steps[description].__setitem__(1, self.steps[description][1] + k)), (
            lambda: self.closed.append(description)
        )


@pytest.fixture()
def recorder():
    rec = _Recorder()
    token = _SINK.set(rec)
    yield rec
    _SINK.reset(token)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cat")
    write_demo_catalogue(out, n_train=40, n_test=8, seed=3, image_size=32)
    return out


def test_feature_encoding_reports_every_row(catalogue, tmp_path, recorder) -> None:
    products = load_products(catalogue / "train.csv", DataConfig())
    torch.manual_seed(0)
    image = IMAGE_TOWERS.create("timm", "test_resnet", pretrained=False, image_size=32)
    text = TEXT_TOWERS.create("tiny", "bert", texts=["soft wool knit"], max_length=16)
    tower_features(image, products, tmp_path / "c")
    tower_features(text, products, tmp_path / "c")
    n, texts = len(products.ids), len(set(products.texts))  # equal texts are encoded once
    assert recorder.steps == {"encoding image (orig)": [n, n], "encoding text (orig)": [texts, texts]}
    assert recorder.closed == list(recorder.steps)
    recorder.steps.clear()
    tower_features(image, products, tmp_path / "c")  # all from the cache: nothing to show
    assert recorder.steps == {}


def test_the_image_check_reports_every_decoded_file(catalogue, recorder) -> None:
    products = load_products(catalogue / "train.csv", DataConfig())
    scan_image_issues(products)
    total, done = recorder.steps["checking images"]
    assert total == done > 0


def test_no_bars_unless_asked_and_the_environment_switch(monkeypatch, recorder) -> None:
    with show_progress(None), step("quiet", 3) as advance:
        advance(3)
    assert "quiet" not in recorder.steps
    monkeypatch.setenv("AISLE_PROGRESS", "0")
    with step("switched off", 3) as advance:
        advance(3)
    assert recorder.steps == {}


_TINY = [
    "model.type=image",
    "model.image.name=timm:test_resnet",
    "model.image.pretrained=false",
    "model.image_size=32",
    "model.head_hidden=16",
    "data.folds=2",
    "train.epochs=1",
    "train.batch_size=16",
    "runtime.num_workers=0",
]


def _fit(tmp_path: Path, catalogue: Path, progress: bool) -> Classifier:
    train = pd.read_csv(catalogue / "train.csv", dtype=str)
    clf = Classifier(
        overrides=[*_TINY, "train.epochs=2", f"runtime.cache_dir={tmp_path / 'cache'}"],
        run_dir=tmp_path / "run",
        progress=progress,
    )
    return clf.fit(train, data_root=catalogue)


_BANNERS = ("GPU available", "TPU available", "Tip:", "LeafSpec", "eval mode", "`Trainer.fit` stopped")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_api_prints_bars_counted_from_one_and_no_banners(catalogue, tmp_path, capfd, recwarn) -> None:
    # Lightning prints its banners through a handler of its own (when the root logger has none, as in a plain
    # Python session; under pytest they go to the root logger instead): record what passes its loggers' levels
    lightning = logging.getLogger("lightning.pytorch")
    level, records = lightning.level, _Records()
    lightning.addHandler(records)
    try:
        _fit(tmp_path / "a", catalogue, progress=True)
    finally:
        lightning.removeHandler(records)
    out = capfd.readouterr()
    text = out.out + out.err + "\n".join(records.messages) + "\n".join(str(w.message) for w in recwarn)
    assert not [b for b in _BANNERS if b in text], text[-2000:]
    assert lightning.level == level, "the caller's logging is restored"
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "Epoch 0" not in text
    _fit(tmp_path / "b", catalogue, progress=False)
    out = capfd.readouterr()
    assert "Epoch" not in out.err and not [b for b in _BANNERS if b in out.out + out.err]


def test_the_cli_epoch_bar_counts_from_one() -> None:
    import lightning as L

    from aisle.training.callbacks import epoch_bar

    bar = epoch_bar("rich")
    trainer = L.Trainer(max_epochs=15, callbacks=[bar], logger=False, enable_checkpointing=False)
    bar.setup(trainer, None, "fit")  # what Lightning does when fitting
    assert bar._get_train_description(0).strip() == "Epoch 1/15"
    assert bar._get_train_description(14).strip() == "Epoch 15/15"
    assert trainer.progress_bar_callback is bar
    assert epoch_bar(None) is None


_FIT = """
import sys
import pandas as pd
from aisle import Classifier
train = pd.read_csv(sys.argv[1] + "/train.csv", dtype=str)
Classifier(overrides=sys.argv[3:], run_dir=sys.argv[2], progress=False).fit(train, data_root=sys.argv[1])
"""


@pytest.mark.parametrize("way", ["cli", "api"])
def test_a_fresh_process_prints_no_lightning_banners(catalogue, tmp_path, way) -> None:
    """In a new process Lightning is imported after logging is set up and resets its own loggers to INFO: the
    banners must still be hidden (pytest's own logging capture hides them in-process, so this needs a process)."""
    import subprocess
    import sys

    env = {**os.environ, "AISLE_PROGRESS": "0", "PYTHONWARNINGS": "default"}
    if way == "cli":
        sets = [a for kv in _TINY for a in ("--set", kv)]
        args = [sys.executable, "-m", "aisle", "train", "--run-dir", str(tmp_path / "run"), *sets]
        args += ["--set", f"data.train_csv={catalogue / 'train.csv'}", "--set", f"runtime.cache_dir={tmp_path / 'c'}"]
    else:
        args = [sys.executable, "-c", _FIT, str(catalogue), str(tmp_path / "run"), *_TINY]
        args += [f"runtime.cache_dir={tmp_path / 'c'}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    assert not [b for b in _BANNERS if b in text], text[-3000:]
