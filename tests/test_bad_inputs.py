"""The bad-input matrix: each messy or hostile input gets its verdict, and no input id is ever lost.

A verdict is either a clear error (exit 2, a message that names the file / row / key and what to do) or a
counted warning (the run goes on). Cases covered elsewhere, by the module that owns them:
images (CMYK, palette, 16-bit, EXIF, alpha, GIF/BMP/TIFF, animated WebP, bombs, FIFOs, symlinks):
``test_images.py``; run locks, resume options, YAML bombs, read-only folders, unknown towers, markup in
messages: ``test_bad_runs.py``; SIGKILL mid-epoch and mid-predict: the slow tests in ``test_training.py`` and
``test_inference.py``; any printable id or label string end to end: ``test_id_roundtrip.py``.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from aisle.cli import main
from aisle.config import DataConfig
from aisle.data import load_products
from aisle.data.demo import write_demo_catalogue
from aisle.data.prepare import load_training_data
from conftest import TINY_FUSION


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def _ids(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [r["id"] for r in csv.DictReader(f)]


# ---------------------------------------------------------------- training tables that must fail clearly


def _train(tmp: Path, table: Path, *sets: str) -> int:
    args = ["train", "--set", f"data.train_csv={table}", "--set", "model.type=linear", "--set", "data.folds=2"]
    for s in sets:
        args += ["--set", s]
    return main([*args, "--run-dir", str(tmp / "run")])


GOOD_ROWS = "".join(f"p{i},t{i % 2} thing,{'ab'[i % 2]}\n" for i in range(8))
TABLE_ERRORS: dict[str, tuple[bytes, str]] = {
    "zero_bytes": (b"", "is empty"),
    "header_only": (b"id,title,categories\n", "header but no rows"),
    "no_id_column": (b"sku,title,categories\n" + GOOD_ROWS.encode(), "no 'id' column; set data.id_col"),
    "empty_ids": (b"id,title,categories\n" + GOOD_ROWS.encode() + b" ,x,a\n", "have an empty id"),
    "duplicate_ids": (b"id,title,categories\n" + GOOD_ROWS.encode() + b"p1,again,a\n", "appear on more than one row"),
    "one_class": (b"id,title,categories\n" + "".join(f"p{i},t,a\n" for i in range(6)).encode(), "only one class"),
    "latin1": (("id,title,categories\n" + GOOD_ROWS + "p9,caf\u00e9,a\n").encode("latin-1"), "data.encoding"),
    "no_labels_at_all": (
        b"id,title,categories\n" + b"".join(f"p{i},t,\n".encode() for i in range(4)),
        "no labelled rows",
    ),
    "rare_class": (b"id,title,categories\n" + GOOD_ROWS.encode() + b"p9,x,c\n", "fewer than 2 rows"),
    "unknown_extension": (b"id,title\n", "unknown extension"),
}


@pytest.mark.parametrize("case", sorted(TABLE_ERRORS))
def test_bad_training_tables_fail_with_a_clear_message(case: str, tmp_path: Path, capsys) -> None:
    data, expected = TABLE_ERRORS[case]
    table = tmp_path / ("train.xlsx" if case == "unknown_extension" else "train.csv")
    table.write_bytes(data)
    assert _train(tmp_path, table) == 2
    err = _err(capsys)
    assert expected in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "main").exists(), "nothing was trained"


def test_a_latin1_table_reads_with_data_encoding(tmp_path: Path) -> None:
    table = tmp_path / "train.csv"
    table.write_bytes(("id,title,categories\n" + GOOD_ROWS + "p9,caf\u00e9,a\n").encode("latin-1"))
    products = load_products(table, DataConfig(encoding="latin-1"))
    assert products.ids[-1] == "p9" and "café" in products.texts[-1]


def test_a_wrong_delimiter_setting_names_the_delimiter(tmp_path: Path, capsys) -> None:
    table = tmp_path / "train.csv"
    table.write_text("id;title;categories\n" + GOOD_ROWS.replace(",", ";"))
    assert _train(tmp_path, table, "data.sep=','") == 2
    err = _err(capsys)
    assert "delimiter ','" in err and "data.sep" in err


# ---------------------------------------------------------------- messy tables that are read as they are


def _read(tmp: Path, text: str | bytes) -> tuple[list[str], list[str], list]:
    table = tmp / "t.csv"
    table.write_bytes(text if isinstance(text, bytes) else text.encode())
    products = load_products(table, DataConfig())
    return list(products.ids), list(products.texts), list(products.labels if products.labels is not None else [])


MESSY_OK: dict[str, tuple[str | bytes, list[str], Callable[[list[str]], bool]]] = {
    "utf8_bom": (b"\xef\xbb\xbfid,title,categories\np1,x,a\np2,y,b\n", ["p1", "p2"], lambda t: t == ["x", "y"]),
    "semicolons": ("id;title;categories\np1;x, y;a\np2;z;b\n", ["p1", "p2"], lambda t: t[0] == "x, y"),
    "tabs": ("id\ttitle\tcategories\np1\tx\ta\np2\ty\tb\n", ["p1", "p2"], lambda t: t == ["x", "y"]),
    "embedded_newlines": ('id,title,categories\np1,"two\nlines",a\np2,y,b\n', ["p1", "p2"], lambda t: "\n" in t[0]),
    "one_mb_text": (
        "id,title,categories\np1," + "w " * 500_000 + ",a\np2,y,b\n",
        ["p1", "p2"],
        lambda t: len(t[0]) > 9e5,
    ),
    "chinese_no_spaces": (
        "id,title,categories\np1,纯棉男士短袖T恤,a\np2,y,b\n",
        ["p1", "p2"],
        lambda t: t[0] == "纯棉男士短袖T恤",
    ),
    "emoji": ("id,title,categories\np1,👟 shoes 🔥,a\np2,y,b\n", ["p1", "p2"], lambda t: "👟" in t[0]),
    "na_like_ids": ("id,title,categories\nNA,x,a\nNone,y,b\nnan,z,a\n007,w,b\n", ["NA", "None", "nan", "007"], bool),
    "quoted_commas_in_ids": ('id,title,categories\n"a,b",x,a\n"q""uote",y,b\n', ["a,b", 'q"uote'], bool),
}


@pytest.mark.parametrize("case", sorted(MESSY_OK))
def test_messy_tables_are_read_exactly(case: str, tmp_path: Path) -> None:
    text, ids, texts_ok = MESSY_OK[case]
    got_ids, texts, _ = _read(tmp_path, text)
    assert got_ids == ids
    assert texts_ok(texts)


def test_rows_without_a_label_are_a_counted_warning(tmp_path: Path, caplog) -> None:
    table = tmp_path / "t.csv"
    table.write_text("id,title,categories\n" + GOOD_ROWS + "u1,x,\nu2,y,\n")
    td = load_training_data(DataConfig(train_csv=str(table), folds=2))
    assert td.dropped_ids == {"u1": "no_label", "u2": "no_label"}
    assert "2 row(s) have no label" in caplog.text
    assert sorted(td.products.ids) == sorted(f"p{i}" for i in range(8))


def test_zero_padded_label_codes_stay_as_written(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("id,title,categories\n" + "".join(f"p{i},t,{['001', '01', '1'][i % 3]}\n" for i in range(9)))
    td = load_training_data(DataConfig(train_csv=str(table), folds=2))
    assert td.label_map.classes == ("001", "01", "1")
    assert td.label_map.decode(td.y) == list(td.products.labels)


# ---------------------------------------------------------------- a trained run and what predict is handed


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A fusion run whose towers stay frozen (fold checkpoints hold the head; predict uses the feature cache)."""
    root = tmp_path_factory.mktemp("bad")
    write_demo_catalogue(root / "cat", n_train=40, n_test=12, seed=3, image_size=32)
    cfg = {
        "name": "r",
        "data": {"train_csv": str(root / "cat" / "train.csv"), "folds": 2},
        "model": TINY_FUSION,
        "train": {"epochs": 1, "batch_size": 8, "stages": [{"name": "head", "freeze_encoders": True}]},
        "runtime": {"num_workers": 0, "cache_dir": str(root / "cache")},
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "-c", str(root / "cfg.yaml"), "--run-dir", str(root / "run")]) == 0
    return root / "run", root / "cat"


