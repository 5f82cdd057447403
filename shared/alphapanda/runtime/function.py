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

A batch commits through `OptimisticStore`: one Redis round trip (a check-and-commit script on
the values the batch was decided on) rather than the WATCH store's two.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final, cast

import redis
from cloudevents.http import CloudEvent
from confluent_kafka import KafkaError, Message
from redis.connection import AbstractConnection

from alphapanda.brokers.factory import TraderUnavailable
from alphapanda.bus.delivery import DeadLetter, dead_letter_record, deliver, deliver_batch
from alphapanda.bus.kafka import EventPublisher, Headers, PublishError
from alphapanda.config import ConfigError, Settings, cannot_start, load_settings
from alphapanda.domain.instruments import InstrumentFileError
from alphapanda.domain.strategy import StrategyConfigError
from alphapanda.events import Event, EventType, InvalidEvent, MarketTick, from_attributes
from alphapanda.metrics import ensure_metrics_server
from alphapanda.runtime.bootstrap import Core, build_core, connect
from alphapanda.stages import Stage
from alphapanda.state.store import (
    BatchResult,
    BatchStateStore,
    Decide,
    Done,
    RedisStateStore,
    Republished,
    Work,
    decode_outputs,
    encode_outputs,
    read_replies,
)
from alphapanda.telemetry import (
    DEAD_LETTER_UNDECODABLE,
    record_dead_letter,
    record_unreadable,
    served_broker,
)
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
    batch_store: BatchStateStore | None = None
    """Where the `_Batcher` commits (an `OptimisticStore`); `store` when None."""


_runtime: FunctionRuntime | None = None
_runtime_lock = threading.Lock()
_started: tuple[Settings, Core] | None = None
"""The settings and core `check_startup` built as the server started, for `runtime` to use."""

STARTUP_ERRORS: Final = (ConfigError, StrategyConfigError, InstrumentFileError, TraderUnavailable)
"""What a wrong setting, instruments file or strategies file raises: one line each."""


def check_startup(function: Function) -> None:
    """Read the settings and build the core as the server starts (functions-framework imports
    the module before it serves), so a wrong setting or strategies file, or a strategy module
    the image lacks, stops the server with one line naming it. Found on the first event
    instead, it would fail every event with a 500, retried for ever, while the pod looked
    healthy. Only the pure part is built here: clients connect in the serving worker."""
    global _started
    try:
        settings = _function_settings()
        _started = (settings, build_core(settings))
    except STARTUP_ERRORS as exc:
        raise cannot_start(function.value, exc) from None


def _function_settings() -> Settings:
    settings = load_settings()
    if not settings.kafka.bootstrap_servers or not settings.redis.url:
        raise ConfigError("a function needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and ALPHAPANDA_REDIS__URL")
    return settings


def runtime() -> FunctionRuntime:
    """Build clients on the first event, not at import: gunicorn imports the module before it
    forks its worker, and a client's threads would not survive into the worker."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            if _started is None:
                settings = _function_settings()
                core = build_core(settings)
            else:
                settings, core = _started
            store, publisher = connect(settings, RequestPublisher)
            optimistic = OptimisticStore(store.client, settings.redis.claim_ttl_s)
            _runtime = FunctionRuntime(settings, core, store, publisher, optimistic)
            # Here, in the serving worker, not at import: a server thread started before the
            # fork would not survive into the worker either.
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
        return attrs, data, DeadLetter(str(exc), attempts=1, cause=DEAD_LETTER_UNDECODABLE)


def _dead_letter_record(
    rt: FunctionRuntime,
    function: Function,
    attrs: dict[str, Any],
    data: Any,
    letter: DeadLetter,
) -> Record:
    """The input's dead-letter record (counted as dead-lettered: it is about to be published).

    A request that is not one of our events reached no stage, so this is the only telemetry it
    gets (an error span and the counter, see `record_unreadable`).
    """
    topic = input_topic(function, attrs, data, rt.settings.brokers)
    broker = _metrics_broker(rt, function, attrs.get("broker"))
    key, body, headers = _as_record(attrs, data)
    if letter.cause == DEAD_LETTER_UNDECODABLE:
        record_unreadable(function, broker, topic, letter.reason, headers)
    else:
        record_dead_letter(function, broker, topic, letter.cause)
    return dead_letter_record(topic, key, body, headers, letter)


def _metrics_broker(rt: FunctionRuntime, function: Function, named: Any) -> str | None:
    """The broker label of a dead letter: the event's, else the one a broker-scoped function
    fed by a shared topic serves (the order matcher of one paper broker, on ticks)."""
    if named in rt.settings.brokers:
        return str(named)
    if function not in rt.core.stages:
        return None  # the market feed: a source, shared
    return served_broker(rt.core.stage_for(function, None))


def _dead_letter(
    rt: FunctionRuntime,
    function: Function,
    attrs: dict[str, Any],
    data: Any,
    letter: DeadLetter,
) -> None:
    rt.publisher.publish_records([_dead_letter_record(rt, function, attrs, data, letter)])


def stage_handler(function: Function) -> Callable[[CloudEvent], None]:
    """Return the CloudEvent handler that runs `function`'s stage (`check_startup` first)."""
    check_startup(function)

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
    of them, so they share the store's round trip instead of each paying it, and no longer
    conflict with each other on the keys they share (a broker's risk ledger: one request's
    commit would make the values the others were decided on stale, and they would be decided
    again). Leadership passes to a waiting request as soon as the batch is committed,
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
            delivery = deliver_batch(stage, [r.event for r in batch], rt.batch_store or rt.store)
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
    check_startup(Function.MARKET_FEED)

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


