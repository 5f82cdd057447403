"""The kill switch on the real pipeline: halt stops new trades, flatten closes every position
through risk, resume trades again, and reconcile finds positions equal to the sum of fills."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_harness import Pipeline, events_of, read_all, settings_for, tick_events, write_strategies

from alphapanda import topics
from alphapanda.domain.risk import BrokerState
from alphapanda.events import Alert, SignalRejected, SignalValidated
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.runtime.operations import broker_state, flatten_signals, reconcile, set_broker_state
from alphapanda.runtime.reports import books
from alphapanda.state import keys


@pytest.fixture
def strategies_file(tmp_path: Path) -> Path:
    return write_strategies(tmp_path)


def _open_positions(pipeline: Pipeline) -> dict[tuple[str, int], int]:
    return {
        (s, t): p.net_quantity
        for s, b in books(pipeline.store, "paper").items()
        for t, p in b.positions
        if p.net_quantity
    }


def test_halt_flatten_resume_when_operated_on_a_live_pipeline_then_each_takes_effect_and_books_reconcile(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, strategies_file: Path
) -> None:
    settings = settings_for(
        kafka.bootstrap_servers,
        redis_server.url,
        strategies_file,
        broker={"paper": {"fills": {"fill_quote": "signal"}, "risk": {"max_open_orders": 100000}}},
    )
    ticks = tick_events(settings, 900, instruments=4)
    with Pipeline(settings) as pipeline:
        pipeline.publish(ticks[:300])
        pipeline.drain()
        before_halt = _open_positions(pipeline)
        assert before_halt, "the strategy should hold positions after 300 ticks"

        set_broker_state(pipeline.store, pipeline.publisher, "paper", BrokerState.HALTED, "test")
        assert broker_state(pipeline.store.client, "paper") is BrokerState.HALTED
        halted_from = {t.id for t in ticks[300:600]}
        pipeline.publish(ticks[300:600])
        pipeline.drain()
        assert _open_positions(pipeline) == before_halt, "a halted broker must not trade"

        closing = flatten_signals(pipeline.store, "paper", request_id="flatten-1")
        assert len(closing) == len(before_halt)
        pipeline.publish(closing)
        pipeline.drain()
        assert _open_positions(pipeline) == {}, "flatten closes every position"
        check = reconcile(pipeline.store, kafka.bootstrap_servers, "paper")
        assert check.ok and check.fills > 0

        set_broker_state(pipeline.store, pipeline.publisher, "paper", BrokerState.ACTIVE, "test")
        resumed_from = {t.id for t in ticks[600:]}
        pipeline.publish(ticks[600:])
        pipeline.drain()

        # A tampered book is a break reconcile reports.
        key = keys.book("paper", "fast_cross")
        raw = json.loads(pipeline.store.get(key) or "{}")
        token = next(iter(raw["positions"]))
        raw["positions"][token]["q"] += 1
        pipeline.store.client.set(key, json.dumps(raw))
        broken = reconcile(pipeline.store, kafka.bootstrap_servers, "paper")
        assert not broken.ok and broken.breaks[0].instrument_token == int(token)

    log = read_all(kafka.bootstrap_servers, ["paper"])
    raw_signals = {e.id: e for e in events_of(log[topics.signals_raw("paper")])}
    rejected = events_of(log[topics.signals_rejected("paper")])
    validated = events_of(log[topics.signals_validated("paper")])

    def caused_by(event_ids: set[str], out: list) -> list:  # type: ignore[type-arg]
        return [e for e in out if raw_signals[e.causationid].causationid in event_ids]

    halted_rejections = caused_by(halted_from, rejected)
    assert halted_rejections, "signals kept coming while halted"
    assert all(
        isinstance(e.data, SignalRejected) and "kill_switch" in {f.rule for f in e.data.failures}
        for e in halted_rejections
    )
    assert not caused_by(halted_from, validated)
    flattened = [e for e in validated if isinstance(e.data, SignalValidated) and e.data.signal.flatten]
    assert len(flattened) == len(closing)
    assert caused_by(resumed_from, validated), "trading resumes after resume"
    alerts = [e.data for e in events_of(log[topics.alerts("paper")])]
    assert [a.details["to"] for a in alerts if isinstance(a, Alert) and a.kind == "kill_switch"] == [
        "HALTED",
        "ACTIVE",
    ]
