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


class EffectfulStage(Protocol):
    """A stage that must act on the world between claim and commit (placing a live order).

    It cannot be a pure `decide`: it claims the input itself, calls the venue, and records the
    outcome, so that a redelivery after a crash never acts twice (see brokers/zerodha/trader.py).
    """

    @property
    def function(self) -> Function: ...

    @property
    def accepts(self) -> EventType: ...

    def handle(self, event: Event, store: StateStore) -> list[Event]: ...


AnyStage = Stage | EffectfulStage


def process(stage: AnyStage, event: Event, store: StateStore) -> list[Event]:
    """Apply `event` to `stage` exactly once and return its outputs (the stored ones on a redelivery)."""
    if event.type is not stage.accepts:
        raise InvalidEvent(f"{stage.function} accepts {stage.accepts}, not {event.type}")
    if not hasattr(stage, "decide"):
        effectful: EffectfulStage = stage
        return effectful.handle(event, store)
    pure: Stage = stage  # type: ignore[assignment]
    claim = keys.claim(pure.owner(event), pure.function.value, event.id)
    return store.process_once(claim, pure.reads(event), lambda values: pure.decide(event, values))


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
