"""The functions-framework adapter: a stage behind HTTP, as Knative runs it.

A KafkaSource throws the HTTP reply away and functions-framework ignores the return value, so
the function produces its outputs to Kafka itself and returns (HTTP 200) only after the broker
acknowledged them. Bad input goes to the input topic's `.dlq` and still gets a 2xx, because
retrying it can never succeed; any other error raises, which is a 500, which makes the source
retry with the same event id (hence the same output ids).

The server runs several requests at once (gunicorn threads; a KafkaSource sends one event per
partition at a time). Two things keep them from queueing behind each other:
- group commit (`_Batcher`): the events of requests that arrive while a pure stage's state
  transaction runs are decided together in the next one, rather than each in its own, where
  they would conflict on shared keys (a broker's risk ledger) and be decided again;
- `RequestPublisher`: each request waits for the broker's acknowledgement of its own records,
  not, as `Producer.flush()` does, for every record in flight.
A request alone pays neither: it leads its own batch of one on its own thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cloudevents.http import CloudEvent
from confluent_kafka import KafkaError, Message

from alphapanda.bus.delivery import DeadLetter, dead_letter_record, deliver, deliver_batch
from alphapanda.bus.kafka import EventPublisher, Headers, PublishError
from alphapanda.config import Settings, load_settings
from alphapanda.events import Event, EventType, InvalidEvent, MarketTick, from_attributes
from alphapanda.metrics import ensure_metrics_server
from alphapanda.runtime.bootstrap import Core, build_core, connect
from alphapanda.stages import Stage
from alphapanda.state.store import RedisStateStore
from alphapanda.telemetry import record_dead_letter
from alphapanda.topics import ASSET_CLASSES, PIPELINE, Function, market_ticks

Record = tuple[str, bytes | None, bytes | None, Headers]


class _Acks:
    """The delivery reports of one `publish_records` call."""

    __slots__ = ("expected", "reports")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        # Appended to by whichever thread serves the report: list.append is atomic under the
        # GIL, where a counter's `-= 1` could lose an update between two serving threads.
        self.reports: list[KafkaError | None] = []

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self.reports.append(err)

    @property
    def done(self) -> bool:
        return len(self.reports) >= self.expected


class RequestPublisher(EventPublisher):
    """An `EventPublisher` whose calls wait for their own acknowledgements only.

    `EventPublisher` waits with `Producer.flush()`, which returns when *nothing* is in flight:
    with several requests at once, each flush also waits for the records other requests
    produced after it, so one slow ack holds up every thread. Here each call counts its own
    delivery reports. Reports are served by `poll()`, which runs the callback of whichever
    record was acknowledged, so one waiting thread at a time polls (serving everybody's
    reports) and wakes the others after each poll; with one request in flight that thread
    is the request's own, so a lone request pays no extra thread hand-off.
    """

    def __init__(self, bootstrap_servers: str, ack_timeout_s: float) -> None:
        super().__init__(bootstrap_servers, ack_timeout_s)
        self._turn = threading.Condition()
        self._polling = False

    def publish_records(self, records: Sequence[Record]) -> int:
        if not records:
            return 0
        acks = _Acks(len(records))
        for topic, key, value, headers in records:
            self._produce(topic, key, value, headers, acks.on_delivery)
        self._await(acks, time.monotonic() + self._ack_timeout_s)
        unacked = acks.expected - len(acks.reports)
        if unacked:
            raise PublishError(f"{unacked} events not acknowledged within {self._ack_timeout_s}s")
        errors = [e for e in acks.reports if e is not None]
        if errors:
            raise PublishError(f"{len(errors)} events failed: {errors[0].str()}")
        return len(records)

    def _await(self, acks: _Acks, deadline: float) -> None:
        with self._turn:
            while not acks.done:
                if not self._polling:
                    self._polling = True
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._turn.wait(remaining)
            else:
                return
        # This thread polls until its own reports are in, serving the others' on the way.
        try:
            while not acks.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # Returns as soon as any report was served; the cap bounds how stale the
                # deadline check can get while nothing is acknowledged.
                self._producer.poll(min(remaining, 0.1))
                with self._turn:
                    self._turn.notify_all()
        finally:
            with self._turn:
                self._polling = False
                self._turn.notify_all()


@dataclass
class FunctionRuntime:
    settings: Settings
    core: Core
    store: RedisStateStore
    publisher: EventPublisher


_runtime: FunctionRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> FunctionRuntime:
    """Build clients on the first event, not at import (functions-framework imports the module early)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            settings = load_settings()
            if not settings.kafka.bootstrap_servers or not settings.redis.url:
                raise RuntimeError(
                    "a function needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and ALPHAPANDA_REDIS__URL"
                )
            store, publisher = connect(settings, RequestPublisher)
            _runtime = FunctionRuntime(settings, build_core(settings), store, publisher)
            # Here, in the serving worker, not at import: gunicorn imports the module before
            # it forks, and a server thread started then would not survive into the worker.
            ensure_metrics_server()
        return _runtime