@dataclass(slots=True)
class _Writes:
    """What a batch commits: plain writes, claims (the outputs they hold), set members to add."""

    plain: dict[str, str] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    set_adds: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.plain or self.claims or self.set_adds)


def _decide_all(
    items: Sequence[Work], values: dict[str, str | None], isolate: tuple[type[BaseException], ...]
) -> tuple[BatchResult, _Writes]:
    """Decide `items` in order on `values` (claims and reads), each seeing the writes before it.

    As `RedisStateStore` does within one transaction: a claim present is a redelivery (its
    stored outputs, nothing decided), a claim repeated in the batch returns the first's outputs,
    an `isolate` exception leaves that item out, any other stops the batch there (the items
    before it are still committed). The times of each `Done` are set by the caller.
    """
    overlay: dict[str, str] = {}
    claimed: dict[str, list[Event]] = {}
    writes = _Writes()
    done: list[Done] = []
    for work in items:
        if work.claim_key in claimed:
            done.append(Done(Republished(claimed[work.claim_key]), None, 0, 0))
            continue
        previous = values.get(work.claim_key)
        if previous is not None:
            outputs = Republished(decode_outputs(previous))
            claimed[work.claim_key] = outputs
            done.append(Done(outputs, None, 0, 0))
            continue
        view = {k: overlay[k] if k in overlay else values[k] for k in work.read_keys}
        try:
            decision = work.decide(view)
        except isolate as exc:
            done.append(Done(None, exc, 0, 0))
            continue
        except Exception as exc:
            return BatchResult(done, exc, 0, time.time_ns()), writes
        overlay.update(decision.writes)
        writes.plain.update(decision.writes)
        writes.set_adds.extend(decision.set_adds.items())
        claimed[work.claim_key] = decision.outputs
        writes.claims[work.claim_key] = encode_outputs(decision.outputs)
        done.append(Done(decision.outputs, None, 0, 0))
    return BatchResult(done), writes


class _Stale(Exception):
    """A value a batch was decided on changed before its commit: decide again on `current`."""

    def __init__(self, current: dict[str, str | None]) -> None:
        super().__init__("stale reads")
        self.current = current


_CHECK_AND_COMMIT: Final = """
local checked, nwrites = tonumber(ARGV[1]), tonumber(ARGV[2])
local nclaims, nadds = tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, absent = ARGV[5], ARGV[6]
local stale = false
local current = redis.call('MGET', unpack(KEYS, 1, checked))
for i = 1, checked do
  local v = current[i]
  if absent:sub(i, i) == '1' then
    if v then stale = true end
  elseif v ~= ARGV[6 + i] then
    stale = true
  end
end
if stale then return {0, current} end
local at = 6 + checked
for i = 1, nwrites do redis.call('SET', KEYS[checked + i], ARGV[at + i]) end
at = at + nwrites
for i = 1, nclaims do redis.call('SET', KEYS[checked + nwrites + i], ARGV[at + i], 'EX', ttl) end
at = at + nclaims
for i = 1, nadds do redis.call('SADD', KEYS[checked + nwrites + nclaims + i], ARGV[at + i]) end
return {1}
"""
"""Compare-and-commit, atomically: if every checked key (the claims and reads a batch was decided
on) still holds the value it was decided on (`absent` marks the keys decided as missing), apply
the writes, the claims (with their TTL) and the set adds, and answer {1}; otherwise change
nothing and answer {0, the checked keys' current values}, so the batch can be decided again
without another read."""

_CACHE_LIMIT: Final = 100_000


