"""Tick sources for the market feed: ids for ticks, and CSV tick files (write and replay)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from alphapanda.events import DepthLevel, Event, MarketTick, derive_id, tick_event

TICK_CSV_COLUMNS = (
    "instrument_token",
    "tradingsymbol",
    "exchange",
    "asset_class",
    "exchange_timestamp",
    "last_price",
    "bid",
    "ask",
    "bid_quantity",
    "ask_quantity",
    "volume",
    "depth_buy",
    "depth_sell",
)


class TickStamper:
    """Give each tick a deterministic event id: the same tick stream always gets the same ids.

    The id is derived from the instrument, the exchange timestamp and the tick's position in
    that instrument's stream, so a simulator run and a replay of its CSV yield identical events.
    """

    def __init__(self, namespace: str = "tick") -> None:
        self._namespace = namespace
        self._seq: dict[int, int] = {}

    def stamp(self, tick: MarketTick) -> Event:
        n = self._seq.get(tick.instrument_token, 0)
        self._seq[tick.instrument_token] = n + 1
        event_id = derive_id(
            self._namespace, str(tick.instrument_token), tick.exchange_timestamp.isoformat(), str(n)
        )
        return tick_event(tick, event_id)


def _depth_to_text(depth: tuple[DepthLevel, ...] | None) -> str:
    if depth is None:
        return ""
    return "|".join(f"{d.price}:{d.quantity}:{d.orders}" for d in depth)


def _depth_from_text(text: str) -> tuple[DepthLevel, ...] | None:
    if not text:
        return None
    levels = []
    for part in text.split("|"):
        price, qty, orders = part.split(":")
        levels.append(DepthLevel(price=Decimal(price), quantity=int(qty), orders=int(orders)))
    return tuple(levels)


def write_ticks_csv(path: Path, ticks: Iterable[MarketTick]) -> int:
    """Write ticks to a CSV tick file; return how many were written."""
    n = 0
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TICK_CSV_COLUMNS)
        for t in ticks:
            writer.writerow(
                (
                    t.instrument_token,
                    t.tradingsymbol,
                    t.exchange,
                    t.asset_class,
                    t.exchange_timestamp.isoformat(),
                    t.last_price,
                    t.bid,
                    t.ask,
                    t.bid_quantity,
                    t.ask_quantity,
                    t.volume,
                    _depth_to_text(t.depth_buy),
                    _depth_to_text(t.depth_sell),
                )
            )
            n += 1
    return n


class TickFileError(ValueError):
    pass


def read_ticks_csv(path: Path) -> Iterator[MarketTick]:
    """Replay a CSV tick file; a bad row raises `TickFileError` naming the file and line."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(TICK_CSV_COLUMNS[:11]) - set(reader.fieldnames or ())
        if missing:
            raise TickFileError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                yield MarketTick(
                    instrument_token=int(row["instrument_token"]),
                    tradingsymbol=row["tradingsymbol"],
                    exchange=row["exchange"],
                    asset_class=row["asset_class"] or "equity",
                    exchange_timestamp=datetime.fromisoformat(row["exchange_timestamp"]),
                    last_price=Decimal(row["last_price"]),
                    bid=Decimal(row["bid"]),
                    ask=Decimal(row["ask"]),
                    bid_quantity=int(row["bid_quantity"]),
                    ask_quantity=int(row["ask_quantity"]),
                    volume=int(row["volume"]),
                    depth_buy=_depth_from_text(row.get("depth_buy") or ""),
                    depth_sell=_depth_from_text(row.get("depth_sell") or ""),
                )
            except (ValueError, ArithmeticError) as exc:
                raise TickFileError(f"{path} line {line}: {exc}") from None
