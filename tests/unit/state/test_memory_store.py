"""MemoryStateStore.process_once: once per claim, atomic with its writes; and the outputs codec."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from alphapanda.events import IST, Event, InvalidEvent, MarketTick, tick_event
from alphapanda.state.store import Decision, MemoryStateStore, Republished, decode_outputs, encode_outputs

CLAIM = "paper:claim:risk_manager:evt-1"


def _event(n: int) -> Event:
    tick = MarketTick(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=Decimal("1480.05"),
        bid=Decimal("1480.00"),
        ask=Decimal("1480.05"),
        exchange_timestamp=datetime(2025, 11, 24, 9, 15, n, tzinfo=IST),
    )
    return tick_event(tick, f"tick-{n}")


class CountingDecide:
    """A decide function that records what it saw and how often it ran."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.seen: list[dict[str, str | None]] = []

    def __call__(self, values: dict[str, str | None]) -> Decision:
        self.seen.append(values)
        return self.decision


def test_process_once_when_first_seen_then_decide_sees_reads_and_writes_are_committed() -> None:
    store = MemoryStateStore()
    decide = CountingDecide(
        Decision(outputs=[_event(1)], writes={"a": "1", "b": "2"}, set_adds={"idx": "s1"})
    )

    outputs = store.process_once(CLAIM, ["a", "missing"], decide)

    assert outputs == [_event(1)]
    assert decide.seen == [{"a": None, "missing": None}]
    assert (store.get("a"), store.get("b")) == ("1", "2")
    assert store.members("idx") == {"s1"}


def test_process_once_when_claim_seen_before_then_decide_is_skipped_and_stored_outputs_returned() -> None:
    store = MemoryStateStore()
    store.process_once(CLAIM, [], CountingDecide(Decision(outputs=[_event(1), _event(2)], writes={"a": "1"})))
    again = CountingDecide(Decision(outputs=[_event(3)], writes={"a": "changed"}))

    outputs = store.process_once(CLAIM, ["a"], again)

    assert outputs == [_event(1), _event(2)]
    assert again.seen == []
    assert store.get("a") == "1"


def test_process_once_when_claim_differs_then_decide_sees_earlier_writes() -> None:
    store = MemoryStateStore()
    store.process_once(CLAIM, [], CountingDecide(Decision(outputs=[], writes={"a": "1"})))
    second = CountingDecide(Decision(outputs=[]))

    store.process_once(CLAIM + "-other", ["a"], second)

    assert second.seen == [{"a": "1"}]


def test_process_once_when_decide_raises_then_nothing_is_committed_and_a_retry_runs_it() -> None:
    store = MemoryStateStore()

    def boom(_values: dict[str, str | None]) -> Decision:
        raise RuntimeError("transient")

    with pytest.raises(RuntimeError):
        store.process_once(CLAIM, ["a"], boom)
    retry = CountingDecide(Decision(outputs=[], writes={"a": "1"}))
    store.process_once(CLAIM, ["a"], retry)

    assert len(retry.seen) == 1
    assert store.get("a") == "1"


def test_process_once_when_no_outputs_then_redelivery_still_returns_empty_and_skips_decide() -> None:
    store = MemoryStateStore()
    store.process_once(CLAIM, [], CountingDecide(Decision(outputs=[], writes={"a": "1"})))
    again = CountingDecide(Decision(outputs=[_event(1)]))

    assert store.process_once(CLAIM, [], again) == []
    assert again.seen == []


def test_snapshot_when_claims_exist_then_they_are_left_out() -> None:
    store = MemoryStateStore()
    store.process_once(
        CLAIM, [], CountingDecide(Decision(outputs=[_event(1)], writes={"paper:book:s": "{}"}))
    )

    assert store.snapshot() == {"paper:book:s": "{}"}


def test_members_when_mutated_by_caller_then_store_is_unchanged() -> None:
    store = MemoryStateStore()
    store.process_once(CLAIM, [], CountingDecide(Decision(outputs=[], set_adds={"idx": "s1"})))

    store.members("idx").add("intruder")

    assert store.members("idx") == {"s1"}
    assert store.members("nothing") == set()


def test_decode_outputs_when_encoded_then_events_round_trip_equal() -> None:
    events = [_event(1), _event(2)]

    assert decode_outputs(encode_outputs(events)) == events
    assert decode_outputs(encode_outputs(events).encode()) == events
    assert decode_outputs(encode_outputs([])) == []


def test_decode_outputs_when_stored_event_is_not_ours_then_raises_invalid_event() -> None:
    raw = encode_outputs([_event(1)]).replace("com.alphapanda.market.tick", "com.example.tick")

    with pytest.raises(InvalidEvent, match="unknown event type"):
        decode_outputs(raw)


def test_process_once_when_claim_seen_before_then_the_answer_is_marked_republished() -> None:
    store = MemoryStateStore()

    first = store.process_once(CLAIM, [], CountingDecide(Decision(outputs=[_event(1)])))
    again = store.process_once(CLAIM, [], CountingDecide(Decision(outputs=[_event(2)])))

    assert not isinstance(first, Republished)
    assert isinstance(again, Republished) and again == first
