"""The state store: process each input event exactly once, atomically with its state changes.

`process_once` is the effectively-once primitive every state-changing stage uses:
1. if the input's claim key exists, the event was processed before: return the outputs stored
   with the claim, so a redelivery republishes the very same events (same ids) and changes nothing;
2. otherwise read the stage's keys, let the pure `decide` compute writes and outputs, and commit
   the writes together with the claim (holding the outputs) in one transaction.
Because claim and state change commit together, a crash at any point either leaves no trace
(the redelivery redoes the work) or a complete one (the redelivery republishes the outputs).

`process_batch` does the same for a run of events in one transaction: they are decided in order,
each seeing the writes of the ones before it (an overlay of the batch's uncommitted writes), so
the result is the one `process_once` would give event by event, for a fraction of the round trips.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import redis
from redis.connection import AbstractConnection

from alphapanda.events import Event, encode_data, from_attributes, to_attributes


@dataclass(frozen=True, slots=True)
class Decision:
    """What a stage decided for one event: keys to write, set members to add, events to emit."""

    outputs: list[Event]
    writes: Mapping[str, str] = field(default_factory=dict)
    set_adds: Mapping[str, str] = field(default_factory=dict)


Decide = Callable[[dict[str, str | None]], Decision]


class Republished(list[Event]):
    """The outputs an event produced when it was processed before: what a store's
    `process_once`/`process_batch` answers from an existing claim, and what a stage that keeps
    its own claims (the zerodha trader) answers a redelivery with, so that telemetry counts the
    event once."""

    __slots__ = ()


MoreReads = Callable[[Mapping[str, str | None]], Sequence[str]]


@dataclass(frozen=True, slots=True)
class Work:
    """One event's share of a batch: what `process_once` takes as arguments.

    `more_reads`, if set, names the keys `decide` needs beyond `read_keys` given their values
    (as the batch's earlier items left them): a stage that needs little for most events (the
    order matcher, for an instrument with no resting order) reads and watches only that, and the
    rest only where the first values say so. It is asked again with each item's current values,
    and whatever it names that was not read yet is read (and watched) before `decide` runs.
    """

    claim_key: str
    read_keys: Sequence[str]
    decide: Decide
    more_reads: MoreReads | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """How one item of a batch ended, in the attempt that committed.

    `outputs` is None when `decide` raised one of the batch's `isolate` exceptions (`error`):
    nothing of that item was written, and the rest of the batch went on. The times (wall clock,
    ns since the epoch, as OpenTelemetry wants them) span the committed attempt: from its start
    to its EXEC, the moment the item's effects became visible.
    """

    outputs: list[Event] | None
    error: BaseException | None
    started_ns: int
    finished_ns: int


@dataclass(frozen=True, slots=True)
class BatchResult:
    """`done[i]` belongs to item i; the batch stopped at item `len(done)` if `failure` is set.

    A failure is an exception of `decide` outside `isolate` (a transient error, or a bug): the
    items before it are committed, it and the items after it are untouched, so the caller can
    retry it alone before going on, which keeps the per-partition order.
    """

    done: list[Done]
    failure: BaseException | None = None
    failure_started_ns: int = 0
    failure_finished_ns: int = 0


class StateStore(Protocol):
    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]: ...

    def get(self, key: str) -> str | None: ...

    def members(self, key: str) -> set[str]: ...


class BatchStateStore(StateStore, Protocol):
    """A store that can also process a run of events in one transaction."""

    def process_batch(
        self, items: Sequence[Work], isolate: tuple[type[BaseException], ...] = ()
    ) -> BatchResult: ...


def encode_outputs(events: Sequence[Event]) -> str:
    if not events:
        return "[]"  # most claims (a tick that signals nothing): json.dumps([]), without the call
    return json.dumps([{"a": to_attributes(e), "d": encode_data(e).decode()} for e in events])


def decode_outputs(raw: str | bytes) -> list[Event]:
    return [from_attributes(item["a"], item["d"]) for item in json.loads(raw)]


class _Conflict(Exception):
    """A watched key changed before EXEC: the attempt left no trace and is redone."""


TARGET_WINDOW_S = 0.010
"""How long a transaction should keep its keys watched (WATCH to EXEC, mostly `decide` time).

