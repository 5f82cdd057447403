"""Traces, metrics and `alphapanda trace` on the real pipeline (dispatcher, Tansu, redis-server)."""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan
from pipeline_harness import (
    Pipeline,
    Record,
    events_of,
    metric_sample,
    read_all,
    settings_for,
    tick_events,
    traced_servers,
)

from alphapanda import cli_trace, topics
from alphapanda.events import Event, Signal
from alphapanda.metrics import start_metrics_server

BROKERS = ("paper", "paper-2")
STRATEGIES = """
strategies:
  - name: trace_cross
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK, INFY, TCS]
    brokers: [paper, paper-2]
    params: {fast: 3, slow: 8, quantity: 10}
"""
TICKS = 240
STAGES = {"strategy_runner", "risk_manager", "trading_engine", "portfolio_manager"}
# (metric, labels) sampled before and after the run
WATCHED = {
    "risk_ok": (
        "alphapanda_events_processed_total",
        {"function": "risk_manager", "broker": "paper-2", "outcome": "ok"},
    ),
    "runner_ok": (
        "alphapanda_events_processed_total",
        {"function": "strategy_runner", "broker": "shared", "outcome": "ok"},
    ),
    "handler_count": ("alphapanda_handler_seconds_count", {"function": "trading_engine", "broker": "paper"}),
    "tick_to_fill": ("alphapanda_tick_to_fill_seconds_count", {"broker": "paper", "strategy": "trace_cross"}),
    "dead_lettered": (
        "alphapanda_dead_lettered_total",
        {
            "function": "strategy_runner",
            "broker": "shared",
            "topic": "market.equity.ticks",
            "reason": "undecodable",
        },
    ),
}


