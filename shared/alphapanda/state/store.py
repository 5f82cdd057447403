"""The state store: process each input event exactly once, atomically with its state changes.

`process_once` is the effectively-once primitive every state-changing stage uses:
1. if the input's claim key exists, the event was processed before: return the outputs stored
   with the claim, so a redelivery republishes the very same events (same ids) and changes nothing;
2. otherwise read the stage's keys, let the pure `decide` compute writes and outputs, and commit
   the writes together with the claim (holding the outputs) in one transaction.
Because claim and state change commit together, a crash at any point either leaves no trace
(the redelivery redoes the work) or a complete one (the redelivery republishes the outputs).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from alphapanda.events import Event, encode_data, from_attributes, to_attributes


@dataclass(frozen=True, slots=True)
class Decision:
    """What a stage decided for one event: keys to write, set members to add, events to emit."""

    outputs: list[Event]
    writes: Mapping[str, str] = field(default_factory=dict)
    set_adds: Mapping[str, str] = field(default_factory=dict)


Decide = Callable[[dict[str, str | None]], Decision]


class StateStore(Protocol):
    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]: ...

    def get(self, key: str) -> str | None: ...

    def members(self, key: str) -> set[str]: ...


def encode_outputs(events: Sequence[Event]) -> str:
    return json.dumps([{"a": to_attributes(e), "d": encode_data(e).decode()} for e in events])


def decode_outputs(raw: str | bytes) -> list[Event]:
    return [from_attributes(item["a"], item["d"]) for item in json.loads(raw)]


class RedisStateStore:
    """`StateStore` on Redis: optimistic transactions (WATCH/MULTI/EXEC), retried on conflict.

    WATCH keeps the domain logic in Python (it is pure and unit-tested) while two instances
    racing on the same keys still serialise: the loser's EXEC fails and it recomputes.
    """

    def __init__(self, client: redis.Redis, claim_ttl_s: int) -> None:
        self._redis = client
        self._claim_ttl_s = claim_ttl_s

    @property
    def client(self) -> redis.Redis:
        return self._redis

    def process_once(self, claim_key: str, read_keys: Sequence[str], decide: Decide) -> list[Event]:
        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(claim_key, *read_keys)  # type: ignore[no-untyped-call]
                    done = pipe.get(claim_key)
                    if done is not None:
                        pipe.unwatch()
                        return decode_outputs(done)
                    values = pipe.mget(read_keys) if read_keys else []
                    decision = decide({k: _text(v) for k, v in zip(read_keys, values, strict=True)})
                    pipe.multi()
                    if decision.writes:
                        pipe.mset(dict(decision.writes))
                    for key, member in decision.set_adds.items():
                        pipe.sadd(key, member)
                    pipe.set(claim_key, encode_outputs(decision.outputs), ex=self._claim_ttl_s)
                    pipe.execute()
                    return decision.outputs
                except redis.WatchError:
                    continue

    def get(self, key: str) -> str | None:
        return _text(self._redis.get(key))

    def members(self, key: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else str(m) for m in self._redis.smembers(key)}


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
                return decode_outputs(done)
            decision = decide({k: self._data.get(k) for k in read_keys})
            self._data.update(decision.writes)
            for key, member in decision.set_adds.items():
                self._sets.setdefault(key, set()).add(member)
            self._data[claim_key] = encode_outputs(decision.outputs)
            return decision.outputs

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
