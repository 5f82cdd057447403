"""The functions' publisher: each call returns once *its own* records are acknowledged.

functions-framework serves requests on several threads; a call must not wait for the records
other requests produced (a global flush would), and must still never return before its own
records are acknowledged, nor succeed when one was refused or never acknowledged.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from alphapanda.bus.kafka import PublishError, ensure_topics
from alphapanda.runtime.embedded import EmbeddedKafka
from alphapanda.runtime.function import RequestPublisher

Report = Callable[[KafkaError | None, Any], None]
WAIT_S = 10.0  # a safety net for a broken implementation, never a measured figure


class FakeProducer:
    """A Producer whose delivery reports the test releases, one record (by key) at a time."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.produced: dict[bytes, Report] = {}
        self._released: queue.Queue[tuple[Report, KafkaError | None]] = queue.Queue()
        self._lock = threading.Lock()

    def produce(self, topic: str, *, key: bytes, value: bytes, headers: Any, on_delivery: Report) -> None:
        with self._lock:
            self.produced[key] = on_delivery

    def ack(self, key: bytes, error: KafkaError | None = None) -> None:
        with self._lock:
            report = self.produced[key]
        self._released.put((report, error))

    def poll(self, timeout: float) -> int:
        """Serve released reports as librdkafka does: wait for the first, then take what is there."""
        try:
            report, error = self._released.get(timeout=timeout)
        except queue.Empty:
            return 0
        served = 1
        report(error, None)
        while True:
            try:
                report, error = self._released.get_nowait()
            except queue.Empty:
                return served
            report(error, None)
            served += 1

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], tuple[RequestPublisher, FakeProducer]]:
    def make(ack_timeout_s: float) -> tuple[RequestPublisher, FakeProducer]:
        monkeypatch.setattr("alphapanda.bus.kafka.Producer", FakeProducer)
        publisher = RequestPublisher("unused:9092", ack_timeout_s)
        producer = publisher._producer
        assert isinstance(producer, FakeProducer)
        return publisher, producer

    return make


def _record(key: bytes) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
    return ("paper.signals.validated", key, b"{}", [("ce_id", key)])


def _wait_produced(producer: FakeProducer, key: bytes) -> None:
    deadline = time.monotonic() + WAIT_S
    while key not in producer.produced:
        assert time.monotonic() < deadline, f"{key!r} was never produced"
        time.sleep(0.001)


def test_publish_when_another_request_is_still_unacknowledged_then_it_returns_on_its_own_ack(
    fake: Callable[[float], tuple[RequestPublisher, FakeProducer]],
) -> None:
    publisher, producer = fake(60.0)
    returned: dict[str, threading.Event] = {"a": threading.Event(), "b": threading.Event()}
    failures: list[BaseException] = []

    def request(name: str) -> None:
        try:
            publisher.publish_records([_record(name.encode())])
            returned[name].set()
        except BaseException as exc:
            failures.append(exc)

    a = threading.Thread(target=request, args=("a",))
    a.start()
    _wait_produced(producer, b"a")  # a is waiting for its ack (and polling for everybody)
    b = threading.Thread(target=request, args=("b",))
    b.start()
    _wait_produced(producer, b"b")

    producer.ack(b"b")
    assert returned["b"].wait(WAIT_S), "b waited for a's acknowledgement"
    assert not returned["a"].is_set(), "a returned before its record was acknowledged"

    producer.ack(b"a")
    assert returned["a"].wait(WAIT_S)
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert failures == []


def test_publish_when_the_broker_refuses_a_record_then_publish_error(
    fake: Callable[[float], tuple[RequestPublisher, FakeProducer]],
) -> None:
    publisher, producer = fake(60.0)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            publisher.publish_records([_record(b"ok"), _record(b"refused")])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    _wait_produced(producer, b"refused")
    producer.ack(b"ok")
    producer.ack(b"refused", KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    thread.join(WAIT_S)
    assert len(errors) == 1 and isinstance(errors[0], PublishError)
    assert "1 events failed" in str(errors[0])


def test_publish_when_no_ack_comes_within_the_timeout_then_publish_error(
    fake: Callable[[float], tuple[RequestPublisher, FakeProducer]],
) -> None:
    publisher, _producer = fake(0.2)
    with pytest.raises(PublishError, match="1 events not acknowledged"):
        publisher.publish_records([_record(b"lost")])


def test_publish_when_many_threads_publish_at_once_then_every_record_is_on_the_topic_when_they_return(
    kafka: EmbeddedKafka,
) -> None:
    topic = "paper.signals.validated"
    ensure_topics(kafka.bootstrap_servers, [topic], 1)
    publisher = RequestPublisher(kafka.bootstrap_servers, 10.0)
    threads, per_thread = 8, 25
    failures: list[BaseException] = []

    def request(t: int) -> None:
        try:
            for n in range(per_thread):
                assert publisher.publish_records([_record(f"{t}-{n}".encode())]) == 1
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=request, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert failures == []
    # Every call returned after its ack, so all of them are readable now, each exactly once.
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "reader"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    keys: list[bytes] = []
    deadline = time.monotonic() + 15
    while len(keys) < threads * per_thread and time.monotonic() < deadline:
        keys += [m.key() for m in consumer.consume(500, timeout=0.5) if not m.error()]
    consumer.close()
    publisher.close()
    assert sorted(keys) == sorted(f"{t}-{n}".encode() for t in range(threads) for n in range(per_thread))
