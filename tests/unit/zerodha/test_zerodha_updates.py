"""Pure conversion of Kite order updates, and the processor and postback endpoint on an in-memory store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.charges import LiveChargeRates
from alphapanda.brokers.zerodha.orders import OrderContext
from alphapanda.brokers.zerodha.postbacks import OrderUpdateProcessor, PostbackEndpoint
from alphapanda.brokers.zerodha.updates import (
    InvalidOrderUpdate,
    OrderUpdate,
    Progress,
    interpret,
    postback_checksum,
    to_events,
    verify_checksum,
)
from alphapanda.bus.kafka import PublishError
from alphapanda.domain.charges import charges_on_turnover
from alphapanda.domain.instruments import load_instruments
from alphapanda.events import (
    IST,
    Event,
    OrderCancelled,
    OrderFailed,
    OrderFilled,
    OrderUpdated,
    Side,
)
from alphapanda.state import keys as core_keys
from alphapanda.state.store import Decision, MemoryStateStore

SECRET = "s3cret"
AT = datetime(2026, 1, 5, 10, 0, tzinfo=IST)
CTX = OrderContext(
    broker="zerodha",
    tag="apabc",
    signal_id="raw-1",
    event_id="validated-1",
    order_id="order-1",
    submitted_id="submitted-1",
    correlationid="idea-1",
    partitionkey="779521",
    traceparent=None,
    strategy="s",
    side=Side.BUY,
    quantity=10,
    instrument_token=779521,
    tradingsymbol="SBIN",
    exchange="NSE",
    product="MIS",
    flatten=False,
    reference_price="800",
)


def _payload(status: str, filled: int, average: float, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": "2601050000000000001",
        "order_timestamp": "2026-01-05 10:00:01",
        "exchange_update_timestamp": "2026-01-05 10:00:02",
        "status": status,
        "tag": "apabc",
        "instrument_token": 779521,
        "tradingsymbol": "SBIN",
        "exchange": "NSE",
        "quantity": 10,
        "filled_quantity": filled,
        "cancelled_quantity": 0,
        "average_price": average,
        "status_message": None,
    }
    body |= extra
    body["checksum"] = postback_checksum(body["order_id"], body["order_timestamp"], SECRET)
    return body


def _update(status: str, filled: int, average: float, **extra: Any) -> OrderUpdate:
    return OrderUpdate.from_payload(_payload(status, filled, average, **extra))


def test_verify_checksum_when_signed_with_our_secret_then_true_and_any_other_body_false() -> None:
    body = _payload("COMPLETE", 10, 800)

    assert verify_checksum(body, SECRET)
    assert not verify_checksum(body, "other")
    assert not verify_checksum({**body, "order_timestamp": "2026-01-05 10:00:09"}, SECRET)
    assert not verify_checksum({k: v for k, v in body.items() if k != "checksum"}, SECRET)
    assert not verify_checksum(body, "")


def test_from_payload_when_times_given_then_ist_aware_and_bad_bodies_rejected() -> None:
    update = _update("OPEN", 0, 0)

    assert update.updated_at == datetime(2026, 1, 5, 10, 0, 2, tzinfo=IST)
    with pytest.raises(InvalidOrderUpdate):
        OrderUpdate.from_payload({"status": "OPEN"})
    with pytest.raises(InvalidOrderUpdate):
        OrderUpdate.from_payload({**_payload("OPEN", 0, 0), "quantity": "ten"})


def test_interpret_when_fills_arrive_in_parts_then_each_part_priced_so_values_add_to_kites_average() -> None:
    first = interpret(_update("UPDATE", 4, 800), CTX, Progress(), AT)
    second = interpret(_update("COMPLETE", 10, 801.2), CTX, first.progress, AT)

    (fill1,) = [p for _, p in first.emitted]
    (fill2,) = [p for _, p in second.emitted]
    assert isinstance(fill1, OrderFilled) and isinstance(fill2, OrderFilled)
    assert (fill1.quantity, fill1.price, fill1.remaining_quantity, fill1.order_quantity) == (
        4,
        Decimal(800),
        6,
        10,
    )
    assert (fill2.quantity, fill2.price, fill2.remaining_quantity) == (6, Decimal(802), 0)
    assert fill1.fill_id != fill2.fill_id
    assert second.progress == Progress(10, Decimal(8012), "COMPLETE")
    assert (first.ended_unfilled, second.ended_unfilled) == (None, 0)


def test_interpret_when_open_without_fill_then_order_updated_with_kites_status() -> None:
    meaning = interpret(_update("TRIGGER PENDING", 0, 0), CTX, Progress(), AT)

    ((parts, payload),) = meaning.emitted
    assert isinstance(payload, OrderUpdated)
    assert (payload.status, payload.broker_order_id, parts) == (
        "TRIGGER PENDING",
        "2601050000000000001",
        ("TRIGGER_PENDING", "0"),
    )


def test_interpret_when_rejected_then_failed_with_kites_message_and_all_of_it_given_back() -> None:
    meaning = interpret(_update("REJECTED", 0, 0, status_message="Insufficient funds"), CTX, Progress(), AT)

    ((_, payload),) = meaning.emitted
    assert isinstance(payload, OrderFailed) and "Insufficient funds" in payload.reason
    assert meaning.ended_unfilled == 10


def test_interpret_when_cancelled_after_a_partial_fill_then_fill_then_cancel_of_the_rest() -> None:
    meaning = interpret(_update("CANCELLED", 3, 799.5, cancelled_quantity=7), CTX, Progress(), AT)

    fill, cancel = (p for _, p in meaning.emitted)
    assert isinstance(fill, OrderFilled) and isinstance(cancel, OrderCancelled)
    assert (fill.quantity, fill.remaining_quantity) == (3, 0)
    assert (cancel.quantity, cancel.filled_quantity) == (7, 3)
    assert meaning.ended_unfilled == 7


@pytest.mark.parametrize(
    ("status", "filled", "progress"),
    [
        ("UPDATE", 2, Progress(4, Decimal(3200))),
        ("OPEN", 4, Progress(10, Decimal(8000), "COMPLETE")),
        ("CANCELLED", 10, Progress(10, Decimal(8000), "COMPLETE")),
        ("COMPLETE", 10, Progress(10, Decimal(8000), "COMPLETE")),
    ],
)
def test_interpret_when_update_is_older_than_what_was_processed_then_nothing(
    status: str, filled: int, progress: Progress
) -> None:
    meaning = interpret(_update(status, filled, 800), CTX, progress, AT)

    assert meaning.emitted == [] and meaning.progress == progress and meaning.ended_unfilled is None


def test_to_events_when_same_update_twice_then_same_ids_on_the_broker_topics_with_the_ideas_correlation() -> (
    None
):
    meaning = interpret(_update("COMPLETE", 10, 800), CTX, Progress(), AT)

    first, again = to_events(meaning, CTX, "k1", AT), to_events(meaning, CTX, "k1", AT)

    assert [e.id for e in first] == [e.id for e in again]
    assert [e.topic for e in first] == ["zerodha.orders.filled"]
    assert (first[0].correlationid, first[0].causationid) == ("idea-1", "submitted-1")


def _processor() -> tuple[OrderUpdateProcessor, MemoryStateStore]:
    store = MemoryStateStore()
    store.process_once("seed", [], lambda _v: _seed())
    return OrderUpdateProcessor(store, ("zerodha",), charges=None), store


def _seed() -> Any:
    return Decision(
        outputs=[],
        writes={
            keys.order_context("zerodha", "apabc"): CTX.to_json(),
            core_keys.risk_position("zerodha", 779521): "10",
            core_keys.risk_open_orders("zerodha"): "1",
        },
    )


def test_processor_when_kite_repeats_an_update_then_same_events_and_the_fill_counted_once() -> None:
    processor, store = _processor()

    first = processor.process(_update("COMPLETE", 10, 800))
    again = processor.process(_update("COMPLETE", 10, 800))

    assert first is not None and again is not None
    assert [e.id for e in first] == [e.id for e in again]
    progress = Progress.from_json(store.get(keys.order_progress("zerodha", "2601050000000000001")))
    assert progress.filled == 10
    assert store.get(core_keys.risk_open_orders("zerodha")) == "0"
    assert store.get(core_keys.risk_position("zerodha", 779521)) == "10"
    assert json.loads(store.get(core_keys.order("zerodha", "order-1")) or "{}")["status"] == "COMPLETE"


def test_processor_when_order_ends_rejected_then_reservation_and_open_order_given_back() -> None:
    processor, store = _processor()

    processor.process(_update("REJECTED", 0, 0))

    assert store.get(core_keys.risk_position("zerodha", 779521)) == "0"
    assert store.get(core_keys.risk_open_orders("zerodha")) == "0"


def test_processor_when_brokers_share_a_kite_app_then_each_update_goes_to_the_one_that_placed_it() -> None:
    # Kite posts every order of the app to one URL: the order's tag says whose it is.
    other = dataclasses.replace(
        CTX, broker="zerodha-2", tag="apdef", order_id="order-2", submitted_id="sub-2"
    )
    store = MemoryStateStore()
    store.process_once("seed", [], lambda _v: _seed())
    store.process_once(
        "seed-2",
        [],
        lambda _v: Decision(
            outputs=[],
            writes={
                keys.order_context("zerodha-2", "apdef"): other.to_json(),
                core_keys.risk_open_orders("zerodha-2"): "1",
            },
        ),
    )
    processor = OrderUpdateProcessor(store, ("zerodha", "zerodha-2"), charges=None)

    second = processor.process(_update("COMPLETE", 10, 800, tag="apdef", order_id="2601050000000000002"))
    first = processor.process(_update("COMPLETE", 10, 800))

    assert second is not None and first is not None
    assert [e.topic for e in second] == ["zerodha-2.orders.filled"]
    assert [e.topic for e in first] == ["zerodha.orders.filled"]
    assert second[0].causationid == "sub-2"
    assert store.get(core_keys.risk_open_orders("zerodha-2")) == "0"
    assert store.get(core_keys.risk_open_orders("zerodha")) == "0"
    assert Progress.from_json(store.get(keys.order_progress("zerodha-2", "2601050000000000002"))).filled == 10
    assert store.get(keys.order_progress("zerodha", "2601050000000000002")) is None


def test_processor_when_given_one_broker_name_as_a_string_then_refused() -> None:
    with pytest.raises(ValueError, match="a sequence of zerodha brokers"):
        OrderUpdateProcessor(MemoryStateStore(), "zerodha", charges=None)


def test_processor_when_tag_is_not_ours_then_ignored_without_state() -> None:
    processor, store = _processor()
    before = store.snapshot()

    assert processor.process(_update("COMPLETE", 10, 800, tag="someoneelse")) is None
    assert processor.process(_update("COMPLETE", 10, 800, tag=None)) is None
    assert store.snapshot() == before


class _Recorder:
    def __init__(self) -> None:
        self.published: list[Event] = []

    def publish(self, events: Iterable[Event]) -> int:
        batch = list(events)
        self.published.extend(batch)
        return len(batch)


def test_endpoint_when_checksum_fails_then_401_before_any_client_is_built() -> None:
    built: list[str] = []

    def processor() -> OrderUpdateProcessor:
        built.append("processor")
        raise AssertionError("an unsigned body must not reach the processor")

    endpoint = PostbackEndpoint(lambda: SECRET, processor, lambda: _Recorder())
    forged = {**_payload("COMPLETE", 10, 800), "checksum": "0" * 64}

    answers = [endpoint(json.dumps(forged).encode()), endpoint(b"\xff\xfe"), endpoint(b"[1, 2]")]

    assert [a.status for a in answers] == [401, 401, 401]
    assert built == []


def test_endpoint_when_signed_update_then_events_published_before_200() -> None:
    processor, _store = _processor()
    recorder = _Recorder()
    endpoint = PostbackEndpoint(lambda: SECRET, lambda: processor, lambda: recorder)

    answer = endpoint(json.dumps(_payload("COMPLETE", 10, 800)).encode())
    malformed = endpoint(json.dumps({**_payload("COMPLETE", 10, 800), "quantity": None}).encode())

    assert (answer.status, [e.topic for e in recorder.published]) == (200, ["zerodha.orders.filled"])
    assert malformed.status == 400


class _FlakyRecorder(_Recorder):
    """Fails its first `failures` publishes, as a broker that is briefly unreachable does."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def publish(self, events: Iterable[Event]) -> int:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise PublishError("1 events not acknowledged within 5.0s")
        return super().publish(events)


