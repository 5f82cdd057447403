"""The four stages driven through `stages.process` on an in-memory store: outputs, state, redelivery."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from alphapanda import stages
from alphapanda.brokers.factory import TraderFactory
from alphapanda.config import BrokerSettings, FillSettings, RiskLimits, Settings
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.portfolio import Book, Position
from alphapanda.domain.strategy import EmaCrossover
from alphapanda.events import (
    IST,
    Event,
    EventType,
    InvalidEvent,
    MarketTick,
    OrderFailed,
    OrderFilled,
    OrderSubmitted,
    PnlSnapshot,
    Side,
    Signal,
    SignalRejected,
    SignalValidated,
    derive_id,
    source_of,
    tick_event,
)
from alphapanda.stages.portfolio_manager import PortfolioManager
from alphapanda.stages.risk_manager import RiskManager
from alphapanda.stages.strategy_runner import StrategyRunner
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore
from alphapanda.strategies import StrategySpec
from fill_events import fill_event

D = Decimal
TOKEN = 738561
T0 = datetime(2025, 11, 24, 9, 15, tzinfo=IST)
RELIANCE = Instrument(TOKEN, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", D("0.05"), 1, D("1480"))
# fast=1, slow=2: the first tick seeds the EMAs, the second one above it crosses and buys 10.
SPEC = StrategySpec(
    "ema_test", EmaCrossover(fast=1, slow=2, quantity=10), frozenset({TOKEN}), ("paper", "zerodha")
)


@pytest.fixture
def store() -> MemoryStateStore:
    return MemoryStateStore()


def _seed(store: MemoryStateStore, writes: dict[str, str]) -> None:
    store.process_once(
        "test:claim:seed:" + ",".join(writes), [], lambda _: Decision(outputs=[], writes=writes)
    )


def _quote(bid: str, ask: str, ltp: str) -> str:
    return json.dumps({"bid": bid, "ask": ask, "ltp": ltp})


def _tick_event(n: int, bid: str, ask: str) -> Event:
    tick = MarketTick(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=D(ask),
        bid=D(bid),
        ask=D(ask),
        exchange_timestamp=T0 + timedelta(seconds=n),
    )
    return tick_event(tick, f"tick-{n}")


def _signal(side: Side = Side.BUY, quantity: int = 10, reference_price: str = "1480.00") -> Signal:
    return Signal(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="ema_test",
        side=side,
        quantity=quantity,
        reference_price=D(reference_price),
        tick_time=T0,
    )


def _raw_event(
    signal: Signal | None = None, *, broker: str | None = "paper", event_id: str = "raw-1"
) -> Event:
    return Event(
        id=event_id,
        type=EventType.SIGNAL_RAW,
        source=source_of("strategy_runner"),
        data=signal or _signal(),
        partitionkey=str(TOKEN),
        correlationid="idea-1",
        causationid="tick-1",
        broker=broker,
    )


def _validated_event(signal: Signal | None = None) -> Event:
    raw = _raw_event(signal)
    return raw.child("validated", SignalValidated(signal=raw.data), source=source_of("risk_manager", "paper"))  # type: ignore[arg-type]


def _fill_event(side: Side, quantity: int, price: str, *, fill_id: str = "fill-1") -> Event:
    return fill_event(side, quantity, price, fill_id=fill_id, at=T0 + timedelta(seconds=1))


def _engine(slippage_bps: str = "2") -> TradingEngine:
    settings = Settings(
        brokers=("paper",), broker={"paper": BrokerSettings(fills=FillSettings(slippage_bps=D(slippage_bps)))}
    )
    return TradingEngine(brokers=frozenset({"paper"}), traders=TraderFactory(settings, {TOKEN: RELIANCE}))


# --- strategy runner --------------------------------------------------------------------------


def test_strategy_runner_when_idea_forms_then_one_signal_per_broker_sharing_one_correlation_id(
    store: MemoryStateStore,
) -> None:
    runner = StrategyRunner([SPEC], brokers=frozenset({"paper", "zerodha"}))
    tick = _tick_event(2, "1489.95", "1490.05")

    assert stages.process(runner, _tick_event(1, "1479.95", "1480.05"), store) == []
    outputs = stages.process(runner, tick, store)

    assert sorted(e.broker or "" for e in outputs) == ["paper", "zerodha"]
    assert sorted(e.topic for e in outputs) == ["paper.signals.raw", "zerodha.signals.raw"]
    assert len({e.correlationid for e in outputs}) == 1
    assert outputs[0].correlationid not in (tick.id, tick.correlationid)
    assert len({e.id for e in outputs}) == 2
    assert {e.causationid for e in outputs} == {tick.id}
    assert outputs[0].data == outputs[1].data
    signal = outputs[0].data
    assert isinstance(signal, Signal)
    assert (signal.side, signal.quantity, signal.reference_price) == (Side.BUY, 10, D("1490.00"))
    assert signal.tick_time == tick.time


def test_strategy_runner_when_a_strategy_broker_is_not_enabled_then_it_gets_no_signal(
    store: MemoryStateStore,
) -> None:
    runner = StrategyRunner([SPEC], brokers=frozenset({"paper"}))

    stages.process(runner, _tick_event(1, "1479.95", "1480.05"), store)
    outputs = stages.process(runner, _tick_event(2, "1489.95", "1490.05"), store)

    assert [e.broker for e in outputs] == ["paper"]


def test_strategy_runner_when_tick_arrives_then_quote_and_indicator_state_are_stored(
    store: MemoryStateStore,
) -> None:
    runner = StrategyRunner([SPEC], brokers=frozenset({"paper"}))

    stages.process(runner, _tick_event(1, "1479.95", "1480.05"), store)

    quote = json.loads(store.get(keys.quote(TOKEN)) or "")
    assert {k: quote[k] for k in ("bid", "ask", "ltp")} == {
        "bid": "1479.95",
        "ask": "1480.05",
        "ltp": "1480.05",
    }
    assert datetime.fromisoformat(quote["at"]).tzinfo is not None
    assert store.get(keys.symbol(TOKEN)) == "NSE:RELIANCE"
    assert json.loads(store.get(keys.indicator("ema_test", TOKEN)) or "")["n"] == 1


def test_strategy_runner_when_instrument_not_traded_then_only_market_data_is_stored(
    store: MemoryStateStore,
) -> None:
    spec = replace(SPEC, tokens=frozenset({1}))
    runner = StrategyRunner([spec], brokers=frozenset({"paper"}))

    assert stages.process(runner, _tick_event(1, "1479.95", "1480.05"), store) == []
    assert sorted(store.snapshot()) == sorted([keys.quote(TOKEN), keys.symbol(TOKEN)])


def test_process_when_same_tick_delivered_twice_then_same_outputs_and_state_changes_once(
    store: MemoryStateStore,
) -> None:
    runner = StrategyRunner([SPEC], brokers=frozenset({"paper", "zerodha"}))
    stages.process(runner, _tick_event(1, "1479.95", "1480.05"), store)
    tick = _tick_event(2, "1489.95", "1490.05")

    first = stages.process(runner, tick, store)
    after_first = store.snapshot()
    second = stages.process(runner, tick, store)

    assert len(first) == 2
    assert second == first
    assert store.snapshot() == after_first
    assert json.loads(after_first[keys.indicator("ema_test", TOKEN)])["n"] == 2


# --- risk manager -----------------------------------------------------------------------------


def test_risk_manager_when_signal_passes_then_validates_it_and_reserves_its_quantity(
    store: MemoryStateStore,
) -> None:
    raw = _raw_event()

    (out,) = stages.process(RiskManager(brokers=frozenset({"paper"})), raw, store)

    assert out.type is EventType.SIGNAL_VALIDATED
    assert out.id == derive_id(raw.id, "validated")
    assert (out.causationid, out.correlationid, out.broker) == (raw.id, "idea-1", "paper")
    assert out.topic == "paper.signals.validated"
    assert out.data == SignalValidated(signal=raw.data)  # type: ignore[arg-type]
    assert store.get(keys.risk_position("paper", TOKEN)) == "10"


def test_risk_manager_when_signals_follow_each_other_then_reservations_add_up(
    store: MemoryStateStore,
) -> None:
    risk = RiskManager(brokers=frozenset({"paper"}))

    stages.process(risk, _raw_event(_signal(Side.BUY, 10), event_id="raw-1"), store)
    stages.process(risk, _raw_event(_signal(Side.SELL, 25), event_id="raw-2"), store)

    assert store.get(keys.risk_position("paper", TOKEN)) == "-15"


def test_risk_manager_when_every_rule_fails_then_rejects_listing_all_and_reserves_nothing(
    store: MemoryStateStore,
) -> None:
    limits = RiskLimits(max_order_value=D("1000"), max_position_quantity=5, allowed_instruments=(1,))
    risk = RiskManager(brokers=frozenset({"paper"}), limits_for=lambda _broker: limits)
    raw = _raw_event()

    (out,) = stages.process(risk, raw, store)

    assert out.type is EventType.SIGNAL_REJECTED
    assert out.topic == "paper.signals.rejected"
    assert isinstance(out.data, SignalRejected)
    assert [f.rule for f in out.data.failures] == [
        "max_order_value",
        "max_position_quantity",
        "instrument_allow_list",
    ]
    assert store.get(keys.risk_position("paper", TOKEN)) is None


def test_risk_manager_when_last_tick_is_far_from_the_signal_then_price_band_rejects_not_order_value(
    store: MemoryStateStore,
) -> None:
    # 10 x 1,480 = 14,800 is within 15,000 (order value uses the signal's own price), but the
    # last tick at 1,600 is 8.1% away from 1,480, outside the 5% band.
    limits = RiskLimits(max_order_value=D("15000"))
    risk = RiskManager(brokers=frozenset({"paper"}), limits_for=lambda _broker: limits)
    _seed(store, {keys.quote(TOKEN): _quote("1599.95", "1600.05", "1600.00")})

    (out,) = stages.process(risk, _raw_event(), store)

    assert out.type is EventType.SIGNAL_REJECTED
    assert isinstance(out.data, SignalRejected)
    assert [f.rule for f in out.data.failures] == ["price_band"]


def test_risk_manager_when_limits_differ_per_broker_then_each_broker_uses_its_own(
    store: MemoryStateStore,
) -> None:
    limits = {"paper": RiskLimits(), "zerodha": RiskLimits(max_position_quantity=5)}
    risk = RiskManager(brokers=frozenset({"paper", "zerodha"}), limits_for=limits.__getitem__)

    (paper,) = stages.process(risk, _raw_event(broker="paper"), store)
    (zerodha,) = stages.process(risk, _raw_event(broker="zerodha"), store)

    assert (paper.type, zerodha.type) == (EventType.SIGNAL_VALIDATED, EventType.SIGNAL_REJECTED)
    assert store.get(keys.risk_position("zerodha", TOKEN)) is None


def test_risk_manager_when_signal_redelivered_then_quantity_is_reserved_once(store: MemoryStateStore) -> None:
    risk = RiskManager(brokers=frozenset({"paper"}))
    raw = _raw_event()

    first = stages.process(risk, raw, store)
    second = stages.process(risk, raw, store)

    assert second == first
    assert store.get(keys.risk_position("paper", TOKEN)) == "10"


# --- trading engine ---------------------------------------------------------------------------


def test_trading_engine_when_quote_known_then_emits_submitted_then_filled_at_slipped_ask(
    store: MemoryStateStore,
) -> None:
    _seed(
        store,
        {
            keys.quote(TOKEN): _quote("1479.95", "1480.05", "1480.00"),
            keys.risk_position("paper", TOKEN): "10",
        },
    )
    validated = _validated_event()

    submitted, filled = stages.process(_engine("2"), validated, store)

    assert (submitted.type, filled.type) == (EventType.ORDER_SUBMITTED, EventType.ORDER_FILLED)
    assert (submitted.id, filled.id) == (
        derive_id(validated.id, "submitted"),
        derive_id(validated.id, "filled"),
    )
    for out in (submitted, filled):
        assert out.causationid == validated.id
        assert out.correlationid == validated.correlationid == "idea-1"
        assert out.broker == "paper"
    assert isinstance(submitted.data, OrderSubmitted) and isinstance(filled.data, OrderFilled)
    assert submitted.data.signal_id == validated.causationid == "raw-1"
    assert submitted.data.order_id == filled.data.order_id == derive_id(validated.id, "order")
    assert filled.data.fill_id == derive_id(validated.id, "fill")
    # 1,480.05 x 1.0002 = 1,480.346 -> up to the next 0.05 tick
    assert (filled.data.side, filled.data.quantity, filled.data.price) == (Side.BUY, 10, D("1480.35"))
    assert filled.topic == "paper.orders.filled"
    order = json.loads(store.get(keys.order("paper", submitted.data.order_id)) or "")
    assert order == {"status": "filled", "signal": "raw-1"}
    assert store.get(keys.risk_position("paper", TOKEN)) == "10"


def test_trading_engine_when_selling_then_fills_at_slipped_bid(store: MemoryStateStore) -> None:
    _seed(store, {keys.quote(TOKEN): _quote("1479.95", "1480.05", "1480.00")})

    _, filled = stages.process(_engine("2"), _validated_event(_signal(Side.SELL, 5)), store)

    # 1,479.95 x 0.9998 = 1,479.654 -> down to 1,479.65
    assert filled.data.price == D("1479.65")  # type: ignore[attr-defined]


def test_trading_engine_when_no_quote_then_order_fails_and_reservation_is_released(
    store: MemoryStateStore,
) -> None:
    _seed(store, {keys.risk_position("paper", TOKEN): "10"})
    validated = _validated_event()

    submitted, failed = stages.process(_engine(), validated, store)

    assert (submitted.type, failed.type) == (EventType.ORDER_SUBMITTED, EventType.ORDER_FAILED)
    assert failed.id == derive_id(validated.id, "failed")
    assert (failed.causationid, failed.correlationid) == (validated.id, "idea-1")
    assert failed.topic == "paper.orders.failed"
    assert isinstance(failed.data, OrderFailed)
    assert "no market data yet for RELIANCE" in failed.data.reason
    assert store.get(keys.risk_position("paper", TOKEN)) == "0"
    assert json.loads(store.get(keys.order("paper", failed.data.order_id)) or "")["status"] == "failed"


def test_trading_engine_when_failed_order_redelivered_then_reservation_is_released_once(
    store: MemoryStateStore,
) -> None:
    _seed(store, {keys.risk_position("paper", TOKEN): "25"})
    validated = _validated_event(_signal(Side.SELL, 10))

    first = stages.process(_engine(), validated, store)
    second = stages.process(_engine(), validated, store)

    assert second == first
    assert store.get(keys.risk_position("paper", TOKEN)) == "35"


# --- portfolio manager ------------------------------------------------------------------------


def test_portfolio_manager_when_fill_arrives_then_book_is_updated_and_marked_at_the_fill_price(
    store: MemoryStateStore,
) -> None:
    _seed(store, {keys.quote(TOKEN): _quote("1489.95", "1490.05", "1490.00")})
    fill = _fill_event(Side.BUY, 10, "1480.35")

    (out,) = stages.process(PortfolioManager(brokers=frozenset({"paper"})), fill, store)

    assert out.type is EventType.PNL_SNAPSHOT
    assert out.id == derive_id(fill.id, "pnl")
    assert (out.causationid, out.correlationid, out.topic) == (fill.id, "idea-1", "paper.pnl.snapshots")
    snap = out.data
    assert isinstance(snap, PnlSnapshot)
    # Marked at the fill's own price, not the later quote in Redis: the result must not depend
    # on how far the feed has run (the periodic mark-to-market moves it with the market).
    assert (snap.net_quantity, snap.average_price, snap.last_price) == (10, D("1480.35"), D("1480.35"))
    # cash = -(10 x 1,480.35)
    assert (snap.realised_pnl, snap.unrealised_pnl, snap.cash) == (D("0"), D("0"), D("-14803.50"))
    assert (snap.trade_count, snap.as_of) == (1, T0 + timedelta(seconds=1))
    book = Book.from_json(json.loads(store.get(keys.book("paper", "ema_test")) or ""))
    assert book.position(TOKEN) == Position(10, D("1480.35"))
    assert store.members(keys.books_index("paper")) == {"ema_test"}


def test_portfolio_manager_when_second_fill_reduces_then_pnl_is_realised(store: MemoryStateStore) -> None:
    manager = PortfolioManager(brokers=frozenset({"paper"}))
    stages.process(manager, _fill_event(Side.BUY, 10, "1480.35", fill_id="fill-1"), store)

    (out,) = stages.process(manager, _fill_event(Side.SELL, 4, "1500.00", fill_id="fill-2"), store)

    snap = out.data
    assert isinstance(snap, PnlSnapshot)
    # no quote stored: marked at the fill price.  realised (1,500 - 1,480.35) x 4 = 78.60
    assert (snap.net_quantity, snap.realised_pnl, snap.last_price) == (6, D("78.60"), D("1500.00"))
    assert snap.unrealised_pnl == (D("1500.00") - D("1480.35")) * 6
    assert (snap.cash, snap.trade_count) == (D("-14803.50") + D("6000.00"), 2)


def test_portfolio_manager_when_fill_redelivered_then_it_is_booked_once(store: MemoryStateStore) -> None:
    manager = PortfolioManager(brokers=frozenset({"paper"}))
    fill = _fill_event(Side.BUY, 10, "1480.35")

    first = stages.process(manager, fill, store)
    after_first = store.snapshot()
    second = stages.process(manager, fill, store)

    assert second == first
    assert store.snapshot() == after_first
    assert json.loads(after_first[keys.book("paper", "ema_test")])["trades"] == 1


# --- the pipeline end to end, and input checks -----------------------------------------------


def test_pipeline_when_tick_crosses_then_idea_reaches_the_book_under_one_correlation_id(
    store: MemoryStateStore,
) -> None:
    paper = frozenset({"paper"})
    runner = StrategyRunner([SPEC], brokers=paper)
    stages.process(runner, _tick_event(1, "1479.95", "1480.05"), store)

    (raw,) = stages.process(runner, _tick_event(2, "1489.95", "1490.05"), store)
    (validated,) = stages.process(RiskManager(brokers=paper), raw, store)
    _, filled = stages.process(_engine("0"), validated, store)
    (pnl,) = stages.process(PortfolioManager(brokers=paper), filled, store)

    assert {e.correlationid for e in (raw, validated, filled, pnl)} == {raw.correlationid}
    assert [validated.causationid, pnl.causationid] == [raw.id, filled.id]
    # zero slippage: a buy fills at the ask of the tick that is the latest quote
    assert filled.data.price == D("1490.05")  # type: ignore[attr-defined]
    assert pnl.data.net_quantity == 10  # type: ignore[attr-defined]


@pytest.mark.parametrize("broker", ["zerodha", None])
def test_process_when_event_is_for_a_broker_the_stage_does_not_serve_then_raises_invalid_event(
    store: MemoryStateStore, broker: str | None
) -> None:
    with pytest.raises(InvalidEvent, match=f"is for broker {broker!r}, not one of \\['paper'\\]"):
        stages.process(RiskManager(brokers=frozenset({"paper"})), _raw_event(broker=broker), store)

    assert store.snapshot() == {}


def test_process_when_event_type_is_not_the_stages_then_raises_invalid_event(store: MemoryStateStore) -> None:
    with pytest.raises(
        InvalidEvent,
        match=re.escape("accepts com.alphapanda.signal.validated, not com.alphapanda.signal.raw"),
    ):
        stages.process(_engine(), _raw_event(), store)
