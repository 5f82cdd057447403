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


# --- bad and unusual tick files (QA): one line naming the file, the line and the fix ------------

HEADER = ",".join(TICK_CSV_COLUMNS)


def _row(at: str = "2026-01-05T09:15:00+05:30", last: str = "100.05", **fields: str) -> str:
    values = dict(zip(TICK_CSV_COLUMNS, [*GOOD, "", ""], strict=True))
    values.update(exchange_timestamp=at, last_price=last, **fields)
    return ",".join(values[c] for c in TICK_CSV_COLUMNS)


def _file(tmp_path: Path, *lines: str, name: str = "ticks.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(TickFileError) as caught:
        list(read_tick_rows(path))
    message = str(caught.value)
    assert "\n" not in message  # one line, no Python internals
    return message


def test_rows_when_the_header_starts_with_a_byte_order_mark_then_they_read(tmp_path: Path) -> None:
    # A spreadsheet's "CSV UTF-8" export: before, "missing columns instrument_token".
    path = tmp_path / "ticks.csv"
    path.write_bytes(("\ufeff" + HEADER + "\n" + _row() + "\n").encode())
    assert [r.instrument_token for r in read_tick_rows(path)] == [1]


def test_rows_when_the_header_has_spaces_after_commas_then_they_read(tmp_path: Path) -> None:
    path = _file(tmp_path, HEADER.replace(",", ", "), _row())
    assert [r.last_price for r in read_tick_rows(path)] == [Decimal("100.05")]


def test_rows_when_blank_lines_then_they_are_skipped_like_the_csv_reader(tmp_path: Path) -> None:
    # Before: "line 3: not enough values to unpack (expected 11, got 0)".
    path = _file(tmp_path, HEADER, _row(), "", _row(at="2026-01-05T09:15:01+05:30"), "")
    assert len(list(read_tick_rows(path))) == len(list(read_ticks_csv(path))) == 2


def test_rows_when_the_file_is_empty_then_it_says_so(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("")
    assert "ticks.csv is empty: a tick file starts with the header line instrument_token," in _refusal(path)


@pytest.mark.parametrize("change", ["drop", "add"])
def test_rows_when_a_row_has_fewer_or_more_fields_than_the_header_then_refused(
    tmp_path: Path, change: str
) -> None:
    # Before: a short row gave "not enough values to unpack", and an extra field was dropped unseen.
    bad = _row().rsplit(",", 3)[0] if change == "drop" else _row() + ",1"
    path = _file(tmp_path, HEADER, _row(), bad)
    width = 10 if change == "drop" else 14
    assert f"ticks.csv line 3: {width} fields, but the header has 13" in _refusal(path)


@pytest.mark.parametrize("column", ["bid_quantity", "volume", "instrument_token"])
def test_rows_when_a_count_is_not_whole_then_it_names_the_column(tmp_path: Path, column: str) -> None:
    # Before: "invalid literal for int() with base 10: '1.5'".
    path = _file(tmp_path, HEADER, _row(**{column: "1.5"}))
    assert f"ticks.csv line 2: {column} '1.5' is not a whole number" in _refusal(path)


@pytest.mark.parametrize("depth", ["bad", "abc:1:1", "100.00:-1:1", "100.00:1"])
def test_rows_when_depth_is_malformed_then_one_line_says_the_format(tmp_path: Path, depth: str) -> None:
    # Before: "not enough values to unpack", "[<class 'decimal.ConversionSyntax'>]" or a
    # four-line pydantic error.
    path = _file(tmp_path, HEADER, _row(depth_buy=depth))
    message = _refusal(path)
    assert f"line 2: depth_buy {depth!r} is not depth levels: price:quantity:orders joined by |" in message


def test_rows_when_a_timestamp_is_not_iso_then_it_shows_one(tmp_path: Path) -> None:
    path = _file(tmp_path, HEADER, _row(at="1767584700"))
    assert "exchange_timestamp '1767584700' is not an ISO 8601 time (e.g. 2026-01-05T09:15:00+05:30)" in (
        _refusal(path)
    )


def test_rows_when_time_goes_back_then_refused_naming_both_lines(tmp_path: Path) -> None:
    # Before: read as given, so a reversed file backtested time backwards and a --from/--to
    # window of it ("cut where time passes --to") silently selected nothing.
    path = _file(tmp_path, HEADER, _row(at="2026-01-05T09:16:00+05:30"), _row(at="2026-01-05T09:15:00+05:30"))
    message = _refusal(path)
    assert "line 3: exchange_timestamp 2026-01-05T09:15:00+05:30 is before line 2's 2026-01-05T09:16:00" in (
        message
    )
    assert "sort it by exchange_timestamp" in message


def test_rows_when_zones_differ_then_time_order_is_by_the_instant(tmp_path: Path) -> None:
    # 03:46Z is 09:16 IST: after 09:15 IST, though its clock reads earlier.
    path = _file(tmp_path, HEADER, _row(at="2026-01-05T09:15:00+05:30"), _row(at="2026-01-05T03:46:00Z"))
    assert [r.exchange_timestamp.isoformat() for r in read_tick_rows(path)] == [
        "2026-01-05T09:15:00+05:30",
        "2026-01-05T03:46:00+00:00",
    ]
    reversed_zones = _file(tmp_path, HEADER, _row(at="2026-01-05T03:46:00Z"), _row(), name="back.csv")
    assert "before line 2's" in _refusal(reversed_zones)


def test_rows_when_an_instrument_ticks_twice_in_a_second_then_each_is_read_and_numbered(
    tmp_path: Path,
) -> None:
    # Repeats are kept (an LTP-mode recording repeats rows legitimately): the CLI notes them.
    path = _file(tmp_path, HEADER, _row(), _row(last="100.10"), _row(), _row())
    rows = list(read_tick_rows(path))
    assert [r.seq for r in rows] == [0, 1, 2, 3]
    assert len({r.event().id for r in rows}) == 4


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x1f\x8b\x08\x00rest", "ticks.csv is gzip-compressed: decompress it first"),
        (b"PAR1\x00\x00\xff\xfe", "ticks.csv is a Parquet file: name it *.parquet"),
        (b"\xff\xfei\x00n\x00", "ticks.csv is not UTF-8 text"),
    ],
)
def test_rows_when_the_csv_is_not_text_then_it_says_what_it_is(
    tmp_path: Path, content: bytes, says: str
) -> None:
    # Before: a UnicodeDecodeError traceback.
    path = tmp_path / "ticks.csv"
    path.write_bytes(content)
    assert says in _refusal(path)


