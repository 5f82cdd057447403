"""The paper broker through its two stages (trading engine, order matcher) on an in-memory store.

A signal is validated and reserved in the risk ledger as the risk manager would, placed by the
trading engine, and then meets later ticks in the order matcher.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alphapanda import stages
from alphapanda.brokers.base import OrderIds, Quote
from alphapanda.brokers.factory import TraderFactory
from alphapanda.config import BrokerSettings, FillSettings, Settings
from alphapanda.domain.charges import ExecutedOrder, Segment, charges_for, load_charge_schedule
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.portfolio import Book, Position
from alphapanda.domain.strategy import EmaCrossover
from alphapanda.events import (
    IST,
    DepthLevel,
    Event,
    EventType,
    InvalidEvent,
    MarketTick,
    OrderCancelled,
    OrderFailed,
    OrderFilled,
    OrderSubmitted,
    OrderType,
    Product,
    Side,
    Signal,
    SignalValidated,
    Validity,
    derive_id,
    source_of,
    tick_event,
)
from alphapanda.stages.order_matcher import OrderMatcher
from alphapanda.stages.risk_ledger import LedgerView, ledger_reads, reserve
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore
from alphapanda.strategies import StrategySpec

D = Decimal
TOKEN = 738561
OTHER = 408065
RELIANCE = Instrument(TOKEN, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", D("0.05"), 1, D("1480"))
INFY = Instrument(OTHER, "INFY", "INFOSYS", "NSE", "NSE", "EQ", D("0.05"), 1, D("1500"))
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=IST)  # a Monday, a normal NSE session
CLOSE = datetime(2026, 1, 5, 15, 30, tzinfo=IST)
SQUARE_OFF = datetime(2026, 1, 5, 15, 20, tzinfo=IST)
STRATEGY = "s1"
SPECS = [
    StrategySpec(STRATEGY, EmaCrossover(fast=1, slow=2, quantity=1), frozenset({TOKEN}), ("paper",)),
    StrategySpec("s2", EmaCrossover(fast=1, slow=2, quantity=1), frozenset({TOKEN}), ("paper",)),
]
RATES = load_charge_schedule().rates_on(T0, Segment.EQUITY_INTRADAY, "NSE")
ASKS = [("1480.00", 40), ("1480.05", 30), ("1480.10", 50)]
BIDS = [("1479.95", 40), ("1479.90", 30), ("1479.85", 50)]


class Desk:
    """A paper broker's engine and matcher over one store, with the risk manager's reservation."""

    def __init__(self, starting_cash: str = "1000000", **fills: Any) -> None:
        fills.setdefault("slippage_bps", D(0))
        settings = Settings(
            brokers=("paper",),
            broker={"paper": BrokerSettings(starting_cash=D(starting_cash), fills=FillSettings(**fills))},
        )
        traders = TraderFactory(settings, {TOKEN: RELIANCE, OTHER: INFY})
        self.engine = TradingEngine(brokers=frozenset({"paper"}), traders=traders)
        self.matcher = OrderMatcher(frozenset({"paper"}), traders=traders, strategies=SPECS)
        self.store = MemoryStateStore()
        self._n = 0

    def seed(self, writes: dict[str, str]) -> None:
        self._n += 1
        self.store.process_once(f"test:seed:{self._n}", [], lambda _: Decision(outputs=[], writes=writes))

    def quote(self, bid: str, ask: str, ltp: str | None = None, at: datetime = T0) -> None:
        raw = {"bid": bid, "ask": ask, "ltp": ltp or ask, "at": at.isoformat()}
        self.seed({keys.quote(TOKEN): json.dumps(raw)})

    def signal(self, side: Side = Side.BUY, quantity: int = 100, **fields: Any) -> tuple[Event, list[Event]]:
        """Reserve and place one signal; return its validated event and the engine's outputs."""
        self._n += 1
        signal = Signal(
            instrument_token=fields.pop("token", TOKEN),
            tradingsymbol="RELIANCE",
            exchange="NSE",
            strategy=fields.pop("strategy", STRATEGY),
            side=side,
            quantity=quantity,
            reference_price=D("1480"),
            tick_time=fields.pop("tick_time", T0),
            **fields,
        )
        read = ledger_reads("paper", signal.instrument_token, signal.strategy)
        self.store.process_once(
            f"test:reserve:{self._n}",
            read,
            lambda values: Decision(
                outputs=[],
                writes=reserve(
                    values,
                    "paper",
                    signal.instrument_token,
                    signal.strategy,
                    side.sign * quantity,
                    D("1480"),
                ),
            ),
        )
        validated = Event(
            id=f"validated-{self._n}",
            type=EventType.SIGNAL_VALIDATED,
            source=source_of("risk_manager", "paper"),
            data=SignalValidated(signal=signal),
            partitionkey=str(signal.instrument_token),
            correlationid=f"idea-{self._n}",
            causationid=f"raw-{self._n}",
            broker="paper",
        )
        return validated, stages.process(self.engine, validated, self.store)

    def tick(
        self,
        at: datetime,
        bid: str,
        ask: str,
        last: str | None = None,
        *,
        asks: list[tuple[str, int]] | None = None,
        bids: list[tuple[str, int]] | None = None,
        token: int = TOKEN,
    ) -> list[Event]:
        return stages.process(
            self.matcher, self.tick_event(at, bid, ask, last, asks=asks, bids=bids, token=token), self.store
        )

    def tick_event(
        self,
        at: datetime,
        bid: str,
        ask: str,
        last: str | None = None,
        *,
        asks: list[tuple[str, int]] | None = None,
        bids: list[tuple[str, int]] | None = None,
        token: int = TOKEN,
    ) -> Event:
        tick = MarketTick(
            instrument_token=token,
            tradingsymbol="RELIANCE" if token == TOKEN else "INFY",
            exchange="NSE",
            last_price=D(last or ask),
            bid=D(bid),
            ask=D(ask),
            exchange_timestamp=at,
            depth_buy=None if bids is None else tuple(DepthLevel(price=D(p), quantity=q) for p, q in bids),
            depth_sell=None if asks is None else tuple(DepthLevel(price=D(p), quantity=q) for p, q in asks),
        )
        return tick_event(tick, f"tick-{token}-{at.isoformat()}")

    def ledger(self, strategy: str = STRATEGY) -> LedgerView:
        values = {k: self.store.get(k) for k in ledger_reads("paper", TOKEN, strategy)}
        return LedgerView.read(values, "paper", TOKEN, strategy)

    def resting(self, token: int = TOKEN) -> list[dict[str, Any]]:
        raw = self.store.get(keys.resting_orders("paper", token))
        return json.loads(raw) if raw else []

    def blocked(self) -> Decimal:
        return D(self.store.get(keys.margin_resting("paper")) or 0)

    def status(self, order_id: str) -> str:
        return str(json.loads(self.store.get(keys.order("paper", order_id)) or "{}").get("status"))


