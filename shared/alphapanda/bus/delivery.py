"""One delivery of one record to one stage: decode, process exactly once, or dead-letter.

Shared by the local dispatcher (which adds KafkaSource-style retries) and the
functions-framework adapter (where Knative retries), so both treat bad input the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alphapanda.bus.kafka import Headers
from alphapanda.events import Event, InvalidEvent
from alphapanda.stages import AnyStage, process
from alphapanda.state.store import StateStore
from alphapanda.telemetry import traced_delivery
from alphapanda.topics import dlq

# CloudEvent extension names: lowercase alphanumerics, at most 20 characters (the spec's advice).
DLQ_REASON = "deadletterreason"
DLQ_TOPIC = "deadlettertopic"
DLQ_ATTEMPTS = "deadletterattempts"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    attempts: int


@traced_delivery
def deliver(stage: AnyStage, event: Event, store: StateStore) -> list[Event] | DeadLetter:
    """Process `event`; bad input becomes a `DeadLetter` (never retried), other errors raise.

    Each call is one attempt, traced and measured by `traced_delivery`: its outputs carry the
    attempt's span as their `traceparent`.
    """
    try:
        return process(stage, event, store)
    except InvalidEvent as exc:
        return DeadLetter(str(exc), attempts=1)


def dead_letter_record(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    letter: DeadLetter,
) -> tuple[str, bytes | None, bytes | None, Headers]:
    """The `T.dlq` record for a record of `topic`: the original bytes plus why it failed."""
    kept = [
        (k, v)
        for k, v in (headers or [])
        if k not in {f"ce_{DLQ_REASON}", f"ce_{DLQ_TOPIC}", f"ce_{DLQ_ATTEMPTS}"}
    ]
    kept += [
        (f"ce_{DLQ_REASON}", letter.reason.encode()),
        (f"ce_{DLQ_TOPIC}", topic.encode()),
        (f"ce_{DLQ_ATTEMPTS}", str(letter.attempts).encode()),
    ]
    return dlq(topic), key, value, kept
