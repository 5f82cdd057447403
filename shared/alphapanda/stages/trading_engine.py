"""Trading engine: validated signals become paper orders.

The pure stage trades paper brokers (a live broker's engine is its own, effectful stage). It
reads what the paper broker needs to know of the account, lets `PaperTrader.place` decide, and
commits in one transaction with the claim: the order's status, the order itself if it keeps
working (it rests under `keys.resting_orders`, where the order matcher picks it up on later
ticks), the margin working orders block, and the risk ledger: an order that finished here
(filled, failed, IOC-cancelled) stops counting as open and gives back its unfilled quantity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from alphapanda.brokers.base import OrderIds, Quote
from alphapanda.brokers.factory import TraderFactory
from alphapanda.brokers.paper import HALTED, AccountView, PaperStep, PaperTrader, dump_resting, load_resting
from alphapanda.domain.matching import Market
from alphapanda.domain.portfolio import Book
from alphapanda.events import Event, EventType, SignalValidated, derive_id, source_of
from alphapanda.stages import BrokerScoped
from alphapanda.stages.risk_ledger import ledger_reads, release
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.topics import Function, market_scope


@dataclass(frozen=True)
class TradingEngine(BrokerScoped):
    traders: TraderFactory | None = None
    function: Function = Function.TRADING_ENGINE
    accepts: EventType = EventType.SIGNAL_VALIDATED

    def reads(self, event: Event) -> list[str]:
        signal = _validated(event).signal
        broker = self.owner(event)
        token = signal.instrument_token
        return [
            keys.quote(token, market_scope(broker)),
            keys.paper_market(broker, token),
            keys.resting_orders(broker, token),
            keys.account(broker),
            keys.control(broker),
            keys.margin_resting(broker),
            keys.book(broker, signal.strategy),
            *ledger_reads(broker, token, signal.strategy),
        ]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        assert self.traders is not None, "TradingEngine needs a TraderFactory"
        signal = _validated(event).signal
        broker = self.owner(event)
        token = signal.instrument_token
        trader = self.traders.paper(broker)
        quote_key, view_key, resting_key, account_key, control_key, margin_key, book_key, *_ledger = (
            self.reads(event)
        )

        raw_quote, raw_view = values[quote_key], values[view_key]
        view = Market.from_json(json.loads(raw_view)) if raw_view else None
        market = trader.market_for(
            signal, Quote.from_json(json.loads(raw_quote)) if raw_quote else None, view
        )
        resting_margin = Decimal(values[margin_key] or 0)
        raw_book = values[book_key]
        account = AccountView(
            available=_available(values[account_key], trader.starting_cash) - resting_margin,
            halted=values[control_key] == HALTED,
            position=Book.from_json(json.loads(raw_book)).position(token).net_quantity if raw_book else 0,
        )
        step, ids, outputs = self.place(event, trader, market, account)
        writes: dict[str, str] = {
            keys.order(broker, ids.order_id): json.dumps({"status": step.status, "signal": ids.signal_id})
        }
        if step.order is not None:
            writes[resting_key] = dump_resting([*load_resting(values[resting_key]), step.order])
        if step.margin_change:
            writes[margin_key] = str(resting_margin + step.margin_change)
        left = depth_left(view, market, step)
        if left is not None:
            writes[view_key] = json.dumps(left.to_json())
        if step.done:
            price = market.last if market is not None else signal.reference_price
            writes |= release(
                values,
                broker,
                token,
                signal.strategy,
                signal.side.sign * step.unfilled,
                price,
                order_done=True,
            )
        return Decision(outputs=outputs, writes=writes)

    def place(
        self, event: Event, trader: PaperTrader, market: Market | None, account: AccountView
    ) -> tuple[PaperStep, OrderIds, list[Event]]:
        """Place the validated signal in `event` with `trader`: what happened, the order's ids and
        the events to emit. Pure; `decide` and the backtest both place orders through it."""
        ids = OrderIds(
            signal_id=event.causationid,
            order_id=derive_id(event.id, "order"),
            fill_id=derive_id(event.id, "fill"),
        )
        step = trader.place(_validated(event).signal, ids, market, account, correlationid=event.correlationid)
        source = source_of(self.function.value, self.owner(event))
        return step, ids, [event.child(e.role, e.payload, source=source) for e in step.emitted]


def depth_left(view: Market | None, market: Market | None, step: PaperStep) -> Market | None:
    """The matcher's last tick as this order left it, if the order traded against that tick's
    depth: what it took, the next order on the same tick cannot take again. None when the
    order met another quote (the signal's touch, or a newer quote without depth) or took nothing.
    """
    if view is None or market is not view or step.market is None or step.market is view:
        return None
    return step.market


def _available(raw_account: str | None, starting_cash: Decimal) -> Decimal:
    """Funds available per the portfolio manager's account record; before it writes one, the
    starting cash."""
    if not raw_account:
        return starting_cash
    return Decimal(json.loads(raw_account)["available"])


def _validated(event: Event) -> SignalValidated:
    assert isinstance(event.data, SignalValidated)
    return event.data