def _payloads(events: list[Event]) -> list[Any]:
    return [e.data for e in events]


def _filled(event: Event) -> OrderFilled:
    assert isinstance(event.data, OrderFilled)
    return event.data


def _submitted(event: Event) -> OrderSubmitted:
    assert isinstance(event.data, OrderSubmitted)
    return event.data


def _cancelled(event: Event) -> OrderCancelled:
    assert isinstance(event.data, OrderCancelled)
    return event.data


def _fills(events: list[Event]) -> list[OrderFilled]:
    return [e.data for e in events if isinstance(e.data, OrderFilled)]


def _limit(price: str, validity: Validity = Validity.DAY, **more: Any) -> dict[str, Any]:
    return {"order_type": OrderType.LIMIT, "limit_price": D(price), "validity": validity, **more}


# --- resting LIMIT orders ---------------------------------------------------------------------


def test_engine_when_day_limit_is_not_marketable_then_it_rests_with_its_margin_blocked() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")

    _, outputs = desk.signal(quantity=100, **_limit("1470.00"))

    (submitted,) = outputs
    assert isinstance(submitted.data, OrderSubmitted)
    assert (submitted.data.order_type, submitted.data.price) == (OrderType.LIMIT, D("1470.00"))
    (order,) = desk.resting()
    assert (order["order_id"], order["working"]["remaining"]) == (submitted.data.order_id, 100)
    # 100 x 1,470 / 5 (MIS leverage)
    assert desk.blocked() == D("29400.00")
    assert desk.status(submitted.data.order_id) == "open"
    assert (desk.ledger().position, desk.ledger().open_orders) == (100, 1)


