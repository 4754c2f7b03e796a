"""Ids and labels are strings end to end: whatever a user writes comes back unchanged from every command.

A linear model (fitted in well under a second) trains on tables whose ids and labels are awkward strings,
then predict, ensemble (files and ``--fit``), evaluate and report run on it. Output files are read back with
the ``csv`` module, so no pandas guessing is involved in checking them.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aisle.cli import main

TRICKY_IDS = [
    "NA",
    "None",
    "nan",
    "null",
    "NaN",
    "007",
    "00012",
    "1e3",
    "1.0",
    " spaced ",
    "a,b",
    'q"uote',
    "ünï 中文",
    "-",
]
TRICKY_LABELS = ["001", "01", "1", "NA", "None", "1e3", "a, b", "ñ"]

_printable = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc")),
    min_size=1,
    max_size=10,
).filter(lambda s: s.strip() != "")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _round_trip(tmp: Path, ids: list[str], labels: list[str], with_report: bool) -> None:
    """Train -> predict -> ensemble -> evaluate (-> report) on ``ids`` labelled round-robin with ``labels``."""
    tmp.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    y = [labels[i % len(labels)] for i in range(n)]
    words = {lab: f"word{j} kind{j}" for j, lab in enumerate(labels)}
    train = pd.DataFrame({"id": ids, "title": [words[v] for v in y], "categories": y})
    _write(train, tmp / "train.csv")
    test = train.drop(columns="categories")
    _write(test, tmp / "test.csv")
    _write(train[["id", "categories"]], tmp / "test_labels.csv")
    cfg = {
        "name": "rt",
        "output_dir": str(tmp / "runs"),
        "data": {"train_csv": str(tmp / "train.csv"), "folds": 2},
        "model": {"type": "linear", "linear": {"classifier": "logreg"}},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run, out = tmp / "run", tmp / "pred"
    assert main(["train", "-c", str(tmp / "cfg.yaml"), "--run-dir", str(run)]) == 0
    assert sorted(r["id"] for r in _rows(run / "main" / "oof.csv")) == sorted(ids)
    assert sorted(r["label"] for r in _rows(run / "main" / "oof.csv")) == sorted(y)
    assert json.loads((run / "label_map.json").read_text())["classes"] and set(
        json.loads((run / "label_map.json").read_text())["classes"]
    ) == set(labels)

    assert main(["predict", str(run), "--data", str(tmp / "test.csv"), "--out", str(out)]) == 0
    sub, probs = _rows(out / "submission.csv"), _rows(out / "probabilities.csv")
    assert [r["id"] for r in sub] == ids and [r["id"] for r in probs] == ids
    assert {r["categories"] for r in sub} <= set(labels)
    assert set(probs[0]) == {"id", *labels}

    assert (
        main(["ensemble", str(out / "probabilities.csv"), str(out / "probabilities.csv"), "--out", str(tmp / "e")]) == 0
    )
    assert [r["id"] for r in _rows(tmp / "e" / "submission.csv")] == ids
    assert main(["ensemble", "--fit", str(run), "--out", str(tmp / "fitted")]) == 0
    assert sorted(r["id"] for r in _rows(tmp / "fitted" / "ensemble" / "oof.csv")) == sorted(ids)

    assert main(["evaluate", str(out / "probabilities.csv"), "--labels", str(tmp / "test_labels.csv")]) == 0
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["n_scored"] == n and metrics["n_unscored"] == 0, "no row may be dropped as 'label missing'"
    if with_report:
        assert main(["report", str(run)]) == 0
        assert (run / "report.html").is_file()


def test_tricky_ids_and_labels_round_trip(tmp_path: Path) -> None:
    ids = [*TRICKY_IDS, *(f"p{i:03d}" for i in range(24 - len(TRICKY_IDS)))]
    _round_trip(tmp_path, ids, TRICKY_LABELS[:4], with_report=True)
    _round_trip(tmp_path / "2", ids, TRICKY_LABELS[4:], with_report=False)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(_printable, min_size=12, max_size=20, unique=True),
    labels=st.lists(
        _printable.filter(lambda s: s not in {"id", "fold", "label", "pred"}), min_size=2, max_size=3, unique=True
    ),
)
@example(ids=[f"{i:05d}" for i in range(12)], labels=["01", "1"])
def test_any_printable_ids_and_labels_round_trip(tmp_path_factory, ids: list[str], labels: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("rt")
    _round_trip(tmp, ids, labels, with_report=False)


def test_class_names_that_are_output_columns_are_refused(tmp_path: Path, capsys) -> None:
    ids = [f"p{i}" for i in range(12)]
    train = pd.DataFrame({"id": ids, "title": ["x"] * 12, "categories": ["id", "b"] * 6})
    _write(train, tmp_path / "train.csv")
    code = main(
        [
            "train",
            "--set",
            f"data.train_csv={tmp_path / 'train.csv'}",
            "--set",
            "model.type=linear",
            "--set",
            "data.folds=2",
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    assert re.search(r"class name\(s\) \['id'\]", capsys.readouterr().err.replace("\n", " "))
