"""Read-side views of the shared state: what a broker holds and earned, for the terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from alphapanda.brokers.base import Quote
from alphapanda.domain.portfolio import ZERO, Book
from alphapanda.state import keys
from alphapanda.state.store import StateStore
from alphapanda.topics import market_scope


@dataclass(frozen=True)
class BrokerSummary:
    broker: str
    open_positions: int
    trades: int
    realised_pnl: Decimal
    unrealised_pnl: Decimal
    cash: Decimal
    charges: Decimal

    @property
    def total_pnl(self) -> Decimal:
        return self.realised_pnl + self.unrealised_pnl


def books(store: StateStore, broker: str) -> dict[str, Book]:
    out = {}
    for strategy in sorted(store.members(keys.books_index(broker))):
        raw = store.get(keys.book(broker, strategy))
        if raw:
            out[strategy] = Book.from_json(json.loads(raw))
    return out


def broker_summary(store: StateStore, broker: str) -> BrokerSummary:
    """Positions marked to the latest quote, summed over the broker's strategies."""
    open_positions = trades = 0
    realised = unrealised = cash = charges = ZERO
    marks: dict[int, Decimal | None] = {}
    for book in books(store, broker).values():
        trades += book.trade_count
        realised += book.realised_pnl
        cash += book.cash
        charges += book.charges_paid
        for token, pos in book.positions:
            if pos.net_quantity == 0:
                continue
            open_positions += 1
            if token not in marks:
                raw = store.get(keys.quote(token, market_scope(broker)))
                marks[token] = Quote.from_json(json.loads(raw)).last_price if raw else None
            mark = marks[token]
            if mark is not None:
                unrealised += pos.unrealised_pnl(mark)
    return BrokerSummary(broker, open_positions, trades, realised, unrealised, cash, charges)