def test_matcher_when_a_later_tick_reaches_a_resting_limit_then_fills_it_at_its_limit_and_closes_it() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    validated, (submitted,) = desk.signal(quantity=100, **_limit("1470.00"))

    assert desk.tick(T0 + timedelta(seconds=1), "1474.95", "1475.00") == []
    tick = desk.tick_event(T0 + timedelta(seconds=2), "1469.90", "1469.95")
    (filled,) = stages.process(desk.matcher, tick, desk.store)

    fill = filled.data
    assert isinstance(fill, OrderFilled)
    assert (fill.side, fill.quantity, fill.price, fill.remaining_quantity) == (Side.BUY, 100, D("1470.00"), 0)
    assert fill.order_id == _submitted(submitted).order_id
    assert fill.charges == charges_for(ExecutedOrder(Side.BUY, 100, D("1470.00")), RATES).total > 0
    assert (filled.topic, filled.broker, filled.causationid) == ("paper.orders.filled", "paper", tick.id)
    assert filled.correlationid == validated.correlationid, "a resting order's fill belongs to its idea"
    assert fill.filled_at == tick.time
    assert desk.resting() == [] and desk.blocked() == 0
    assert desk.status(fill.order_id) == "filled"
    # Filled quantity stays reserved (it is a position now); the order no longer counts as open.
    assert (desk.ledger().position, desk.ledger().open_orders) == (100, 0)


def test_engine_when_buy_limit_is_marketable_then_it_fills_at_once_never_above_its_limit() -> None:
    desk = Desk(slippage_bps=D(5))
    desk.quote("1479.95", "1480.00")

    _, (_, filled) = desk.signal(quantity=10, **_limit("1480.20"))

    # 1,480.00 x 1.0005 = 1,480.74 -> capped at the limit 1,480.20
    assert _filled(filled).price == D("1480.20")
    assert desk.resting() == []


def test_engine_when_order_fills_at_once_then_it_is_stamped_with_event_time_not_the_wall_clock() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00", at=T0 + timedelta(milliseconds=300))

    _, (submitted, filled) = desk.signal(quantity=10)

    assert _submitted(submitted).submitted_at == T0
    assert _filled(filled).filled_at == T0 + timedelta(milliseconds=300)


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_engine_when_ioc_limit_is_not_marketable_then_it_is_cancelled_whole_and_given_back(
    side: Side,
) -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    price = "1470.00" if side is Side.BUY else "1490.00"

    _, (_, cancelled) = desk.signal(side, 100, **_limit(price, Validity.IOC))

    assert isinstance(cancelled.data, OrderCancelled)
    assert (cancelled.data.quantity, cancelled.data.filled_quantity) == (100, 0)
    assert cancelled.topic == "paper.orders.cancelled"
    assert (desk.ledger().position, desk.ledger().open_orders) == (0, 0)
    assert desk.resting() == [] and desk.blocked() == 0


# --- depth, partial fills, IOC ----------------------------------------------------------------


