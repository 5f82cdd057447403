"""The Kafka codec (bus/kafka.py) against the CloudEvents SDK's Kafka binding it replaces.

`to_kafka`/`from_kafka` map events to records by hand (the SDK's copies cost more than a
batched delivery); these tests hold them to the SDK's own `to_binary`/`from_binary` on the
same inputs, good and bad, so the wire format and what counts as a valid record do not drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary

from alphapanda.bus.kafka import from_kafka, to_kafka
from alphapanda.events import (
    IST,
    Event,
    EventType,
    InvalidEvent,
    MarketTick,
    Side,
    Signal,
    encode_data,
    from_attributes,
    source_of,
    tick_event,
    to_attributes,
)

TICK_TIME = datetime(2025, 11, 24, 9, 15, 7, 250000, tzinfo=IST)
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _tick() -> Event:
    tick = MarketTick(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=Decimal("1480.05"),
        bid=Decimal("1480.00"),
        ask=Decimal("1480.10"),
        exchange_timestamp=TICK_TIME,
    )
    return tick_event(tick, "tick-1")


def _signal(*, broker: str | None = "paper", traceparent: str | None = TRACE) -> Event:
    signal = Signal(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="ema",
        side=Side.SELL,
        quantity=10,
        reference_price=Decimal("1480.05"),
        reason="cross",
        tick_time=TICK_TIME,
    )
    return Event(
        id="sig-1",
        type=EventType.SIGNAL_RAW,
        source=source_of("strategy_runner"),
        data=signal,
        partitionkey="738561",
        correlationid="idea-1",
        causationid="tick-1",
        broker=broker,
        time=TICK_TIME + timedelta(milliseconds=3),
        traceparent=traceparent,
    )


def _sdk_to_kafka(event: Event) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The encoding as it was done with the SDK before the codec was written out."""
    msg = to_binary(CloudEvent(to_attributes(event), encode_data(event)), data_marshaller=lambda d: d)
    headers = list(msg.headers.items())
    if event.traceparent is not None:
        headers.append(("traceparent", event.traceparent.encode()))
    return str(msg.key).encode(), msg.value, headers


def _sdk_from_kafka(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Event:
    """The decoding as it was done with the SDK before the codec was written out."""
    header_map = dict(headers)
    if "ce_id" not in header_map:
        raise InvalidEvent("no ce_id")
    try:
        ce = from_binary(
            KafkaMessage(header_map, key.decode() if key is not None else None, value or b""),
            data_unmarshaller=lambda d: d,
        )
    except Exception as exc:
        raise InvalidEvent(str(exc)) from None
    attrs: dict[str, Any] = dict(ce.get_attributes())
    return from_attributes(attrs, ce.get_data())


@pytest.mark.parametrize(
    "event", [_tick(), _signal(), _signal(broker=None, traceparent=None)], ids=["tick", "signal", "bare"]
)
def test_to_kafka_when_encoding_then_record_equals_the_sdk_binding(event: Event) -> None:
    assert to_kafka(event) == _sdk_to_kafka(event)


@pytest.mark.parametrize(
    "event", [_tick(), _signal(), _signal(traceparent=None)], ids=["tick", "signal", "bare"]
)
def test_from_kafka_when_decoding_our_record_then_event_round_trips_like_the_sdk(event: Event) -> None:
    key, value, headers = to_kafka(event)

    decoded = from_kafka(key, value, headers)

    assert decoded == event
    assert decoded == _sdk_from_kafka(key, value, headers)


def _mutated(change: str) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    key, value, headers = to_kafka(_signal())
    k: bytes | None = key
    if change == "no_id":
        headers = [(n, v) for n, v in headers if n != "ce_id"]
    elif change == "no_source":
        headers = [(n, v) for n, v in headers if n != "ce_source"]
    elif change == "no_type":
        headers = [(n, v) for n, v in headers if n != "ce_type"]
    elif change == "bad_specversion":
        headers = [(n, b"2.0" if n == "ce_specversion" else v) for n, v in headers]
    elif change == "no_specversion":
        headers = [(n, v) for n, v in headers if n != "ce_specversion"]
    elif change == "upper_case_header":
        headers = [("CE_SOURCE" if n == "ce_source" else n, v) for n, v in headers]
    elif change == "no_key":
        k = None
    elif change == "bad_body":
        value = b"{not json"
    elif change == "unknown_type":
        headers = [(n, b"com.example.other" if n == "ce_type" else v) for n, v in headers]
    return k, value, headers


@pytest.mark.parametrize(
    "change",
    [
        "no_id",
        "no_source",
        "no_type",
        "bad_specversion",
        "no_specversion",
        "upper_case_header",
        "no_key",
        "bad_body",
        "unknown_type",
    ],
)
def test_from_kafka_when_record_is_altered_then_it_is_accepted_or_refused_as_the_sdk_does(
    change: str,
) -> None:
    key, value, headers = _mutated(change)

    try:
        expected: Event | None = _sdk_from_kafka(key, value, headers)
    except InvalidEvent:
        expected = None

    if expected is None:
        with pytest.raises(InvalidEvent):
            from_kafka(key, value, headers)
    else:
        assert from_kafka(key, value, headers) == expected
