"""The whole pipeline on the real Tansu broker and a real redis-server, with a fixed seed."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from pipeline_harness import Pipeline, events_of, read_all, settings_for, state_snapshot, tick_events

from alphapanda import topics
from alphapanda.events import OrderFilled, Signal, SignalRejected, derive_id
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.runtime.reports import books

STRATEGIES = """
strategies:
  - name: fast_cross
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK, INFY, TCS, ICICIBANK]
    brokers: [paper]
    params: {fast: 3, slow: 8, quantity: 10}
"""
# ICICIBANK (1270529) is left off the allow-list so that the risk manager has work to reject.
ALLOWED = [738561, 341249, 408065, 2953217]
TICKS = 600


@pytest.fixture
def strategies_file(tmp_path: Path) -> Path:
    path = tmp_path / "strategies.yaml"
    path.write_text(STRATEGIES)
    return path


def _settings(kafka: EmbeddedKafka, redis_server: EmbeddedRedis, strategies_file: Path):  # type: ignore[no-untyped-def]
    return settings_for(
        kafka.bootstrap_servers,
        redis_server.url,
        strategies_file,
        # Fills against the signal's own touch, so that two runs are comparable to the paisa. The
        # whole stream is published at once, so the risk manager may validate more signals than
        # the default 50 open orders before the trading engine has placed them: which ones a
        # limit would reject would depend on timing, and only the allow-list may reject here.
        broker={
            "paper": {
                "fills": {"fill_quote": "signal"},
                "risk": {"allowed_instruments": ALLOWED, "max_open_orders": 10_000},
            }
        },
    )


def test_run_when_seeded_ticks_flow_then_every_fill_is_accounted_and_correlated(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, strategies_file: Path
) -> None:
    settings = _settings(kafka, redis_server, strategies_file)
    ticks = tick_events(settings, TICKS, instruments=5)
    with Pipeline(settings) as pipeline:
        pipeline.publish(ticks[: TICKS // 2])
        # A poison record in the middle of the stream: not a CloudEvent at all.
        pipeline.publish_raw(
            topics.market_ticks("equity"), b"738561", b"{not json", [("content-type", b"text/plain")]
        )
        # And a CloudEvent whose data breaks the signal schema.
        bad = ticks[0]
        pipeline.publish_raw(
            topics.signals_raw("paper"),
            b"738561",
            b'{"strategy": "x", "quantity": -5}',
            [
                ("ce_id", b"bad-1"),
                ("ce_type", b"com.alphapanda.signal.raw"),
                ("ce_source", b"/test"),
                ("ce_specversion", b"1.0"),
                ("ce_correlationid", b"c1"),
                ("ce_causationid", bad.id.encode()),
                ("ce_broker", b"paper"),
                ("content-type", b"application/json"),
            ],
        )
        pipeline.publish(ticks[TICKS // 2 :])
        pipeline.drain()
        state_books = books(pipeline.store, "paper")

    log = read_all(kafka.bootstrap_servers, ["paper"])
    raw_records = log[topics.signals_raw("paper")]
    assert sum(r.headers["ce_id"] == b"bad-1" for r in raw_records) == 1
    raw = events_of([r for r in raw_records if r.headers["ce_id"] != b"bad-1"])
    validated = events_of(log[topics.signals_validated("paper")])
    rejected = events_of(log[topics.signals_rejected("paper")])
    submitted = events_of(log[topics.orders_submitted("paper")])
    filled = events_of(log[topics.orders_filled("paper")])
    failed = events_of(log.get(topics.orders_failed("paper"), []))
    snapshots = events_of(log[topics.pnl_snapshots("paper")])

    # Per-stage counts balance: nothing lost, nothing made up.
    assert len(ticks) == TICKS
    assert len(raw) > 20, "the strategy should cross often on 600 ticks"
    assert len(raw) == len(validated) + len(rejected)
    assert rejected and all(
        isinstance(e.data, SignalRejected) and e.data.failures[0].rule == "instrument_allow_list"
        for e in rejected
    )
    assert len(validated) == len(submitted) == len(filled) + len(failed)
    assert not failed
    assert len(filled) == len(snapshots)
    assert len({e.id for e in filled}) == len(filled)

    # Every fill carries the correlation id of the signal that caused it.
    by_id = {e.id: e for e in raw + validated}
    for fill in filled:
        validated_event = by_id[fill.causationid]
        signal_event = by_id[validated_event.causationid]
        assert isinstance(signal_event.data, Signal)
        assert fill.correlationid == signal_event.correlationid == validated_event.correlationid
        assert fill.id == derive_id(validated_event.id, "filled")

    # Positions equal the sum of fills.
    expected: dict[tuple[str, int], int] = defaultdict(int)
    for fill in filled:
        assert isinstance(fill.data, OrderFilled)
        expected[(fill.data.strategy, fill.data.instrument_token)] += fill.data.side.sign * fill.data.quantity
    actual = {
        (strategy, token): pos.net_quantity
        for strategy, book in state_books.items()
        for token, pos in book.positions
    }
    assert actual == dict(expected)
    assert sum(b.trade_count for b in state_books.values()) == len(filled)

    # The poison events went to their dead-letter topics with a reason, and the run went on.
    market_dlq = log[topics.dlq(topics.market_ticks("equity"))]
    # Every consumer group of the market topic (strategy runner, paper order matcher) gives up
    # on the poison record on its own, so each dead-letters it once.
    tick_consumers = [b for b in topics.bindings(["paper"]) if topics.market_ticks("equity") in b.topics]
    assert len(tick_consumers) == 2
    assert len(market_dlq) == len(tick_consumers)
    for letter in market_dlq:
        assert letter.value == b"{not json"
        assert b"not a binary-mode CloudEvent" in letter.headers["ce_deadletterreason"]
        assert letter.headers["ce_deadlettertopic"] == b"market.equity.ticks"
    signal_dlq = log[topics.dlq(topics.signals_raw("paper"))]
    assert len(signal_dlq) == 1
    assert b"invalid data" in signal_dlq[0].headers["ce_deadletterreason"]
    late = {t.id for t in ticks[TICKS // 2 :]}
    assert any(s.causationid in late for s in raw), "signals kept coming after the poison events"


def _final_state(strategies_file: Path, *, twice: bool) -> tuple[dict[str, str], Counter[str]]:
    with EmbeddedKafka() as kafka, EmbeddedRedis() as redis_server:
        settings = _settings(kafka, redis_server, strategies_file)
        ticks = tick_events(settings, 300, instruments=4)
        with Pipeline(settings) as pipeline:
            for tick in ticks:
                pipeline.publish([tick, tick] if twice else [tick])
            pipeline.drain()
            state = state_snapshot(pipeline.store)
        log = read_all(kafka.bootstrap_servers, ["paper"])
        distinct = Counter({t: len({r.headers["ce_id"] for r in records}) for t, records in log.items()})
        return state, distinct


def test_run_when_every_input_is_delivered_twice_then_final_state_is_unchanged(strategies_file: Path) -> None:
    clean_state, clean_ids = _final_state(strategies_file, twice=False)
    twice_state, twice_ids = _final_state(strategies_file, twice=True)
    assert any(k.startswith("paper:book:") for k in clean_state)
    assert twice_state == clean_state
    # Redelivery republishes the same events (same ids), never new ones.
    assert twice_ids == clean_ids