def _predict(run_dir: Path, table: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(run_dir), "--data", str(table), "--out", str(out), *extra])


def _test_table(cat: Path, tmp: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    df = edit(pd.read_csv(cat / "test.csv", dtype=str, keep_default_na=False))
    shutil.copytree(cat / "images", tmp / "images", dirs_exist_ok=True)
    df.to_csv(tmp / "test.csv", index=False)
    return tmp / "test.csv"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.drop(columns="description"), "has no ['description']"),
        (lambda d: d.assign(text=d["title"]).drop(columns=["title", "description"]), "has no ['title', 'description']"),
    ],
    ids=["missing_description", "only_text"],
)
def test_predict_on_a_table_without_the_runs_text_columns(run, tmp_path, capsys, edit, expected) -> None:
    run_dir, cat = run
    table = _test_table(cat, tmp_path, edit)
    assert _predict(run_dir, table, tmp_path / "o") == 2
    err = _err(capsys)
    assert expected in err and "--allow-missing-text" in err
    assert not (tmp_path / "o" / "submission.csv").exists()
    assert _predict(run_dir, table, tmp_path / "o", "--allow-missing-text") == 0
    assert _ids(tmp_path / "o" / "submission.csv") == _ids(table)


def test_predict_with_no_image_anywhere_is_an_error_unless_allowed(run, tmp_path, capsys) -> None:
    run_dir, cat = run
    table = tmp_path / "test.csv"
    shutil.copy(cat / "test.csv", table)  # no images/ folder beside it
    assert _predict(run_dir, table, tmp_path / "o") == 2
    assert "none of the 12 products has an image" in _err(capsys)
    assert _predict(run_dir, table, tmp_path / "o", "--allow-missing-images") == 0
    assert _ids(tmp_path / "o" / "submission.csv") == _ids(table)


