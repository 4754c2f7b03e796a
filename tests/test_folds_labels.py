"""Folds, label maps, the rare-class policy and ``load_training_data`` end to end (CSV and class folders)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aisle.config import DataConfig
from aisle.data import (
    LabelMap,
    apply_rare_class_policy,
    assign_folds,
    load_source,
    load_training_data,
)
from aisle.data.folds import TRAIN_ONLY, fold_numbers
from conftest import labelled_rows, write_csv, write_image

# uneven class sizes so that stratification has to spread remainders
SIZES = {"shoes": 7, "mugs": 11, "toys": 13}


def shuffled_labels(seed: int = 0) -> np.ndarray:
    labels = np.array([c for c, n in SIZES.items() for _ in range(n)])
    return np.random.default_rng(seed).permutation(labels)


def write_train_csv(tmp_path: Path, rows: list[dict], name: str = "train.csv") -> Path:
    return write_csv(tmp_path / name, rows)


# ---------------------------------------------------------------- assign_folds


def test_folds_deterministic_for_a_seed_and_differ_across_seeds() -> None:
    y = shuffled_labels()
    a = assign_folds(y, n_folds=5, seed=3)
    b = assign_folds(y, n_folds=5, seed=3)
    c = assign_folds(y, n_folds=5, seed=4)
    assert a.dtype == np.int64 and len(a) == len(y)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(a) == set(range(5))


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_folds_spread_each_class_evenly(n_folds: int) -> None:
    y = shuffled_labels()
    folds = assign_folds(y, n_folds=n_folds, seed=0)
    for cls, n in SIZES.items():
        per_fold = np.bincount(folds[y == cls], minlength=n_folds)
        assert per_fold.sum() == n
        assert per_fold.max() - per_fold.min() <= 1, (cls, per_fold)


def test_existing_fold_column_is_used_as_given() -> None:
    y = np.array(["a", "a", "b", "b"])
    frame = pd.DataFrame({"fold": ["1", "1", "0", "3"]})
    np.testing.assert_array_equal(assign_folds(y, 2, 0, frame=frame), [1, 1, 0, 3])
    frame = pd.DataFrame({"split": [0.0, 1.0, 0.0, 1.0]})
    np.testing.assert_array_equal(assign_folds(y, 2, 0, frame=frame, fold_col="split"), [0, 1, 0, 1])


@pytest.mark.parametrize("bad", ["x", "1.5", "-2", None])
def test_bad_fold_column_values_are_an_error(bad: object) -> None:
    frame = pd.DataFrame({"fold": ["0", "1", bad, "0"]})
    expected = r"t\.csv: column 'fold' must hold integers >= 0 \(or -1: .*\); bad at CSV lines \[4\]"
    with pytest.raises(ValueError, match=expected):
        assign_folds(np.array(["a", "a", "b", "b"]), 2, 0, frame=frame, source="t.csv")


def test_minus_one_in_a_fold_column_is_a_row_never_validated_on() -> None:
    y = np.array(["a", "a", "b", "b"])
    folds = assign_folds(y, 2, 0, frame=pd.DataFrame({"fold": ["-1", "0", "-1", "0"]}))
    np.testing.assert_array_equal(folds, [TRAIN_ONLY, 0, TRAIN_ONLY, 0])
    assert fold_numbers(folds) == [0]
    with pytest.raises(ValueError, match="has no fold >= 0"):
        assign_folds(y, 2, 0, frame=pd.DataFrame({"fold": [-1] * 4}), source="t.csv")


def test_rare_class_error_from_assign_folds_names_the_class() -> None:
    y = np.array(["a"] * 5 + ["b"] * 5 + ["tiny"])
    with pytest.raises(ValueError) as info:
        assign_folds(y, 5, 0, source="t.csv")
    msg = str(info.value)
    assert "'tiny' (1)" in msg and "'a'" not in msg
    assert "data.folds" in msg and "rare_classes" in msg


# ---------------------------------------------------------------- rare classes


def test_rare_class_policy_drop_and_merge_directly() -> None:
    labels = pd.Series(["a", "a", "a", "r1", "r2", None], dtype=object)
    same, rare = apply_rare_class_policy(labels, 2, "drop")
    assert rare == ["r1", "r2"]
    assert same.tolist() == ["a", "a", "a", None, None, None]
    merged, rare = apply_rare_class_policy(labels, 2, "merge", merge_name="OTHER")
    assert merged.tolist() == ["a", "a", "a", "OTHER", "OTHER", None]
    untouched, rare = apply_rare_class_policy(labels, 1, "error")
    assert rare == [] and untouched is labels


def test_rare_class_error_via_load_training_data(tmp_path: Path) -> None:
    path = write_train_csv(tmp_path, labelled_rows({"a": 4, "b": 4, "odd one": 1, "pair": 2}))
    with pytest.raises(ValueError) as info:
        load_training_data(DataConfig(train_csv=str(path), folds=3))
    msg = str(info.value)
    assert "2 class(es)" in msg
    assert "'odd one' (1)" in msg and "'pair' (2)" in msg
    assert "'a'" not in msg
    assert "data.folds" in msg and "data.rare_classes=drop" in msg and "data.rare_classes=merge" in msg


def test_rare_classes_drop(tmp_path: Path) -> None:
    rows = labelled_rows({"a": 4, "b": 3, "r": 1})
    rare_id = next(r["id"] for r in rows if r["categories"] == "r")
    path = write_train_csv(tmp_path, rows)
    td = load_training_data(DataConfig(train_csv=str(path), folds=3, rare_classes="drop"))
    assert td.label_map.classes == ("a", "b")
    assert td.dropped_ids == {rare_id: "rare_class"}
    assert len(td.products) == 7 and rare_id not in td.products.ids
    assert Counter(td.y.tolist()) == {0: 4, 1: 3}
    assert len(td.folds) == 7 and set(td.folds) == {0, 1, 2}


def test_rare_classes_merge(tmp_path: Path) -> None:
    rows = labelled_rows({"a": 4, "b": 3, "r1": 2, "r2": 1})
    path = write_train_csv(tmp_path, rows)
    td = load_training_data(DataConfig(train_csv=str(path), folds=3, rare_classes="merge", rare_class_name="misc"))
    assert td.label_map.classes == ("a", "b", "misc")
    assert td.dropped_ids == {}
    assert len(td.products) == 10
    decoded = td.label_map.decode(td.y)
    assert Counter(decoded) == {"a": 4, "b": 3, "misc": 3}
    assert list(td.products.labels) == decoded  # products carry the merged labels too


def test_merged_class_still_rare_is_named(tmp_path: Path) -> None:
    path = write_train_csv(tmp_path, labelled_rows({"a": 6, "b": 6, "r": 1}))
    with pytest.raises(ValueError) as info:
        load_training_data(DataConfig(train_csv=str(path), folds=3, rare_classes="merge"))
    assert "'__other__' (1)" in str(info.value)


# ---------------------------------------------------------------- fold column through load_training_data


def test_load_training_data_honours_fold_column(tmp_path: Path) -> None:
    rows = labelled_rows({"a": 4, "b": 4})
    given = [2, 0, 1, 1, 0, 2, 1, 0]
    path = write_train_csv(tmp_path, [dict(r, fold=f) for r, f in zip(rows, given)])
    td = load_training_data(DataConfig(train_csv=str(path), folds=3))
    np.testing.assert_array_equal(td.folds, given)


def test_load_training_data_bad_fold_column(tmp_path: Path) -> None:
    rows = labelled_rows({"a": 3, "b": 3})
    path = write_train_csv(tmp_path, [dict(r, fold=f) for r, f in zip(rows, ["0", "1", "2", "0", "one", "2"])])
    with pytest.raises(ValueError, match=r"column 'fold' must hold integers >= 0 .*; bad at CSV lines \[6\]"):
        load_training_data(DataConfig(train_csv=str(path), folds=3))


def test_own_fold_column_allows_rare_classes(tmp_path: Path) -> None:
    rows = labelled_rows({"a": 3, "b": 3, "r": 1})
    path = write_train_csv(tmp_path, [dict(r, fold=i % 3) for i, r in enumerate(rows)])
    td = load_training_data(DataConfig(train_csv=str(path), folds=3))
    assert "r" in td.label_map.classes
    np.testing.assert_array_equal(td.folds, [i % 3 for i in range(7)])


def test_bad_fold_line_counts_dropped_rows(tmp_path: Path) -> None:
    rows = [dict(r, fold=f) for r, f in zip(labelled_rows({"a": 3, "b": 3}), ["0", "1", "2", "0", "1", "2"])]
    rows[1]["categories"] = "   "  # unlabelled: left out of training
    rows[4]["fold"] = "x"  # CSV line 6
    path = write_train_csv(tmp_path, rows)
    with pytest.raises(ValueError) as info:
        load_training_data(DataConfig(train_csv=str(path), folds=2))
    assert "CSV lines [6]" in str(info.value)


def test_unlabelled_rows_are_left_out(tmp_path: Path) -> None:
    rows = labelled_rows({"a": 3, "b": 3})
    rows[2]["categories"] = "  "
    path = write_train_csv(tmp_path, rows)
    td = load_training_data(DataConfig(train_csv=str(path), folds=2))
    assert td.dropped_ids == {rows[2]["id"]: "no_label"}
    assert len(td.products) == len(td.y) == len(td.folds) == 5
    assert rows[2]["id"] not in td.products.ids


def test_empty_label_cell_is_left_out(tmp_path: Path) -> None:
    rows = labelled_rows({"a": 3, "b": 3})
    rows[2]["categories"] = ""
    path = write_train_csv(tmp_path, rows)
    td = load_training_data(DataConfig(train_csv=str(path), folds=2))
    assert td.label_map.classes == ("a", "b")
    assert td.dropped_ids == {rows[2]["id"]: "no_label"}


def test_label_map_of_training_data_follows_the_labels(tmp_path: Path) -> None:
    path = write_train_csv(tmp_path, labelled_rows({"10": 2, "2": 2, "1": 2}))
    td = load_training_data(DataConfig(train_csv=str(path), folds=2))
    assert td.label_map.classes == ("1", "2", "10")
    assert td.label_map.decode(td.y) == list(td.products.labels)


# ---------------------------------------------------------------- LabelMap


def test_label_map_strings_sorted_and_kept_exactly() -> None:
    lm = LabelMap.fit(pd.Series(["mugs", "Boots", " shoes ", "mugs", None, "", "  "]))
    assert lm.classes == (" shoes ", "Boots", "mugs") and len(lm) == 3


def test_label_map_int_like_labels_sort_numerically_and_stay_strings() -> None:
    lm = LabelMap.fit(np.array(["10", "2", "1", "2"]))
    assert lm.classes == ("1", "2", "10")
    assert LabelMap.fit(np.array([10, 2, 1])) == lm
    idx, unseen = lm.encode(pd.Series(["2", "10", "2.0", 1, "10 "]))
    assert idx.tolist() == [1, 2, -1, 0, -1]  # "2.0" and "10 " are other strings: never merged into a class
    assert unseen == Counter({"2.0": 1, "10 ": 1})
    assert lm.decode(np.array([2, 0])) == ["10", "1"]


def test_label_map_zero_padded_codes_are_their_own_classes() -> None:
    lm = LabelMap.fit(["001", "01", "1", "006", "1"])
    assert lm.classes == ("001", "01", "1", "006")
    assert lm.decode(lm.encode(["01", "006"])[0]) == ["01", "006"]


def test_label_map_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="only one class .'a'. .*at least two"):
        LabelMap.fit(["a", "a", None])


def test_label_map_unseen_labels_are_minus_one_and_counted() -> None:
    lm = LabelMap.fit(["a", "b"])
    idx, unseen = lm.encode(["b", "zz", "zz", "a", "c"])
    assert idx.dtype == np.int64
    assert idx.tolist() == [1, -1, -1, 0, -1]
    assert unseen == Counter({"zz": 2, "c": 1})
    idx, unseen = LabelMap.fit(["1", "2"]).encode(["3", "x", "2"])
    assert idx.tolist() == [-1, -1, 1] and unseen == Counter({"3": 1, "x": 1})


@pytest.mark.parametrize("classes", [["a", "b"], ["1", "2"]])
def test_label_map_missing_labels_are_not_unseen(classes: list[str]) -> None:
    idx, unseen = LabelMap.fit(classes).encode([classes[1], None, "zz"])
    assert idx.tolist() == [1, -1, -1]
    assert unseen == Counter({"zz": 1})


def test_label_map_fit_needs_labels() -> None:
    with pytest.raises(ValueError, match="no labels"):
        LabelMap.fit(pd.Series([None, "", "  "]))


@pytest.mark.parametrize("labels", [["b", "a", "c"], ["30", "4", "100"], ["NA", "None", 'ñ,"q"']])
def test_label_map_json_round_trip(tmp_path: Path, labels: list[str]) -> None:
    lm = LabelMap.fit(labels)
    path = lm.save(tmp_path / "run" / "labels.json")
    assert json.loads(path.read_text())["classes"] == list(lm.classes)
    again = LabelMap.load(path)
    assert again == lm
    assert again.encode(labels)[0].tolist() == lm.encode(labels)[0].tolist()


def test_label_map_load_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        LabelMap.load(bad)
    bad.write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match="'classes'"):
        LabelMap.load(bad)


def test_a_reordered_or_edited_label_map_is_refused(tmp_path: Path) -> None:
    path = LabelMap.fit(["a", "b", "c"]).save(tmp_path / "labels.json")
    d = json.loads(path.read_text())
    for classes in (["b", "a", "c"], ["a", "b", "x"], ["a", "b"]):
        path.write_text(json.dumps({**d, "classes": classes}))
        with pytest.raises(ValueError, match="changed or damaged"):
            LabelMap.load(path)


def test_label_map_large_integer_labels() -> None:
    labels = ["12345678901234567", "12345678901234568"]
    lm = LabelMap.fit(labels)
    assert lm.classes == tuple(labels)
    assert lm.encode(labels)[0].tolist() == [0, 1]


# ---------------------------------------------------------------- class-folder layout


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for cls, names in {"cats": ["a.jpg", "b.png", "c.jpg"], "dogs": ["a.jpg", "b.jpg"]}.items():
        for name in names:
            write_image(root / cls / name)
    (root / "cats" / "a.txt").write_text("  a tabby  \n")
    (root / "cats" / "notes.md").write_text("not an image")
    (root / "README.txt").write_text("top-level files are not classes")
    return root


def test_load_training_data_from_class_folder(class_tree: Path) -> None:
    td = load_training_data(DataConfig(class_folder=str(class_tree), folds=2))
    products = td.products
    assert products.ids.tolist() == ["cats/a", "cats/b", "cats/c", "dogs/a", "dogs/b"]
    assert products.texts.tolist() == ["a tabby", "", "", "", ""]
    assert td.label_map.classes == ("cats", "dogs")
    assert td.y.tolist() == [0, 0, 0, 1, 1]
    assert [Path(p[0]).name for p in products.image_paths] == ["a.jpg", "b.png", "c.jpg", "a.jpg", "b.jpg"]
    assert all(Path(p[0]).is_file() for p in products.image_paths)
    for cls in (0, 1):
        assert sorted(set(td.folds[td.y == cls])) == [0, 1]


def test_load_source_needs_exactly_one_source(class_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        load_source(DataConfig())
    csv = write_train_csv(tmp_path, labelled_rows({"a": 2}))
    with pytest.raises(ValueError, match="exactly one"):
        load_source(DataConfig(train_csv=str(csv), class_folder=str(class_tree)))
