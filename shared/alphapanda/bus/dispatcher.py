"""The local dispatcher: emulates Knative KafkaSources for `alphapanda run` and the tests.

One worker per (function, broker) binding of the pipeline table, with its own consumer group
(`alphapanda-{broker}-{function}`). Like an ordered KafkaSource it hands a partition's records
to the stage one at a time, retries a failing record with exponential backoff, and after the
last retry sends it to `T.dlq` with the reason and moves on. Unlike Knative it works in
batches: a batch's outputs are produced, acknowledged by the broker, and only then are the
batch's offsets committed, so a crash anywhere replays inputs, which the stages deduplicate.

A pure stage on a store that can batch gets the consumed batch in one state transaction
(`deliver_batch`): same per-event outcomes, in order, for two Redis round trips instead of four
per event. A failing event stops the batch where it is: the events before it are committed, it
is retried alone (then dead-lettered), and batching resumes after it, so the order per
partition is the one the per-event path would give.

Every dead letter is counted by its reason (`alphapanda_dead_lettered_total`); a record that is
not one of our events, which no stage ever sees, also gets its own error span
(`telemetry.record_unreadable`), so it shows in the trace its headers name, if any.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from alphapanda.bus.delivery import DeadLetter, dead_letter_record, deliver, deliver_batch
from alphapanda.bus.kafka import EventPublisher, PublishError, consumer_config, from_kafka
from alphapanda.config import DeliverySettings, KafkaSettings
from alphapanda.events import Alert, Event, InvalidEvent
from alphapanda.stages import AnyStage, Stage
from alphapanda.state.store import BatchStateStore, StateStore
from alphapanda.telemetry import (
    DEAD_LETTER_EXHAUSTED,
    DEAD_LETTER_UNDECODABLE,
    record_dead_letter,
    record_unreadable,
)
from alphapanda.topics import Binding, Function

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.1
"""How often a busy worker commits the offsets of the batches it finished (see `_commit`)."""

GC_THRESHOLDS = (50_000, 50, 1_000)
"""Garbage-collector thresholds while a dispatcher runs (see `Dispatcher.start`)."""

UNKNOWN_LAG = -1
"""Lag before a partition has answered its first fetch: not idle, not a number of records."""


@dataclass
class BindingStats:
    consumed: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    retries: int = 0
    lag: int = 0
    idle: bool = False
    by_type: Counter[str] = field(default_factory=Counter)
    last_error: str = ""
    alerts: int = 0
    last_alert: str = ""
    """The message of the latest alert the stage raised (a strategy of the user's own failing)."""
    last_alert_at: float = 0.0
    """When (time.monotonic) it was published."""
    cpu_s: float = 0.0
    """CPU seconds the worker's thread has used, for `bench pipeline`'s account of where time goes."""
    first_batch_at: float | None = None
    """When (time.monotonic) the worker began its first batch of records."""
    last_batch_at: float | None = None
    """When (time.monotonic) the worker finished its latest batch (outputs acknowledged)."""


class BindingWorker(threading.Thread):
    def __init__(
        self,
        binding: Binding,
        stage: AnyStage,
        store: StateStore,
        publisher: EventPublisher | None,
        kafka: KafkaSettings,
        delivery: DeliverySettings,
        sleep: Callable[[float], None] = time.sleep,
        decoded: DecodedRecords | None = None,
    ) -> None:
        """`publisher` None: the worker makes its own producer (see `Dispatcher`). `decoded` is
        shared with the other workers that consume the same topics (see `DecodedRecords`)."""
        name = f"{binding.consumer_group}"
        super().__init__(name=name, daemon=True)
        self.binding = binding
        self.stats = BindingStats()
        self._stage = stage
        self._store = store
        self._own_publisher = publisher is None
        self._publisher = publisher or EventPublisher(kafka.bootstrap_servers, kafka.ack_timeout_s)
        self._kafka = kafka
        self._delivery = delivery
        self._sleep = sleep
        self._decoded = decoded
        self._stop_requested = threading.Event()
        self.ready = threading.Event()
        self._start: dict[tuple[str, int], int] = {}
        self._pending_offsets: dict[tuple[str, int], int] = {}
        """Offsets of batches whose outputs are acknowledged, not yet committed (`_commit`)."""
        self._committed_at = 0.0
        self.failed: BaseException | None = None

    def stop(self) -> None:
        self._stop_requested.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by Dispatcher.check(); a dead worker must not go unseen
            self.failed = exc
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("worker %s died", self.name)
            self.ready.set()

    def _run(self) -> None:
        consumer = Consumer(
            consumer_config(
                self._kafka.bootstrap_servers,
                self.binding.consumer_group,
                fetch_wait_max_ms=self._kafka.fetch_wait_max_ms,
                session_timeout_ms=self._kafka.session_timeout_ms,
            )
        )
        try:
            partitions = self._assign(consumer)
            self.ready.set()
            while not self._stop_requested.is_set():
                # consume(n, timeout) waits for n records or the whole timeout, which would add
                # up to the timeout to every hop; poll() returns on the first record, and the
                # rest already fetched are taken without waiting.
                first = consumer.poll(0.1)
                records = (
                    [] if first is None else [first, *consumer.consume(self._delivery.batch_size - 1, 0)]
                )
                records = [r for r in records if not self._is_noise(r)]
                if not records:
                    self._commit_pending(consumer)
                    self.stats.lag = self._lag(consumer, partitions)
                    self.stats.cpu_s = time.thread_time()
                    self.stats.idle = self.stats.lag == 0
                    continue
                self.stats.idle = False
                self._handle_batch(consumer, records)
                self.stats.cpu_s = time.thread_time()
            try:
                self._commit_pending(consumer, asynchronous=False)
            except KafkaException as exc:  # as if stopped before committing: redelivered later
                log.warning("worker %s: final commit failed: %s", self.name, exc)
        finally:
            consumer.close()
            if self._own_publisher:
                self._publisher.close()

    def _assign(self, consumer: Consumer) -> list[TopicPartition]:
        # Manual assignment with the group's committed offsets: the local runner is the only
        # member of each group, and assign() skips the rebalance that costs seconds on Tansu.
        metadata = consumer.list_topics(timeout=15)
        wanted: list[TopicPartition] = []
        for topic in self.binding.topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise RuntimeError(f"topic {topic} does not exist; was it created at start?")
            wanted.extend(TopicPartition(topic, p) for p in sorted(meta.partitions))
        committed = consumer.committed(wanted, timeout=15)
        # An uncommitted partition starts at offset 0 (on a Kafka whose retention removed it,
        # auto.offset.reset=earliest moves on). Remember where each starts: until a partition
        # delivers a record the client reports no position for it, and lag must not count it.
        self._start = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._start.items()])
        return wanted

    @staticmethod
    def _is_noise(record: Message) -> bool:
        err = record.error()
        if err is None:
            return False
        if err.code() == KafkaError._PARTITION_EOF:
            return True
        raise RuntimeError(f"consumer error: {err.str()}")

    def _lag(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> int:
        """Records not yet consumed, or UNKNOWN_LAG until every partition has answered a fetch.

        The high watermarks are the ones fetch responses carried (cached), not a ListOffsets
        query: Tansu's ListOffsets answers in record batches, not records, so it under-counts.
        """
        lag = 0
        for tp, pos in zip(partitions, consumer.position(list(partitions)), strict=True):
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return UNKNOWN_LAG
            start = pos.offset if pos.offset >= 0 else self._start.get((tp.topic, tp.partition), low)
            lag += max(high - start, 0)
        return lag

    def _handle_batch(self, consumer: Consumer, records: Sequence[Message]) -> None:
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        outputs: list[Event] = []
        dead: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        for record, result in zip(records, self._deliver_all(records), strict=True):
            if isinstance(result, DeadLetter):
                topic = str(record.topic())
                if result.cause == DEAD_LETTER_UNDECODABLE:
                    # Recorded by each consumer of the record, as the consumer's dead letter it is.
                    record_unreadable(
                        self.binding.function, self.binding.broker, topic, result.reason, _headers(record)
                    )
                else:
                    record_dead_letter(self.binding.function, self.binding.broker, topic, result.cause)
                dead.append(dead_letter_record(topic, record.key(), record.value(), _headers(record), result))
            else:
                outputs.extend(result)
        self._publish_until_acknowledged(outputs, dead)
        self.stats.last_batch_at = time.monotonic()
        self._commit(consumer, records)
        self.stats.consumed += len(records)
        self.stats.emitted += len(outputs)
        self.stats.dead_lettered += len(dead)
        for e in outputs:
            self.stats.by_type[e.type.value] += 1
            if isinstance(e.data, Alert):
                self.stats.alerts += 1
                self.stats.last_alert = e.data.message
                self.stats.last_alert_at = self.stats.last_batch_at

    def _deliver_all(self, records: Sequence[Message]) -> list[list[Event] | DeadLetter]:
        """The outcome of every record, in order: batched runs of good events where possible."""
        decoded = [self._decode(record) for record in records]
        batch_store = self._batch_store()
        results: list[list[Event] | DeadLetter] = []
        i = 0
        while i < len(decoded):
            item = decoded[i]
            if isinstance(item, DeadLetter):
                results.append(item)
                i += 1
                continue
            if batch_store is None:
                results.append(self._deliver_with_retries(item))
                i += 1
                continue
            end = i
            while end < len(decoded) and isinstance(decoded[end], Event):
                end += 1
            run = [e for e in decoded[i:end] if isinstance(e, Event)]
            pure: Stage = self._stage  # type: ignore[assignment]  # _batch_store() checked it
            try:
                batch = deliver_batch(pure, run, batch_store)
            except Exception as exc:
                # The store failed (Redis away), nothing was recorded: retry the first event
                # alone, with backoff, and batch again after it.
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                results.append(self._deliver_with_retries(item))
                i += 1
                continue
            results.extend(batch.results)
            i += len(batch.results)
            if batch.failure is not None:
                # Its first attempt was the batch's; the retries are its own.
                results.append(self._deliver_with_retries(run[len(batch.results)], batch.failure))
                i += 1
        return results

    def _decode(self, record: Message) -> Event | DeadLetter:
        """The record as an event, or the dead letter of a record that is not one of ours."""
        cache = self._decoded
        if cache is not None:
            known = cache.get(record)
            if known is not None:
                return known
        result: Event | DeadLetter
        try:
            result = from_kafka(record.key(), record.value(), _headers(record))
        except InvalidEvent as exc:
            result = DeadLetter(str(exc), attempts=1, cause=DEAD_LETTER_UNDECODABLE)
        if cache is not None:
            cache.put(record, result)
        return result

    def _batch_store(self) -> BatchStateStore | None:
        """The store as a batching one, if this stage and store can batch (pure `decide`)."""
        if not hasattr(self._stage, "decide") or not hasattr(self._store, "process_batch"):
            return None
        store: BatchStateStore = self._store  # type: ignore[assignment]
        return store

    def _commit(self, consumer: Consumer, records: Sequence[Message]) -> None:
        """Commit past `records`: only ever called once their outputs are acknowledged.

        Commits go out at most every `COMMIT_INTERVAL_S` (and whenever the worker finds nothing
        to consume, and when it stops): each costs the embedded broker ~0.2 ms of CPU, and a
        busy stage finishes a batch every few milliseconds. A crash redelivers what was not
        committed yet, which the stages deduplicate, as they do after any crash.
        """
        pending = self._pending_offsets
        for record in records:
            pending[(str(record.topic()), int(record.partition() or 0))] = int(record.offset() or 0) + 1
        if time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S:
            self._commit_pending(consumer)

    def _commit_pending(self, consumer: Consumer, *, asynchronous: bool = True) -> None:
        if not self._pending_offsets:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending_offsets.items()]
        self._pending_offsets = {}
        self._committed_at = time.monotonic()
        if asynchronous:
            consumer.commit(offsets=offsets, asynchronous=True)
        else:
            consumer.commit(offsets=offsets, asynchronous=False)

    def _deliver_with_retries(
        self, event: Event, failed: BaseException | None = None
    ) -> list[Event] | DeadLetter:
        """Deliver `event` alone until it succeeds or runs out of attempts.

        `failed` is the error of an attempt already made (in a batch): it counts as the first.
        """
        attempts = self._delivery.retries + 1
        first = 0
        if failed is not None:
            if attempts == 1:
                return self._dead_letter(failed, attempts)
            self._note_retry(failed, 0)
            first = 1
        for attempt in range(first, attempts):
            try:
                return deliver(self._stage, event, self._store)
            except Exception as exc:
                if attempt + 1 == attempts:
                    return self._dead_letter(exc, attempts)
                self._note_retry(exc, attempt)
        raise AssertionError("unreachable")

    def _note_retry(self, exc: BaseException, attempt: int) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self.stats.retries += 1
        self._sleep(self._backoff(attempt))

    def _dead_letter(self, exc: BaseException, attempts: int) -> DeadLetter:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        return DeadLetter(
            f"failed after {attempts} attempts: {type(exc).__name__}: {exc}",
            attempts=attempts,
            cause=DEAD_LETTER_EXHAUSTED,
        )

    def _backoff(self, attempt: int) -> float:
        return float(min(self._delivery.backoff_delay_s * (2**attempt), self._delivery.backoff_max_s))

    def _publish_until_acknowledged(
        self,
        outputs: list[Event],
        dead: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]],
    ) -> None:
        # Offsets are committed only after this returns, so on a persistent broker failure we
        # keep trying rather than drop outputs; stopping here just leaves the batch uncommitted.
        attempt = 0
        while True:
            try:
                self._publisher.publish(outputs)
                self._publisher.publish_records(dead)
                return
            except PublishError as exc:
                self.stats.last_error = str(exc)
                if self._stop_requested.is_set():
                    raise
                self._sleep(self._backoff(attempt))
                attempt += 1