def test_engine_when_market_order_exceeds_the_depth_then_fills_level_by_level_and_rests_the_rest() -> None:
    desk = Desk()
    desk.tick(T0, "1479.95", "1480.00", asks=ASKS, bids=BIDS)  # the matcher keeps the tick's depth
    desk.quote("1479.95", "1480.00")

    validated, outputs = desk.signal(quantity=150)

    submitted, *fills = outputs
    parts = [_filled(f) for f in fills]
    assert [(f.price, f.quantity, f.remaining_quantity) for f in parts] == [
        (D("1480.00"), 40, 110),
        (D("1480.05"), 30, 80),
        (D("1480.10"), 50, 30),
    ]
    fill_id = derive_id(validated.id, "fill")
    assert [e.id for e in fills] == [
        derive_id(validated.id, "filled"),
        derive_id(validated.id, "filled/1"),
        derive_id(validated.id, "filled/2"),
    ]
    assert [f.fill_id for f in parts] == [fill_id, derive_id(fill_id, "1"), derive_id(fill_id, "2")]
    assert all(f.order_quantity == 150 for f in parts)
    (order,) = desk.resting()
    assert order["working"]["remaining"] == 30
    # 30 of 150 still blocked: 150 x 1,480.00 / 5 = 44,400 -> 30/150 of it
    assert desk.blocked() == D("8880.00")

    later = desk.tick(T0 + timedelta(seconds=1), "1480.00", "1480.05", asks=[("1480.05", 100)])

    (last,) = _fills(later)
    assert (last.quantity, last.price, last.remaining_quantity) == (30, D("1480.05"), 0)
    order_id = _submitted(submitted).order_id
    assert later[0].id == derive_id(later[0].causationid, order_id, "filled/3")
    assert last.fill_id == derive_id(later[0].causationid, order_id, "fill", "3")
    assert desk.resting() == [] and desk.blocked() == 0
    # Charges per fill, across both stages, sum to the charges of the whole order.
    every = [*parts, last]
    value = sum((f.price * f.quantity for f in every), D(0))
    whole = charges_for(ExecutedOrder(Side.BUY, 150, value / 150), RATES)
    assert sum((f.charges for f in every), D(0)) == whole.total
    assert (
        sum((f.charge_lines.brokerage for f in every if f.charge_lines), D(0))
        == whole.brokerage
        == D("20.00")
    )
    assert (desk.ledger().position, desk.ledger().open_orders) == (150, 0)


def test_engine_when_ioc_market_order_exceeds_the_depth_then_the_remainder_is_cancelled_and_given_back() -> (
    None
):
    desk = Desk()
    desk.tick(T0, "1479.95", "1480.00", asks=ASKS, bids=BIDS)
    desk.quote("1479.95", "1480.00")

    _, outputs = desk.signal(Side.SELL, 200, validity=Validity.IOC)

    assert [type(p).__name__ for p in _payloads(outputs)] == [
        "OrderSubmitted", "OrderFilled", "OrderFilled", "OrderFilled", "OrderCancelled",
    ]  # fmt: skip
    cancelled = outputs[-1].data
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.quantity, cancelled.filled_quantity) == (80, 120)
    assert "IOC" in cancelled.reason
    assert (desk.ledger().position, desk.ledger().open_orders) == (-120, 0)
    assert desk.resting() == []


def test_engine_when_quote_is_fresher_than_the_matchers_tick_then_it_fills_whole_at_the_touch() -> None:
    desk = Desk()
    desk.tick(T0, "1479.95", "1480.00", asks=ASKS, bids=BIDS)
    desk.quote("1480.95", "1481.00", at=T0 + timedelta(seconds=1))

    _, (_, filled) = desk.signal(quantity=150, tick_time=T0 + timedelta(seconds=1))

    assert (_filled(filled).quantity, _filled(filled).price) == (150, D("1481.00"))


def test_matcher_when_two_resting_orders_meet_one_tick_then_they_share_its_depth_in_arrival_order() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    _, (first,) = desk.signal(quantity=50, **_limit("1470.00"))
    _, (second,) = desk.signal(quantity=50, **_limit("1470.00"))

    outputs = desk.tick(T0 + timedelta(seconds=1), "1469.90", "1469.95", asks=[("1469.95", 70)])

    assert [(f.order_id, f.quantity) for f in _fills(outputs)] == [
        (_submitted(first).order_id, 50),
        (_submitted(second).order_id, 20),
    ]
    assert [o["working"]["remaining"] for o in desk.resting()] == [30]


def test_engine_when_two_orders_meet_one_ticks_depth_then_the_second_gets_only_what_the_first_left() -> None:
    # Asks 40 @ 1480.00, 30 @ 1480.05, 50 @ 1480.10. The first order takes 60: 40 @ 1480.00 and
    # 20 @ 1480.05. The second, on the same tick, starts at the 10 left at 1480.05, then 1480.10.
    desk = Desk()
    desk.tick(T0, "1479.95", "1480.00", asks=ASKS, bids=BIDS)
    desk.quote("1479.95", "1480.00")

    _, (_, *first) = desk.signal(quantity=60)
    _, (_, *second) = desk.signal(quantity=30, strategy="s2")

    assert [(f.price, f.quantity) for f in _fills(first)] == [(D("1480.00"), 40), (D("1480.05"), 20)]
    assert [(f.price, f.quantity) for f in _fills(second)] == [(D("1480.05"), 10), (D("1480.10"), 20)]
    left = json.loads(desk.store.get(keys.paper_market("paper", TOKEN)) or "{}")
    assert left["asks"] == [["1480.10", "30"]] and left["bids"] == [[p, str(q)] for p, q in BIDS]
    # The next tick shows the book afresh.
    desk.tick(T0 + timedelta(seconds=1), "1479.95", "1480.00", asks=ASKS, bids=BIDS)
    _, (_, *third) = desk.signal(quantity=10, strategy="s2", tick_time=T0 + timedelta(seconds=1))
    assert [(f.price, f.quantity) for f in _fills(third)] == [(D("1480.00"), 10)]