@dataclass
class Run:
    bootstrap: str
    spans: list[ReadableSpan]
    log: dict[str, list[Record]]
    metric_deltas: dict[str, float]

    def events(self, topic: str) -> list[Event]:
        return events_of([r for r in self.log.get(topic, []) if "ce_id" in r.headers])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One traced run of the pipeline for two paper brokers, shared by the tests of this module."""
    strategies = tmp_path_factory.mktemp("tracing") / "strategies.yaml"
    strategies.write_text(STRATEGIES)
    with traced_servers() as (exporter, kafka, redis_server):
        settings = settings_for(
            kafka.bootstrap_servers,
            redis_server.url,
            strategies,
            brokers=",".join(BROKERS),
            broker={b: {"fills": {"fill_quote": "signal"}} for b in BROKERS},
        )
        before = {k: metric_sample(*v) for k, v in WATCHED.items()}
        with Pipeline(settings) as pipeline:
            pipeline.publish(tick_events(settings, TICKS, instruments=4))
            # A poison record, to see the dead-letter counter move.
            pipeline.publish_raw(topics.market_ticks("equity"), b"738561", b"{not json", [])
            pipeline.drain()
        deltas = {k: metric_sample(*v) - before[k] for k, v in WATCHED.items()}
        log = read_all(kafka.bootstrap_servers, list(BROKERS))
        yield Run(kafka.bootstrap_servers, list(exporter.get_finished_spans()), log, deltas)


def _trace_id(traceparent: str | None) -> str:
    assert traceparent is not None
    return traceparent.split("-")[1]


def _span_trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def _one_idea(run: Run) -> tuple[str, list[Event]]:
    """A correlation id that reached a fill on both brokers, and its fills."""
    fills: dict[str, list[Event]] = defaultdict(list)
    for broker in BROKERS:
        for fill in run.events(topics.orders_filled(broker)):
            fills[fill.correlationid].append(fill)
    both = sorted(cid for cid, f in fills.items() if {e.broker for e in f} == set(BROKERS))
    assert both, "the strategy should fill on both brokers"
    return both[0], fills[both[0]]


def test_run_when_ticks_become_fills_then_every_fill_is_in_the_trace_of_its_tick(run: Run) -> None:
    ticks = {e.id: e for e in run.events(topics.market_ticks("equity"))}
    signals = {e.id: e for b in BROKERS for e in run.events(topics.signals_raw(b))}
    validated = {e.id: e for b in BROKERS for e in run.events(topics.signals_validated(b))}
    fills = [e for b in BROKERS for e in run.events(topics.orders_filled(b))]
    assert len(fills) > 10

    for fill in fills:
        tick = ticks[signals[validated[fill.causationid].causationid].causationid]
        assert _trace_id(fill.traceparent) == _trace_id(tick.traceparent)
    # The tick's header is the W3C one Knative reads, and the same as the CloudEvent extension.
    record = run.log[topics.market_ticks("equity")][0]
    assert record.headers["traceparent"] == record.headers["ce_traceparent"]


def test_run_when_an_idea_fills_on_two_brokers_then_its_trace_branches_per_broker(run: Run) -> None:
    cid, fills = _one_idea(run)
    trace_id = _trace_id(fills[0].traceparent)

    in_trace = [s for s in run.spans if _span_trace_id(s) == trace_id]
    # Other consumers of the tick (per-broker order matchers) join the trace as well; the idea's
    # path is the spans of the four stages.
    path = [s for s in in_trace if (s.attributes or {}).get("alphapanda.function") in STAGES]
    assert sorted(s.name for s in path) == sorted(
        ["process market.equity.ticks"]
        + [
            f"process {topic(b)}"
            for b in BROKERS
            for topic in (topics.signals_raw, topics.signals_validated, topics.orders_filled)
        ]
    )
    (root,) = [s for s in in_trace if s.parent is None]
    assert root.name == "create market.equity.ticks"
    (runner,) = [s for s in path if s.name == "process market.equity.ticks"]
    assert runner.parent is not None and root.context is not None
    assert runner.parent.span_id == root.context.span_id
    risk = [s for s in path if s.name.endswith(".signals.raw")]
    assert runner.context is not None
    assert {s.parent.span_id for s in risk if s.parent} == {runner.context.span_id}
    assert {(s.attributes or {})["broker"] for s in risk} == set(BROKERS)
    assert {(s.attributes or {})["correlationid"] for s in path if s is not runner} == {cid}


def test_run_when_events_flow_then_prometheus_counters_grow(run: Run) -> None:
    raw_second = run.events(topics.signals_raw("paper-2"))
    fills_paper = run.events(topics.orders_filled("paper"))

    assert run.metric_deltas["runner_ok"] == TICKS
    assert run.metric_deltas["risk_ok"] == len(raw_second)
    assert run.metric_deltas["handler_count"] == len(run.events(topics.signals_validated("paper")))
    assert run.metric_deltas["tick_to_fill"] == len(fills_paper)
    assert run.metric_deltas["dead_lettered"] == 1


def test_metrics_server_when_scraped_then_it_serves_the_dashboard_metrics(run: Run) -> None:
    port = start_metrics_server(0, addr="127.0.0.1")

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    for name in (
        'alphapanda_events_processed_total{broker="paper",function="risk_manager",outcome="ok"}',
        'alphapanda_handler_seconds_bucket{broker="paper",function="trading_engine",le="0.005"}',
        'alphapanda_dead_lettered_total{broker="shared",function="strategy_runner",reason="undecodable",'
        'topic="market.equity.ticks"}',
        'alphapanda_tick_to_fill_seconds_bucket{broker="paper-2",le="1.0",strategy="trace_cross"}',
        'alphapanda_pnl_rupees{broker="paper",instrument=',
    ):
        assert name in text, name


def _trace(run: Run, correlation_id: str, capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    args = argparse.Namespace(
        command="trace",
        correlation_id=correlation_id,
        bootstrap_servers=run.bootstrap,
        brokers=None,
        timeout=60.0,
    )
    code = cli_trace.run(args)
    return code, capsys.readouterr().out


def test_trace_command_when_an_idea_filled_then_it_prints_its_lifecycle_in_order_with_latencies(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    cid, _fills = _one_idea(run)

    code, out = _trace(run, cid, capsys)

    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"trading idea {cid}: 11 events on paper, paper-2"
    # The poison record names no idea: it may have been one of this one's, so it is counted.
    orphans = "unreadable dead letters that name no trading idea: 1 (1 on market.equity.ticks.dlq)"
    assert lines.pop() == orphans
    header, *rows = [re.split(r"\s{2,}", line) for line in lines[1:-1]]
    assert header == ["time (IST)", "hop", "since first", "broker", "topic", "type", "event id", "detail"]
    assert [rows[0][4], rows[0][5]] == ["market.equity.ticks", "market.tick"]
    for broker in BROKERS:
        assert [r[4] for r in rows if r[3] == broker] == [
            f"{broker}.signals.raw",
            f"{broker}.signals.validated",
            f"{broker}.orders.submitted",
            f"{broker}.orders.filled",
            f"{broker}.pnl.snapshots",
        ]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    # Every event after the tick shows the time since its cause; after the first (simulated,
    # hence old) tick's hop, the pipeline's own hops take milliseconds.
    assert all(r[1].startswith("+") for r in rows[1:])
    assert all(r[1].endswith(" ms") for r in rows[3:])
    assert re.fullmatch(r"tick to fill: paper .+, paper-2 .+", lines[-1])


def test_trace_command_when_a_signal_is_traced_then_the_tick_that_caused_it_is_included(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    cid, _fills = _one_idea(run)
    (signal,) = [e for e in run.events(topics.signals_raw("paper")) if e.correlationid == cid]
    assert isinstance(signal.data, Signal)

    _code, out = _trace(run, cid, capsys)

    assert signal.causationid in out
    assert signal.data.tradingsymbol in out


def test_trace_command_when_nothing_has_the_id_then_it_says_so_and_exits_1(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _trace(run, "no-such-idea", capsys)

    assert code == 1
    assert out.splitlines() == [
        f"no events with correlationid no-such-idea on the topics at {run.bootstrap}",
        "unreadable dead letters that name no trading idea: 1 (1 on market.equity.ticks.dlq)",
    ]


def test_trace_command_when_args_are_for_another_command_then_it_is_not_mine() -> None:
    assert cli_trace.run(argparse.Namespace(command="run")) is None
