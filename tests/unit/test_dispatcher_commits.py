"""The dispatcher commits the offsets of finished batches at most every COMMIT_INTERVAL_S, and
whatever is pending when it finds nothing to consume: never an offset of an unfinished batch."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition

from alphapanda.bus import dispatcher
from alphapanda.bus.dispatcher import BindingWorker
from alphapanda.bus.kafka import EventPublisher
from alphapanda.config import DeliverySettings, KafkaSettings
from alphapanda.state.store import MemoryStateStore
from alphapanda.topics import Function, bindings


class _Consumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> Any:
        self.commits.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))


def _worker() -> BindingWorker:
    binding = next(b for b in bindings(["paper"]) if b.function is Function.STRATEGY_RUNNER)
    return BindingWorker(
        binding,
        object(),  # type: ignore[arg-type]
        MemoryStateStore(),
        EventPublisher("unused:9092", 1.0),
        KafkaSettings(bootstrap_servers="unused:9092"),
        DeliverySettings(),
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """The dispatcher's monotonic clock, set by the test."""
    now = {"now": 100.0}
    monkeypatch.setattr(dispatcher.time, "monotonic", lambda: now["now"])
    return now


def _records(partition: int, *offsets: int) -> list[Message]:
    return [Message(topic="market.equity.ticks", partition=partition, offset=o) for o in offsets]


def test_commit_when_batches_finish_within_the_interval_then_one_commit_carries_the_latest_offsets(
    clock: dict[str, float],
) -> None:
    worker, consumer = _worker(), _Consumer()

    worker._commit(consumer, _records(0, 0, 1))  # type: ignore[arg-type]
    clock["now"] += dispatcher.COMMIT_INTERVAL_S / 10
    worker._commit(consumer, _records(0, 2, 3) + _records(1, 0))  # type: ignore[arg-type]
    worker._commit(consumer, _records(1, 1))  # type: ignore[arg-type]

    assert consumer.commits == [[("market.equity.ticks", 0, 2)]]
    clock["now"] += dispatcher.COMMIT_INTERVAL_S
    worker._commit(consumer, _records(0, 4))  # type: ignore[arg-type]
    assert consumer.commits[-1] == [("market.equity.ticks", 0, 5), ("market.equity.ticks", 1, 2)]


def test_commit_pending_when_the_worker_goes_idle_then_what_is_pending_is_committed_once() -> None:
    worker, consumer = _worker(), _Consumer()
    worker._commit(consumer, _records(0, 0))  # type: ignore[arg-type]
    worker._commit(consumer, _records(0, 1))  # type: ignore[arg-type]

    worker._commit_pending(consumer)  # type: ignore[arg-type]
    worker._commit_pending(consumer)  # type: ignore[arg-type]

    assert consumer.commits == [[("market.equity.ticks", 0, 1)], [("market.equity.ticks", 0, 2)]]


def test_handle_batch_when_batches_are_handled_then_stats_span_first_start_to_last_acknowledged(
    monkeypatch: pytest.MonkeyPatch, clock: dict[str, float]
) -> None:
    worker, consumer = _worker(), _Consumer()

    def deliver_all(records: list[Message]) -> list[list[Any]]:
        clock["now"] += 1.0  # deciding takes a second
        return [[] for _ in records]

    def publish(outputs: list[Any], dead: list[Any]) -> None:
        clock["now"] += 0.5  # and the broker's ack half of one

    monkeypatch.setattr(worker, "_deliver_all", deliver_all)
    monkeypatch.setattr(worker, "_publish_until_acknowledged", publish)
    assert (worker.stats.first_batch_at, worker.stats.last_batch_at) == (None, None)

    worker._handle_batch(consumer, _records(0, 0, 1))  # type: ignore[arg-type]
    assert (worker.stats.first_batch_at, worker.stats.last_batch_at) == (100.0, 101.5)
    clock["now"] += 3.0  # idle between batches
    worker._handle_batch(consumer, _records(0, 2))  # type: ignore[arg-type]
    assert (worker.stats.first_batch_at, worker.stats.last_batch_at) == (100.0, 106.0)
    assert worker.stats.consumed == 3