def test_matcher_when_resting_orders_take_a_ticks_depth_then_a_new_order_on_that_tick_gets_the_rest() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    _, (resting,) = desk.signal(quantity=50, **_limit("1470.00"))
    at = T0 + timedelta(seconds=1)

    matched = desk.tick(at, "1469.90", "1469.95", asks=[("1469.95", 70), ("1470.00", 100)])
    desk.quote("1469.90", "1469.95", at=at)
    _, (_, *new) = desk.signal(quantity=40, strategy="s2", tick_time=at)

    assert [(f.order_id, f.quantity) for f in _fills(matched)] == [(_submitted(resting).order_id, 50)]
    # 20 of the 70 at 1469.95 are left for the new order; the rest of it pays 1470.00.
    assert [(f.price, f.quantity) for f in _fills(new)] == [(D("1469.95"), 20), (D("1470.00"), 20)]


def test_engine_when_the_order_meets_the_signals_touch_then_the_matchers_tick_is_not_rewritten() -> None:
    desk = Desk(fill_quote="signal")
    desk.tick(T0, "1479.95", "1480.00", asks=ASKS, bids=BIDS)
    before = desk.store.get(keys.paper_market("paper", TOKEN))

    desk.signal(quantity=60, bid=D("1479.95"), ask=D("1480.00"))

    assert desk.store.get(keys.paper_market("paper", TOKEN)) == before


# --- funds, margin, kill switch, validation ---------------------------------------------------


def test_engine_when_order_exceeds_funds_then_fails_with_the_reason_and_gives_the_reservation_back() -> None:
    desk = Desk(starting_cash="20000")
    desk.quote("1479.95", "1480.00")

    _, (_, failed) = desk.signal(quantity=100)

    assert isinstance(failed.data, OrderFailed)
    # 100 x 1,480.00 / 5 = 29,600 of margin
    assert (
        failed.data.reason
        == "insufficient funds: the order needs Rs 29600.00 of margin, Rs 20000.00 is available"
    )
    assert (desk.ledger().position, desk.ledger().open_orders) == (0, 0)
    assert desk.status(failed.data.order_id) == "failed"


@pytest.mark.parametrize(
    ("product", "leverage", "fills"),
    [(Product.MIS, "5", True), (Product.MIS, "2", False), (Product.CNC, "5", False)],
)
def test_engine_when_mis_leverage_covers_the_order_then_it_fills_and_cnc_needs_the_full_value(
    product: Product, leverage: str, fills: bool
) -> None:
    desk = Desk(starting_cash="30000", mis_leverage=D(leverage))
    desk.quote("1479.95", "1480.00")

    _, (_, result) = desk.signal(quantity=100, product=product)

    assert isinstance(result.data, OrderFilled) is fills


def test_engine_when_account_and_resting_orders_hold_funds_then_only_what_is_left_is_available() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    desk.seed(
        {keys.account("paper"): json.dumps({"available": "40000"}), keys.margin_resting("paper"): "15000"}
    )

    _, (_, failed) = desk.signal(quantity=100)

    assert isinstance(failed.data, OrderFailed)
    assert "Rs 25000.00 is available" in failed.data.reason


def test_engine_when_order_only_closes_a_position_then_it_passes_an_empty_account() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    book = Book(cash=D(0), positions=((TOKEN, Position(100, D("1400"))),))
    desk.seed(
        {
            keys.account("paper"): json.dumps({"available": "0"}),
            keys.book("paper", STRATEGY): json.dumps(book.to_json()),
        }
    )

    _, (_, filled) = desk.signal(Side.SELL, 100)

    assert isinstance(filled.data, OrderFilled)


