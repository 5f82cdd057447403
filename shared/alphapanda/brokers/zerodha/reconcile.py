"""Reconciliation: do the portfolio's books agree with the positions Kite holds?

Our books (`{broker}:book:{strategy}`) are built from the fills the order updates delivered;
Kite's net positions are the truth about the account. A difference means a lost or doubled
update, an order placed outside Alpha Panda, or a fill that never reached the portfolio. It
is reported as an `Alert` on `{broker}.alerts` and returned, never corrected automatically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alphapanda.domain.portfolio import Book
from alphapanda.events import Alert, Event, EventType, Severity, derive_id, now, source_of
from alphapanda.state import keys as core_keys
from alphapanda.state.store import StateStore

SOURCE_FUNCTION = "reconcile"


@dataclass(frozen=True, slots=True)
class PositionBreak:
    instrument_token: int
    tradingsymbol: str
    exchange: str
    expected: int
    """Net quantity in Alpha Panda's books (all strategies)."""
    actual: int
    """Net quantity Kite reports."""

    @property
    def label(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}" if self.tradingsymbol else str(self.instrument_token)


def book_positions(books: Mapping[str, Book]) -> dict[int, int]:
    """Net quantity per instrument over every strategy's book."""
    out: dict[int, int] = {}
    for book in books.values():
        for token, position in book.positions:
            out[token] = out.get(token, 0) + position.net_quantity
    return out


def kite_positions(positions: Mapping[str, Any]) -> dict[int, tuple[int, str, str]]:
    """Net quantity, symbol and exchange per instrument from `KiteConnect.positions()`, all products."""
    out: dict[int, tuple[int, str, str]] = {}
    for row in positions.get("net") or ():
        token = int(row["instrument_token"])
        quantity = out.get(token, (0, "", ""))[0] + int(row.get("quantity") or 0)
        out[token] = (quantity, str(row.get("tradingsymbol") or ""), str(row.get("exchange") or ""))
    return out


def diff_positions(
    books: Mapping[int, int],
    kite: Mapping[int, tuple[int, str, str]],
    names: Callable[[int], tuple[str, str]] = lambda _t: ("", ""),
) -> list[PositionBreak]:
    """Every instrument whose net quantity differs, by token."""
    breaks = []
    for token in sorted(set(books) | set(kite)):
        expected = books.get(token, 0)
        actual, symbol, exchange = kite.get(token, (0, "", ""))
        if expected == actual:
            continue
        if not symbol:
            symbol, exchange = names(token)
        breaks.append(PositionBreak(token, symbol, exchange, expected, actual))
    return breaks


def load_books(store: StateStore, broker: str) -> dict[str, Book]:
    out = {}
    for strategy in sorted(store.members(core_keys.books_index(broker))):
        raw = store.get(core_keys.book(broker, strategy))
        if raw:
            out[strategy] = Book.from_json(json.loads(raw))
    return out


def reconciliation_alert(broker: str, breaks: list[PositionBreak], at: datetime) -> Event:
    alert_id = derive_id(SOURCE_FUNCTION, broker, at.isoformat())
    alert = Alert(
        kind="position_mismatch",
        severity=Severity.CRITICAL,
        message=f"{len(breaks)} position(s) differ between Alpha Panda's books and Kite for {broker}",
        details={b.label: f"books {b.expected}, kite {b.actual}" for b in breaks},
        raised_at=at,
    )
    return Event(
        id=alert_id,
        type=EventType.ALERT,
        source=source_of(SOURCE_FUNCTION, broker),
        data=alert,
        partitionkey=broker,
        correlationid=alert_id,
        causationid=alert_id,
        broker=broker,
        time=at,
    )


@dataclass(frozen=True)
class Reconciliation:
    breaks: list[PositionBreak]
    alert: Event | None


def reconcile(
    store: StateStore,
    kite: Any,
    broker: str,
    *,
    names: Callable[[int], tuple[str, str]] = lambda _t: ("", ""),
    clock: Callable[[], datetime] = now,
) -> Reconciliation:
    """Compare the broker's books with `kite.positions()`; an alert event if they differ."""
    breaks = diff_positions(
        book_positions(load_books(store, broker)), kite_positions(kite.positions()), names
    )
    return Reconciliation(breaks, reconciliation_alert(broker, breaks, clock()) if breaks else None)
