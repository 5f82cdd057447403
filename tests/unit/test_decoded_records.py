"""Records decoded once for every worker of a dispatcher that consumes them (the market ticks:
strategy runner and order matcher), and only ever reused for the very same record."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from confluent_kafka import Message

from alphapanda.bus.delivery import DeadLetter
from alphapanda.bus.dispatcher import DecodedRecords, Dispatcher
from alphapanda.bus.kafka import EventPublisher, to_kafka
from alphapanda.config import DeliverySettings, KafkaSettings
from alphapanda.events import IST, Event, MarketTick, tick_event
from alphapanda.state.store import MemoryStateStore
from alphapanda.topics import Function, bindings

TOPIC = "market.equity.ticks"
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=IST)


def _tick(n: int, price: str = "100") -> Event:
    tick = MarketTick(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=Decimal(price),
        bid=Decimal(price),
        ask=Decimal(price),
        exchange_timestamp=T0 + timedelta(seconds=n),
    )
    return tick_event(tick, f"tick-{n}")


def _record(offset: int, event: Event, topic: str = TOPIC) -> Message:
    key, value, headers = to_kafka(event)
    return Message(topic=topic, partition=0, offset=offset, key=key, value=value, headers=headers)


def test_decoded_records_when_the_same_record_comes_again_then_its_decoding_is_reused() -> None:
    cache = DecodedRecords()
    event = _tick(1)
    cache.put(_record(7, event), event)

    assert cache.get(_record(7, event)) is event
    assert cache.hits == 1


def test_decoded_records_when_a_record_differs_at_the_same_position_then_nothing_is_reused() -> None:
    cache = DecodedRecords()
    event = _tick(1)
    cache.put(_record(7, event), event)

    assert cache.get(_record(7, _tick(2))) is None, "another value at that offset (a new topic)"
    assert cache.get(_record(8, event)) is None
    assert cache.get(_record(7, event, topic="market.fno.ticks")) is None
    key, value, headers = to_kafka(event)
    other_headers = Message(topic=TOPIC, partition=0, offset=7, key=key, value=value, headers=headers[:-1])
    assert cache.get(other_headers) is None
    assert cache.hits == 0


def test_decoded_records_when_full_then_the_oldest_go_first() -> None:
    cache = DecodedRecords(capacity=2)
    events = [_tick(n) for n in range(3)]
    for n, event in enumerate(events):
        cache.put(_record(n, event), event)

    assert cache.get(_record(0, events[0])) is None
    assert cache.get(_record(1, events[1])) is events[1]
    assert cache.get(_record(2, events[2])) is events[2]


def test_dispatcher_when_two_stages_read_the_ticks_then_only_they_share_decodings_and_a_dead_letter_too() -> (
    None
):
    store = MemoryStateStore()
    dispatcher = Dispatcher(
        bindings(["paper"]),
        lambda function, broker: _Stage(),  # type: ignore[arg-type, return-value]
        store,
        EventPublisher("unused:9092", 1.0),
        KafkaSettings(bootstrap_servers="unused:9092"),
        DeliverySettings(),
        publisher_per_worker=False,
    )
    sharing = {w.binding.function for w in dispatcher.workers if w._decoded is not None}
    assert sharing == {Function.STRATEGY_RUNNER, Function.ORDER_MATCHER}

    runner, matcher = (
        next(w for w in dispatcher.workers if w.binding.function is f)
        for f in (Function.STRATEGY_RUNNER, Function.ORDER_MATCHER)
    )
    poison = Message(topic=TOPIC, partition=0, offset=3, key=b"1", value=b"{", headers=[("ce_id", b"x")])
    first = runner._decode(poison)
    again = matcher._decode(poison)
    good = _record(4, _tick(4))
    assert isinstance(first, DeadLetter) and again is first
    assert matcher._decode(good) is runner._decode(good)
    assert dispatcher.decoded.hits == 2


class _Stage:
    function = Function.STRATEGY_RUNNER