def test_engine_when_broker_is_halted_then_new_orders_fail_but_closing_ones_trade() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    desk.seed({keys.control("paper"): "HALTED"})

    _, (_, failed) = desk.signal(quantity=10)
    _, (_, flattened) = desk.signal(Side.SELL, 10, flatten=True)

    assert isinstance(failed.data, OrderFailed) and failed.data.reason == "broker halted"
    assert isinstance(flattened.data, OrderFilled) and flattened.data.flatten is True


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"order_type": OrderType.LIMIT}, "a LIMIT order needs a positive limit price"),
        ({"order_type": OrderType.SL_M}, "a SL-M order needs a positive trigger price"),
        (_limit("1470.03"), "limit price 1470.03 is not a multiple of the tick size 0.05"),
        (
            {"order_type": OrderType.SL, "limit_price": D("1490"), "trigger_price": D("1495")},
            "a buy SL order's limit price must be at or above its trigger price",
        ),
        ({"token": 1}, "unknown instrument 1"),
        ({"product": Product.NRML}, "no charges segment for product 'NRML' with instrument type 'EQ'"),
    ],
)
def test_engine_when_order_is_malformed_then_it_fails_with_the_reason(
    fields: dict[str, Any], reason: str
) -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")

    _, (_, failed) = desk.signal(quantity=10, **fields)

    assert isinstance(failed.data, OrderFailed)
    assert failed.data.reason == reason


def test_engine_when_no_quote_yet_then_fails_naming_the_instrument() -> None:
    _, (_, failed) = Desk().signal(quantity=10)

    assert isinstance(failed.data, OrderFailed)
    assert failed.data.reason == "no market data yet for RELIANCE"


# --- stops ------------------------------------------------------------------------------------


def test_matcher_when_sell_sl_m_trigger_is_reached_then_it_fills_as_a_market_order() -> None:
    desk = Desk(slippage_bps=D(2))
    desk.quote("1479.95", "1480.00")
    _, (submitted,) = desk.signal(Side.SELL, 10, order_type=OrderType.SL_M, trigger_price=D("1470.00"))

    assert desk.tick(T0 + timedelta(seconds=1), "1470.00", "1470.05", "1470.05") == []
    (filled,) = desk.tick(T0 + timedelta(seconds=2), "1469.95", "1470.00", "1470.00")

    # 1,469.95 x 0.9998 = 1,469.656 -> down to 1,469.65
    assert (_filled(filled).quantity, _filled(filled).price) == (10, D("1469.65"))
    assert _submitted(submitted).trigger_price == D("1470.00")
    assert desk.resting() == []


@pytest.mark.parametrize(
    ("side", "order_type", "trigger", "limit", "message"),
    [
        # Kite's RMS messages (the local Kite sandbox answers the same).
        (Side.BUY, OrderType.SL_M, "1479.95", None, "stoploss buy orders should be higher"),
        (Side.BUY, OrderType.SL, "1480.00", "1480.50", "stoploss buy orders should be higher"),
        (Side.SELL, OrderType.SL_M, "1480.05", None, "stoploss sell orders should be lower"),
        (Side.SELL, OrderType.SL, "1480.00", "1479.00", "stoploss sell orders should be lower"),
    ],
)
def test_engine_when_a_stop_is_already_past_its_trigger_then_it_is_rejected_as_kite_rejects_it(
    side: Side, order_type: OrderType, trigger: str, limit: str | None, message: str
) -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.05", ltp="1480.00")
    limit_price = None if limit is None else D(limit)

    _, (_, failed) = desk.signal(
        side, 10, order_type=order_type, trigger_price=D(trigger), limit_price=limit_price
    )

    assert isinstance(failed.data, OrderFailed)
    assert failed.data.reason == (
        f"Trigger price for {message} than the last traded price (last traded 1480.00, trigger {trigger})."
    )
    assert desk.resting() == []