Stages read each other's keys (the trading engine reads the quotes the strategy runner writes
on every tick, the order matcher the risk ledger), so the longer a batch's window, the likelier
another stage commits into it and the whole batch is redone: measured on the bench, 500-event
transactions were redone about every other attempt. Two round trips cost ~0.25 ms (more with the
GIL shared by several busy stages), so chunks of ten milliseconds keep most of batching's saving;
a stage that conflicts anyway shrinks its chunks (`_Pace.limit`). Since the order matcher reads
the risk ledger only where orders rest, the tick stages (most of the events) rarely conflict.
"""


class _Pace(threading.local):
    """How this thread's transactions have been going (one worker thread = one stage)."""

    per_item_s: float = 0.0002
    """CPU seconds an item took lately, round trips included."""
    limit: float = float("inf")
    """Most items a transaction may take, learned from conflicts: halved on one, grown by a
    quarter on each commit (additive-increase would be too slow at a few hundred items). A
    stage whose reads others write all the time (the order matcher watches the risk ledger)
    settles where conflicts are occasional instead of redoing its first, largest chunk in
    every batch; a stage nobody disturbs keeps the `TARGET_WINDOW_S` size."""


class RedisStateStore:
    """`StateStore` on Redis: optimistic transactions (WATCH/MULTI/EXEC), retried on conflict.

    WATCH keeps the domain logic in Python (it is pure and unit-tested) while two instances
    racing on the same keys still serialise: the loser's EXEC fails and it recomputes.

    Each attempt costs two round trips, whatever the number of events: WATCH and the MGET of
    claims and reads are sent together (WATCH applies before the MGET runs, so the values read
    are watched ones), then MULTI, the writes and EXEC together. redis-py's pipeline would send
    WATCH, GET and MGET one at a time (four round trips per event): at ~110 us a round trip on
    loopback that, not Python, was what bounded a stage.
    """

    def __init__(self, client: redis.Redis, claim_ttl_s: int) -> None:
        self._redis = client
        self._claim_ttl_s = claim_ttl_s
        self._pace = _Pace()

    @property
    def client(self) -> redis.Redis:
        return self._redis

    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]:
        result = self.process_batch([Work(claim_key, read_keys, decide)])
        if result.failure is not None:
            raise result.failure
        outputs = result.done[0].outputs
        assert outputs is not None  # nothing is isolated, so an item either has outputs or failed
        return outputs

    def process_batch(
        self, items: Sequence[Work], isolate: tuple[type[BaseException], ...] = ()
    ) -> BatchResult:
        """Process `items` in order, in transactions of about `TARGET_WINDOW_S` each.

        A conflict (a watched key changed) redoes the chunk, halved, so that a stage whose reads
        another writes all the time still gets through: one item alone is `process_once`.
        """
        done: list[Done] = []
        pending = list(items)
        pace = self._pace
        while pending:
            by_time = TARGET_WINDOW_S / max(pace.per_item_s, 1e-6)
            size = max(1, int(min(len(pending), pace.limit, by_time)))
            chunk = pending[:size]
            # CPU time of this thread, not wall time: with the GIL shared by several workers
            # (and the cores with other processes), wall time would shrink chunks to single
            # items exactly when the per-transaction overhead hurts most.
            started = time.thread_time()
            try:
                result = self._attempt(chunk, isolate)
            except _Conflict:
                pace.limit = max(1.0, size / 2)
                continue
            taken = len(result.done) + (1 if result.failure is not None else 0)
            pace.per_item_s = 0.7 * pace.per_item_s + 0.3 * (time.thread_time() - started) / max(taken, 1)
            done.extend(result.done)
            if result.failure is not None:
                return replace(result, done=done)
            pending = pending[len(chunk) :]
            if pace.limit < by_time:
                pace.limit = pace.limit * 1.25 + 1
        return BatchResult(done)

    def _attempt(self, items: Sequence[Work], isolate: tuple[type[BaseException], ...]) -> BatchResult:
        started = time.time_ns()
        # One WATCH and one MGET for the claims and reads of every item (each key once).
        keys = list(dict.fromkeys([*(w.claim_key for w in items), *(k for w in items for k in w.read_keys)]))
        with self._connection() as conn:
            _send(conn, [("WATCH", *keys), ("MGET", *keys)])
            raw = read_replies(conn, 2)[1]
            stored: dict[str, str | None] = {k: _text(v) for k, v in zip(keys, raw, strict=True)}
            # The batch's own effects, as later items must see them: values written, and the
            # outputs of claims made (a duplicate inside the batch returns the first's outputs).
            overlay: dict[str, str] = {}
            claimed: dict[str, list[Event]] = {}
            writes: dict[str, str] = {}
            set_adds: list[tuple[str, str]] = []
            outcomes: list[tuple[list[Event] | None, BaseException | None]] = []
            failure: BaseException | None = None
            failed_at = 0
            self._read_more(conn, items, stored)
            for work in items:
                if work.claim_key in claimed:
                    outcomes.append((Republished(claimed[work.claim_key]), None))
                    continue
                previous = stored.get(work.claim_key)
                if previous is not None:
                    outputs = Republished(decode_outputs(previous))
                    claimed[work.claim_key] = outputs
                    outcomes.append((outputs, None))
                    continue
                values = {k: overlay[k] if k in overlay else stored[k] for k in work.read_keys}
                if work.more_reads is not None:
                    more = [k for k in work.more_reads(values) if k not in values]
                    missing = [k for k in dict.fromkeys(more) if k not in stored]
                    if missing:
                        # The batch's own writes made this item need keys nobody read yet.
                        stored.update(_watch_and_read(conn, missing))
                    values.update((k, overlay[k] if k in overlay else stored[k]) for k in more)
                try:
                    decision = work.decide(values)
                except isolate as exc:
                    outcomes.append((None, exc))
                    continue
                except Exception as exc:
                    failure, failed_at = exc, time.time_ns()
                    break
                overlay.update(decision.writes)
                writes.update(decision.writes)
                set_adds.extend(decision.set_adds.items())
                claimed[work.claim_key] = decision.outputs
                writes_claim = encode_outputs(decision.outputs)
                overlay[work.claim_key] = writes_claim
                outcomes.append((decision.outputs, None))
            new_claims = {k: overlay[k] for k in claimed if k in overlay}
            if not writes and not set_adds and not new_claims:
                # Nothing to commit (all duplicates, or all isolated): just drop the WATCH, so
                # the pooled connection carries no stale watched keys to its next user.
                _send(conn, [("UNWATCH",)])
                read_replies(conn, 1)
            else:
                # One script call inside MULTI, rather than a command per write and per claim:
                # three replies to read whatever the batch's size (each costs ~10 us of Python).
                script_keys = [*writes, *new_claims, *(k for k, _ in set_adds)]
                args: list[str | int] = [len(writes), len(new_claims), self._claim_ttl_s]
                args += [*writes.values(), *new_claims.values(), *(m for _, m in set_adds)]
                _send(conn, [("MULTI",), ("EVAL", _COMMIT, len(script_keys), *script_keys, *args), ("EXEC",)])
                executed = read_replies(conn, 3)[-1]
                if executed is None:
                    raise _Conflict()
                for reply in executed:
                    if isinstance(reply, Exception):
                        raise reply
        finished = time.time_ns()
        done = [Done(outputs, error, started, finished) for outputs, error in outcomes]
        return BatchResult(done, failure, started, failed_at) if failure else BatchResult(done)

    @staticmethod
    def _read_more(conn: AbstractConnection, items: Sequence[Work], stored: dict[str, str | None]) -> None:
        """Read (and watch) in one more round trip what the items' `more_reads` name, by the
        values just read: WATCH may be sent again before MULTI, and every key is read after it
        is watched, so an EXEC that succeeds saw all of them as they were when it ran."""
        wanted: dict[str, None] = {}
        for work in items:
            if work.more_reads is None or stored.get(work.claim_key) is not None:
                continue
            for key in work.more_reads({k: stored[k] for k in work.read_keys}):
                if key not in stored:
                    wanted[key] = None
        if wanted:
            stored.update(_watch_and_read(conn, list(wanted)))

    @contextmanager
    def _connection(self) -> Iterator[AbstractConnection]:
        pool = self._redis.connection_pool
        conn = pool.get_connection()
        try:
            yield conn
        except _Conflict:
            raise  # EXEC answered (and dropped the WATCH): the connection is in a known state
        except BaseException:
            # decide raised with a WATCH pending, an error reply, or the link broke mid-reply:
            # a fresh connection is cheaper than working out what state this one is in.
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)

    def get(self, key: str) -> str | None:
        return _text(self._redis.get(key))

    def members(self, key: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else str(m) for m in self._redis.smembers(key)}


