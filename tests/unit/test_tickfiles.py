"""Tick files read as backtest rows: the same ticks the CSV reader's models hold, validated by
the same rules, from CSV and Parquet alike."""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from alphapanda.config import load_settings
from alphapanda.events import IST, DepthLevel, MarketTick
from alphapanda.feed import TICK_CSV_COLUMNS, TickFileError, TickStamper, read_ticks_csv, write_ticks_csv
from alphapanda.runtime.bootstrap import build_core
from alphapanda.runtime.feed import fixed_simulation
from alphapanda.runtime.tickfiles import count_tick_rows, read_tick_rows, read_ticks, write_ticks

START = datetime(2026, 1, 5, 9, 15, tzinfo=IST)


def _ticks(count: int = 60) -> list[MarketTick]:
    core = build_core(load_settings(brokers=("paper",)))
    return list(fixed_simulation(core.instruments[:3], 3, START, count))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_rows_when_read_from_a_file_then_they_hold_the_csv_readers_ticks_and_stamper_ids(
    tmp_path: Path, suffix: str
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    ticks = _ticks()
    csv_path = tmp_path / "ticks.csv"
    write_ticks_csv(csv_path, ticks)
    path = tmp_path / f"ticks{suffix}"
    write_ticks(path, ticks)
    expected = list(read_ticks_csv(csv_path))
    stamper = TickStamper()
    rows = list(read_tick_rows(path))
    assert [r.tick() for r in rows] == expected
    assert list(read_ticks(path)) == expected
    assert [r.event() for r in rows] == [stamper.stamp(t) for t in expected]
    assert any(r.depth_buy for r in rows)


def test_rows_when_the_csv_columns_are_in_another_order_then_they_read_the_same(tmp_path: Path) -> None:
    ticks = _ticks(9)
    path = tmp_path / "ticks.csv"
    write_ticks_csv(path, ticks)
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    shuffled = tmp_path / "shuffled.csv"
    order = list(reversed(range(len(TICK_CSV_COLUMNS))))
    with shuffled.open("w", newline="") as fh:
        csv.writer(fh).writerows([[line[i] for i in order] for line in table])
    assert [r.tick() for r in read_tick_rows(shuffled)] == [r.tick() for r in read_tick_rows(path)]


GOOD = ["1", "SYM", "NSE", "equity", "2026-01-05T09:15:00+05:30", "100.05", "100.00", "100.10", "5", "5", "0"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("exchange_timestamp", "not-a-time", "not-a-time"),
        ("exchange_timestamp", "2026-01-05T09:15:00", "no timezone"),
        ("bid", "0", "bid must be greater than 0"),
        ("ask", "NaN", "ask must be greater than 0"),
        ("last_price", "Infinity", "last_price must be greater than 0"),
        ("last_price", "abc", "not a number"),
        ("instrument_token", "-3", "instrument_token must be greater than 0"),
        ("bid_quantity", "-1", "0 or more"),
        ("tradingsymbol", "", "must not be empty"),
    ],
)
def test_rows_when_a_field_is_invalid_then_the_error_names_the_file_and_line(
    tmp_path: Path, column: str, value: str, message: str
) -> None:
    bad = list(GOOD)
    bad[TICK_CSV_COLUMNS.index(column)] = value
    path = tmp_path / "ticks.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TICK_CSV_COLUMNS[:11])
        writer.writerows([GOOD, GOOD, bad])
    with pytest.raises(TickFileError, match=rf"ticks\.csv line 4: .*{message}"):
        list(read_tick_rows(path))


def test_rows_when_a_column_is_missing_then_the_error_names_it(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("instrument_token,tradingsymbol\n1,SYM\n")
    with pytest.raises(TickFileError, match=r"missing columns .*last_price"):
        list(read_tick_rows(path))


def test_rows_when_prices_repeat_then_values_are_equal_and_depth_is_parsed(tmp_path: Path) -> None:
    tick = MarketTick(
        instrument_token=7,
        tradingsymbol="X",
        exchange="NSE",
        last_price=Decimal("10.50"),
        bid=Decimal("10.45"),
        ask=Decimal("10.50"),
        exchange_timestamp=START,
        depth_buy=(DepthLevel(price=Decimal("10.45"), quantity=3, orders=1),),
    )
    path = tmp_path / "ticks.csv"
    write_ticks_csv(path, [tick, tick])
    first, second = read_tick_rows(path)
    assert first.tick() == second.tick() == tick
    assert (first.seq, second.seq) == (0, 1)
    assert str(first.ask) == "10.50"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_count_tick_rows_when_file_is_written_then_it_equals_the_rows_read(
    tmp_path: Path, suffix: str
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / f"ticks{suffix}"
    write_ticks(path, _ticks(37))

    assert count_tick_rows(path) == len(list(read_tick_rows(path))) == 37


def test_count_tick_rows_when_the_last_line_has_no_newline_then_it_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    write_ticks(path, _ticks(5))
    path.write_bytes(path.read_bytes().rstrip(b"\r\n"))

    assert count_tick_rows(path) == len(list(read_tick_rows(path))) == 5
