"""The pipeline's stages: one handler per function, a plain function of (event, state).

The same handler runs behind functions-framework (Knative), in the local dispatcher and in an
in-process replay; only the adapters around it differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from alphapanda.events import Event, EventType, InvalidEvent
from alphapanda.state import keys
from alphapanda.state.store import Decision, StateStore
from alphapanda.topics import Function


class Stage(Protocol):
    """A pipeline stage. `reads` names the state keys `decide` needs; `decide` is pure."""

    @property
    def function(self) -> Function: ...

    @property
    def accepts(self) -> EventType: ...

    def owner(self, event: Event) -> str: ...

    def reads(self, event: Event) -> Sequence[str]: ...

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision: ...


def process(stage: Stage, event: Event, store: StateStore) -> list[Event]:
    """Apply `event` to `stage` exactly once and return its outputs (the stored ones on a redelivery)."""
    if event.type is not stage.accepts:
        raise InvalidEvent(f"{stage.function} accepts {stage.accepts}, not {event.type}")
    claim = keys.claim(stage.owner(event), stage.function.value, event.id)
    return store.process_once(claim, stage.reads(event), lambda values: stage.decide(event, values))


@dataclass(frozen=True)
class BrokerScoped:
    """Mixin for per-broker stages: the event must carry one of the stage's brokers."""

    brokers: frozenset[str]

    def owner(self, event: Event) -> str:
        if event.broker is None or event.broker not in self.brokers:
            raise InvalidEvent(
                f"event {event.id} is for broker {event.broker!r}, not one of {sorted(self.brokers)}"
            )
        return event.broker
