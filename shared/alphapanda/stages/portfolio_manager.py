"""Portfolio manager: fills update positions, cash and PnL per broker and strategy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from alphapanda.brokers.base import Quote
from alphapanda.domain.portfolio import Book
from alphapanda.events import Event, EventType, OrderFilled, PnlSnapshot, source_of
from alphapanda.stages import BrokerScoped
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.topics import Function


@dataclass(frozen=True)
class PortfolioManager(BrokerScoped):
    function: Function = Function.PORTFOLIO_MANAGER
    accepts: EventType = EventType.ORDER_FILLED

    def reads(self, event: Event) -> list[str]:
        fill = _fill(event)
        return [keys.book(self.owner(event), fill.strategy), keys.quote(fill.instrument_token)]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        fill = _fill(event)
        broker = self.owner(event)
        book_key, quote_key = self.reads(event)
        raw_book = values[book_key]
        book = Book.from_json(json.loads(raw_book)) if raw_book else Book(cash=Decimal(0))
        book = book.with_fill(fill.instrument_token, fill.side, fill.quantity, fill.price, fill.charges)
        raw_quote = values[quote_key]
        mark = Quote.from_json(json.loads(raw_quote)).last_price if raw_quote else fill.price
        pos = book.position(fill.instrument_token)
        snapshot = PnlSnapshot(
            instrument_token=fill.instrument_token,
            tradingsymbol=fill.tradingsymbol,
            exchange=fill.exchange,
            strategy=fill.strategy,
            net_quantity=pos.net_quantity,
            average_price=pos.average_price,
            last_price=mark,
            realised_pnl=pos.realised_pnl,
            unrealised_pnl=pos.unrealised_pnl(mark),
            cash=book.cash,
            charges_paid=book.charges_paid,
            trade_count=book.trade_count,
            as_of=fill.filled_at,
        )
        source = source_of(self.function.value, broker)
        return Decision(
            outputs=[event.child("pnl", snapshot, source=source)],
            writes={book_key: json.dumps(book.to_json())},
            set_adds={keys.books_index(broker): fill.strategy},
        )


def _fill(event: Event) -> OrderFilled:
    assert isinstance(event.data, OrderFilled)
    return event.data
