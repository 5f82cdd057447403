"""`alphapanda replay` on the real pipeline: a recorded session re-run for `paper-replay` trades
the same ideas as live, under new ids, and leaves every live key untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_harness import FAST_CROSS, Pipeline, events_of, read_all, settings_for, state_snapshot
from pipeline_harness import tick_events as make_ticks

from alphapanda import topics
from alphapanda.events import Event, Signal
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.runtime.replay import replay, replay_id

pytestmark = pytest.mark.integration

BROKERS = ["paper", "paper-replay"]
TICKS = topics.market_ticks("equity")


def _ideas(events: list[Event]) -> list[tuple[object, ...]]:
    out = []
    for e in events:
        s = e.data
        assert isinstance(s, Signal)
        out.append((s.strategy, s.instrument_token, s.side, s.quantity, s.tick_time, s.reference_price))
    return sorted(out, key=repr)


def _live(state: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in state.items() if not k.startswith("paper-replay:")}


def test_replay_when_a_session_is_replayed_then_the_replay_broker_trades_it_and_live_state_is_untouched(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    strategies = tmp_path / "strategies.yaml"
    strategies.write_text(FAST_CROSS.replace("brokers: [paper]", "brokers: [paper, paper-replay]"))
    settings = settings_for(kafka.bootstrap_servers, redis_server.url, strategies, brokers=tuple(BROKERS))
    ticks = make_ticks(settings, 240, 4)

    with Pipeline(settings) as pipeline:
        pipeline.publish(ticks)
        pipeline.drain()
        live_before = _live(state_snapshot(pipeline.redis))
        assert not any(k.startswith("paper-replay:") for k in state_snapshot(pipeline.redis))

        first = replay(
            kafka.bootstrap_servers, pipeline.publisher, topic=TICKS, start=0, broker="paper-replay"
        )
        pipeline.drain()
        after_first = state_snapshot(pipeline.redis)
        # Running the same replay again (an interrupted replay, re-run) changes nothing.
        second = replay(
            kafka.bootstrap_servers, pipeline.publisher, topic=TICKS, start=0, broker="paper-replay"
        )
        pipeline.drain()
        after_second = state_snapshot(pipeline.redis)

    assert (first.read, first.published, first.skipped) == (240, 240, 0)
    # The second run reads the first run's replayed ticks too, and skips them.
    assert (second.read, second.published, second.skipped) == (480, 240, 240)
    assert _live(after_first) == live_before
    assert after_second == after_first

    log = read_all(kafka.bootstrap_servers, BROKERS)
    live_signals = events_of(log[topics.signals_raw("paper")])
    # The re-run republished the stored outputs of its (already claimed) ticks: same ids.
    replay_signals = list({e.id: e for e in events_of(log[topics.signals_raw("paper-replay")])}.values())
    assert live_signals, "the fast-crossing strategy should trade the session"
    # Same ticks, same strategy: the same ideas.
    assert _ideas(replay_signals) == _ideas(live_signals)
    live_ids = {e.id for e in ticks}
    assert {e.causationid for e in replay_signals} <= {replay_id(i, "paper-replay") for i in live_ids}
    assert not {e.correlationid for e in replay_signals} & {e.correlationid for e in live_signals}
    assert log[topics.orders_filled("paper-replay")], "the replay broker filled its orders"
    # Live brokers never saw a replayed tick: no live output was caused by one.
    replayed_ids = {replay_id(i, "paper-replay") for i in live_ids}
    assert not {e.causationid for e in live_signals} & replayed_ids
