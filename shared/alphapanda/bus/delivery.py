"""One delivery of one record to one stage: decode, process exactly once, or dead-letter.

Shared by the local dispatcher (which adds KafkaSource-style retries) and the
functions-framework adapter (where Knative retries), so both treat bad input the same way.
`deliver_batch` is the dispatcher's fast path: a run of events to a pure stage in one state
transaction, with the same per-event outcomes, traces and metrics as `deliver` one by one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from alphapanda.bus.kafka import Headers
from alphapanda.events import Event, InvalidEvent
from alphapanda.stages import AnyStage, Stage, process
from alphapanda.state import keys
from alphapanda.state.store import BatchStateStore, Decision, StateStore, Work
from alphapanda.telemetry import (
    DEAD_LETTER_INVALID,
    record_delivery,
    record_failed_delivery,
    traced_delivery,
)
from alphapanda.topics import dlq

# CloudEvent extension names: lowercase alphanumerics, at most 20 characters (the spec's advice).
DLQ_REASON = "deadletterreason"
DLQ_TOPIC = "deadlettertopic"
DLQ_ATTEMPTS = "deadletterattempts"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    attempts: int
    cause: str = DEAD_LETTER_INVALID
    """Why, for telemetry: one of `telemetry.DEAD_LETTER_*` (a stage refused the event, it was
    not one of our events at all, or every attempt failed)."""


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


@dataclass(frozen=True, slots=True)
class BatchDelivery:
    """`results[i]` is the outcome of `events[i]`; if `failure` is set, `events[len(results)]`
    raised it (its failed attempt is recorded) and it and the events after it were not applied."""

    results: list[list[Event] | DeadLetter]
    failure: BaseException | None = None


def _decider(stage: Stage, event: Event) -> Work:
    """`process`'s checks and claim for one event, as a `Work` item; raise InvalidEvent on bad input."""
    if event.type is not stage.accepts:
        raise InvalidEvent(f"{stage.function} accepts {stage.accepts}, not {event.type}")
    claim = keys.claim(stage.owner(event), stage.function.value, event.id)

    def decide(values: dict[str, str | None]) -> Decision:
        return stage.decide(event, values)

    staged: Any = stage
    if hasattr(staged, "first_reads"):
        # A stage that reads in two steps (see `Work.more_reads`): the first keys for every
        # event, the rest only where their values call for it.
        lean: TwoStepReads = staged

        def more(values: Mapping[str, str | None]) -> Sequence[str]:
            return lean.more_reads(event, values)

        return Work(claim, lean.first_reads(event), decide, more)
    return Work(claim, stage.reads(event), decide)


class TwoStepReads(Protocol):
    """What a stage offers besides `reads` to be read in two steps on the batched path.

    `first_reads` and then `more_reads` (given the values of the first) must name everything
    `decide` will read; `reads` (all at once) stays what `stages.process` uses."""

    def first_reads(self, event: Event) -> Sequence[str]: ...

    def more_reads(self, event: Event, values: Mapping[str, str | None]) -> Sequence[str]: ...


def deliver_batch(stage: Stage, events: Sequence[Event], store: BatchStateStore) -> BatchDelivery:
    """Process `events` in order, as `deliver` would one by one, in one state transaction.

    Bad input (InvalidEvent, from the stage's checks or its `decide`) dead-letters that event
    alone. Any other exception stops the batch there: the events before it are committed and
    recorded, it is returned as `failure` for the caller to retry alone, so order holds.
    Telemetry is recorded once the transaction committed, for the attempt that did: a batch
    redone after a conflict is traced and counted once. An exception of the store itself
    (Redis unreachable) propagates with nothing recorded.
    """
    started_ns = time.time_ns()
    slots: list[Work | DeadLetter] = []
    prepare_failure: BaseException | None = None
    for event in events:
        try:
            slots.append(_decider(stage, event))
        except InvalidEvent as exc:
            slots.append(DeadLetter(str(exc), attempts=1))
        except Exception as exc:  # a bug in owner/reads: a failed attempt of this event
            prepare_failure = exc
            break
    work = [s for s in slots if isinstance(s, Work)]
    outcome = store.process_batch(work, isolate=(InvalidEvent,))
    finished_ns = time.time_ns()
    per_event = (finished_ns - started_ns) / 1e9 / max(len(events), 1)
    results: list[list[Event] | DeadLetter] = []
    done = iter(outcome.done)
    for event, slot in zip(events, slots, strict=False):
        if isinstance(slot, DeadLetter):
            recorded = record_delivery(
                stage, event, slot, started_ns=started_ns, finished_ns=finished_ns, seconds=per_event
            )
            results.append(recorded)
            continue
        item = next(done, None)
        if item is None:  # the store stopped at this event
            assert outcome.failure is not None
            record_failed_delivery(
                stage,
                event,
                outcome.failure,
                started_ns=outcome.failure_started_ns,
                finished_ns=outcome.failure_finished_ns,
                seconds=per_event,
            )
            return BatchDelivery(results, outcome.failure)
        result: list[Event] | DeadLetter = (
            item.outputs if item.outputs is not None else DeadLetter(str(item.error), attempts=1)
        )
        results.append(
            record_delivery(
                stage,
                event,
                result,
                started_ns=item.started_ns,
                finished_ns=item.finished_ns,
                seconds=per_event,
            )
        )
    if prepare_failure is not None:
        failed = events[len(results)]
        record_failed_delivery(
            stage, failed, prepare_failure, started_ns=started_ns, finished_ns=finished_ns, seconds=per_event
        )
        return BatchDelivery(results, prepare_failure)
    return BatchDelivery(results)


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