def test_endpoint_when_kafka_fails_briefly_then_the_publish_is_tried_again_and_answered_200() -> None:
    processor, _store = _processor()
    recorder, waits = _FlakyRecorder(failures=2), []
    endpoint = PostbackEndpoint(lambda: SECRET, lambda: processor, lambda: recorder, sleep=waits.append)

    answer = endpoint(json.dumps(_payload("COMPLETE", 10, 800)).encode())

    assert answer.status == 200 and recorder.attempts == 3 and waits == [0.2, 0.4]
    assert [e.topic for e in recorder.published] == ["zerodha.orders.filled"]


def test_endpoint_when_kafka_stays_down_then_503_and_the_same_update_again_publishes_the_same_events() -> (
    None
):
    processor, _store = _processor()
    down = _FlakyRecorder(failures=10**6)
    endpoint = PostbackEndpoint(lambda: SECRET, lambda: processor, lambda: down, sleep=lambda _s: None)
    body = json.dumps(_payload("COMPLETE", 10, 800)).encode()

    failed = endpoint(body)

    assert failed.status == 503 and "not published" in failed.body and down.attempts == 3
    # Kafka is back; the update comes again (Kite resends, or the ticker's copy): the fill the
    # claim kept is published, with the ids it had, and counted once.
    recorder = _Recorder()
    again = PostbackEndpoint(lambda: SECRET, lambda: processor, lambda: recorder)(body)
    assert again.status == 200
    (fill,) = recorder.published
    assert isinstance(fill.data, OrderFilled) and fill.data.quantity == 10
    repeat = processor.process(_update("COMPLETE", 10, 800))
    assert repeat is not None and [e.id for e in repeat] == [fill.id]


