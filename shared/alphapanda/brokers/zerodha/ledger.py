"""The trading engine's claim on a signal, moved between states by compare-and-set in Redis.

    (absent) --claim--> placing --Kite answered--> done (outputs stored)
                           |  \\--no answer, lookup by tag inconclusive--> unknown
                           \\--instance died: lease runs out--> (treated as unknown)
    unknown --found by tag--> done;  --not found--> placing (a new attempt)

A `placing` record carries a lease: while it runs, no other instance calls Kite for the signal.
Whoever finds `unknown` (or an expired lease) must look the order up by its tag before it may
place again. Every transition is one optimistic transaction (WATCH/MULTI, like the state
store's) that also writes what belongs with it (the order context at the claim; the order
status and the risk give-back at the end), so a crash between two Redis writes cannot happen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from alphapanda.events import Event
from alphapanda.state.store import decode_outputs, encode_outputs

PLACING = "placing"
UNKNOWN = "unknown"
DONE = "done"


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    state: str
    attempt: str = ""
    lease_until: float = 0.0
    since: float = 0.0
    why: str = ""
    outputs: str = ""

    @classmethod
    def placing(cls, attempt: str, lease_until: float) -> ClaimRecord:
        return cls(PLACING, attempt=attempt, lease_until=lease_until)

    @classmethod
    def unknown(cls, since: float, why: str) -> ClaimRecord:
        return cls(UNKNOWN, since=since, why=why)

    @classmethod
    def done(cls, outputs: Sequence[Event]) -> ClaimRecord:
        return cls(DONE, outputs=encode_outputs(outputs))

    def events(self) -> list[Event]:
        return decode_outputs(self.outputs)

    def encode(self) -> str:
        data: dict[str, Any] = {"state": self.state}
        if self.state == PLACING:
            data |= {"attempt": self.attempt, "lease_until": self.lease_until}
        elif self.state == UNKNOWN:
            data |= {"since": self.since, "why": self.why}
        else:
            data["outputs"] = self.outputs
        return json.dumps(data)

    @classmethod
    def decode(cls, raw: str) -> ClaimRecord:
        data = json.loads(raw)
        return cls(
            state=data["state"],
            attempt=data.get("attempt", ""),
            lease_until=float(data.get("lease_until", 0.0)),
            since=float(data.get("since", 0.0)),
            why=data.get("why", ""),
            outputs=data.get("outputs", ""),
        )


Writes = Callable[[dict[str, str | None]], dict[str, str]]
"""Extra writes computed from the current values of some keys (e.g. the risk give-back)."""


class ClaimLedger:
    def __init__(self, client: redis.Redis, claim_key: str, ttl_s: int) -> None:
        self._redis = client
        self.key = claim_key
        self._ttl_s = ttl_s

    def read(self) -> tuple[str | None, ClaimRecord | None]:
        text = _text(self._redis.get(self.key))
        return text, (None if text is None else ClaimRecord.decode(text))

    def swap(
        self,
        expected: str | None,
        new: ClaimRecord,
        *,
        aux: tuple[str, str] | None = None,
        reads: Sequence[str] = (),
        writes: Writes | None = None,
    ) -> str | None:
        """Move the claim from `expected` (None: absent) to `new`, writing `aux` and what `writes`
        computes from `reads` in the same transaction; return the new raw value, or None if
        someone else moved the claim first."""
        encoded = new.encode()
        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.key, *reads)  # type: ignore[no-untyped-call]
                    if _text(pipe.get(self.key)) != expected:
                        pipe.unwatch()
                        return None
                    values = [_text(v) for v in pipe.mget(reads)] if reads else []
                    extra = writes(dict(zip(reads, values, strict=True))) if writes else {}
                    pipe.multi()
                    pipe.set(self.key, encoded, ex=self._ttl_s)
                    if aux is not None:
                        pipe.set(aux[0], aux[1], ex=self._ttl_s)
                    if extra:
                        pipe.mset(extra)
                    pipe.execute()
                    return encoded
                except redis.WatchError:
                    continue


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
