"""Operator actions that need no servers: the closing signals `flatten` sends through risk."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from alphapanda import stages
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.portfolio import Book
from alphapanda.domain.risk import InstrumentLimits
from alphapanda.events import IST, Event, EventType, Product, Side, Signal, derive_id
from alphapanda.runtime.operations import flatten_signals, order_slices
from alphapanda.stages.risk_manager import RiskManager
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore

D = Decimal
RELIANCE, INFY, TCS = 738561, 408065, 2953217
QUOTE_AT = datetime(2025, 11, 24, 14, 5, 30, tzinfo=IST)


def _seed(store: MemoryStateStore, writes: dict[str, str], books: tuple[str, ...] = ()) -> None:
    store.process_once(
        "test:claim:seed:" + ",".join(writes),
        [],
        lambda _: Decision(outputs=[], writes=writes, set_adds={keys.books_index("paper"): s for s in books}),
    )


def _book(store: MemoryStateStore, strategy: str, book: Book) -> None:
    _seed(store, {keys.book("paper", strategy): json.dumps(book.to_json())}, books=(strategy,))


def _quote(store: MemoryStateStore, token: int, bid: str, ask: str, ltp: str, symbol: str) -> None:
    quote = {"bid": bid, "ask": ask, "ltp": ltp, "at": QUOTE_AT.isoformat()}
    _seed(store, {keys.quote(token): json.dumps(quote), keys.symbol(token): f"NSE:{symbol}"})


@pytest.fixture
def store() -> MemoryStateStore:
    s = MemoryStateStore()
    # ema_a: long 10 RELIANCE, short 5 INFY, flat TCS (bought and sold); ema_b: long 3 RELIANCE
    _book(
        s,
        "ema_a",
        Book(cash=D("0"))
        .with_fill(RELIANCE, Side.BUY, 10, D("1480"))
        .with_fill(INFY, Side.SELL, 5, D("1600"))
        .with_fill(TCS, Side.BUY, 2, D("3000"))
        .with_fill(TCS, Side.SELL, 2, D("3010")),
    )
    _book(s, "ema_b", Book(cash=D("0")).with_fill(RELIANCE, Side.BUY, 3, D("1470")))
    _quote(s, RELIANCE, "1489.95", "1490.05", "1490", "RELIANCE")
    _quote(s, INFY, "1599.90", "1600.10", "1600", "INFY")
    _quote(s, TCS, "3009.95", "3010.05", "3010", "TCS")
    return s


def _by_key(events: list[Event]) -> dict[tuple[str, int], Signal]:
    out = {}
    for event in events:
        assert isinstance(event.data, Signal)
        out[(event.data.strategy, event.data.instrument_token)] = event.data
    return out


def test_flatten_signals_when_positions_open_then_one_opposite_closing_signal_each_and_none_for_flat(
    store: MemoryStateStore,
) -> None:
    signals = _by_key(flatten_signals(store, "paper", "req-1"))

    assert sorted(signals) == [("ema_a", INFY), ("ema_a", RELIANCE), ("ema_b", RELIANCE)]
    summary = {k: (s.side, s.quantity, s.flatten) for k, s in signals.items()}
    assert summary == {
        ("ema_a", RELIANCE): (Side.SELL, 10, True),
        ("ema_a", INFY): (Side.BUY, 5, True),
        ("ema_b", RELIANCE): (Side.SELL, 3, True),
    }


def test_flatten_signals_when_quote_known_then_priced_and_timed_by_it(store: MemoryStateStore) -> None:
    signal = _by_key(flatten_signals(store, "paper", "req-1"))[("ema_a", INFY)]

    assert (signal.tradingsymbol, signal.exchange) == ("INFY", "NSE")
    assert (signal.reference_price, signal.bid, signal.ask) == (D("1600"), D("1599.90"), D("1600.10"))
    assert signal.tick_time == QUOTE_AT
    assert signal.reason == "flatten requested by the operator"


def test_flatten_signals_when_no_quote_then_priced_at_the_average_with_the_token_as_symbol() -> None:
    store = MemoryStateStore()
    _book(store, "ema_a", Book(cash=D("0")).with_fill(RELIANCE, Side.SELL, 7, D("1480.25")))

    (event,) = flatten_signals(store, "paper", "req-1")

    signal = event.data
    assert isinstance(signal, Signal)
    assert (signal.side, signal.quantity, signal.reference_price) == (Side.BUY, 7, D("1480.25"))
    assert (signal.bid, signal.ask, signal.tradingsymbol, signal.exchange) == (
        None,
        None,
        str(RELIANCE),
        "NSE",
    )
    assert signal.tick_time.tzinfo is not None


def test_flatten_signals_when_built_then_events_are_raw_signals_for_the_broker_with_derived_ids(
    store: MemoryStateStore,
) -> None:
    events = flatten_signals(store, "paper", "req-1")

    for event in events:
        signal = event.data
        assert isinstance(signal, Signal)
        expected_id = derive_id("flatten", "req-1", "paper", signal.strategy, str(signal.instrument_token))
        assert (event.id, event.correlationid, event.causationid) == (
            expected_id,
            derive_id(expected_id, "idea"),
            "req-1",
        )
        assert (event.type, event.broker, event.partitionkey) == (
            EventType.SIGNAL_RAW,
            "paper",
            str(signal.instrument_token),
        )
        assert event.topic == "paper.signals.raw"


def test_flatten_signals_when_request_id_repeats_then_same_ids_and_a_new_request_gets_new_ones(
    store: MemoryStateStore,
) -> None:
    first = [e.id for e in flatten_signals(store, "paper", "req-1")]

    assert [e.id for e in flatten_signals(store, "paper", "req-1")] == first
    assert set(first).isdisjoint(e.id for e in flatten_signals(store, "paper", "req-2"))
    assert len(set(first)) == 3


def test_flatten_signals_when_broker_has_no_books_then_none(store: MemoryStateStore) -> None:
    assert flatten_signals(store, "zerodha", "req-1") == []
    assert flatten_signals(MemoryStateStore(), "paper", "req-1") == []


def test_flatten_signal_when_broker_halted_then_risk_validates_it(store: MemoryStateStore) -> None:
    # The reservation ledger holds ema_a's 10 and ema_b's 3 on RELIANCE.
    _seed(store, {keys.control("paper"): "HALTED", keys.risk_position("paper", RELIANCE): "13"})
    events = {
        (e.data.strategy, e.data.instrument_token): e  # type: ignore[union-attr]
        for e in flatten_signals(store, "paper", "req-1")
    }
    risk = RiskManager(brokers=frozenset({"paper"}))

    (out,) = stages.process(risk, events[("ema_a", RELIANCE)], store)

    assert out.type is EventType.SIGNAL_VALIDATED
    assert store.get(keys.risk_position("paper", RELIANCE)) == "3"


@pytest.mark.parametrize(
    ("quantity", "freeze", "lot", "slices"),
    [
        (10, None, 1, [10]),
        (1800, 1800, 75, [1800]),
        (4000, 1800, 75, [1800, 1800, 400]),
        (3600, 1800, 75, [1800, 1800]),
        (1000, 350, 50, [350, 350, 300]),  # 350 is 7 lots of 50
        (1000, 340, 50, [300, 300, 300, 100]),  # whole lots only: 6 lots under a freeze of 340
        (100, 40, 50, [100]),  # no whole lot fits under the freeze: one order, which risk refuses
    ],
)
def test_order_slices_when_above_the_freeze_then_whole_lot_slices_none_above_it(
    quantity: int, freeze: int | None, lot: int, slices: list[int]
) -> None:
    assert order_slices(quantity, freeze, lot) == slices
    assert sum(slices) == quantity


def _nifty_future(freeze: int) -> Instrument:
    return Instrument(
        instrument_token=RELIANCE,
        tradingsymbol="NIFTY26JANFUT",
        name="NIFTY",
        exchange="NFO",
        segment="NFO-FUT",
        instrument_type="FUT",
        tick_size=D("0.05"),
        lot_size=1,
        reference_price=D("1480"),
        freeze_quantity=freeze,
    )


def test_flatten_signals_when_a_position_is_above_the_freeze_then_slices_that_risk_validates_when_halted(
    store: MemoryStateStore,
) -> None:
    # ema_a holds 10 RELIANCE; with a freeze quantity of 4 it closes as 4 + 4 + 2.
    _seed(store, {keys.control("paper"): "HALTED", keys.risk_position("paper", RELIANCE): "13"})
    instruments = {RELIANCE: _nifty_future(4)}
    events = [
        e
        for e in flatten_signals(store, "paper", "req-1", instruments)
        if isinstance(e.data, Signal) and e.data.strategy == "ema_a" and e.data.instrument_token == RELIANCE
    ]
    quantities = [e.data.quantity for e in events]  # type: ignore[union-attr]
    assert quantities == [4, 4, 2]
    assert events[0].id == derive_id("flatten", "req-1", "paper", "ema_a", str(RELIANCE))
    assert len({e.id for e in events}) == 3
    assert [e.data.reason for e in events][-1] == "flatten requested by the operator (slice 3 of 3)"  # type: ignore[union-attr]
    risk = RiskManager(
        brokers=frozenset({"paper"}),
        instruments={RELIANCE: InstrumentLimits(freeze_quantity=4, derivative=True)},
    )

    outs = [out for event in events for out in stages.process(risk, event, store)]

    assert [o.type for o in outs] == [EventType.SIGNAL_VALIDATED] * 3
    assert store.get(keys.risk_position("paper", RELIANCE)) == "3"


def test_flatten_signal_when_not_sliced_and_above_the_freeze_then_risk_refuses_it(
    store: MemoryStateStore,
) -> None:
    # Why flatten slices: the one order of 10 is above a freeze quantity of 4.
    _seed(store, {keys.control("paper"): "HALTED", keys.risk_position("paper", RELIANCE): "13"})
    (event,) = [
        e
        for e in flatten_signals(store, "paper", "req-1")
        if isinstance(e.data, Signal) and e.data.strategy == "ema_a" and e.data.instrument_token == RELIANCE
    ]
    risk = RiskManager(
        brokers=frozenset({"paper"}),
        instruments={RELIANCE: InstrumentLimits(freeze_quantity=4, derivative=True)},
    )

    (out,) = stages.process(risk, event, store)

    assert out.type is EventType.SIGNAL_REJECTED
    assert "above the exchange freeze quantity 4" in str(out.data)


def test_flatten_signals_when_a_position_is_delivery_then_it_closes_in_delivery() -> None:
    store = MemoryStateStore()
    book = Book(cash=D("0")).with_fill(RELIANCE, Side.BUY, 7, D("1480"), product="CNC")
    book = book.with_fill(INFY, Side.SELL, 2, D("1600"))
    _book(store, "ema_a", book)

    signals = _by_key(flatten_signals(store, "paper", "req-1"))

    assert signals[("ema_a", RELIANCE)].product is Product.CNC
    assert signals[("ema_a", INFY)].product is Product.MIS