def test_predict_on_a_header_only_table(run, tmp_path, capsys) -> None:
    run_dir, _ = run
    (tmp_path / "test.csv").write_text("id,title,description\n")
    assert _predict(run_dir, tmp_path / "test.csv", tmp_path / "o") == 2
    assert "header but no rows" in _err(capsys)


def test_predict_keeps_duplicate_and_na_like_ids_one_row_each(run, tmp_path, capsys) -> None:
    run_dir, cat = run
    table = _test_table(cat, tmp_path, lambda d: pd.concat([d, d.iloc[[1]]]).assign(id=lambda x: ["NA", *x["id"][1:]]))
    assert _predict(run_dir, table, tmp_path / "o", "--allow-missing-images") == 0
    assert _ids(tmp_path / "o" / "submission.csv") == _ids(table) and _ids(table)[0] == "NA"
    assert "duplicate id" in _err(capsys)


def test_evaluate_with_no_known_label_says_what_to_check(run, tmp_path, capsys) -> None:
    run_dir, cat = run
    assert _predict(run_dir, cat / "test.csv", tmp_path / "o") == 0
    pd.DataFrame({"id": _ids(cat / "test.csv"), "categories": "Nothing Like It"}).to_csv(
        tmp_path / "l.csv", index=False
    )
    assert main(["evaluate", str(tmp_path / "o" / "probabilities.csv"), "--labels", str(tmp_path / "l.csv")]) == 2
    assert "nothing to score" in _err(capsys)


# ---------------------------------------------------------------- damaged files aisle wrote