_COMMIT: Final = """
local writes, claims, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local failed = nil
local function apply(reply)
  if type(reply) == 'table' and reply.err and not failed then failed = reply end
end
for i = 1, writes do apply(redis.pcall('SET', KEYS[i], ARGV[3 + i])) end
for i = writes + claims + 1, #KEYS do apply(redis.pcall('SADD', KEYS[i], ARGV[3 + i])) end
for i = writes + 1, writes + claims do apply(redis.pcall('SET', KEYS[i], ARGV[3 + i], 'EX', ttl)) end
if failed then return failed end
return #KEYS
"""
"""A batch's writes, set adds and claims (with their TTL), applied by one call inside MULTI/EXEC
(so WATCH still decides whether it runs at all). Like commands queued in MULTI, one that fails
(a set add on a key of another type: a bug) does not stop the others; its error is the reply,
and `process_batch` raises it, as redis-py's pipeline did."""


def _watch_and_read(conn: AbstractConnection, keys: Sequence[str]) -> dict[str, str | None]:
    _send(conn, [("WATCH", *keys), ("MGET", *keys)])
    raw = read_replies(conn, 2)[1]
    return {k: _text(v) for k, v in zip(keys, raw, strict=True)}


def _send(conn: AbstractConnection, commands: Sequence[tuple[Any, ...]]) -> None:
    conn.send_packed_command(conn.pack_commands(commands))  # type: ignore[no-untyped-call]


