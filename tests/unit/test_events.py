"""The event catalogue: id derivation, parent/child events, topics and the CloudEvent codec."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alphapanda.events import (
    _ID_NAMESPACE,
    EXTENSIONS,
    IST,
    DepthLevel,
    Event,
    EventType,
    InvalidEvent,
    MarketTick,
    OrderFailed,
    Side,
    Signal,
    SignalValidated,
    derive_id,
    encode_data,
    from_attributes,
    source_of,
    tick_event,
    to_attributes,
)

TICK_TIME = datetime(2025, 11, 24, 9, 15, 1, tzinfo=IST)
# The attributes the CloudEvents spec itself defines; everything else we send is an extension.
CORE_ATTRIBUTES = {"specversion", "id", "type", "source", "time", "datacontenttype", "subject", "dataschema"}


def _tick(**overrides: object) -> MarketTick:
    fields: dict[str, object] = {
        "instrument_token": 738561,
        "tradingsymbol": "RELIANCE",
        "exchange": "NSE",
        "last_price": Decimal("1480.05"),
        "bid": Decimal("1480.00"),
        "ask": Decimal("1480.10"),
        "exchange_timestamp": TICK_TIME,
    }
    fields.update(overrides)
    return MarketTick(**fields)  # type: ignore[arg-type]


def _signal(**overrides: object) -> Signal:
    fields: dict[str, object] = {
        "instrument_token": 738561,
        "tradingsymbol": "RELIANCE",
        "exchange": "NSE",
        "strategy": "ema_fast",
        "side": Side.BUY,
        "quantity": 10,
        "reference_price": Decimal("1480.05"),
        "reason": "EMA(5) crossed above EMA(20)",
        "tick_time": TICK_TIME,
    }
    fields.update(overrides)
    return Signal(**fields)  # type: ignore[arg-type]


def _signal_event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "id": "sig-1",
        "type": EventType.SIGNAL_RAW,
        "source": source_of("strategy_runner"),
        "data": _signal(),
        "partitionkey": "738561",
        "correlationid": "idea-1",
        "causationid": "tick-1",
        "broker": "paper",
        "time": TICK_TIME + timedelta(milliseconds=3),
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def _wire(event: Event) -> tuple[dict[str, str], bytes]:
    return to_attributes(event), encode_data(event)


# --- ids -------------------------------------------------------------------------------------


def test_derive_id_when_called_twice_with_same_inputs_then_returns_same_uuid5() -> None:
    first = derive_id("tick-1", "order")

    assert first == derive_id("tick-1", "order")
    assert uuid.UUID(first).version == 5


def test_derive_id_when_roles_differ_then_ids_differ() -> None:
    ids = {derive_id("tick-1", role) for role in ("submitted", "filled", "failed", "order", "fill")}

    assert len(ids) == 5


def test_derive_id_when_parents_differ_then_ids_differ() -> None:
    assert derive_id("tick-1", "order") != derive_id("tick-2", "order")


def test_derive_id_when_parts_given_separately_then_equals_slash_joined_role() -> None:
    # The strategy runner relies on this: a role may be one "a/b/c" string or several parts.
    assert derive_id("tick-1", "ema/0/paper/signal") == derive_id("tick-1", "ema", "0", "paper", "signal")


# --- Event -----------------------------------------------------------------------------------


def test_child_when_derived_then_id_is_derived_causation_is_parent_and_correlation_is_carried() -> None:
    parent = _signal_event()

    child = parent.child(
        "validated", SignalValidated(signal=_signal()), source=source_of("risk_manager", "paper")
    )

    assert child.id == derive_id("sig-1", "validated")
    assert child.type is EventType.SIGNAL_VALIDATED
    assert child.causationid == "sig-1"
    assert child.correlationid == "idea-1"
    assert child.broker == "paper"
    assert child.partitionkey == "738561"
    assert child.traceparent == parent.traceparent


def test_child_when_correlation_and_broker_given_then_they_override_the_parents() -> None:
    tick = tick_event(_tick(), "tick-1")

    child = tick.child("s", _signal(), source="/x", broker="zerodha", correlationid="idea-9")

    assert (child.broker, child.correlationid, child.causationid) == ("zerodha", "idea-9", "tick-1")


def test_tick_event_when_wrapping_a_tick_then_it_is_its_own_correlation_and_cause() -> None:
    event = tick_event(_tick(), "tick-1")

    assert event.correlationid == event.causationid == event.id == "tick-1"
    assert event.partitionkey == "738561"
    assert event.time == TICK_TIME
    assert event.broker is None


@pytest.mark.parametrize(
    ("asset_class", "topic"), [("equity", "market.equity.ticks"), ("fno", "market.fno.ticks")]
)
def test_topic_when_event_is_a_tick_then_topic_follows_asset_class(asset_class: str, topic: str) -> None:
    assert tick_event(_tick(asset_class=asset_class), "t").topic == topic


def test_topic_when_event_is_broker_scoped_then_topic_is_prefixed_with_broker() -> None:
    assert _signal_event(broker="zerodha").topic == "zerodha.signals.raw"


def test_topic_when_broker_scoped_event_has_no_broker_then_raises_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="no broker"):
        _ = _signal_event(broker=None).topic


def test_source_of_when_broker_given_then_broker_is_a_path_segment() -> None:
    assert source_of("risk_manager", "paper") == "/alphapanda/paper/risk_manager"
    assert source_of("strategy_runner") == "/alphapanda/strategy_runner"


# --- payloads --------------------------------------------------------------------------------


def test_payload_when_assigned_after_creation_then_raises() -> None:
    signal = _signal()

    with pytest.raises(ValidationError):
        signal.quantity = 20


def test_payload_when_unknown_field_given_then_raises() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        _signal(colour="red")


def test_payload_when_timestamp_is_naive_then_raises() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        _tick(exchange_timestamp=datetime(2025, 11, 24, 9, 15))


@pytest.mark.parametrize(("side", "sign"), [(Side.BUY, 1), (Side.SELL, -1)])
def test_side_sign_when_read_then_buy_is_plus_one_and_sell_minus_one(side: Side, sign: int) -> None:
    assert side.sign == sign


# --- codec -----------------------------------------------------------------------------------


def test_to_attributes_when_event_has_broker_and_trace_then_all_attributes_are_strings() -> None:
    attrs = to_attributes(_signal_event())

    assert attrs["specversion"] == "1.0"
    assert attrs["type"] == "com.alphapanda.signal.raw"
    assert attrs["time"] == "2025-11-24T09:15:01.003000+05:30"
    assert attrs["broker"] == "paper"
    assert all(isinstance(v, str) for v in attrs.values())


def test_to_attributes_when_broker_and_trace_absent_then_they_are_omitted() -> None:
    attrs = to_attributes(tick_event(_tick(), "tick-1"))

    assert "broker" not in attrs
    assert "traceparent" not in attrs


def test_extension_names_when_checked_then_lowercase_alphanumeric_and_at_most_20_chars() -> None:
    extensions = set(to_attributes(_signal_event())) - CORE_ATTRIBUTES

    assert extensions == set(EXTENSIONS)
    for name in extensions:
        assert re.fullmatch(r"[a-z0-9]{1,20}", name), name


def test_from_attributes_when_given_encoded_signal_then_round_trip_is_equal() -> None:
    event = _signal_event()

    assert from_attributes(*_wire(event)) == event


def test_from_attributes_when_given_tick_with_depth_then_round_trip_is_equal() -> None:
    depth = (DepthLevel(price=Decimal("1480.00"), quantity=25, orders=3),)
    event = tick_event(_tick(depth_buy=depth, depth_sell=()), "tick-1")

    decoded = from_attributes(*_wire(event))

    assert decoded == event
    assert decoded.data.depth_buy == depth  # type: ignore[attr-defined]


def test_from_attributes_when_body_is_a_dict_then_decodes_like_json_bytes() -> None:
    event = _signal_event()
    attrs, body = _wire(event)

    assert from_attributes(attrs, json.loads(body)) == event
    assert from_attributes(attrs, body.decode()) == event


def test_from_attributes_when_round_tripped_then_decimals_keep_their_exact_value() -> None:
    event = _signal_event(data=_signal(reference_price=Decimal("0.10")))

    decoded = from_attributes(*_wire(event))

    assert decoded.data.reference_price == Decimal("0.10")  # type: ignore[attr-defined]
    assert str(decoded.data.reference_price) == "0.10"  # type: ignore[attr-defined]


def test_from_attributes_when_type_is_unknown_then_raises_invalid_event_naming_it() -> None:
    attrs, body = _wire(_signal_event())
    attrs["type"] = "com.example.other"

    with pytest.raises(InvalidEvent, match=re.escape("unknown event type 'com.example.other'")):
        from_attributes(attrs, body)


@pytest.mark.parametrize("missing", ["id", "source", "correlationid", "causationid", "partitionkey"])
def test_from_attributes_when_required_attribute_missing_then_raises_invalid_event_naming_it(
    missing: str,
) -> None:
    attrs, body = _wire(_signal_event())
    del attrs[missing]

    with pytest.raises(InvalidEvent, match=f"lacks the '{missing}' attribute"):
        from_attributes(attrs, body)


def test_from_attributes_when_data_has_extra_field_then_raises_invalid_event_naming_field() -> None:
    attrs, body = _wire(_signal_event())
    data = json.loads(body)
    data["colour"] = "red"

    with pytest.raises(InvalidEvent) as caught:
        from_attributes(attrs, json.dumps(data).encode())

    message = str(caught.value)
    assert "sig-1 has invalid data" in message
    assert "colour: Extra inputs are not permitted" in message
    assert "\n" not in message


def test_from_attributes_when_data_has_wrong_value_then_message_names_field_path() -> None:
    attrs, body = _wire(_signal_event())
    data = json.loads(body)
    data["quantity"] = 0

    with pytest.raises(InvalidEvent, match="quantity: Input should be greater than 0"):
        from_attributes(attrs, json.dumps(data))


def test_from_attributes_when_body_is_not_json_then_raises_invalid_event() -> None:
    attrs, _ = _wire(_signal_event())

    with pytest.raises(InvalidEvent, match="invalid data"):
        from_attributes(attrs, b"{not json")


def test_from_attributes_when_body_missing_then_raises_invalid_event() -> None:
    attrs, _ = _wire(_signal_event())

    with pytest.raises(InvalidEvent, match="has no data"):
        from_attributes(attrs, None)


def test_from_attributes_when_body_belongs_to_another_type_then_raises_invalid_event() -> None:
    attrs, _ = _wire(_signal_event())
    failed = OrderFailed(
        instrument_token=1,
        tradingsymbol="X",
        exchange="NSE",
        order_id="o",
        signal_id="s",
        strategy="s",
        side=Side.BUY,
        quantity=1,
        reason="r",
    )

    with pytest.raises(InvalidEvent, match="invalid data"):
        from_attributes(attrs, failed.model_dump_json())


def test_from_attributes_when_time_is_naive_then_it_is_read_as_utc() -> None:
    attrs, body = _wire(_signal_event())
    attrs["time"] = "2025-11-24T03:45:01"

    decoded = from_attributes(attrs, body)

    assert decoded.time == datetime(2025, 11, 24, 3, 45, 1, tzinfo=UTC)
    assert decoded.time.utcoffset() == timedelta(0)


def test_from_attributes_when_time_is_garbage_then_raises_invalid_event() -> None:
    attrs, body = _wire(_signal_event())
    attrs["time"] = "yesterday"

    with pytest.raises(InvalidEvent, match="invalid time 'yesterday'"):
        from_attributes(attrs, body)


def test_from_attributes_when_time_absent_then_time_is_now_and_aware() -> None:
    attrs, body = _wire(_signal_event())
    del attrs["time"]
    before = datetime.now(tz=UTC)

    decoded = from_attributes(attrs, body)

    assert before <= decoded.time <= datetime.now(tz=UTC)


def test_from_attributes_when_broker_is_empty_then_event_has_no_broker() -> None:
    attrs, body = _wire(_signal_event())
    attrs["broker"] = ""

    assert from_attributes(attrs, body).broker is None


def test_kafka_round_trip_when_decoded_then_partitionkey_is_the_token_text_not_bytes() -> None:
    from alphapanda.bus.kafka import from_kafka, to_kafka
    from alphapanda.events import MarketTick, tick_event

    tick = MarketTick(
        instrument_token=779521,
        tradingsymbol="SBIN",
        exchange="NSE",
        last_price=Decimal("960.05"),
        bid=Decimal("960.00"),
        ask=Decimal("960.10"),
        exchange_timestamp=datetime(2026, 1, 5, 10, 0, tzinfo=IST),
    )
    key, value, headers = to_kafka(tick_event(tick, "t-1"))
    assert key == b"779521"
    decoded = from_kafka(key, value, headers)
    assert decoded.partitionkey == "779521"
    assert to_kafka(decoded)[0] == b"779521"


@settings(max_examples=500)
@given(st.text(), st.lists(st.text(max_size=20), max_size=4))
def test_derive_id_when_computed_directly_then_it_equals_uuid5(parent: str, parts: list[str]) -> None:
    assert derive_id(parent, *parts) == str(uuid.uuid5(_ID_NAMESPACE, "/".join((parent, *parts))))
