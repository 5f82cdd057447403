"""Group commit in the function adapter: concurrent requests to a pure stage share one transaction,
and each still ends as it would alone (published before its 2xx, dead-lettered, or a 500)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_http_functions import _read

from alphapanda import topics
from alphapanda.bus.delivery import DeadLetter
from alphapanda.bus.kafka import Headers
from alphapanda.config import load_settings
from alphapanda.events import (
    Event,
    EventType,
    InvalidEvent,
    Signal,
    SignalValidated,
    to_attributes,
)
from alphapanda.runtime.embedded import EmbeddedKafka
from alphapanda.runtime.function import FunctionRuntime, _Batcher, _Request
from alphapanda.state.store import Decision, MemoryStateStore
from alphapanda.topics import Function
from function_server import FunctionServer
from signal_events import SESSION, raw_signal_event


def _signal(n: int, *, broker: str = "paper") -> Event:
    return raw_signal_event(
        n, token=1000 + n, tradingsymbol=f"SYM{n}", strategy="ema_fast", tick_time=SESSION, broker=broker
    )


# --- the batcher's bookkeeping, on a fake stage and an in-memory store -------------------------


@dataclass(frozen=True)
class FakeStage:
    """A pure stage that validates every signal, fails on `broken` ids and rejects `bad` ones."""

    broken: frozenset[str] = frozenset()
    bad: frozenset[str] = frozenset()
    brokers: frozenset[str] = frozenset({"paper"})
    function: Function = Function.RISK_MANAGER
    accepts: EventType = EventType.SIGNAL_RAW

    def owner(self, event: Event) -> str:
        return event.broker or "shared"

    def reads(self, event: Event) -> Sequence[str]:
        return ["paper:shared-ledger"]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        if event.id in self.broken:
            raise RuntimeError(f"{event.id} broke")
        if event.id in self.bad:
            raise InvalidEvent(f"{event.id} is bad")
        assert isinstance(event.data, Signal)
        out = event.child("validated", SignalValidated(signal=event.data), source="/fake")
        count = int(values["paper:shared-ledger"] or 0) + 1
        return Decision(outputs=[out], writes={"paper:shared-ledger": str(count)})


@dataclass
class FakeCore:
    stage: FakeStage

    def stage_for(self, function: Function, broker: str | None) -> FakeStage:
        return self.stage


@dataclass
class RecordingPublisher:
    fail: bool = False
    published: list[Event] = field(default_factory=list)
    records: list[tuple[str, bytes | None, bytes | None, Headers]] = field(default_factory=list)

    def publish(self, events: Sequence[Event]) -> int:
        if self.fail:
            raise RuntimeError("broker down")
        self.published.extend(events)
        return len(events)

    def publish_records(self, records: Sequence[tuple[str, bytes | None, bytes | None, Headers]]) -> int:
        if self.fail:
            raise RuntimeError("broker down")
        self.records.extend(records)
        return len(records)


def _runtime(stage: FakeStage, publisher: RecordingPublisher, store: MemoryStateStore) -> FunctionRuntime:
    settings = load_settings(brokers=("paper",))
    return FunctionRuntime(settings, FakeCore(stage), store, publisher)  # type: ignore[arg-type]


def _requests(events: Sequence[Event]) -> list[_Request]:
    return [_Request(e, to_attributes(e), e.data.model_dump(mode="json")) for e in events]


def _one_batch(batcher: _Batcher, requests: list[_Request]) -> None:
    """Queue `requests` as concurrent arrivals would, then run the batch as its leader."""
    batcher._queue.extend(requests)
    batcher._leading = True
    batcher._lead()


def test_batch_when_every_event_is_good_then_they_are_decided_in_order_and_all_published() -> None:
    store, publisher = MemoryStateStore(), RecordingPublisher()
    batcher = _Batcher(_runtime(FakeStage(), publisher, store), Function.RISK_MANAGER, "paper")
    requests = _requests([_signal(n) for n in range(5)])
    _one_batch(batcher, requests)
    assert all(r.finished and r.error is None and not r.alone for r in requests)
    assert [e.causationid for e in publisher.published] == [f"sig-{n}" for n in range(5)]
    # Each decided on what the earlier ones in the batch wrote.
    assert store.get("paper:shared-ledger") == "5"
    assert not batcher._leading  # nobody else was waiting: leadership was released


def test_batch_when_one_decide_fails_then_it_errs_the_earlier_are_published_and_the_later_go_alone() -> None:
    store, publisher = MemoryStateStore(), RecordingPublisher()
    batcher = _Batcher(
        _runtime(FakeStage(broken=frozenset({"sig-2"})), publisher, store), Function.RISK_MANAGER, "paper"
    )
    requests = _requests([_signal(n) for n in range(5)])
    _one_batch(batcher, requests)
    assert [e.causationid for e in publisher.published] == ["sig-0", "sig-1"]
    assert isinstance(requests[2].error, RuntimeError)
    assert [r.alone for r in requests] == [False, False, False, True, True]
    assert store.get("paper:shared-ledger") == "2"  # nothing of sig-2 onwards was applied


def test_batch_when_an_event_is_bad_input_then_it_alone_is_dead_lettered() -> None:
    store, publisher = MemoryStateStore(), RecordingPublisher()
    batcher = _Batcher(
        _runtime(FakeStage(bad=frozenset({"sig-1"})), publisher, store), Function.RISK_MANAGER, "paper"
    )
    requests = _requests([_signal(n) for n in range(3)])
    _one_batch(batcher, requests)
    assert isinstance(requests[1].result, DeadLetter) and requests[1].error is None
    assert [e.causationid for e in publisher.published] == ["sig-0", "sig-2"]
    assert [topic for topic, *_ in publisher.records] == [topics.dlq(topics.signals_raw("paper"))]


def test_batch_when_the_outputs_are_not_acknowledged_then_every_request_of_the_batch_errs() -> None:
    store, publisher = MemoryStateStore(), RecordingPublisher(fail=True)
    batcher = _Batcher(_runtime(FakeStage(), publisher, store), Function.RISK_MANAGER, "paper")
    requests = _requests([_signal(n) for n in range(3)])
    _one_batch(batcher, requests)
    assert all(isinstance(r.error, RuntimeError) for r in requests)


def test_submit_when_requests_arrive_while_a_batch_is_decided_then_they_form_the_next_batch() -> None:
    entered, release = threading.Event(), threading.Event()

    @dataclass(frozen=True)
    class SlowStage(FakeStage):
        def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
            if event.id == "sig-0":
                entered.set()
                assert release.wait(10)
            return super().decide(event, values)

    store, publisher = MemoryStateStore(), RecordingPublisher()
    batcher = _Batcher(_runtime(SlowStage(), publisher, store), Function.RISK_MANAGER, "paper")
    first, *rest = _requests([_signal(n) for n in range(4)])
    with ThreadPoolExecutor(4) as pool:
        leader = pool.submit(batcher.submit, first)
        assert entered.wait(10)
        followers = [pool.submit(batcher.submit, r) for r in rest]
        while len(batcher._queue) < 3:  # the three wait behind the first batch
            threading.Event().wait(0.001)
        release.set()
        for future in [leader, *followers]:
            future.result(10)
    assert all(r.finished and r.error is None for r in [first, *rest])
    assert sorted(e.causationid for e in publisher.published) == [f"sig-{n}" for n in range(4)]
    assert store.get("paper:shared-ledger") == "4"


# --- through the real server: concurrent requests, each answered only after its ack ----------


@pytest.fixture
def risk_manager(env: dict[str, str]) -> Iterator[FunctionServer]:
    server = FunctionServer("risk_manager", env)
    yield server
    server.stop()


def test_post_when_many_requests_arrive_at_once_then_each_gets_2xx_and_its_output_or_dead_letter(
    risk_manager: FunctionServer, kafka: EmbeddedKafka
) -> None:
    events = [_signal(n) for n in range(16)]
    bad = _signal(99)

    def post(event: Event, body: bytes | None = None) -> int:
        data = body if body is not None else event.data.model_dump_json().encode()
        return risk_manager.post(to_attributes(event), data).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, events))
        # The same event twice at once (a redelivery racing the original) and bad input.
        codes += list(pool.map(post, [events[0], events[0]]))
        codes.append(pool.submit(post, bad, b'{"surprise": 1}').result())
    assert codes == [200] * len(codes)
    records = _read(kafka.bootstrap_servers, topics.signals_validated("paper"), expect=len(events) + 2)
    # Every signal validated once; the racing copies republish the same output id, nothing new.
    by_cause = {headers["ce_causationid"].decode() for headers, _ in records}
    assert by_cause == {e.id for e in events}
    assert len({headers["ce_id"] for headers, _ in records}) == len(events)
    letters = _read(kafka.bootstrap_servers, topics.dlq(topics.signals_raw("paper")), expect=1)
    assert [h["ce_id"] for h, _ in letters] == [b"sig-99"]


@pytest.fixture
def env(kafka: EmbeddedKafka, redis_server: Any) -> dict[str, str]:
    from alphapanda.bus.kafka import ensure_topics

    ensure_topics(kafka.bootstrap_servers, topics.all_topics(["paper"]), 1)
    return {
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ALPHAPANDA_REDIS__URL": redis_server.url,
        "ALPHAPANDA_BROKERS": "paper",
    }