class DecodedRecords:
    """Records decoded by one worker, for the others that consume the same topic: each tick is
    consumed by the strategy runner and by the order matcher, and decoding it (pydantic) was the
    largest single cost of both. A record is immutable once written, so the event (or the dead
    letter) decoded from it is the same for every consumer; an entry is taken only if the record
    matches it byte for byte (value and headers), and the oldest go first beyond `capacity`."""

    def __init__(self, capacity: int = 4_096) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, int, int], tuple[bytes | None, Any, Event | DeadLetter]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.hits = 0

    @staticmethod
    def _key(record: Message) -> tuple[str, int, int]:
        return (str(record.topic()), int(record.partition() or 0), int(record.offset() or 0))

    def get(self, record: Message) -> Event | DeadLetter | None:
        entry = self._entries.get(self._key(record))
        if entry is None or entry[0] != record.value() or entry[1] != record.headers():
            return None
        self.hits += 1
        return entry[2]

    def put(self, record: Message, result: Event | DeadLetter) -> None:
        with self._lock:
            self._entries[self._key(record)] = (record.value(), record.headers(), result)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


def _headers(record: Message) -> list[tuple[str, bytes]]:
    # Consumed records always carry a list of (name, bytes) pairs; the stubs allow more shapes.
    raw: Any = record.headers() or []
    return [(str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in raw]


class Dispatcher:
    """Run a worker for every binding; `wait_idle` tells when the pipeline has drained."""

    def __init__(
        self,
        bindings: Sequence[Binding],
        stage_for: Callable[[Function, str | None], AnyStage],
        store: StateStore,
        publisher: EventPublisher,
        kafka: KafkaSettings,
        delivery: DeliverySettings,
        *,
        publisher_per_worker: bool = True,
    ) -> None:
        """`publisher_per_worker` (the default) gives each worker its own producer rather than
        `publisher`: a worker waits for its outputs' acks with `flush()`, which on a shared
        producer also waits for every other thread's messages in flight. Measured at 200 ticks/s
        (bench pipeline), a stage's publish took p50 4-10 ms shared and 1-2 ms on its own."""
        readers = Counter(t for b in bindings for t in b.topics)
        shared = {t for t, n in readers.items() if n > 1}
        self.decoded = DecodedRecords()
        self.workers = [
            BindingWorker(
                b,
                stage_for(b.function, b.broker),
                store,
                None if publisher_per_worker else publisher,
                kafka,
                delivery,
                decoded=self.decoded if shared.issuperset(b.topics) else None,
            )
            for b in bindings
        ]
        self._thresholds: tuple[int, int, int] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        for w in self.workers:
            w.start()
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            if not w.ready.wait(max(deadline - time.monotonic(), 0.0)):
                raise RuntimeError(f"consumer {w.name} did not start within {timeout_s}s")
        self.check()
        # Everything built so far (instruments, strategies, pydantic and OpenTelemetry machinery:
        # ~60,000 objects) lives as long as the process. A full collection walks all of it with
        # the GIL held, stalling every stage at once: measured 45 ms in `bench pipeline`, the
        # whole p99 of tick -> fill. Frozen, they are left out of collections (garbage first)
        # until `stop` gives them back, so a process that goes on (a test run) frees them later.
        gc.collect()
        gc.freeze()
        # Every consumed batch keeps hundreds of events (each a dozen pydantic objects) alive
        # while it is processed, so the default thresholds (a young collection every 700
        # allocations, promoting the batch into older generations that are then scanned again
        # and again) spent ~30% of a tick stage's CPU in the collector (measured with a 500-tick
        # batch against redis-server). Collect the young generation ~70x less often; garbage
        # cycles are rare here (the events are immutable trees), so memory stays bounded.
        self._thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)

    def check(self) -> None:
        """Raise if a worker died."""
        for w in self.workers:
            if w.failed is not None:
                raise RuntimeError(f"consumer {w.name} failed: {w.stats.last_error}") from w.failed

    def wait_idle(self, timeout_s: float, quiet_s: float = 0.5) -> bool:
        """Wait until every worker has consumed everything and stayed so for `quiet_s`."""
        deadline = time.monotonic() + timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            self.check()
            if all(w.stats.idle for w in self.workers):
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= quiet_s:
                    return True
            else:
                quiet_since = None
            time.sleep(0.05)
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop and join the workers; also after a start broken off half way (a worker that
        never started cannot be joined), and harmless when called again."""
        for w in self.workers:
            w.stop()
        for w in self.workers:
            if w.ident is not None:
                w.join(timeout_s)
        gc.unfreeze()
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
