"""Tick files for backtests: CSV (always) and Parquet (with the optional `parquet` extra).

Parquet holds the same columns as the CSV tick file (`feed.TICK_CSV_COLUMNS`), all as text,
so both formats replay to identical ticks and therefore identical tick ids.

A backtest reads a file as `TickRow`s: plain tuples validated here, once, at the edge, by the
same rules `MarketTick` enforces, so the engine's hot path builds no model per tick and only
turns the few rows that cause events into `MarketTick` events (`TickRow.event`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from alphapanda.events import DepthLevel, Event, MarketTick, derive_id, tick_event
from alphapanda.feed import TICK_CSV_COLUMNS, TickFileError, _depth_from_text, write_ticks_csv

PARQUET_MISSING = (
    "Parquet tick files need pyarrow, which is not installed: pip install 'alphapanda[parquet]' "
    "(or convert the file to CSV)"
)
EXAMPLE_TIME = "2026-01-05T09:15:00+05:30"
TICK_NAMESPACE = "tick"
"""`feed.TickStamper`'s default namespace: a row's event id is the one the stamper would give."""


class TickRow(NamedTuple):
    """One validated tick as the backtest engine consumes it: no model, no id until needed."""

    instrument_token: int
    tradingsymbol: str
    exchange: str
    asset_class: str
    exchange_timestamp: datetime
    last_price: Decimal
    bid: Decimal
    ask: Decimal
    bid_quantity: int
    ask_quantity: int
    volume: int
    depth_buy: tuple[DepthLevel, ...] | None
    depth_sell: tuple[DepthLevel, ...] | None
    seq: int
    """How many earlier ticks of this instrument the stream had (`feed.TickStamper`'s counter)."""
    stamped: Event | None = None
    """The tick event, when the row was made from one (its id is kept as given)."""

    def tick(self) -> MarketTick:
        return MarketTick(
            instrument_token=self.instrument_token,
            tradingsymbol=self.tradingsymbol,
            exchange=self.exchange,
            asset_class=self.asset_class,
            exchange_timestamp=self.exchange_timestamp,
            last_price=self.last_price,
            bid=self.bid,
            ask=self.ask,
            bid_quantity=self.bid_quantity,
            ask_quantity=self.ask_quantity,
            volume=self.volume,
            depth_buy=self.depth_buy,
            depth_sell=self.depth_sell,
        )

    def event(self) -> Event:
        """The tick event `feed.TickStamper` gives this tick (or the one the row was made from)."""
        if self.stamped is not None:
            return self.stamped
        event_id = derive_id(
            TICK_NAMESPACE, str(self.instrument_token), self.exchange_timestamp.isoformat(), str(self.seq)
        )
        return tick_event(self.tick(), event_id)


def row_of(event: Event, seq: int = 0) -> TickRow:
    """The row of a tick event (already a validated model), keeping the event and its id."""
    t = event.data
    assert isinstance(t, MarketTick)
    return TickRow(
        t.instrument_token,
        t.tradingsymbol,
        t.exchange,
        t.asset_class,
        t.exchange_timestamp,
        t.last_price,
        t.bid,
        t.ask,
        t.bid_quantity,
        t.ask_quantity,
        t.volume,
        t.depth_buy,
        t.depth_sell,
        seq,
        event,
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
    """Ticks from a CSV or (by suffix) Parquet tick file, as models (one validated model each)."""
    for row in read_tick_rows(path):
        yield row.tick()


def count_tick_rows(path: Path) -> int:
    """How many ticks a tick file holds, without parsing them (for a progress bar's total).

    CSV: the lines after the header (a last line without a newline counts); Parquet: the row
    count from the file's metadata.
    """
    if is_parquet(path):
        pa = _pyarrow()
        try:
            return int(pa.parquet.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise TickFileError(_not_parquet(path, exc)) from None
    lines = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1  # the last line has no newline
    return max(lines - 1, 0)  # the header


def read_tick_rows(path: Path) -> Iterator[TickRow]:
    """Validated rows of a CSV or (by suffix) Parquet tick file, in file order."""
    if not is_parquet(path):
        return _read_csv_rows(path)
    return _read_parquet_rows(path)


class _RowParser:
    """Text fields -> a `TickRow`, with `MarketTick`'s rules and the CSV reader's messages.

    Tick files repeat the same symbols, timestamps and prices over and over, so parsed values
    are memoised by their text: a million-row file parses each distinct value once.
    """

    def __init__(self, origin: Path) -> None:
        self._origin = origin
        self._times: dict[str, datetime] = {}
        self._prices: dict[str, Decimal] = {}
        self._seq: dict[int, int] = {}
        self._last_at: datetime | None = None
        self._last_line = 0

    def _time(self, text: str) -> datetime:
        at = self._times.get(text)
        if at is None:
            try:
                at = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"exchange_timestamp {text!r} is not an ISO 8601 time (e.g. {EXAMPLE_TIME})"
                ) from None
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(
                    f"exchange_timestamp {text!r} has no timezone (market times are IST: {EXAMPLE_TIME})"
                )
            if len(self._times) > 100_000:
                self._times.clear()
            self._times[text] = at
        return at

    def _price(self, name: str, text: str) -> Decimal:
        price = self._prices.get(text)
        if price is None:
            try:
                price = Decimal(text)
            except InvalidOperation:
                raise ValueError(f"{name} {text!r} is not a number") from None
            if not price.is_finite() or not price > 0:
                raise ValueError(f"{name} must be greater than 0, not {text!r}")
            if len(self._prices) > 100_000:
                self._prices.clear()
            self._prices[text] = price
        return price

    def in_order(self, line: int, at_text: str, at: datetime) -> None:
        """Take the time of `line`, or raise `ValueError` if it is before the previous line's."""
        last_at = self._last_at
        if last_at is not None and at < last_at:
            raise ValueError(
                f"exchange_timestamp {at_text} is before line {self._last_line}'s "
                f"{last_at.isoformat()}: a tick file must be in time order (sort it by exchange_timestamp)"
            )
        self._last_at, self._last_line = at, line

    def row(self, line: int, fields: Sequence[str]) -> TickRow:
        """Text `fields` in `TICK_CSV_COLUMNS` order (the depth columns may be missing).

        Rows must come in time order: `--from`/`--to` cut a file where its time passes them.
        """
        try:
            token_text, symbol, exchange, asset_class, at_text, last, bid, ask, bq, aq, vol = fields[:11]
            token = _whole("instrument_token", token_text)
            if token <= 0:
                raise ValueError(f"instrument_token must be greater than 0, not {token}")
            if not symbol or not exchange:
                raise ValueError("tradingsymbol and exchange must not be empty")
            bid_quantity = _whole("bid_quantity", bq)
            ask_quantity = _whole("ask_quantity", aq)
            volume = _whole("volume", vol)
            if bid_quantity < 0 or ask_quantity < 0 or volume < 0:
                raise ValueError("bid_quantity, ask_quantity and volume must be 0 or more")
            depth_buy = _depth("depth_buy", fields[11]) if len(fields) > 11 and fields[11] else None
            depth_sell = _depth("depth_sell", fields[12]) if len(fields) > 12 and fields[12] else None
            # Memoised values first (a parsed price is never 0, a datetime never false).
            prices, times = self._prices, self._times
            at = times.get(at_text) or self._time(at_text)
            last_at = self._last_at
            if last_at is not None and at < last_at:
                self.in_order(line, at_text, at)
            row = TickRow(
                token,
                symbol,
                exchange,
                asset_class or "equity",
                at,
                prices.get(last) or self._price("last_price", last),
                prices.get(bid) or self._price("bid", bid),
                prices.get(ask) or self._price("ask", ask),
                bid_quantity,
                ask_quantity,
                volume,
                depth_buy,
                depth_sell,
                self._seq.get(token, 0),
            )
        except (ValueError, ArithmeticError) as exc:
            raise TickFileError(f"{self._origin} line {line}: {exc}") from None
        self._seq[token] = row.seq + 1
        self._last_at, self._last_line = at, line
        return row


def _whole(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a whole number") from None


def _depth(name: str, text: str) -> tuple[DepthLevel, ...] | None:
    try:
        return _depth_from_text(text)
    except (ValueError, ArithmeticError, ValidationError):  # a ValidationError: a negative count
        raise ValueError(
            f"{name} {text!r} is not depth levels: price:quantity:orders joined by |, "
            "e.g. 100.05:10:2|100.00:5:1 (quantity and orders 0 or more)"
        ) from None


def _not_parquet(path: Path, exc: BaseException) -> str:
    return f"{path} is not a readable Parquet file ({exc}): write it with pyarrow, or use a CSV tick file"


def _not_text(path: Path) -> str:
    """What a CSV tick file that is not UTF-8 text most likely is, and what to do."""
    return _binary_kind(path) or f"{path} is not UTF-8 text: save the tick file as UTF-8 CSV (or as .parquet)"


def _binary_kind(path: Path) -> str | None:
    """What a file named as CSV is, by its first bytes, if a compressed or Parquet file."""
    with path.open("rb") as fh:
        start = fh.read(4)
    if start[:2] == b"\x1f\x8b":
        return f"{path} is gzip-compressed: decompress it first (gunzip {path.name})"
    if start == b"PAR1":
        return f"{path} is a Parquet file: name it *.parquet"
    return None


def _read_csv_rows(path: Path) -> Iterator[TickRow]:
    parse = _RowParser(path)
    for line, fields in _csv_records(path):
        yield parse.row(line, fields)


def _csv_records(path: Path) -> Iterator[tuple[int, Sequence[str]]]:
    """(line, text fields in `TICK_CSV_COLUMNS` order) of a CSV tick file; blank lines skipped."""
    line = 1
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            if not header:
                raise TickFileError(
                    f"{path} is empty: a tick file starts with the header line {','.join(TICK_CSV_COLUMNS)}"
                )
            missing = set(TICK_CSV_COLUMNS[:11]) - set(header)
            if missing:
                kind = _binary_kind(path)
                raise TickFileError(kind or f"{path}: missing columns {', '.join(sorted(missing))}")
            width = len(header)
            order = [header.index(c) if c in header else -1 for c in TICK_CSV_COLUMNS]
            in_order = order == list(range(len(TICK_CSV_COLUMNS)))
            for line, fields in enumerate(reader, start=2):
                if len(fields) != width:
                    if not fields:
                        continue  # a blank line
                    raise TickFileError(
                        f"{path} line {line}: {len(fields)} fields, but the header has {width} "
                        "(a missing or extra comma? quote a field that holds one)"
                    )
                yield line, fields if in_order else [fields[i] if i >= 0 else "" for i in order]
    except UnicodeDecodeError:
        raise TickFileError(_not_text(path)) from None
    except csv.Error as exc:
        raise TickFileError(f"{path} line {line + 1}: not CSV: {exc}") from None


def _read_parquet_rows(path: Path) -> Iterator[TickRow]:
    columns = _parquet_columns(path, TICK_CSV_COLUMNS)
    parse = _RowParser(path)
    for line, fields in enumerate(zip(*columns, strict=True), start=2):
        yield parse.row(line, fields)


def _parquet_columns(path: Path, names: Sequence[str]) -> list[list[str]]:
    """The `names` columns of a Parquet tick file as text (a missing depth column as empty)."""
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path, columns=[n for n in names if n in _parquet_names(path)])
    except (pa.ArrowException, OSError) as exc:
        raise TickFileError(_not_parquet(path, exc)) from None
    missing = set(TICK_CSV_COLUMNS[:11]).intersection(names) - set(table.column_names)
    if missing:
        raise TickFileError(f"{path}: missing columns {', '.join(sorted(missing))}")
    # Columns as text in the CSV's order (as written, or typed columns turned to text): each
    # value goes through the same parser as a CSV field, so both formats give the same rows.
    columns: list[list[str]] = []
    for name in names:
        if name not in table.column_names:
            columns.append([""] * table.num_rows)
            continue
        column = table.column(name)
        if pa.types.is_floating(column.type):
            # Arrow's own text of a float is its shortest one for the column's width: a float32
            # price 1480.55 reads as 1480.55 (its double, 1480.550048828125, would be a wrong
            # price), and a whole-number float quantity 5.0 as 5.
            column = column.cast(pa.string())
        values = column.to_pylist()
        if all(type(v) is str for v in values):
            columns.append(values)
        else:
            columns.append(["" if v is None else _text(v) for v in values])
    return columns


def _parquet_names(path: Path) -> list[str]:
    pa = _pyarrow()
    try:
        return list(pa.parquet.ParquetFile(path).schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise TickFileError(_not_parquet(path, exc)) from None


def check_time_order(path: Path) -> None:
    """Raise `TickFileError` at a tick file's first tick earlier than the one before it.

    Reads the exchange_timestamp column only: a `--to` run stops reading where time passes
    `--to`, so without this a file out of order would lose, unseen, the ticks after that point.
    """
    parse = _RowParser(path)
    at_column = TICK_CSV_COLUMNS.index("exchange_timestamp")
    if is_parquet(path):
        records: Iterable[tuple[int, Sequence[str]]] = enumerate(
            ([t] for t in _parquet_columns(path, ["exchange_timestamp"])[0]), start=2
        )
        at_column = 0
    else:
        records = _csv_records(path)
    for line, fields in records:
        at_text = fields[at_column]
        try:
            parse.in_order(line, at_text, parse._times.get(at_text) or parse._time(at_text))
        except ValueError as exc:
            raise TickFileError(f"{path} line {line}: {exc}") from None


def _text(value: Any) -> str:
    """A typed Parquet value as the CSV writer would give it (datetimes in ISO 8601)."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def write_ticks(path: Path, ticks: Iterable[MarketTick]) -> int:
    """Write a CSV or (by suffix) Parquet tick file; return the number of ticks."""
    if not is_parquet(path):
        return write_ticks_csv(path, ticks)
    import tempfile

    pa = _pyarrow()

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "ticks.csv"
        n = write_ticks_csv(text, ticks)
        with text.open(newline="") as fh:
            rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    table = pa.table({name: [r[i] for r in body] for i, name in enumerate(header)})
    pa.parquet.write_table(table, path)
    return n
