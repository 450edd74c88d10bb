"""PostgreSQL binary COPY data for ``features.vectors`` rows, built with numpy per batch.

asyncpg's generic ``copy_records_to_table`` encodes every array element in its own call:
three 110-element arrays per row cost more than computing the vector. A vector row has a
fixed shape apart from its three text columns, so the rows of one symbol are written as
one numpy structured array - lengths, big-endian numbers and array headers laid out exactly
as the binary COPY format wants - and serialised in one ``tobytes``. The rows themselves
stay ordinary tuples (``VECTOR_COLUMNS`` order); only the wire encoding differs from the
generic path, and ``CopyWriter`` keeps its buffering, idempotence (a replay goes through
its staging table and ``ON CONFLICT DO NOTHING``) and retries.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

VECTOR_COLUMNS = (
    "exchange",
    "symbol",
    "feature_set",
    "book_seq",
    "exchange_ts_us",
    "local_ts_us",
    "computed_ts_us",
    "values",
    "normalized",
    "valid",
    "scaler_version",
)
_TEXT = (0, 1, 2)  # exchange, symbol, feature_set: constant within a group
_INTS = (3, 4, 5, 6)  # book_seq, exchange_ts_us, local_ts_us, computed_ts_us
_FLOAT_ARRAYS = (7, 8)  # values, normalized
_BOOL_ARRAY = 9
_VERSION = 10

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
FLOAT8_OID = 701
BOOL_OID = 16


@functools.lru_cache(maxsize=4096)
def _group_dtype(texts: tuple[bytes, ...], version: bytes, n: int) -> np.dtype[Any]:
    """The row layout of one (exchange, symbol, feature set, scaler version, length) group;
    cached: building it costs more than encoding a symbol's rows of one batch."""
    fields: list[tuple[Any, ...]] = [("nfields", ">i2")]

    def text(name: str, value: bytes) -> None:
        fields.append((f"{name}_len", ">i4"))
        if value:
            fields.append((name, f"S{len(value)}"))

    for i, value in zip(_TEXT, texts, strict=True):
        text(f"t{i}", value)
    for i in _INTS:
        fields += [(f"i{i}_len", ">i4"), (f"i{i}", ">i8")]
    for i in _FLOAT_ARRAYS:
        fields += [
            (f"a{i}_len", ">i4"),
            (f"a{i}_head", ">i4", (5,)),
            (f"a{i}", [("len", ">i4"), ("x", ">f8")], (n,)),
        ]
    i = _BOOL_ARRAY
    fields += [
        (f"a{i}_len", ">i4"),
        (f"a{i}_head", ">i4", (5,)),
        (f"a{i}", [("len", ">i4"), ("x", "u1")], (n,)),
    ]
    text(f"t{_VERSION}", version)
    return np.dtype(fields)


def _encode_group(rows: Sequence[Sequence[Any]]) -> bytes:
    first = rows[0]
    texts = tuple(str(first[i]).encode() for i in _TEXT)
    version = str(first[_VERSION]).encode()
    n = len(first[7])
    out = np.zeros(len(rows), _group_dtype(texts, version, n))
    out["nfields"] = len(VECTOR_COLUMNS)
    for i, value in zip(_TEXT, texts, strict=True):
        out[f"t{i}_len"] = len(value)
        if value:
            out[f"t{i}"] = value
    for i in _INTS:
        out[f"i{i}_len"] = 8
        out[f"i{i}"] = [r[i] for r in rows]
    for i in _FLOAT_ARRAYS:
        out[f"a{i}_len"] = 20 + 12 * n
        out[f"a{i}_head"] = (1, 0, FLOAT8_OID, n, 1)  # ndim, has nulls, element type, dim, lb
        arr = out[f"a{i}"]
        arr["len"] = 8
        arr["x"] = np.array([r[i] for r in rows], np.float64)
    i = _BOOL_ARRAY
    out[f"a{i}_len"] = 20 + 5 * n
    out[f"a{i}_head"] = (1, 0, BOOL_OID, n, 1)
    arr = out[f"a{i}"]
    arr["len"] = 1
    arr["x"] = np.array([r[i] for r in rows], bool)
    out[f"t{_VERSION}_len"] = len(version)
    if version:
        out[f"t{_VERSION}"] = version
    return out.tobytes()


def encode_vector_rows(rows: Sequence[Sequence[Any]]) -> bytes:
    """Binary COPY data (header, tuples, trailer) for ``VECTOR_COLUMNS`` rows: text, text,
    text, bigint x4, float8[], float8[], boolean[], text.

    Rows are grouped by exchange, symbol, feature set, scaler version and array length
    (first-seen order, each group's rows in their order): a batch of many symbols has one
    or two rows per symbol in a row, and a group costs about what 4 rows do."""
    groups: dict[tuple[Any, ...], list[Sequence[Any]]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1], r[2], r[_VERSION], len(r[7])), []).append(r)
    return b"".join([HEADER, *(_encode_group(g) for g in groups.values()), TRAILER])
