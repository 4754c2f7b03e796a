"""Every table aisle reads or writes goes through here: cells are strings, exactly as in the file.

pandas' defaults turn ids like ``NA``, ``None``, ``nan`` or ``null`` into blanks and ``00012`` / ``1e3`` into
numbers. Here no cell is ever guessed: every column is read as text, only empty cells are missing, and
numbers are parsed where aisle knows a column holds numbers (probabilities, folds, history metrics).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["TableError", "read_numeric_table", "read_table", "require_finite", "sniff_delimiter", "write_table"]

_DELIMITERS = ",;\t|"
_SNIFF_BYTES = 64 * 1024


class TableError(ValueError):
    """A table cannot be read as it is; the message names the file and what to do."""


def sniff_delimiter(sample: str) -> str:
    """The delimiter of a CSV: whichever of ``, ; TAB |`` splits the header line into the most fields (``,`` on a
    tie or when none splits it). Only the header is read: cells full of ``;`` or ``,`` cannot mislead it."""
    line = sample.splitlines()[0] if sample else ""
    best, fields = ",", 1
    for d in _DELIMITERS:
        n = len(next(csv.reader([line], delimiter=d), []))
        if n > fields:
            best, fields = d, n
    return best


def _sample(p: Path, encoding: str) -> str:
    with open(p, encoding=encoding, errors="strict", newline="") as f:
        return f.read(_SNIFF_BYTES)


def _encoding_error(p: Path, encoding: str, e: UnicodeDecodeError) -> TableError:
    return TableError(
        f"{p} is not valid {encoding} (byte {e.object[e.start : e.start + 1]!r} at position {e.start}): "
        f"set data.encoding to the file's encoding (e.g. --set data.encoding=latin-1 or cp1252), "
        f"or save the file as UTF-8"
    )


def _read_csv(p: Path, sep: str | None, encoding: str) -> pd.DataFrame:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding  # a BOM is not a name
    try:
        sample = _sample(p, enc)
    except UnicodeDecodeError as e:
        raise _encoding_error(p, encoding, e) from e
    if not sample.strip():
        raise TableError(f"{p} is empty: a products table needs a header line and at least one row")
    found = sep or ("\t" if p.suffix.lower() == ".tsv" else sniff_delimiter(sample))
    try:
        df = pd.read_csv(p, sep=found, dtype=str, keep_default_na=False, na_values=[""], encoding=enc)
    except UnicodeDecodeError as e:
        raise _encoding_error(p, encoding, e) from e
    except (pd.errors.ParserError, ValueError) as e:
        raise TableError(
            f"could not read {p} with delimiter {found!r}: {e}. Set data.sep to the file's delimiter "
            f"(e.g. --set \"data.sep=';'\")"
        ) from e
    if df.columns.size == 1:
        other = [d for d in _DELIMITERS if d != found and d in str(df.columns[0])]
        if other:
            raise TableError(
                f"{p}: read with delimiter {found!r} it has one column {df.columns[0]!r}, but the header contains "
                f"{other[0]!r}: set data.sep to the file's delimiter (e.g. --set \"data.sep='{other[0]}'\")"
            )
    return df


def read_table(path: str | Path, sep: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV/TSV or parquet table; every cell a string (or NaN where empty).

    Args:
        path: the file.
        sep: the delimiter; None: ``\\t`` for ``.tsv``, else sniffed among ``, ; TAB |``.
        encoding: the text encoding (a UTF-8 byte-order mark is skipped).

    Raises:
        FileNotFoundError: the file does not exist.
        TableError: empty, undecodable, unparsable, or an unknown extension; the message says what to do.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"table {p} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return _read_csv(p, sep, encoding)
    if suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except (OSError, ValueError) as e:
            raise TableError(f"could not read parquet table {p}: {e}") from e
        return df.astype(object).where(df.notna(), None).map(lambda v: v if v is None else str(v))
    raise TableError(f"table {p}: unknown extension {suffix!r}; use .csv, .tsv or .parquet")


def require_finite(values: np.ndarray, ids: np.ndarray | list, what: str) -> None:
    """Raise when any row of ``values`` is NaN or infinite: such numbers never become a result.

    Raises:
        ValueError: names the count and the first ids.
    """
    bad = ~np.isfinite(np.asarray(values, dtype=float)).reshape(len(values), -1).all(1)
    if bad.any():
        first = [str(i) for i in np.asarray(ids, dtype=object)[bad][:5]]
        raise ValueError(
            f"{what}: {int(bad.sum())} of {len(values)} row(s) are not finite numbers (NaN or inf), e.g. ids {first}. "
            f"Nothing was written from them. A model that gives NaN is broken (its training diverged: lower the "
            f"learning rate or use train.precision=32, then re-train)"
        )


def read_numeric_table(
    path: str | Path, text_cols: Iterable[str] = ("id", "label", "pred"), finite: bool = True
) -> pd.DataFrame:
    """Read a table aisle wrote: ``text_cols`` stay strings exactly, every other column is numeric.

    Args:
        finite: every number must be finite (probabilities); False allows empty cells (histories).

    Raises:
        TableError: a column that must hold numbers holds something else (the file was edited or damaged).
    """
    p = Path(path)
    df = read_table(p, sep=",")
    if df.empty:
        raise TableError(f"{p} has a header but no rows: nothing to read (was it cut off? write it again)")
    keep = set(text_cols)
    for col in df.columns:
        if col in keep:
            df[col] = df[col].fillna("")
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad = (num.isna() & df[col].notna()).to_numpy(dtype=bool, copy=True)
        if finite:
            bad = bad | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(bad.argmax())
            raise TableError(
                f"{p}: column {col!r} holds {df[col].iloc[row]!r} on line {row + 2}, not a finite number; the file was "
                f"edited or damaged: write it again"
            )
        df[col] = num
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV atomically (a kill mid-write never leaves a half file under the real name)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, p)
    return p
