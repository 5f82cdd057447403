"""Tick files for backtests: CSV (always) and Parquet (with the optional `parquet` extra).

Parquet holds the same columns as the CSV tick file (`feed.TICK_CSV_COLUMNS`), all as text,
so both formats replay to identical ticks and therefore identical tick ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alphapanda.events import MarketTick
from alphapanda.feed import TICK_CSV_COLUMNS, TickFileError, read_ticks_csv, write_ticks_csv

PARQUET_MISSING = (
    "Parquet tick files need pyarrow, which is not installed: pip install 'alphapanda[parquet]' "
    "(or convert the file to CSV)"
)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise TickFileError(PARQUET_MISSING) from None
    return pyarrow


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_ticks(path: Path) -> Iterator[MarketTick]:
    """Ticks from a CSV or (by suffix) Parquet tick file."""
    if not is_parquet(path):
        return read_ticks_csv(path)
    return _read_parquet(path)


def _read_parquet(path: Path) -> Iterator[MarketTick]:
    import csv
    import io
    import tempfile

    pa = _pyarrow()
    table = pa.parquet.read_table(path)
    missing = set(TICK_CSV_COLUMNS[:11]) - set(table.column_names)
    if missing:
        raise TickFileError(f"{path}: missing columns {', '.join(sorted(missing))}")
    # One parser for both formats: the rows go through the CSV reader's validation, so a bad
    # Parquet row fails with the same message a bad CSV row would.
    columns = [c for c in TICK_CSV_COLUMNS if c in table.column_names]
    data = {c: table.column(c).to_pylist() for c in columns}
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "ticks.csv"
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        for row in zip(*(data[c] for c in columns), strict=True):
            writer.writerow(["" if v is None else v for v in row])
        text.write_text(buf.getvalue())
        yield from read_ticks_csv(text)


def write_ticks(path: Path, ticks: Iterable[MarketTick]) -> int:
    """Write a CSV or (by suffix) Parquet tick file; return the number of ticks."""
    if not is_parquet(path):
        return write_ticks_csv(path, ticks)
    import tempfile

    pa = _pyarrow()
    import csv

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "ticks.csv"
        n = write_ticks_csv(text, ticks)
        with text.open(newline="") as fh:
            rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    table = pa.table({name: [r[i] for r in body] for i, name in enumerate(header)})
    pa.parquet.write_table(table, path)
    return n
