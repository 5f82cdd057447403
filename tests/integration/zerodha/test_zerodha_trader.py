"""ZerodhaTrader against the Kite sandbox through the official client, with a real redis-server."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
from zerodha_env import BROKER, SBIN, validated

from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.errors import OrderOutcomeUnknown
from alphapanda.brokers.zerodha.ledger import ClaimLedger, ClaimRecord
from alphapanda.brokers.zerodha.orders import OrderContext, order_tag
from alphapanda.brokers.zerodha.session import complete_login
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.config import KiteSettings
from alphapanda.events import (
    Alert,
    EventType,
    OrderFailed,
    OrderSubmitted,
    OrderType,
    Severity,
    Side,
    Validity,
)
from alphapanda.kite_sandbox import KiteSandbox
from alphapanda.runtime.embedded import EmbeddedRedis
from alphapanda.state import keys as core_keys
from alphapanda.state.store import RedisStateStore, Republished


def _tag(event: Any) -> str:
    return order_tag(event.causationid)


def test_handle_when_market_signal_then_one_tagged_protected_order_and_submitted_event(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    sandbox.set_price("NSE:SBIN", "801.5")
    event = validated("market-1", quantity=3)

    (submitted,) = trader.handle(event, store)

    (order,) = sandbox.orders(tag=_tag(event))
    assert isinstance(submitted.data, OrderSubmitted)
    assert submitted.data.broker_order_id == order["order_id"]
    assert submitted.topic == "zerodha.orders.submitted"
    assert submitted.correlationid == event.correlationid
    assert (order["variety"], order["order_type"], order["product"], order["validity"]) == (
        "regular",
        "MARKET",
        "MIS",
        "DAY",
    )
    assert order["market_protection"] == Decimal("2")
    assert len(order["tag"]) <= 20 and order["tag"].isalnum()
    assert sandbox.wait_for_order(order["order_id"])["status"] == "COMPLETE"


@pytest.mark.parametrize(
    ("order_type", "side", "limit", "trigger", "validity", "protection"),
    [
        (OrderType.LIMIT, Side.BUY, Decimal("790"), None, Validity.IOC, Decimal(0)),
        (OrderType.SL, Side.BUY, Decimal("815"), Decimal("810"), Validity.DAY, Decimal(0)),
        (OrderType.SL_M, Side.SELL, None, Decimal("780"), Validity.DAY, Decimal("2")),
    ],
)
def test_handle_when_priced_order_types_then_kite_order_carries_price_trigger_validity_and_protection(
    sandbox: KiteSandbox,
    access_token: str,
    trader: ZerodhaTrader,
    store: RedisStateStore,
    order_type: OrderType,
    side: Side,
    limit: Decimal | None,
    trigger: Decimal | None,
    validity: Validity,
    protection: Decimal,
) -> None:
    sandbox.set_price("NSE:SBIN", "800")
    event = validated(
        f"typed-{order_type}",
        side=side,
        order_type=order_type,
        limit_price=limit,
        trigger_price=trigger,
        validity=validity,
    )

    (submitted,) = trader.handle(event, store)

    (order,) = sandbox.orders(tag=_tag(event))
    assert submitted.type is EventType.ORDER_SUBMITTED
    assert (order["order_type"], order["transaction_type"], order["validity"]) == (
        order_type.value,
        side.value,
        validity.value,
    )
    assert order["price"] == (limit or 0)
    assert order["trigger_price"] == (trigger or 0)
    assert order["market_protection"] == protection


def test_handle_when_connection_dropped_after_order_reached_kite_then_redelivery_keeps_one_order(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    sandbox.drop_next_order_response()
    event = validated("dropped-1")

    first = trader.handle(event, store)
    redelivered = trader.handle(event, store)

    (order,) = sandbox.orders(tag=_tag(event))
    assert [e.id for e in first] == [e.id for e in redelivered]
    assert isinstance(first[0].data, OrderSubmitted)
    assert first[0].data.broker_order_id == order["order_id"]
    # Marked, so telemetry counts the signal (and its tick-to-fill) once.
    assert isinstance(redelivered, Republished) and not isinstance(first, Republished)


def test_handle_when_ack_lost_and_order_book_unreachable_then_retry_raised_and_redelivery_finds_the_order(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    sandbox.drop_next_order_response()
    sandbox.fail_next(3, 503, method="GET", path="/orders")
    event = validated("dropped-2")

    with pytest.raises(OrderOutcomeUnknown):
        trader.handle(event, store)
    (redelivered,) = trader.handle(event, store)

    (order,) = sandbox.orders(tag=_tag(event))
    assert isinstance(redelivered.data, OrderSubmitted)
    assert redelivered.data.broker_order_id == order["order_id"]


def test_handle_when_error_answer_before_order_reached_kite_then_retry_raised_and_redelivery_places_once(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    sandbox.fail_next(1, 503, method="POST", path="/orders")
    event = validated("unreached-1")

    with pytest.raises(OrderOutcomeUnknown):
        trader.handle(event, store)
    assert sandbox.orders(tag=_tag(event)) == []
    (submitted,) = trader.handle(event, store)

    (order,) = sandbox.orders(tag=_tag(event))
    assert isinstance(submitted.data, OrderSubmitted)
    assert submitted.data.broker_order_id == order["order_id"]


def test_handle_when_an_unknown_outcome_is_retried_on_a_later_day_then_failed_not_placed_again(
    sandbox: KiteSandbox,
    access_token: str,
    trader: ZerodhaTrader,
    kite_settings: KiteSettings,
    store: RedisStateStore,
) -> None:
    # Kite's order book lists only the day's orders: on the next day a lookup by tag cannot see
    # an order that yesterday's lost answer may have placed, so placing again could double it.
    sandbox.fail_next(1, 503, method="POST", path="/orders")
    client = store.client
    client.set(core_keys.risk_position(BROKER, SBIN), "3")
    client.set(core_keys.risk_open_orders(BROKER), "1")
    event = validated("unknown-overnight")
    with pytest.raises(OrderOutcomeUnknown):
        trader.handle(event, store)
    next_day = ZerodhaTrader(
        frozenset({BROKER}), kite_settings, claim_ttl_s=3600, wall=lambda: time.time() + 86_400
    )

    (failed,) = next_day.handle(event, store)

    assert isinstance(failed.data, OrderFailed)
    assert (
        "its outcome is unknown; Kite lists only today's orders, so it is not placed again"
        in failed.data.reason
    )
    assert sandbox.orders(tag=_tag(event)) == []
    assert client.get(core_keys.risk_position(BROKER, SBIN)) == b"0"
    assert client.get(core_keys.risk_open_orders(BROKER)) == b"0"
    assert next_day.handle(event, store) == [failed]


def test_handle_when_instance_died_mid_placement_then_next_one_finds_the_order_by_tag_not_placing_again(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore, kite: Any
) -> None:
    event = validated("died-1")
    ctx = OrderContext.of(event, BROKER)
    # What a dead instance leaves: its order at Kite, and a claim whose lease has run out.
    ledger = ClaimLedger(store.client, keys.signal_claim(BROKER, ctx.signal_id), 3600)
    ledger.swap(None, ClaimRecord.placing("dead", time.time() - 1))
    dead_order = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="SBIN",
        transaction_type="BUY",
        quantity=3,
        product="MIS",
        order_type="MARKET",
        market_protection=2,
        tag=ctx.tag,
    )

    (submitted,) = trader.handle(event, store)

    assert [o["order_id"] for o in sandbox.orders(tag=ctx.tag)] == [dead_order]
    assert isinstance(submitted.data, OrderSubmitted)
    assert submitted.data.broker_order_id == dead_order


def test_handle_when_two_instances_take_one_signal_at_once_then_kite_gets_one_order(
    sandbox: KiteSandbox, access_token: str, kite_settings: KiteSettings, redis_server: EmbeddedRedis
) -> None:
    event = validated("race-1")
    instances = [ZerodhaTrader(frozenset({BROKER}), kite_settings) for _ in range(2)]
    start = threading.Barrier(2)
    results: list[list[str]] = []

    def run(trader: ZerodhaTrader) -> None:
        start.wait()
        # Each instance with its own connection, as two pods would have.
        outputs = trader.handle(event, RedisStateStore(redis.Redis.from_url(redis_server.url), 60))
        results.append([e.id for e in outputs])

    threads = [threading.Thread(target=run, args=(t,)) for t in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert len(sandbox.orders(tag=_tag(event))) == 1
    assert len(results) == 2 and results[0] == results[1]


def test_handle_when_kite_rejects_input_then_failed_with_kites_message_and_reservation_given_back(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    sandbox.set_price("NSE:SBIN", "800")
    client = store.client
    client.set(core_keys.risk_position(BROKER, SBIN), "3")
    client.set(core_keys.risk_open_orders(BROKER), "1")
    event = validated("off-grid", order_type=OrderType.LIMIT, limit_price=Decimal("799.03"))

    (failed,) = trader.handle(event, store)

    assert isinstance(failed.data, OrderFailed)
    assert failed.topic == "zerodha.orders.failed"
    assert "Tick size for this script is 0.05" in failed.data.reason
    assert sandbox.orders() == []
    assert client.get(core_keys.risk_position(BROKER, SBIN)) == b"0"
    assert client.get(core_keys.risk_open_orders(BROKER)) == b"0"
    assert trader.handle(event, store) == [failed]


def test_handle_when_kite_answers_429_then_backs_off_and_places_exactly_once(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    sandbox.fail_next(2, 429, method="POST", path="/orders")
    event = validated("throttled-1")

    (submitted,) = trader.handle(event, store)

    assert submitted.type is EventType.ORDER_SUBMITTED
    assert len(sandbox.orders(tag=_tag(event))) == 1


def test_handle_when_kite_keeps_answering_429_then_the_order_fails_and_gives_back_its_risk(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    # Before: the claim went unknown and the event was retried until it was dead-lettered,
    # with its risk still reserved. A 429 is a definite "not placed".
    client = store.client
    client.set(core_keys.risk_position(BROKER, SBIN), "3")
    client.set(core_keys.risk_open_orders(BROKER), "1")
    sandbox.fail_next(20, 429, method="POST", path="/orders")
    event = validated("throttled-for-good")

    (failed,) = trader.handle(event, store)

    assert isinstance(failed.data, OrderFailed)
    assert failed.data.reason.startswith("not placed: Kite answered 429 (too many requests) ")
    assert sandbox.orders(tag=_tag(event)) == []
    assert client.get(core_keys.risk_position(BROKER, SBIN)) == b"0"
    assert client.get(core_keys.risk_open_orders(BROKER)) == b"0"
    assert trader.handle(event, store) == [failed]  # a redelivery: the same answer, nothing placed


def test_handle_when_token_expired_then_broker_halted_alert_raised_and_later_signals_stay_off_kite(
    sandbox: KiteSandbox,
    access_token: str,
    kite_settings: KiteSettings,
    trader: ZerodhaTrader,
    store: RedisStateStore,
) -> None:
    client = store.client
    sandbox.expire_token()

    failed, alert = trader.handle(validated("expired-1"), store)
    (halted,) = trader.handle(validated("expired-2"), store)

    assert isinstance(failed.data, OrderFailed) and "alphapanda login" in failed.data.reason
    assert isinstance(alert.data, Alert) and alert.data.severity is Severity.CRITICAL
    assert alert.topic == "zerodha.alerts"
    assert "alphapanda login" in alert.data.message
    assert client.get(core_keys.control(BROKER)) == b"HALTED"
    assert client.get(core_keys.control("paper")) is None
    assert isinstance(halted.data, OrderFailed) and "HALTED" in halted.data.reason
    assert sandbox.orders() == []

    result = complete_login(sandbox.issue_request_token(), kite_settings, client, BROKER)
    (submitted,) = trader.handle(validated("after-login"), store)

    assert result.resumed and client.get(core_keys.control(BROKER)) == b"ACTIVE"
    assert submitted.type is EventType.ORDER_SUBMITTED


def test_handle_when_no_session_stored_then_failure_says_run_alphapanda_login(
    sandbox: KiteSandbox, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    failed, alert = trader.handle(validated("never-logged-in"), store)

    assert isinstance(failed.data, OrderFailed)
    assert "no Kite session for broker zerodha: run `alphapanda login`" in failed.data.reason
    assert alert.type is EventType.ALERT
    assert sandbox.orders() == []


def test_handle_when_operator_halted_then_flatten_signal_still_reaches_kite(
    sandbox: KiteSandbox, access_token: str, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    store.client.set(core_keys.control(BROKER), "HALTED")

    (refused,) = trader.handle(validated("halted-open"), store)
    (closing,) = trader.handle(validated("halted-flatten", side=Side.SELL, flatten=True), store)

    assert refused.type is EventType.ORDER_FAILED
    assert closing.type is EventType.ORDER_SUBMITTED
    assert [o["transaction_type"] for o in sandbox.orders()] == ["SELL"]


def test_handle_when_event_is_for_another_broker_then_invalid_event(
    sandbox: KiteSandbox, trader: ZerodhaTrader, store: RedisStateStore
) -> None:
    from alphapanda.events import InvalidEvent

    with pytest.raises(InvalidEvent):
        trader.handle(validated("paper-one", broker="paper"), store)
