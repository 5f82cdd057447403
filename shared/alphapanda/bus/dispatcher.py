"""The local dispatcher: emulates Knative KafkaSources for `alphapanda run` and the tests.

One worker per (function, broker) binding of the pipeline table, with its own consumer group
(`alphapanda-{broker}-{function}`). Like an ordered KafkaSource it hands a partition's records
to the stage one at a time, retries a failing record with exponential backoff, and after the
last retry sends it to `T.dlq` with the reason and moves on. Unlike Knative it works in
batches: a batch's outputs are produced, acknowledged by the broker, and only then are the
batch's offsets committed, so a crash anywhere replays inputs, which the stages deduplicate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from alphapanda.bus.delivery import DeadLetter, dead_letter_record, deliver
from alphapanda.bus.kafka import EventPublisher, PublishError, consumer_config, from_kafka
from alphapanda.config import DeliverySettings, KafkaSettings
from alphapanda.events import Event, InvalidEvent
from alphapanda.stages import AnyStage
from alphapanda.state.store import StateStore
from alphapanda.telemetry import record_dead_letter
from alphapanda.topics import Binding, Function

log = logging.getLogger(__name__)

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


class BindingWorker(threading.Thread):
    def __init__(
        self,
        binding: Binding,
        stage: AnyStage,
        store: StateStore,
        publisher: EventPublisher,
        kafka: KafkaSettings,
        delivery: DeliverySettings,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        name = f"{binding.consumer_group}"
        super().__init__(name=name, daemon=True)
        self.binding = binding
        self.stats = BindingStats()
        self._stage = stage
        self._store = store
        self._publisher = publisher
        self._kafka = kafka
        self._delivery = delivery
        self._sleep = sleep
        self._stop_requested = threading.Event()
        self.ready = threading.Event()
        self._start: dict[tuple[str, int], int] = {}
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
                    self.stats.lag = self._lag(consumer, partitions)
                    self.stats.idle = self.stats.lag == 0
                    continue
                self.stats.idle = False
                self._handle_batch(consumer, records)
        finally:
            consumer.close()

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
        outputs: list[Event] = []
        dead: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        for record in records:
            result = self._deliver_with_retries(record)
            if isinstance(result, DeadLetter):
                topic = str(record.topic())
                record_dead_letter(self.binding.function, self.binding.broker, topic)
                dead.append(dead_letter_record(topic, record.key(), record.value(), _headers(record), result))
            else:
                outputs.extend(result)
        self._publish_until_acknowledged(outputs, dead)
        self._commit(consumer, records)
        self.stats.consumed += len(records)
        self.stats.emitted += len(outputs)
        self.stats.dead_lettered += len(dead)
        for e in outputs:
            self.stats.by_type[e.type.value] += 1

    def _commit(self, consumer: Consumer, records: Sequence[Message]) -> None:
        """Commit past `records`: only ever called once their outputs are acknowledged."""
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            offsets[(str(record.topic()), int(record.partition() or 0))] = int(record.offset() or 0) + 1
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)

    def _deliver_with_retries(self, record: Message) -> list[Event] | DeadLetter:
        try:
            event = from_kafka(record.key(), record.value(), _headers(record))
        except InvalidEvent as exc:
            return DeadLetter(str(exc), attempts=1)
        attempts = self._delivery.retries + 1
        for attempt in range(attempts):
            try:
                return deliver(self._stage, event, self._store)
            except Exception as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if attempt + 1 == attempts:
                    return DeadLetter(
                        f"failed after {attempts} attempts: {type(exc).__name__}: {exc}", attempts=attempts
                    )
                self.stats.retries += 1
                self._sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

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
    ) -> None:
        self.workers = [
            BindingWorker(b, stage_for(b.function, b.broker), store, publisher, kafka, delivery)
            for b in bindings
        ]

    def start(self, timeout_s: float = 30.0) -> None:
        for w in self.workers:
            w.start()
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            if not w.ready.wait(max(deadline - time.monotonic(), 0.0)):
                raise RuntimeError(f"consumer {w.name} did not start within {timeout_s}s")
        self.check()

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
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(timeout_s)