def _live_rates() -> LiveChargeRates:
    return LiveChargeRates.shipped(load_instruments())


def test_interpret_when_rates_given_then_parts_carry_the_whole_orders_charges_between_them() -> None:
    rates = _live_rates().for_order(779521, "NSE", "MIS", AT)
    assert rates is not None

    first = interpret(_update("UPDATE", 4, 800), CTX, Progress(), AT, rates)
    second = interpret(_update("COMPLETE", 10, 801.2), CTX, first.progress, AT, rates)

    (fill1,) = [p for _, p in first.emitted]
    (fill2,) = [p for _, p in second.emitted]
    assert isinstance(fill1, OrderFilled) and isinstance(fill2, OrderFilled)
    # 4 x 800 + 6 x 802: the order's charges on its exact traded value, as a paper order's.
    whole = charges_on_turnover(Side.BUY, 10, Decimal(8012), rates)
    assert fill1.charges > 0 and fill2.charges > 0
    assert fill1.charges + fill2.charges == whole.total
    assert fill1.charge_lines is not None and fill2.charge_lines is not None
    assert fill1.charge_lines.stamp_duty + fill2.charge_lines.stamp_duty == whole.stamp_duty
    assert second.progress.charged == whole


def test_interpret_when_no_rates_then_fills_carry_no_charges() -> None:
    meaning = interpret(_update("COMPLETE", 10, 800), CTX, Progress(), AT)

    (fill,) = [p for _, p in meaning.emitted]
    assert isinstance(fill, OrderFilled)
    assert (fill.charges, fill.charge_lines) == (Decimal(0), None)


