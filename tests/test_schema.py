"""Reading a products table and working out which column is which."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aisle.config import DataConfig
from aisle.data import ProductSchema, build_texts, infer_schema, load_products, read_table
from conftest import write_csv

DEFAULT = DataConfig()


def frame(**cols: list[object]) -> pd.DataFrame:
    return pd.DataFrame(cols)


@pytest.mark.parametrize(
    ("columns", "label_col"),
    [
        (["id", "categories", "title"], "categories"),
        (["id", "label", "title"], "label"),
        (["id", "label", "categories"], "categories"),  # categories wins over label
        (["id", "title"], None),
    ],
)
def test_label_column_inferred(columns: list[str], label_col: str | None) -> None:
    df = pd.DataFrame({c: ["x"] for c in columns})
    assert infer_schema(df, DEFAULT).label_col == label_col


@pytest.mark.parametrize(
    ("columns", "text_cols"),
    [
        (["id", "title", "description"], ("title", "description")),
        (["id", "description", "title"], ("title", "description")),  # convention order, not table order
        (["id", "title"], ("title",)),
        (["id", "description"], ("description",)),
        (["id", "text"], ("text",)),
        (["id", "title", "text"], ("title",)),  # title/description group first
        (["id", "label"], ()),
    ],
)
def test_text_columns_inferred(columns: list[str], text_cols: tuple[str, ...]) -> None:
    df = pd.DataFrame({c: ["x"] for c in columns})
    assert infer_schema(df, DEFAULT).text_cols == text_cols


@pytest.mark.parametrize(
    ("columns", "image_col"),
    [
        (["id", "image"], "image"),
        (["id", "image_path"], "image_path"),
        (["id", "images"], "images"),
        (["id", "image_paths"], "image_paths"),
        (["id", "title"], None),
    ],
)
def test_image_column_inferred(columns: list[str], image_col: str | None) -> None:
    df = pd.DataFrame({c: ["x"] for c in columns})
    assert infer_schema(df, DEFAULT).image_col == image_col


def test_explicit_columns_win() -> None:
    df = frame(
        sku=["1"],
        id=["a"],
        cat=["c"],
        label=["l"],
        name=["n"],
        blurb=["b"],
        title=["t"],
        pic=["p.jpg"],
        image=["i.jpg"],
    )
    cfg = DataConfig(id_col="sku", label_col="cat", text_cols=["blurb", "name"], image_col="pic")
    schema = infer_schema(df, cfg)
    assert schema == ProductSchema("sku", "cat", ("blurb", "name"), "pic", {})


@pytest.mark.parametrize(
    ("setting", "what"),
    [
        ({"id_col": "sku"}, "id"),
        ({"label_col": "cat"}, "label"),
        ({"text_cols": ["title", "body"]}, "text"),
        ({"image_col": "pic"}, "image"),
    ],
)
def test_explicit_missing_column_is_named(setting: dict, what: str) -> None:
    df = frame(id=["a"], title=["t"], label=["l"])
    missing = next(v for v in [setting.get("id_col"), setting.get("label_col"), setting.get("image_col"), "body"] if v)
    with pytest.raises(ValueError) as info:
        infer_schema(df, DataConfig(**setting), source="products.csv")
    msg = str(info.value)
    assert "products.csv" in msg
    assert f"{what} column {missing!r}" in msg
    assert "columns are: id, title, label" in msg


def test_missing_id_column_is_an_error_listing_columns() -> None:
    df = frame(sku=["a"], title=["t"])
    with pytest.raises(ValueError, match=r"no 'id' column; set data.id_col to one of: sku, title"):
        infer_schema(df, DEFAULT, source="t.csv")


def test_required_label_missing_is_an_error() -> None:
    df = frame(id=["a"], title=["t"])
    with pytest.raises(ValueError, match="no label column"):
        infer_schema(df, DEFAULT, require_label=True)
    assert infer_schema(df, DEFAULT).label_col is None


def test_prefix_for_a_non_text_column_is_an_error() -> None:
    df = frame(id=["a"], title=["t"])
    with pytest.raises(ValueError, match="description"):
        infer_schema(df, DataConfig(text_prefixes={"description": "D: "}))


def test_build_texts_keeps_column_order_and_drops_empty_parts() -> None:
    df = frame(
        id=["1", "2", "3", "4", "5"],
        title=["Red shirt", None, "  ", "Mug", np.nan],
        description=["Cotton", "Only desc", "Desc3", "", np.nan],
    )
    schema = infer_schema(df, DEFAULT)
    texts = build_texts(df, schema, sep=" | ")
    assert texts.dtype == object
    assert texts.tolist() == ["Red shirt | Cotton", "Only desc", "Desc3", "Mug", ""]


def test_build_texts_explicit_order_and_prefixes() -> None:
    df = frame(id=["1", "2"], title=["Shirt", "Mug"], brand=["Acme", None])
    schema = infer_schema(df, DataConfig(text_cols=["brand", "title"], text_prefixes={"brand": "Brand: "}))
    assert build_texts(df, schema, sep=". ").tolist() == ["Brand: Acme. Shirt", "Mug"]


def test_attribute_columns_are_rendered_as_name_value_after_the_text() -> None:
    df = frame(id=["1", "2", "3"], title=["Shirt", "Mug", None], gender=["Men", None, "Women"], usage=["Casual"] * 3)
    schema = infer_schema(df, DataConfig(attribute_cols=["gender", "usage"]))
    assert schema.attribute_cols == ("gender", "usage")
    assert build_texts(df, schema, sep=". ").tolist() == [
        "Shirt. gender: Men. usage: Casual",
        "Mug. usage: Casual",
        "gender: Women. usage: Casual",
    ]
    with pytest.raises(ValueError, match="attribute column 'season' is not in the table"):
        infer_schema(df, DataConfig(attribute_cols=["season"]))


def test_attribute_columns_reach_the_products_texts(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": ["a"], "title": ["Tee"], "baseColour": ["Blue"], "label": ["x"]}).to_csv(path, index=False)
    assert load_products(path, DataConfig(attribute_cols=["baseColour"])).texts.tolist() == ["Tee. baseColour: Blue"]


def test_build_texts_strips_whitespace() -> None:
    df = frame(id=["1"], title=["  padded  "])
    assert build_texts(df, infer_schema(df, DEFAULT)).tolist() == ["padded"]


def test_no_text_columns_gives_empty_strings() -> None:
    df = frame(id=["1", "2"], label=["a", "b"])
    texts = build_texts(df, infer_schema(df, DEFAULT))
    assert texts.tolist() == ["", ""]
    assert len(texts) == 2


def test_read_csv_keeps_ids_and_text_as_strings(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv", [{"id": "007", "title": "NA", "label": "10"}, {"id": "010", "title": "", "label": "2"}]
    )
    df = read_table(path)
    assert df["id"].tolist() == ["007", "010"]  # leading zeros survive
    assert df["title"].iloc[0] == "NA"  # not read as missing
    assert pd.isna(df["title"].iloc[1])  # empty cells are missing


def test_read_tsv(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("id\ttitle\na\tx, y\n")
    df = read_table(path)
    assert df.to_dict("records") == [{"id": "a", "title": "x, y"}]


def test_read_parquet(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": [1, 2], "title": ["a", None], "categories": ["x", "y"]}).to_parquet(path)
    products = load_products(path, DEFAULT)
    assert products.ids.tolist() == ["1", "2"]
    assert products.texts.tolist() == ["a", ""]
    assert products.labels.tolist() == ["x", "y"]


def test_read_table_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_table(tmp_path / "nope.csv")
    odd = tmp_path / "t.xlsx"
    odd.write_text("x")
    with pytest.raises(ValueError, match="unknown extension"):
        read_table(odd)


def test_empty_id_error_names_the_csv_line(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "title": "t"},
        {"id": "b", "title": "t"},
        {"id": "", "title": "t"},
        {"id": "d", "title": "t"},
        {"id": "  ", "title": "t"},
    ]
    path = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(ValueError) as info:
        load_products(path, DEFAULT)
    msg = str(info.value)
    assert "2 row(s) have an empty id" in msg
    assert "CSV lines [4, 6]" in msg  # line 1 is the header
    assert str(path) in msg


def test_load_products_resolves_columns_and_texts(make_catalogue) -> None:
    cat = make_catalogue(
        [
            {"id": "a", "title": "Shirt", "description": "Blue", "label": "clothes"},
            {"id": "b", "title": "", "description": "Ceramic", "label": ""},
        ],
        images={"a.jpg": (1, 2, 3)},
    )
    products = load_products(cat.csv, DEFAULT)
    assert products.schema.label_col == "label"
    assert products.texts.tolist() == ["Shirt. Blue", "Ceramic"]
    assert products.labels[0] == "clothes"
    assert [len(p) for p in products.image_paths] == [1, 0]


def test_empty_label_cell_is_unlabelled(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv", [{"id": "a", "label": "x"}, {"id": "b", "label": ""}, {"id": "c", "label": "  "}]
    )
    assert load_products(path, DEFAULT).labels.tolist() == ["x", None, None]


@pytest.mark.parametrize(
    "row",
    [
        {"title": " Blue Tee ", "description": None, "gender": "Men"},
        {"title": float("nan"), "description": "soft", "gender": ""},
        {"title": "x", "description": "  ", "gender": 12},
        {},
    ],
)
def test_text_of_one_row_equals_build_texts(row: dict) -> None:
    from aisle.data.schema import text_of

    schema = ProductSchema("id", None, ("title", "description"), None, {"description": "d: "}, ("gender",))
    frame = pd.DataFrame([row], columns=["title", "description", "gender"], dtype=object)
    assert text_of(row, schema, " | ") == build_texts(frame, schema, " | ")[0]