def read_replies(conn: AbstractConnection, n: int) -> list[Any]:
    """Read `n` replies; an error reply is raised only after all are read (the link stays in step).

    Shared with the functions' one-round-trip store (`runtime/function.py`)."""
    replies: list[Any] = []
    error: redis.ResponseError | None = None
    for _ in range(n):
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as exc:
            error = error or exc
            replies.append(exc)
    if error is not None:
        raise error
    return replies


class MemoryStateStore:
    """`StateStore` in process memory: for unit tests and in-process replay. Thread-safe."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._sets: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]:
        with self._lock:
            done = self._data.get(claim_key)
            if done is not None:
                return Republished(decode_outputs(done))
            decision = decide({k: self._data.get(k) for k in read_keys})
            self._data.update(decision.writes)
            for key, member in decision.set_adds.items():
                self._sets.setdefault(key, set()).add(member)
            self._data[claim_key] = encode_outputs(decision.outputs)
            return decision.outputs

    def process_batch(
        self, items: Sequence[Work], isolate: tuple[type[BaseException], ...] = ()
    ) -> BatchResult:
        """Item by item through `process_once` (each atomic), with `RedisStateStore`'s outcome shape.

        Going through `process_once` keeps subclasses that override it (the backtest's store)
        right; the result is the same as one transaction because nothing else runs in between
        that a batch would have hidden (items are in order, and a failure stops the batch).
        """
        done: list[Done] = []
        for work in items:
            started = time.time_ns()
            try:
                outputs = self.process_once(work.claim_key, self._all_reads(work), work.decide)
            except isolate as exc:
                done.append(Done(None, exc, started, time.time_ns()))
                continue
            except Exception as exc:
                return BatchResult(done, exc, started, time.time_ns())
            done.append(Done(outputs, None, started, time.time_ns()))
        return BatchResult(done)

    def _all_reads(self, work: Work) -> list[str]:
        """`work`'s reads with what its `more_reads` name by the current values. Another thread
        may change those values before `process_once` takes the lock; a stage whose `decide`
        then lacks a key raises, and the dispatcher retries the event alone (`stages.process`,
        with the stage's full reads)."""
        reads = list(work.read_keys)
        if work.more_reads is not None:
            values = {k: self.get(k) for k in reads}
            reads += [k for k in work.more_reads(values) if k not in values]
        return reads

    def get(self, key: str) -> str | None:
        return self._data.get(key)

    def members(self, key: str) -> set[str]:
        return set(self._sets.get(key, ()))

    def snapshot(self) -> dict[str, Any]:
        """Every key except claims: what a test compares between two runs."""
        with self._lock:
            return {k: v for k, v in self._data.items() if ":claim:" not in k}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