def input_topic(function: Function, attrs: dict[str, Any], data: Any, brokers: tuple[str, ...]) -> str:
    """The topic the event came from: where its dead letter goes."""
    sub = next((s for s in PIPELINE if s.function is function), None)
    if sub is None or "{asset_class}" in sub.source:
        # Market data (the feed's ingest, the strategy runner, the order matcher): by asset class.
        asset = data.get("asset_class") if isinstance(data, dict) else None
        return market_ticks(asset if asset in ASSET_CLASSES else "equity")
    broker = attrs.get("broker")
    return sub.topics(broker if broker in brokers else brokers[0])[0]


def _as_record(attrs: dict[str, Any], data: Any) -> tuple[bytes | None, bytes, Headers]:
    headers: Headers = [
        (f"ce_{k}", str(v).encode()) for k, v in attrs.items() if k not in ("data", "partitionkey")
    ]
    if isinstance(data, bytes | bytearray):
        body = bytes(data)
    elif isinstance(data, str):
        body = data.encode()
    else:
        body = json.dumps(data).encode()
    key = attrs.get("partitionkey")
    return (str(key).encode() if key else None), body, headers


def _decode(cloud_event: CloudEvent) -> tuple[dict[str, Any], Any, Event | DeadLetter]:
    attrs = dict(cloud_event.get_attributes())
    data = cloud_event.get_data()
    try:
        return attrs, data, from_attributes(attrs, data)
    except InvalidEvent as exc:
        return attrs, data, DeadLetter(str(exc), attempts=1)


def _dead_letter_record(
    rt: FunctionRuntime, function: Function, attrs: dict[str, Any], data: Any, letter: DeadLetter
) -> Record:
    """The input's dead-letter record (counted as dead-lettered: it is about to be published)."""
    topic = input_topic(function, attrs, data, rt.settings.brokers)
    broker = attrs.get("broker")
    record_dead_letter(function, broker if broker in rt.settings.brokers else None, topic)
    key, body, headers = _as_record(attrs, data)
    return dead_letter_record(topic, key, body, headers, letter)


def _dead_letter(
    rt: FunctionRuntime, function: Function, attrs: dict[str, Any], data: Any, letter: DeadLetter
) -> None:
    rt.publisher.publish_records([_dead_letter_record(rt, function, attrs, data, letter)])


def stage_handler(function: Function) -> Callable[[CloudEvent], None]:
    """Return the CloudEvent handler that runs `function`'s stage."""

    def handle(cloud_event: CloudEvent) -> None:
        rt = runtime()
        attrs, data, decoded = _decode(cloud_event)
        if isinstance(decoded, DeadLetter):
            _dead_letter(rt, function, attrs, data, decoded)
            return
        stage = rt.core.stage_for(function, decoded.broker)
        if hasattr(stage, "decide"):
            request = _Request(decoded, attrs, data)
            _batcher(rt, function, decoded.broker).submit(request)
            if request.error is not None:
                raise DeliveryFailed(f"event {decoded.id}: {request.error}") from request.error
            if not request.alone:
                return
        result = deliver(stage, decoded, rt.store)
        if isinstance(result, DeadLetter):
            _dead_letter(rt, function, attrs, data, result)
            return
        rt.publisher.publish(result)

    return handle


class DeliveryFailed(RuntimeError):
    """The batch this request's event was in failed (a 500: the source retries the event)."""


@dataclass(eq=False)
class _Request:
    """One request's event on its way through a `_Batcher`, and how it ended."""

    event: Event
    attrs: dict[str, Any]
    data: Any
    woken: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    result: list[Event] | DeadLetter | None = None
    error: BaseException | None = None
    alone: bool = False
    """Not applied: an earlier event of its batch failed; the handler delivers it on its own."""