def _flip(path: Path, at: float = 0.9) -> None:
    data = bytearray(path.read_bytes())
    i = min(int(len(data) * at), len(data) - 1)
    data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _copy_run(run: tuple[Path, Path], tmp: Path) -> Path:
    shutil.copytree(run[0], tmp / "run")
    return tmp / "run"


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "checkpoint_byte": (lambda r: _flip(r / "head" / "fold_0" / "best.safetensors"), "damaged"),
    "checkpoint_cut": (
        lambda r: (r / "head" / "fold_1" / "best.safetensors").write_bytes(
            (r / "head" / "fold_1" / "best.safetensors").read_bytes()[:-100]
        ),
        "not a complete safetensors file",
    ),
    "checkpoint_empty": (lambda r: (r / "head" / "fold_0" / "best.safetensors").write_bytes(b""), "damaged"),
    "template_byte": (lambda r: _flip(r / "template.safetensors", 0.5), "damaged"),
    "label_map_byte": (
        lambda r: (r / "label_map.json").write_text((r / "label_map.json").read_text().replace('"', "'", 2)),
        "not valid JSON",
    ),
    "label_map_reordered": (
        lambda r: (r / "label_map.json").write_text(
            json.dumps(
                {
                    **json.loads((r / "label_map.json").read_text()),
                    "classes": sorted(json.loads((r / "label_map.json").read_text())["classes"], reverse=True),
                }
            )
        ),
        "changed or damaged",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_run_file_is_a_clear_error_never_a_result(run, tmp_path, capsys, case) -> None:
    damage, expected = DAMAGE[case]
    run_dir = _copy_run(run, tmp_path)
    damage(run_dir)
    assert _predict(run_dir, run[1] / "test.csv", tmp_path / "o") == 2
    err = _err(capsys)
    assert expected in err, err
    assert not (tmp_path / "o" / "submission.csv").exists()


def test_nan_weights_never_become_a_submission(run, tmp_path, capsys) -> None:
    from aisle.serialization import read_tensors, write_tensors

    run_dir = _copy_run(run, tmp_path)
    best = run_dir / "head" / "fold_0" / "best.safetensors"
    state, meta = read_tensors(best)
    state = {k: torch_fill_nan(v) for k, v in state.items()}
    write_tensors(best, state, {k: v for k, v in meta.items() if k != "sha256"})  # a valid file of NaN weights
    assert _predict(run_dir, run[1] / "test.csv", tmp_path / "o") == 2
    assert "not finite numbers" in _err(capsys)
    assert not (tmp_path / "o" / "submission.csv").exists()


def test_a_checkpoint_of_another_model_is_a_clear_error(run, tmp_path, capsys) -> None:
    import torch

    from aisle.serialization import read_tensors, write_tensors

    run_dir = _copy_run(run, tmp_path)
    best = run_dir / "head" / "fold_1" / "best.safetensors"
    state, meta = read_tensors(best)
    name = next(k for k, v in state.items() if v.ndim == 2)
    state[name] = torch.zeros(state[name].shape[0] + 3, state[name].shape[1])  # a head for three more classes
    write_tensors(best, state, {k: v for k, v in meta.items() if k != "sha256"})
    assert _predict(run_dir, run[1] / "test.csv", tmp_path / "o") == 2
    err = _err(capsys)
    assert "does not fit the model" in err and name in err


def torch_fill_nan(t):
    return t.clone().fill_(float("nan")) if t.is_floating_point() else t


def _swap_keys(keys_file: Path) -> None:
    entry = json.loads(keys_file.read_text())
    entry["keys"][:2] = entry["keys"][1::-1]
    keys_file.write_text(json.dumps(entry))


def _swap_rows(shard: Path) -> None:
    try:
        rows = np.load(shard)
    except (OSError, ValueError, EOFError):
        return  # a shard an earlier case damaged (only the shards a predict reads are recomputed)
    np.save(shard, rows[::-1])


SHARD_DAMAGE: dict[str, Callable[[Path], None]] = {
    "byte": lambda s: _flip(s, 0.95),
    "cut": lambda s: s.write_bytes(s.read_bytes()[:-64]),
    "empty": lambda s: s.write_bytes(b""),
    "rows_swapped": lambda s: _swap_rows(s),
    "wrong_shape": lambda s: np.save(s, np.zeros((3, 5), dtype=np.float16)),
    "keys_swapped": lambda s: _swap_keys(s.with_name(s.name.replace(".npy", ".keys.json"))),
}


@pytest.mark.parametrize("case", sorted(SHARD_DAMAGE))
def test_a_damaged_feature_cache_shard_is_recomputed(run, tmp_path, capsys, case) -> None:
    run_dir, cat = run
    assert _predict(run_dir, cat / "test.csv", tmp_path / "a") == 0
    data = [s for s in (run_dir.parent / "cache").rglob("*.npy") if not s.name.endswith(".mask.npy")]
    assert data
    for s in data:
        SHARD_DAMAGE[case](s)
    assert _predict(run_dir, cat / "test.csv", tmp_path / "b") == 0
    err = _err(capsys)
    assert "damaged" in err and "recomputed" in err
    a = pd.read_csv(tmp_path / "a" / "probabilities.csv").drop(columns="id").to_numpy()
    b = pd.read_csv(tmp_path / "b" / "probabilities.csv").drop(columns="id").to_numpy()
    assert np.allclose(a, b, atol=1e-6), "recomputed features give the same probabilities"


def test_an_edited_oof_table_is_refused_by_ensemble_fitting(run, tmp_path, capsys) -> None:
    run_dir = _copy_run(run, tmp_path)
    oof = run_dir / "head" / "oof.csv"
    lines = oof.read_text().splitlines()
    cells = lines[1].split(",")
    cells[-1] = "nan"
    oof.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    assert main(["ensemble", "--fit", str(run_dir), "--out", str(tmp_path / "e")]) == 2
    assert "not a finite number" in _err(capsys)