def test_matcher_when_buy_sl_triggers_but_the_ask_is_beyond_its_limit_then_it_rests_as_a_limit() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    desk.signal(quantity=10, order_type=OrderType.SL, trigger_price=D("1490.00"), limit_price=D("1490.00"))

    assert desk.tick(T0 + timedelta(seconds=1), "1490.05", "1490.10", "1490.00") == []
    (filled,) = desk.tick(T0 + timedelta(seconds=2), "1489.95", "1490.00", "1490.00")

    assert _filled(filled).price == D("1490.00")


# --- latency ----------------------------------------------------------------------------------


def test_matcher_when_latency_is_set_then_the_order_trades_only_on_ticks_after_it_arrives() -> None:
    desk = Desk(latency_ms=500)
    desk.quote("1479.95", "1480.00")

    _, outputs = desk.signal(quantity=10)
    early = desk.tick(T0 + timedelta(milliseconds=499), "1479.95", "1480.00")
    (filled,) = desk.tick(T0 + timedelta(milliseconds=500), "1480.95", "1481.00")

    assert [type(p).__name__ for p in _payloads(outputs)] == ["OrderSubmitted"]
    assert early == []
    assert _filled(filled).price == D("1481.00")


def test_engine_when_latency_is_zero_and_fill_quote_is_signal_then_it_fills_at_the_signals_touch() -> None:
    desk = Desk(fill_quote="signal")
    desk.quote("1499.95", "1500.00")

    _, (_, filled) = desk.signal(quantity=10, bid=D("1479.95"), ask=D("1480.05"))

    assert _filled(filled).price == D("1480.05")


# --- session end, kill switch, square-off -----------------------------------------------------


def test_matcher_when_the_session_closes_then_resting_day_orders_expire_and_are_given_back() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    validated, (submitted,) = desk.signal(quantity=100, product=Product.CNC, **_limit("1470.00"))

    assert desk.tick(CLOSE - timedelta(seconds=1), "1479.95", "1480.00") == []
    (cancelled,) = desk.tick(CLOSE, "1479.95", "1480.00")

    assert isinstance(cancelled.data, OrderCancelled)
    assert (cancelled.data.reason, cancelled.data.quantity) == ("DAY order expired", 100)
    assert cancelled.correlationid == validated.correlationid
    assert desk.resting() == [] and desk.blocked() == 0
    assert (desk.ledger().position, desk.ledger().open_orders) == (0, 0)
    assert desk.status(_submitted(submitted).order_id) == "cancelled"


def test_matcher_when_broker_is_halted_then_resting_orders_are_cancelled_on_the_next_tick() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    desk.signal(quantity=100, **_limit("1470.00"))
    desk.seed({keys.control("paper"): "HALTED"})

    (cancelled,) = desk.tick(T0 + timedelta(seconds=1), "1469.90", "1469.95")

    assert _cancelled(cancelled).reason == "broker halted"
    assert desk.resting() == []


def test_matcher_when_square_off_time_comes_then_mis_positions_are_closed_once_at_the_touch() -> None:
    desk = Desk(slippage_bps=D(2))
    mis = Book(cash=D(0), positions=((TOKEN, Position(10, D("1480"), product="MIS")),))
    cnc = Book(cash=D(0), positions=((TOKEN, Position(-5, D("1480"), product="CNC")),))
    desk.seed(
        {
            keys.book("paper", "s1"): json.dumps(mis.to_json()),
            keys.book("paper", "s2"): json.dumps(cnc.to_json()),
        }
    )
    desk.seed(reserve({}, "paper", TOKEN, "s1", 10, D("1480")))

    before = desk.tick(SQUARE_OFF - timedelta(seconds=1), "1489.95", "1490.00")
    at = desk.tick(SQUARE_OFF, "1489.95", "1490.00")
    after = desk.tick(SQUARE_OFF + timedelta(minutes=1), "1489.95", "1490.00")

    assert before == [] and after == []
    submitted, filled = at
    assert isinstance(submitted.data, OrderSubmitted) and isinstance(filled.data, OrderFilled)
    assert (submitted.data.product, submitted.data.order_type, submitted.data.side) == (
        Product.MIS,
        OrderType.MARKET,
        Side.SELL,
    )
    fill = filled.data
    # 1,489.95 x 0.9998 = 1,489.652 -> 1,489.65; only s1's MIS position, not s2's CNC one
    assert (fill.strategy, fill.quantity, fill.price, fill.flatten) == ("s1", 10, D("1489.65"), True)
    assert fill.charges > 0 and filled.topic == "paper.orders.filled"
    assert desk.ledger().position == 0


