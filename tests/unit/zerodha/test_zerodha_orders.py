"""Pure order rules: the Kite tag, place_order parameters, market protection, lookup by tag."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from alphapanda.brokers.zerodha.ledger import ClaimRecord
from alphapanda.brokers.zerodha.orders import (
    NotPlaceable,
    OrderContext,
    check_market_protection,
    find_by_tag,
    order_params,
    order_tag,
)
from alphapanda.events import (
    IST,
    Event,
    EventType,
    OrderType,
    Product,
    Side,
    Signal,
    SignalValidated,
    Validity,
)


def _signal(**overrides: Any) -> Signal:
    fields: dict[str, Any] = {
        "instrument_token": 779521,
        "tradingsymbol": "SBIN",
        "exchange": "NSE",
        "strategy": "s",
        "side": Side.BUY,
        "quantity": 7,
        "reference_price": Decimal("800"),
        "tick_time": datetime(2026, 1, 5, 10, 0, tzinfo=IST),
    }
    return Signal(**(fields | overrides))


@pytest.mark.parametrize("signal_id", ["a", "4f6c1d2e-9a1b-5c3d-8e7f-001122334455", "x" * 500])
def test_order_tag_when_derived_then_alphanumeric_twenty_chars_and_stable(signal_id: str) -> None:
    tag = order_tag(signal_id)

    assert tag == order_tag(signal_id)
    assert len(tag) == 20 and tag.isalnum()
    assert tag != order_tag(signal_id + "1")


def test_order_params_when_market_then_regular_variety_product_validity_tag_and_protection() -> None:
    params = order_params(
        _signal(product=Product.CNC, validity=Validity.IOC),
        tag="apx",
        market_protection=Decimal("2"),
        algo_id="ALGO1",
    )

    assert params == {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "SBIN",
        "transaction_type": "BUY",
        "quantity": 7,
        "product": "CNC",
        "order_type": "MARKET",
        "validity": "IOC",
        "tag": "apx",
        "market_protection": "2",
        "algo_id": "ALGO1",
    }


@pytest.mark.parametrize(
    ("order_type", "limit", "trigger", "expected"),
    [
        (OrderType.LIMIT, Decimal("790.5"), None, {"price": "790.5"}),
        (OrderType.SL, Decimal("810"), Decimal("805"), {"price": "810", "trigger_price": "805"}),
        (OrderType.SL_M, None, Decimal("780"), {"trigger_price": "780", "market_protection": "-1"}),
    ],
)
def test_order_params_when_priced_types_then_only_their_price_fields_and_protection_only_for_sl_m(
    order_type: OrderType, limit: Decimal | None, trigger: Decimal | None, expected: dict[str, str]
) -> None:
    params = order_params(
        _signal(order_type=order_type, limit_price=limit, trigger_price=trigger),
        tag="t",
        market_protection=Decimal(-1),
    )

    assert {k: params[k] for k in ("price", "trigger_price", "market_protection") if k in params} == expected


@pytest.mark.parametrize(
    ("order_type", "limit", "trigger"),
    [(OrderType.LIMIT, None, None), (OrderType.SL, Decimal("810"), None), (OrderType.SL_M, None, None)],
)
def test_order_params_when_a_needed_price_is_missing_then_not_placeable(
    order_type: OrderType, limit: Decimal | None, trigger: Decimal | None
) -> None:
    with pytest.raises(NotPlaceable):
        order_params(
            _signal(order_type=order_type, limit_price=limit, trigger_price=trigger),
            tag="t",
            market_protection=Decimal(2),
        )


@pytest.mark.parametrize("value", ["0", "-2", "100.5", "-0.5"])
def test_check_market_protection_when_zero_or_out_of_range_then_error_names_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match="ALPHAPANDA_KITE__MARKET_PROTECTION"):
        check_market_protection(Decimal(value))


@pytest.mark.parametrize("value", ["-1", "0.5", "2", "100"])
def test_check_market_protection_when_auto_or_a_percentage_then_accepted(value: str) -> None:
    assert check_market_protection(Decimal(value)) == Decimal(value)


def test_find_by_tag_when_tag_in_tag_or_tags_then_that_order_else_none() -> None:
    orders = [{"order_id": "1", "tag": "other"}, {"order_id": "2", "tag": None, "tags": ["mine"]}]

    assert find_by_tag(orders, "mine") == orders[1]
    assert find_by_tag(orders, "absent") is None


def test_order_context_when_built_from_validated_event_then_ids_derive_from_it_and_json_round_trips() -> None:
    event = Event(
        id="validated-1",
        type=EventType.SIGNAL_VALIDATED,
        source="/test",
        data=SignalValidated(signal=_signal(flatten=True)),
        partitionkey="779521",
        correlationid="idea-1",
        causationid="raw-1",
        broker="zerodha",
    )

    ctx = OrderContext.of(event, "zerodha")

    assert (ctx.signal_id, ctx.tag, ctx.correlationid, ctx.flatten) == (
        "raw-1",
        order_tag("raw-1"),
        "idea-1",
        True,
    )
    assert ctx.submitted_id == event.child("submitted", _signal(), source="/x").id
    assert OrderContext.from_json(ctx.to_json()) == ctx


@pytest.mark.parametrize(
    "record",
    [ClaimRecord.placing("a1", 12.5), ClaimRecord.unknown(3.0, "ConnectionError"), ClaimRecord.done([])],
)
def test_claim_record_when_encoded_then_decodes_to_itself(record: ClaimRecord) -> None:
    assert ClaimRecord.decode(record.encode()) == record
