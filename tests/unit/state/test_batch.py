"""The batched path: `process_batch` on both stores, `deliver_batch`'s telemetry, and the
dispatcher's per-record outcomes (DLQ, retries, order) when records are delivered in batches.

Redis-backed cases run on a real redis-server (the `redis_server` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import redis
from confluent_kafka import Message
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from alphapanda import telemetry
from alphapanda.bus.delivery import DeadLetter, deliver_batch
from alphapanda.bus.dispatcher import BindingWorker
from alphapanda.bus.kafka import EventPublisher, to_kafka
from alphapanda.config import DeliverySettings, KafkaSettings
from alphapanda.events import IST, Event, EventType, InvalidEvent, MarketTick, tick_event
from alphapanda.runtime.embedded import EmbeddedRedis
from alphapanda.state.store import (
    BatchStateStore,
    Decision,
    MemoryStateStore,
    RedisStateStore,
    Work,
    encode_outputs,
)
from alphapanda.topics import Function, bindings

T0 = datetime(2025, 11, 24, 9, 15, tzinfo=IST)
TOPIC = "market.equity.ticks"


def _tick(n: int, token: int = 738561, price: str = "100") -> Event:
    tick = MarketTick(
        instrument_token=token,
        tradingsymbol=f"SYM{token}",
        exchange="NSE",
        last_price=Decimal(price),
        bid=Decimal(price),
        ask=Decimal(price),
        exchange_timestamp=T0 + timedelta(seconds=n),
    )
    return tick_event(tick, f"tick-{token}-{n}")


@dataclass
class CountingStage:
    """A pure stage that counts ticks per instrument and emits the running count.

    A tick priced 666 is bad input (InvalidEvent from decide); `flaky` maps event ids to how
    many more times their decide raises a transient error. `decided` lists every decide call.
    """

    flaky: dict[str, int] = field(default_factory=dict)
    decided: list[str] = field(default_factory=list)

    @property
    def function(self) -> Function:
        return Function.STRATEGY_RUNNER

    @property
    def accepts(self) -> EventType:
        return EventType.MARKET_TICK

    def owner(self, event: Event) -> str:
        return "shared"

    def reads(self, event: Event) -> list[str]:
        assert isinstance(event.data, MarketTick)
        return [f"count:{event.data.instrument_token}"]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        self.decided.append(event.id)
        assert isinstance(event.data, MarketTick)
        if event.data.last_price == 666:
            raise InvalidEvent(f"tick {event.id} is poison")
        left = self.flaky.get(event.id, 0)
        if left:
            self.flaky[event.id] = left - 1
            raise RuntimeError(f"transient failure of {event.id}")
        (key,) = self.reads(event)
        count = int(values[key] or 0) + 1
        seen = event.child("counted", event.data.model_copy(update={"volume": count}), source="/test")
        return Decision(outputs=[seen], writes={key: str(count)}, set_adds={"instruments": key})


def _count(outputs: list[Event] | DeadLetter) -> int:
    assert isinstance(outputs, list), outputs
    (out,) = outputs
    assert isinstance(out.data, MarketTick)
    return out.data.volume


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_url: str) -> BatchStateStore:
    if request.param == "memory":
        return MemoryStateStore()
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    return RedisStateStore(client, claim_ttl_s=3600)


def _work(stage: CountingStage, event: Event) -> Work:
    return Work(
        f"shared:claim:test:{event.id}", stage.reads(event), lambda values: stage.decide(event, values)
    )


# --- process_batch -----------------------------------------------------------------------------


def test_process_batch_when_items_share_a_key_then_each_sees_the_writes_of_those_before(
    store: BatchStateStore,
) -> None:
    stage = CountingStage()
    events = [_tick(n, token=1 + n % 2) for n in range(6)]

    result = store.process_batch([_work(stage, e) for e in events])

    assert result.failure is None
    assert [_count(d.outputs or []) for d in result.done] == [1, 1, 2, 2, 3, 3]
    assert (store.get("count:1"), store.get("count:2")) == ("3", "3")
    assert store.members("instruments") == {"count:1", "count:2"}


def test_process_batch_when_an_event_repeats_inside_the_batch_then_it_is_decided_once(
    store: BatchStateStore,
) -> None:
    stage = CountingStage()
    a, b = _tick(1), _tick(2)

    result = store.process_batch([_work(stage, e) for e in (a, b, a)])

    assert stage.decided == [a.id, b.id]
    assert [_count(d.outputs or []) for d in result.done] == [1, 2, 1]
    assert result.done[0].outputs == result.done[2].outputs
    assert store.get("count:738561") == "2"


def test_process_batch_when_events_repeat_across_batches_then_stored_outputs_come_back(
    store: BatchStateStore,
) -> None:
    stage = CountingStage()
    first = store.process_batch([_work(stage, _tick(n)) for n in range(3)])
    stage.decided.clear()

    again = store.process_batch([_work(stage, _tick(n)) for n in (1, 2, 3)])

    assert stage.decided == [_tick(3).id]
    assert [d.outputs for d in again.done[:2]] == [d.outputs for d in first.done[1:]]
    assert _count(again.done[2].outputs or []) == 4
    assert store.get("count:738561") == "4"


def test_process_batch_when_an_item_is_bad_input_then_only_it_is_skipped(store: BatchStateStore) -> None:
    stage = CountingStage()
    events = [_tick(1), _tick(2, price="666"), _tick(3)]

    result = store.process_batch([_work(stage, e) for e in events], isolate=(InvalidEvent,))

    assert result.failure is None
    assert isinstance(result.done[1].error, InvalidEvent) and result.done[1].outputs is None
    assert [_count(result.done[i].outputs or []) for i in (0, 2)] == [1, 2]
    # The poison tick was not claimed: a redelivery is decided (and refused) again.
    assert store.get(f"shared:claim:test:{events[1].id}") is None


def test_process_batch_when_an_item_fails_then_those_before_commit_and_it_and_the_rest_do_not(
    store: BatchStateStore,
) -> None:
    stage = CountingStage()
    events = [_tick(n) for n in range(5)]
    stage.flaky[events[2].id] = 1

    result = store.process_batch([_work(stage, e) for e in events], isolate=(InvalidEvent,))

    assert isinstance(result.failure, RuntimeError)
    assert len(result.done) == 2
    assert result.failure_started_ns <= result.failure_finished_ns
    assert store.get("count:738561") == "2"
    assert stage.decided == [e.id for e in events[:3]]
    for later in events[2:]:
        assert store.get(f"shared:claim:test:{later.id}") is None


def test_process_batch_when_results_are_compared_then_they_equal_process_once_one_by_one(
    store: BatchStateStore,
) -> None:
    events = [_tick(n, token=1 + n % 3) for n in range(9)] + [_tick(4, token=2)]
    one_by_one = MemoryStateStore()
    expected = [
        one_by_one.process_once(w.claim_key, w.read_keys, w.decide)
        for w in (_work(CountingStage(), e) for e in events)
    ]

    result = store.process_batch([_work(CountingStage(), e) for e in events])

    # Same ids and payloads (an output's `time` is when it was made).
    assert [[(e.id, e.data) for e in d.outputs or []] for d in result.done] == [
        [(e.id, e.data) for e in outputs] for outputs in expected
    ]
    assert {k: store.get(k) for k in ("count:1", "count:2", "count:3")} == {
        k: one_by_one.get(k) for k in ("count:1", "count:2", "count:3")
    }


# --- Redis specifics: conflicts and the pooled connection ---------------------------------------


class _Intruder:
    """Another client writing a key the batch watches, during the batch's first `decide`."""

    def __init__(self, url: str, key: str, value: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.key, self.value = key, value
        self.fired = 0

    def maybe_write(self) -> None:
        if not self.fired:
            self.fired += 1
            self.client.set(self.key, self.value)


def test_redis_process_batch_when_a_watched_key_changes_then_the_batch_is_redone_on_the_new_value(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    store = RedisStateStore(client, claim_ttl_s=3600)
    stage = CountingStage()
    intruder = _Intruder(redis_url, "count:738561", "100")
    events = [_tick(n) for n in range(4)]

    def work(event: Event) -> Work:
        def decide(values: dict[str, str | None]) -> Decision:
            intruder.maybe_write()
            return stage.decide(event, values)

        return Work(f"shared:claim:test:{event.id}", stage.reads(event), decide)

    result = store.process_batch([work(e) for e in events])

    assert intruder.fired == 1
    assert len(stage.decided) > len(events), "the first attempt should have been redone"
    # The intruder's write is not lost: the committed attempt counted on from it.
    assert [_count(d.outputs or []) for d in result.done] == [101, 102, 103, 104]
    assert store.get("count:738561") == "104"


def test_redis_process_batch_when_all_are_duplicates_then_the_connection_keeps_no_watch(
    redis_url: str,
) -> None:
    # One pooled connection, so a stale WATCH would be met by the next transaction.
    client = redis.Redis.from_url(redis_url, max_connections=1)
    client.flushall()
    store = RedisStateStore(client, claim_ttl_s=3600)
    stage = CountingStage()
    store.process_batch([_work(stage, _tick(1))])
    store.process_batch([_work(stage, _tick(1))])  # nothing to write: the WATCH must be dropped
    redis.Redis.from_url(redis_url).set("count:738561", "50")  # a key the duplicate watched
    stage.decided.clear()

    outputs = store.process_once(
        f"shared:claim:test:{_tick(2).id}", ["count:738561"], lambda v: stage.decide(_tick(2), v)
    )

    assert stage.decided == [_tick(2).id], "a stale WATCH would have forced a second attempt"
    assert _count(outputs) == 51


def test_redis_process_once_when_decide_raises_then_the_next_transaction_is_unaffected(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=1)
    client.flushall()
    store = RedisStateStore(client, claim_ttl_s=3600)
    stage = CountingStage(flaky={_tick(1).id: 1})
    with pytest.raises(RuntimeError):
        store.process_once(
            f"shared:claim:test:{_tick(1).id}", ["count:738561"], lambda v: stage.decide(_tick(1), v)
        )
    redis.Redis.from_url(redis_url).set("count:738561", "7")

    outputs = store.process_once(
        f"shared:claim:test:{_tick(1).id}", ["count:738561"], lambda v: stage.decide(_tick(1), v)
    )

    assert _count(outputs) == 8
    assert client.get(f"shared:claim:test:{_tick(1).id}") == encode_outputs(outputs).encode()


# --- deliver_batch: telemetry of the attempt that committed -------------------------------------


def _processed(outcome: str) -> float:
    labels = {"function": "strategy_runner", "broker": "shared", "outcome": outcome}
    return REGISTRY.get_sample_value("alphapanda_events_processed_total", labels) or 0.0


def test_deliver_batch_when_a_conflict_redoes_the_batch_then_each_event_has_one_span_and_one_count(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    store = RedisStateStore(client, claim_ttl_s=3600)
    intruder = _Intruder(redis_url, "count:738561", "100")

    class Intruded(CountingStage):
        def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
            intruder.maybe_write()
            return super().decide(event, values)

    stage = Intruded()
    events = list(telemetry.start_traces([_tick(n) for n in range(5)]))
    spans.clear()
    ok_before = _processed("ok")

    batch = deliver_batch(stage, events, store)

    assert intruder.fired == 1 and len(stage.decided) > len(events)
    assert batch.failure is None
    finished = spans.get_finished_spans()
    assert len(finished) == len(events)
    assert _processed("ok") - ok_before == len(events)
    by_parent = {s.parent.span_id: s for s in finished if s.parent is not None}
    for event, result in zip(events, batch.results, strict=True):
        assert isinstance(result, list)
        parent = telemetry.context_of(event.traceparent)
        assert parent is not None
        span = by_parent[telemetry.trace.get_current_span(parent).get_span_context().span_id]
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        # Outputs carry the span of the committed attempt.
        assert result[0].traceparent is not None and span.context is not None
        assert result[0].traceparent.split("-")[2] == f"{span.context.span_id:016x}"


def test_deliver_batch_when_an_event_fails_then_it_is_recorded_as_one_failed_attempt(
    store: BatchStateStore, spans: InMemorySpanExporter
) -> None:
    events = [_tick(n) for n in range(4)]
    stage = CountingStage(flaky={events[2].id: 1})
    failed_before = _processed("failed")

    batch = deliver_batch(stage, events, store)

    assert isinstance(batch.failure, RuntimeError)
    assert [_count(r) for r in batch.results] == [1, 2]
    assert _processed("failed") - failed_before == 1
    finished = spans.get_finished_spans()
    assert len(finished) == 3
    assert [s.status.is_ok for s in finished].count(False) == 1


# --- the dispatcher: per-record outcomes of a batch ---------------------------------------------


class _NoPublisher(EventPublisher):
    """The worker's delivery is tested alone: nothing is published."""

    def __init__(self) -> None:
        pass


def _worker(stage: CountingStage, store: BatchStateStore, retries: int = 2) -> BindingWorker:
    binding = next(b for b in bindings(["paper"]) if b.function is Function.STRATEGY_RUNNER)
    return BindingWorker(
        binding,
        stage,
        store,
        _NoPublisher(),
        KafkaSettings(bootstrap_servers="unused:9092"),
        DeliverySettings(retries=retries, backoff_delay_s=0.001),
        sleep=lambda _s: None,
    )


def _record(offset: int, event: Event) -> Message:
    key, value, headers = to_kafka(event)
    return Message(topic=TOPIC, partition=0, offset=offset, key=key, value=value, headers=headers)


def _poison(offset: int) -> Message:
    return Message(topic=TOPIC, partition=0, offset=offset, key=b"738561", value=b"{not json", headers=[])


def test_worker_when_a_poison_record_is_mid_batch_then_it_alone_is_dead_lettered_and_order_holds(
    store: BatchStateStore,
) -> None:
    stage = CountingStage()
    events = [_tick(n) for n in range(6)]
    records = [_record(i, e) for i, e in enumerate(events[:3])] + [_poison(3)]
    records += [_record(4, events[3]), _record(5, replace(events[4], data=_tick(4, price="666").data))]
    records += [_record(6, events[5])]

    results = _worker(stage, store)._deliver_all(records)

    assert len(results) == len(records)
    dead = [i for i, r in enumerate(results) if isinstance(r, DeadLetter)]
    assert dead == [3, 5]
    assert isinstance(results[3], DeadLetter) and "not a binary-mode CloudEvent" in results[3].reason
    assert isinstance(results[5], DeadLetter) and "poison" in results[5].reason
    assert [_count(results[i]) for i in (0, 1, 2, 4, 6)] == [1, 2, 3, 4, 5]


def test_worker_when_an_event_fails_transiently_then_it_is_retried_alone_and_none_is_lost_or_doubled(
    store: BatchStateStore,
) -> None:
    events = [_tick(n) for n in range(6)]
    stage = CountingStage(flaky={events[2].id: 2})
    worker = _worker(stage, store, retries=2)

    results = worker._deliver_all([_record(i, e) for i, e in enumerate(events)])

    assert [_count(r) for r in results] == [1, 2, 3, 4, 5, 6]
    assert worker.stats.retries == 2
    assert store.get("count:738561") == "6"


def test_worker_when_an_event_keeps_failing_then_it_is_dead_lettered_and_the_others_go_on(
    store: BatchStateStore,
) -> None:
    events = [_tick(n) for n in range(5)]
    stage = CountingStage(flaky={events[1].id: 99})
    worker = _worker(stage, store, retries=2)

    results = worker._deliver_all([_record(i, e) for i, e in enumerate(events)])

    assert isinstance(results[1], DeadLetter)
    assert results[1].attempts == 3 and "transient failure" in results[1].reason
    assert [_count(results[i]) for i in (0, 2, 3, 4)] == [1, 2, 3, 4]
    assert stage.decided.count(events[1].id) == 3


def test_redis_process_batch_when_a_write_fails_then_it_raises_and_the_rest_is_applied_as_multi_did(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url, max_connections=1)
    client.flushall()
    client.set("instruments", "a string, so SADD on it fails")  # a bug in some stage's key layout
    store = RedisStateStore(client, claim_ttl_s=3600)
    stage = CountingStage()

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.process_batch([_work(stage, _tick(1))])

    # As with commands queued in MULTI, the others were applied: the claim too, so a retry
    # returns the outputs instead of counting the tick twice.
    assert store.get("count:738561") == "1"
    assert store.get(f"shared:claim:test:{_tick(1).id}") is not None
    stage.decided.clear()
    again = store.process_batch([_work(stage, _tick(1))])
    assert stage.decided == []
    assert _count(again.done[0].outputs or []) == 1