def test_matcher_when_square_off_time_comes_then_resting_mis_orders_are_cancelled_but_cnc_ones_stay() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    desk.signal(quantity=10, **_limit("1470.00"))
    desk.signal(quantity=10, product=Product.CNC, **_limit("1470.00"))

    (cancelled,) = desk.tick(SQUARE_OFF, "1479.95", "1480.00")

    assert _cancelled(cancelled).reason == "MIS order cancelled at the square-off time"
    assert [o["product"] for o in desk.resting()] == ["CNC"]


# --- redelivery, brokers ----------------------------------------------------------------------


def test_matcher_when_a_tick_is_delivered_twice_then_same_outputs_and_state_changes_once() -> None:
    desk = Desk()
    desk.quote("1479.95", "1480.00")
    desk.signal(quantity=100, **_limit("1470.00"))
    tick = desk.tick_event(T0 + timedelta(seconds=1), "1469.90", "1469.95", asks=[("1469.95", 60)])

    first = stages.process(desk.matcher, tick, desk.store)
    state = desk.store.snapshot()
    second = stages.process(desk.matcher, tick, desk.store)

    assert len(first) == 1 and second == first
    assert desk.store.snapshot() == state


def test_matcher_when_tick_is_of_an_instrument_without_orders_then_it_only_keeps_the_tick() -> None:
    desk = Desk()

    assert desk.tick(T0, "1499.95", "1500.00", token=OTHER, asks=ASKS) == []
    assert json.loads(desk.store.get(keys.paper_market("paper", OTHER)) or "{}")["asks"][0] == [
        "1480.00",
        "40",
    ]
    assert desk.store.get(keys.resting_orders("paper", OTHER)) is None


def test_matcher_when_it_serves_no_broker_then_a_tick_is_invalid_for_it() -> None:
    desk = Desk()
    with pytest.raises(InvalidEvent, match="serves no paper broker"):
        stages.process(OrderMatcher(frozenset()), desk.tick_event(T0, "1", "1.05"), desk.store)


def test_matcher_when_bound_to_one_broker_then_it_claims_and_writes_only_that_broker() -> None:
    desk = Desk()
    both = OrderMatcher(frozenset({"paper", "paper-2"}), traders=desk.matcher.traders, strategies=SPECS)

    stages.process(both.for_broker("paper-2"), desk.tick_event(T0, "1479.95", "1480.00"), desk.store)

    written = set(desk.store.snapshot())
    assert written == {keys.paper_market("paper-2", TOKEN)}


# --- the paper trader's edges -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("placed", "expires"),
    [
        (T0, CLOSE),  # a normal session
        (datetime(2026, 1, 3, 11, 0, tzinfo=IST), datetime(2026, 1, 4, 0, 0, tzinfo=IST)),  # a Saturday
        (datetime(2031, 3, 4, 11, 0, tzinfo=IST), datetime(2031, 3, 4, 15, 30, tzinfo=IST)),  # uncovered
    ],
)
def test_session_end_when_order_is_placed_then_day_orders_live_until_that_days_close(
    placed: datetime, expires: datetime
) -> None:
    trader = TraderFactory(Settings(brokers=("paper",)), {TOKEN: RELIANCE}).paper("paper")

    assert trader.session_end(placed) == expires


def test_execute_when_called_through_the_trader_protocol_then_places_with_the_starting_cash() -> None:
    trader = TraderFactory(Settings(brokers=("paper",)), {TOKEN: RELIANCE}).paper("paper")
    signal = Signal(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy=STRATEGY,
        side=Side.BUY,
        quantity=10,
        reference_price=D("1480"),
        tick_time=T0,
    )
    quote = Quote(D("1479.95"), D("1480.00"), D("1480.00"), T0)

    submitted, filled = trader.execute(signal, OrderIds("sig", "ord", "fill"), quote)

    assert isinstance(submitted, OrderSubmitted) and isinstance(filled, OrderFilled)
    # default 2 bps: 1,480.00 x 1.0002 = 1,480.296 -> up to 1,480.30
    assert (filled.order_id, filled.fill_id, filled.price) == ("ord", "fill", D("1480.30"))