def test_progress_when_round_tripped_then_charges_kept_and_progress_stored_before_charges_reads_as_none() -> (
    None
):
    rates = _live_rates().for_order(779521, "NSE", "CNC", AT)
    assert rates is not None
    progress = interpret(_update("UPDATE", 4, 800), CTX, Progress(), AT, rates).progress

    assert Progress.from_json(progress.to_json()) == progress
    old = Progress.from_json(json.dumps({"filled": 4, "value": "3200", "final": ""}))
    assert (old.filled, old.value, old.charged.total) == (4, Decimal(3200), Decimal(0))


def test_live_rates_when_instrument_unknown_or_product_unpriced_then_none_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = _live_rates()

    with caplog.at_level("WARNING"):
        assert live.for_order(1, "NSE", "MIS", AT) is None
        assert live.for_order(1, "NSE", "MIS", AT) is None
        assert live.for_order(779521, "NSE", "NRML", AT) is None
    assert len(caplog.records) == 2
    assert "not in the instrument list" in caplog.records[0].getMessage()
    cnc = live.for_order(779521, "NSE", "CNC", AT)
    assert cnc is not None and cnc.stt.rate_pct == Decimal("0.1")


def test_processor_when_charges_estimated_and_kite_repeats_the_update_then_the_fill_charged_once() -> None:
    store = MemoryStateStore()
    store.process_once("seed", [], lambda _v: _seed())
    processor = OrderUpdateProcessor(store, ("zerodha",), charges=_live_rates())

    first = processor.process(_update("UPDATE", 4, 800))
    again = processor.process(_update("UPDATE", 4, 800))
    last = processor.process(_update("COMPLETE", 10, 801.2))

    assert first is not None and again is not None and last is not None
    assert [e.data for e in first] == [e.data for e in again]
    fills = [e.data for e in (*first, *last) if isinstance(e.data, OrderFilled)]
    rates = _live_rates().for_order(779521, "NSE", "MIS", AT)
    assert rates is not None
    assert sum(f.charges for f in fills) == charges_on_turnover(Side.BUY, 10, Decimal(8012), rates).total


@pytest.mark.parametrize(
    ("exchange", "average", "price"),
    [
        # Currency futures tick in 0.0025 rupees (the ticker divides CDS prices by 10^7).
        ("CDS", 83.1225, Decimal("83.1225")),
        # BSE currency derivatives: the ticker divides by 10^4.
        ("BCD", 83.1175, Decimal("83.1175")),
    ],
)
def test_interpret_when_currency_segment_fills_then_price_keeps_kites_sub_paisa_precision(
    exchange: str, average: float, price: Decimal
) -> None:
    ctx = dataclasses.replace(CTX, exchange=exchange, tradingsymbol="USDINR26JANFUT", product="NRML")

    meaning = interpret(_update("COMPLETE", 10, average, exchange=exchange), ctx, Progress(), AT)

    (fill,) = [p for _, p in meaning.emitted]
    assert isinstance(fill, OrderFilled)
    assert fill.price == price
    assert meaning.progress.value == price * 10
