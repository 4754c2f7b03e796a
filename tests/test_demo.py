"""The built-in synthetic catalogue: layout, determinism, broken images and the split of signal."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from PIL import Image, UnidentifiedImageError

from aisle.data.demo import BROKEN_KINDS, MATERIAL_WORDS, SHAPE_ITEMS, DemoSummary, write_demo_catalogue

N_TRAIN, N_TEST, SIZE = 60, 20, 32


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return write_demo_catalogue(
        tmp_path_factory.mktemp("demo"), n_train=N_TRAIN, n_test=N_TEST, seed=3, image_size=SIZE
    )


def test_files_and_columns(demo: DemoSummary) -> None:
    out = demo.out_dir
    header, train = _rows(out / "train.csv")
    assert header == ["id", "title", "description", "categories"]
    header, test = _rows(out / "test.csv")
    assert header == ["id", "title", "description"]
    header, labels = _rows(out / "test_labels.csv")
    assert header == ["id", "categories"]
    assert (len(train), len(test), len(labels)) == (N_TRAIN, N_TEST, N_TEST)
    assert (demo.n_train, demo.n_test) == (N_TRAIN, N_TEST)
    assert [r["id"] for r in test] == [r["id"] for r in labels]
    ids = [r["id"] for r in train + test]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"p\d{5}", i) for i in ids)


def test_every_class_present(demo: DemoSummary) -> None:
    _, train = _rows(demo.out_dir / "train.csv")
    _, labels = _rows(demo.out_dir / "test_labels.csv")
    assert len(demo.classes) == len(MATERIAL_WORDS) * len(SHAPE_ITEMS)
    assert {r["categories"] for r in train} == set(demo.classes)
    assert {r["categories"] for r in labels} <= set(demo.classes)


def test_class_balance_at_default_size(tmp_path: Path) -> None:
    summary = write_demo_catalogue(tmp_path, n_train=600, n_test=0, image_size=16)
    _, train = _rows(tmp_path / "train.csv")
    counts = [sum(r["categories"] == c for r in train) for c in summary.classes]
    assert min(counts) >= 20
    assert 1.5 <= max(counts) / min(counts) <= 3.0
    no_material = [r for r in train if not _materials(r["title"] + " " + r["description"])]
    assert 0.01 <= len(no_material) / len(train) <= 0.12


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_demo_catalogue(tmp_path / "a", n_train=N_TRAIN, n_test=N_TEST, seed=1, image_size=SIZE)
    b = write_demo_catalogue(tmp_path / "b", n_train=N_TRAIN, n_test=N_TEST, seed=1, image_size=SIZE)
    c = write_demo_catalogue(tmp_path / "c", n_train=N_TRAIN, n_test=N_TEST, seed=2, image_size=SIZE)
    for name in ("train.csv", "test.csv", "test_labels.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "c" / "train.csv").read_bytes()
    assert a.broken == b.broken
    assert a.classes == c.classes


def test_broken_images_behave_as_recorded(demo: DemoSummary) -> None:
    images = demo.out_dir / "images"
    assert set(demo.broken.values()) == set(BROKEN_KINDS)
    _, test = _rows(demo.out_dir / "test.csv")
    test_ids = {r["id"] for r in test}
    assert set(demo.broken) & test_ids and set(demo.broken) - test_ids  # spread over both splits
    for pid, kind in demo.broken.items():
        path = images / f"{pid}.jpg"
        if kind == "missing":
            assert not path.exists()
        elif kind == "empty_file":
            assert path.stat().st_size == 0
        elif kind == "truncated":
            with pytest.raises(OSError), Image.open(path) as im:
                im.load()
        else:
            assert kind == "not_an_image"
            with pytest.raises(UnidentifiedImageError):
                Image.open(path)


def test_default_broken_count(tmp_path: Path) -> None:
    summary = write_demo_catalogue(tmp_path, n_train=N_TRAIN, n_test=N_TEST, image_size=16)
    assert len(summary.broken) == 4
    assert write_demo_catalogue(tmp_path, n_train=N_TRAIN, n_test=N_TEST, image_size=16, n_broken=0).broken == {}


def _materials(text: str) -> set[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return {m for m, synonyms in MATERIAL_WORDS.items() if words & set(synonyms)}


def test_text_carries_material_not_item(demo: DemoSummary) -> None:
    _, train = _rows(demo.out_dir / "train.csv")
    _, test = _rows(demo.out_dir / "test.csv")
    _, labels = _rows(demo.out_dir / "test_labels.csv")
    label_of = {r["id"]: r["categories"] for r in train + labels}
    items = [w.lower() for w in SHAPE_ITEMS.values()]
    named = 0
    for row in train + test:
        text = f"{row['title']} {row['description']}"
        assert not any(item in text.lower() for item in items), text
        material, _item = label_of[row["id"]].split(" ")
        found = _materials(text)
        assert found <= {material}, (text, label_of[row["id"]])
        named += bool(found)
    assert named >= 0.8 * (N_TRAIN + N_TEST)


def test_images_are_rgb_jpegs_of_the_requested_size(demo: DemoSummary) -> None:
    _, train = _rows(demo.out_dir / "train.csv")
    _, test = _rows(demo.out_dir / "test.csv")
    images = demo.out_dir / "images"
    for row in train + test:
        if row["id"] in demo.broken:
            continue
        with Image.open(images / f"{row['id']}.jpg") as im:
            im.load()
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))
    extras = sorted(images.glob("*_1.jpg"))
    assert extras
    for path in extras:
        assert path.name.split("_")[0] not in demo.broken
        with Image.open(path) as im:
            im.load()
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_train"):
        write_demo_catalogue(tmp_path, n_train=3)
    with pytest.raises(ValueError, match="image_size"):
        write_demo_catalogue(tmp_path, n_train=N_TRAIN, image_size=8)
    with pytest.raises(ValueError, match="n_broken"):
        write_demo_catalogue(tmp_path, n_train=N_TRAIN, n_test=0, n_broken=N_TRAIN)