@pytest.mark.parametrize("content", [b"", b"not parquet at all"])
def test_parquet_when_not_a_parquet_file_then_one_line(tmp_path: Path, content: bytes) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "ticks.parquet"
    path.write_bytes(content)
    # Before: pyarrow.lib.ArrowInvalid tracebacks, from reading and from counting (the progress bar).
    assert "ticks.parquet is not a readable Parquet file" in _refusal(path)
    with pytest.raises(TickFileError, match="not a readable Parquet file"):
        count_tick_rows(path)


def _typed_parquet(path: Path, **columns: object) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table: dict[str, object] = {
        "instrument_token": [1, 1],
        "tradingsymbol": ["SYM", "SYM"],
        "exchange": ["NSE", "NSE"],
        "asset_class": ["equity", "equity"],
        "exchange_timestamp": [START, START.replace(second=1)],
        "last_price": [1480.55, 1480.6],
        "bid": [1480.5, 1480.55],
        "ask": [1480.6, 1480.65],
        "bid_quantity": [5, 6],
        "ask_quantity": [5, 6],
        "volume": [0, 1],
        **columns,
    }
    pq.write_table(pa.table(table), path)
    return path


def test_parquet_when_prices_are_float32_then_they_are_the_prices_written(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    # Before: 1480.55 as float32 read back as its double, Rs 1480.550048828125: a wrong price.
    path = _typed_parquet(
        tmp_path / "ticks.parquet",
        last_price=pa.array([1480.55, 1480.6], pa.float32()),
        bid=pa.array([1480.5, 1480.55], pa.float32()),
    )
    rows = list(read_tick_rows(path))
    assert [r.last_price for r in rows] == [Decimal("1480.55"), Decimal("1480.6")]
    assert [r.bid for r in rows] == [Decimal("1480.5"), Decimal("1480.55")]


def test_parquet_when_counts_are_whole_floats_then_they_read_as_counts(tmp_path: Path) -> None:
    # pandas writes an integer column with a gap as float64: before, "invalid literal for int()".
    path = _typed_parquet(tmp_path / "ticks.parquet", bid_quantity=[5.0, 6.0], volume=[0.0, 1.0])
    assert [(r.bid_quantity, r.volume) for r in read_tick_rows(path)] == [(5, 0), (6, 1)]
    fractional = _typed_parquet(tmp_path / "frac.parquet", bid_quantity=[5.5, 6.0])
    assert "line 2: bid_quantity '5.5' is not a whole number" in _refusal(fractional)