class OptimisticStore:
    """A `BatchStateStore` for the function adapter: one Redis round trip per batch.

    `RedisStateStore` pays two round trips per transaction: WATCH+MGET, then MULTI..EXEC. Here a
    batch is decided on the values this process last saw for its keys (the ones it committed or
    read) and on its claims being absent, and one script call (`_CHECK_AND_COMMIT`) commits it
    only if every one of those values is still what it was decided on, which is as
    serialisable as WATCH: the decisions are pure functions of the event and of values that
    were current at the commit. If any was not (another instance or stage wrote it, or an
    event was a redelivery with its claim present), the script answers the current values in
    the same round trip and the batch is decided again on those: never more round trips than
    WATCH, and one while this process is the keys' only writer (one partition's stage).
    Keys never seen are read first (MGET), so a process's first batch on new keys costs two.
    """

    def __init__(self, client: redis.Redis, claim_ttl_s: int) -> None:
        self._redis = client
        self._claim_ttl_s = claim_ttl_s
        self._known: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._sha: str | None = None
        self._free: list[AbstractConnection] = []

    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]:
        result = self.process_batch([Work(claim_key, read_keys, decide)])
        if result.failure is not None:
            raise result.failure
        outputs = result.done[0].outputs
        assert outputs is not None  # nothing is isolated: an item has outputs or the batch failed
        return outputs

    def get(self, key: str) -> str | None:
        return _text(self._redis.get(key))

    def members(self, key: str) -> set[str]:
        return {_text(m) or "" for m in self._redis.smembers(key)}

    def process_batch(
        self, items: Sequence[Work], isolate: tuple[type[BaseException], ...] = ()
    ) -> BatchResult:
        """Decide `items` in order (each seeing the writes of those before it), commit them together."""
        reads = list(dict.fromkeys(k for w in items for k in w.read_keys))
        with self._lock:
            known = {k: self._known[k] for k in reads if k in self._known}
        claims = dict.fromkeys(w.claim_key for w in items)
        with self._connection() as conn:
            unknown = [k for k in reads if k not in known]
            if unknown:
                _send(conn, [("MGET", *unknown)])
                known.update(zip(unknown, (_text(v) for v in read_replies(conn, 1)[0]), strict=True))
            values: dict[str, str | None] = {**dict.fromkeys(claims), **known}
            while True:
                started = time.time_ns()
                result, writes = _decide_all(items, values, isolate)
                try:
                    self._commit(conn, values, writes)
                except _Stale as stale:
                    values = stale.current
                    continue
                finished = time.time_ns()
                break
        with self._lock:
            if len(self._known) > _CACHE_LIMIT:
                self._known.clear()
            self._known.update({k: v for k, v in values.items() if k not in claims})
            self._known.update({k: v for k, v in writes.plain.items() if k in values})
        done = [replace(d, started_ns=started, finished_ns=finished) for d in result.done]
        if result.failure is not None:
            return BatchResult(done, result.failure, started, result.failure_finished_ns)
        return BatchResult(done)

    def _commit(self, conn: AbstractConnection, values: dict[str, str | None], writes: _Writes) -> None:
        if not writes:
            return  # nothing to commit: all duplicates, or all isolated
        checked = list(values)
        expected = [values[k] for k in checked]
        absent = "".join("1" if v is None else "0" for v in expected)
        keys = [*checked, *writes.plain, *writes.claims, *(k for k, _ in writes.set_adds)]
        args: list[str | int] = [
            len(checked), len(writes.plain), len(writes.claims), len(writes.set_adds),
            self._claim_ttl_s, absent,
            *(v or "" for v in expected), *writes.plain.values(), *writes.claims.values(),
            *(m for _, m in writes.set_adds),
        ]  # fmt: skip
        reply = self._run(conn, keys, args)
        if int(reply[0]) != 1:
            raise _Stale({k: _text(v) for k, v in zip(checked, _padded(reply[1], len(checked)), strict=True)})

    def _run(self, conn: AbstractConnection, keys: list[str], args: list[str | int]) -> Any:
        if self._sha is None:
            self._sha = self._redis.script_load(_CHECK_AND_COMMIT)
        _send(conn, [("EVALSHA", self._sha, len(keys), *keys, *args)])
        try:
            return read_replies(conn, 1)[0]
        except redis.exceptions.NoScriptError:  # the server restarted or was flushed: load it again
            _send(conn, [("EVAL", _CHECK_AND_COMMIT, len(keys), *keys, *args)])
            return read_replies(conn, 1)[0]

    @contextmanager
    def _connection(self) -> Iterator[AbstractConnection]:
        """A connection of this store's own: taking one from redis-py's pool and giving it back
        costs more Python than the round trip made on it (pid checks, locks, counters)."""
        with self._lock:
            conn = self._free.pop() if self._free else None
        if conn is None:
            conn = self._redis.connection_pool.get_connection()
        try:
            yield conn
        except BaseException:
            # An error reply or a broken link mid-reply: reconnect rather than work out what
            # state the link is in (a connection reconnects on its next command).
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            with self._lock:
                self._free.append(conn)


def _send(conn: AbstractConnection, commands: Sequence[tuple[str | int, ...]]) -> None:
    conn.send_packed_command([b"".join(_pack(c) for c in commands)])  # type: ignore[no-untyped-call]


def _pack(command: tuple[str | int, ...]) -> bytes:
    """One command in RESP, as redis-py's `pack_commands` writes it, at a fraction of its cost
    (a batch's script call has dozens of arguments)."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        raw = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def _padded(values: Any, n: int) -> list[Any]:
    """A script's array reply of `n` values (nil values at its end may come back dropped)."""
    got = list(values or [])
    return got + [None] * (n - len(got))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