MAX_BATCH = 32
"""Events decided in one state transaction at most (the store splits it further on conflicts)."""


class _Batcher:
    """Group commit: the events of concurrent requests to one pure stage, in one transaction.

    Each request that arrives while a batch is being decided waits; the next batch takes all
    of them, so they share the store's two round trips (WATCH+MGET, MULTI..EXEC) instead of
    each paying them, and no longer conflict with each other on the keys they share (a
    broker's risk ledger: one request's EXEC would fail the others' WATCH, and they would
    decide again). Leadership passes to a waiting request as soon as the batch is committed,
    so the next batch is decided while this one's outputs wait for the broker's ack. A lone
    request leads its own batch of one: no hand-off to another thread, same round trips.

    The outcome of each event is that of `deliver` on it alone: outputs published before its
    2xx, bad input dead-lettered (2xx), any error raised (500). If one event's `decide` fails,
    the events after it in the batch are not applied and their handlers deliver them alone.
    """

    def __init__(self, rt: FunctionRuntime, function: Function, broker: str | None) -> None:
        self._rt = rt
        self._function = function
        self._broker = broker
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._leading = False

    def submit(self, request: _Request) -> None:
        """Return once `request` has a result (published), an error, or is to be delivered alone."""
        with self._lock:
            self._queue.append(request)
            lead = not self._leading
            self._leading = True
        if not lead:
            request.woken.wait()
            if request.finished:
                return
            # Woken to lead: it heads the queue, so the batch taken next includes it.
        self._lead()

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
        try:
            try:
                self._decide(batch)
            finally:
                self._hand_over()
            self._publish(batch)
        finally:
            for request in batch:
                if request.result is None and request.error is None and not request.alone:
                    request.error = RuntimeError("the batch was abandoned")
                request.finished = True
                request.woken.set()

    def _hand_over(self) -> None:
        with self._lock:
            if self._queue:
                self._queue[0].woken.set()  # not finished: it leads the next batch
            else:
                self._leading = False

    def _decide(self, batch: list[_Request]) -> None:
        rt = self._rt
        try:
            stage = cast(Stage, rt.core.stage_for(self._function, self._broker))
            delivery = deliver_batch(stage, [r.event for r in batch], rt.store)
        except Exception as exc:  # the store itself failed (Redis unreachable): all are retried
            for request in batch:
                request.error = exc
            return
        for request, result in zip(batch, delivery.results, strict=False):
            request.result = result
        if delivery.failure is not None:
            failed = len(delivery.results)
            batch[failed].error = delivery.failure
            for request in batch[failed + 1 :]:
                request.alone = True

    def _publish(self, batch: list[_Request]) -> None:
        rt = self._rt
        outputs = [e for r in batch if isinstance(r.result, list) for e in r.result]
        letters = [
            _dead_letter_record(rt, self._function, r.attrs, r.data, r.result)
            for r in batch
            if isinstance(r.result, DeadLetter)
        ]
        try:
            if outputs:
                rt.publisher.publish(outputs)
            if letters:
                rt.publisher.publish_records(letters)
        except Exception as exc:  # not acknowledged: none of them may answer 2xx
            for request in batch:
                if request.result is not None:
                    request.error = exc


_batchers: dict[tuple[Function, str | None], _Batcher] = {}
_batchers_lock = threading.Lock()


def _batcher(rt: FunctionRuntime, function: Function, broker: str | None) -> _Batcher:
    key = (function, broker)
    batcher = _batchers.get(key)
    if batcher is None:
        with _batchers_lock:
            if len(_batchers) > 1024:
                _batchers.clear()  # bad input naming ever new brokers must not grow it for ever
            batcher = _batchers.setdefault(key, _Batcher(rt, function, broker))
    return batcher


def tick_ingest_handler() -> Callable[[CloudEvent], None]:
    """Return the market feed's HTTP handler: accept a tick CloudEvent, publish it to its market topic."""

    def handle(cloud_event: CloudEvent) -> None:
        rt = runtime()
        attrs, data, decoded = _decode(cloud_event)
        if isinstance(decoded, Event) and not isinstance(decoded.data, MarketTick):
            decoded = DeadLetter(
                f"the market feed accepts {EventType.MARKET_TICK} only, not {decoded.type}", 1
            )
        if isinstance(decoded, DeadLetter):
            _dead_letter(rt, Function.MARKET_FEED, attrs, data, decoded)
            return
        rt.publisher.publish([decoded])

    return handle
