"""Traces and metrics at the edges, on the real pipeline (dispatcher, Tansu, redis-server):
unreadable records, rejected signals, redelivered events and the per-broker order matchers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
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
from test_tracing import _trace  # `alphapanda trace` on a run's log, as test_tracing runs it

from alphapanda import topics
from alphapanda.events import Event

BROKERS = ("paper", "paper-2")
REJECTING = "paper-2"
"""Its order value limit (Rs 1) refuses every signal: each is a rejection on its span."""
STRATEGIES = """
strategies:
  - name: edge_cross
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK, INFY, TCS]
    brokers: [paper, paper-2]
    params: {fast: 3, slow: 8, quantity: 10}
"""
TICKS = 160
TICK_TOPIC = topics.market_ticks("equity")
POISON_IDEA = "poison-idea"
MATCHER = "order_matcher"


def _counter(name: str, **labels: str) -> tuple[str, dict[str, str]]:
    return name, labels


WATCHED = {
    "runner_ok": _counter(
        "alphapanda_events_processed_total", function="strategy_runner", broker="shared", outcome="ok"
    ),
    "runner_redelivered": _counter(
        "alphapanda_redelivered_total", function="strategy_runner", broker="shared"
    ),
    "risk_ok": _counter(
        "alphapanda_events_processed_total", function="risk_manager", broker="paper", outcome="ok"
    ),
    "tick_to_fill": _counter("alphapanda_tick_to_fill_seconds_count", broker="paper", strategy="edge_cross"),
    "runner_undecodable": _counter(
        "alphapanda_dead_lettered_total",
        function="strategy_runner",
        broker="shared",
        topic=TICK_TOPIC,
        reason="undecodable",
    ),
    "runner_dead_outcome": _counter(
        "alphapanda_events_processed_total",
        function="strategy_runner",
        broker="shared",
        outcome="dead_lettered",
    ),
    **{
        f"matcher_ok_{b}": _counter(
            "alphapanda_events_processed_total", function=MATCHER, broker=b, outcome="ok"
        )
        for b in (*BROKERS, "shared")
    },
    **{
        f"matcher_undecodable_{b}": _counter(
            "alphapanda_dead_lettered_total",
            function=MATCHER,
            broker=b,
            topic=TICK_TOPIC,
            reason="undecodable",
        )
        for b in BROKERS
    },
}


@dataclass
class Run:
    bootstrap: str
    spans: list[ReadableSpan]
    log: dict[str, list[Record]]
    deltas: dict[str, float]
    poison_trace_id: str

    def events(self, topic: str) -> list[Event]:
        return events_of([r for r in self.log.get(topic, []) if "ce_id" in r.headers])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Ticks through the pipeline, then every tick record again (as Kafka redelivers it after a
    crash: the same bytes and headers), one tick record with a broken payload and one that is
    not a CloudEvent at all."""
    strategies = tmp_path_factory.mktemp("tracing-edges") / "strategies.yaml"
    strategies.write_text(STRATEGIES)
    with traced_servers() as (exporter, kafka, redis_server):
        settings = settings_for(
            kafka.bootstrap_servers,
            redis_server.url,
            strategies,
            brokers=",".join(BROKERS),
            broker={
                "paper": {"fills": {"fill_quote": "signal"}},
                REJECTING: {"risk": {"max_order_value": 1}},
            },
        )
        before = {k: metric_sample(*v) for k, v in WATCHED.items()}
        with Pipeline(settings) as pipeline:
            pipeline.publish(tick_events(settings, TICKS, instruments=4))
            pipeline.drain()
            first = read_all(kafka.bootstrap_servers, list(BROKERS))[TICK_TOPIC]
            for record in first:
                pipeline.publish_raw(
                    TICK_TOPIC, record.key, record.value or b"", list(record.headers.items())
                )
            # A tick of its own idea (its own id and correlation id, the trace of a real tick)
            # whose payload is broken: readable headers, unreadable event.
            headers = dict(first[0].headers)
            headers["ce_id"] = b"poison-tick"
            headers["ce_correlationid"] = POISON_IDEA.encode()
            pipeline.publish_raw(TICK_TOPIC, first[0].key, b"{not json", list(headers.items()))
            pipeline.publish_raw(TICK_TOPIC, b"738561", b"not a cloudevent", [])
            pipeline.drain()
        deltas = {k: metric_sample(*v) - before[k] for k, v in WATCHED.items()}
        log = read_all(kafka.bootstrap_servers, list(BROKERS))
        poison_trace = headers["traceparent"].decode().split("-")[1]
        yield Run(kafka.bootstrap_servers, list(exporter.get_finished_spans()), log, deltas, poison_trace)


def _attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


# --- unreadable records ------------------------------------------------------------------------


def test_run_when_a_record_cannot_be_decoded_then_each_consumer_records_an_error_span_in_its_trace(
    run: Run,
) -> None:
    unreadable = [s for s in run.spans if _attrs(s).get("error.type") == "undecodable"]
    poison = [s for s in unreadable if _attrs(s).get("correlationid") == POISON_IDEA]

    # Three consumers read the ticks: the strategy runner and each broker's order matcher.
    assert sorted((_attrs(s)["alphapanda.function"], _attrs(s)["broker"]) for s in poison) == [
        (MATCHER, "paper"),
        (MATCHER, "paper-2"),
        ("strategy_runner", "shared"),
    ]
    for span in poison:
        assert span.name == f"process {TICK_TOPIC}"
        assert span.status.status_code is StatusCode.ERROR
        assert _attrs(span)["cloudevents.event_id"] == "poison-tick"
        assert _trace_id(span) == run.poison_trace_id  # the trace its traceparent header names
        assert str(_attrs(span)["alphapanda.dead_letter.reason"])
    # The record without headers is a root of its own, but an error span all the same.
    assert len(unreadable) == 6


def test_run_when_records_cannot_be_decoded_then_dead_letters_are_counted_with_their_reason(run: Run) -> None:
    assert run.deltas["runner_undecodable"] == 2
    assert run.deltas["runner_dead_outcome"] == 2
    for broker in BROKERS:
        assert run.deltas[f"matcher_undecodable_{broker}"] == 2
    assert len(run.log[topics.dlq(TICK_TOPIC)]) == 6


def test_trace_command_when_an_ideas_record_was_unreadable_then_its_dead_letter_is_shown(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _trace(run, POISON_IDEA, capsys)

    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"trading idea {POISON_IDEA}: 1 events"
    (row,) = [line for line in lines if "poison-tick" in line]
    assert topics.dlq(TICK_TOPIC) in row
    assert "dead-lettered, unreadable:" in row
    assert (
        lines[-1] == f"unreadable dead letters that name no trading idea: 1 (1 on {topics.dlq(TICK_TOPIC)})"
    )


def test_trace_command_when_an_idea_filled_then_unreadable_dead_letters_of_no_idea_are_counted_below(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    fill = run.events(topics.orders_filled("paper"))[0]

    code, out = _trace(run, fill.correlationid, capsys)

    assert code == 0, out
    lines = out.splitlines()
    assert lines[-2].startswith("tick to fill: paper ")
    assert (
        lines[-1] == f"unreadable dead letters that name no trading idea: 1 (1 on {topics.dlq(TICK_TOPIC)})"
    )
    assert "poison-tick" not in out


# --- rejected signals --------------------------------------------------------------------------


def test_run_when_a_signal_is_rejected_then_its_span_names_the_rule_and_the_reason(run: Run) -> None:
    # Each once: the redelivery republished them, with the same ids.
    rejected = list({e.id: e for e in run.events(topics.signals_rejected(REJECTING))}.values())
    assert rejected
    risk_spans = [
        s
        for s in run.spans
        if _attrs(s).get("alphapanda.function") == "risk_manager" and _attrs(s).get("broker") == REJECTING
    ]
    marked = [s for s in risk_spans if _attrs(s).get("alphapanda.risk.outcome") == "rejected"]

    # Once per signal: its redelivery is a redelivery, not a second verdict.
    first = [s for s in marked if not _attrs(s).get("alphapanda.redelivered")]
    assert len(first) == len(rejected)
    for span in marked:
        attrs = _attrs(span)
        rules = list(attrs["alphapanda.risk.rules"])  # type: ignore[call-overload]
        reasons = list(attrs["alphapanda.risk.reasons"])  # type: ignore[call-overload]
        assert "max_order_value" in rules and attrs["alphapanda.risk.rule"] == rules[0]
        assert len(reasons) == len(rules) and all(reasons)
        assert {e.name for e in span.events} == {"risk rule failed"}
    # The span's reasons are the event's.
    by_id = {e.id: e for e in rejected}
    for span in first:
        (event,) = [by_id[i] for i in by_id if by_id[i].causationid == _attrs(span)["cloudevents.event_id"]]
        assert list(_attrs(span)["alphapanda.risk.reasons"]) == [  # type: ignore[call-overload]
            f.reason
            for f in event.data.failures  # type: ignore[union-attr]
        ]


# --- redeliveries ------------------------------------------------------------------------------


def test_run_when_every_tick_is_redelivered_then_no_new_trace_starts_and_it_stays_in_the_ticks_trace(
    run: Run,
) -> None:
    roots = [s for s in run.spans if s.parent is None]
    create = [s for s in roots if s.name == f"create {TICK_TOPIC}"]
    assert len(create) == TICKS
    # The only other roots: the error spans of the record without any headers, one per consumer.
    others = [s for s in roots if s not in create]
    assert [s.name for s in others] == [f"process {TICK_TOPIC}"] * 3
    assert {_attrs(s)["error.type"] for s in others} == {"undecodable"}

    runner = [s for s in run.spans if _attrs(s).get("alphapanda.function") == "strategy_runner"]
    runner = [s for s in runner if _attrs(s).get("error.type") is None]
    again = [s for s in runner if _attrs(s).get("alphapanda.redelivered") is True]
    assert len(again) == TICKS
    trace_of = {_attrs(s)["cloudevents.event_id"]: _trace_id(s) for s in runner if s not in again}
    assert all(trace_of[_attrs(s)["cloudevents.event_id"]] == _trace_id(s) for s in again)
    # Downstream, the republished outputs were redeliveries too, in the same traces.
    traces = {_trace_id(s) for s in create} | {run.poison_trace_id}
    redelivered = [s for s in run.spans if _attrs(s).get("alphapanda.redelivered") is True]
    assert {_attrs(s)["alphapanda.function"] for s in redelivered} >= {
        "strategy_runner",
        "risk_manager",
        "trading_engine",
        "portfolio_manager",
        MATCHER,
    }
    assert {_trace_id(s) for s in run.spans} <= traces | {_trace_id(r) for r in roots}


def test_run_when_every_tick_is_redelivered_then_metrics_count_each_event_and_fill_once(run: Run) -> None:
    fills = {e.id for e in run.events(topics.orders_filled("paper"))}
    raw = {e.id for e in run.events(topics.signals_raw("paper"))}
    assert fills

    assert run.deltas["runner_ok"] == TICKS
    assert run.deltas["runner_redelivered"] == TICKS
    assert run.deltas["risk_ok"] == len(raw)
    assert run.deltas["tick_to_fill"] == len(fills)


# --- the order matchers ------------------------------------------------------------------------


def test_run_when_ticks_reach_the_order_matchers_then_spans_and_metrics_are_labelled_per_broker(
    run: Run,
) -> None:
    matcher = [
        s
        for s in run.spans
        if _attrs(s).get("alphapanda.function") == MATCHER and not _attrs(s).get("error.type")
    ]

    by_broker = {b: [s for s in matcher if _attrs(s)["broker"] == b] for b in BROKERS}
    assert {b: len(s) for b, s in by_broker.items()} == {b: 2 * TICKS for b in BROKERS}
    assert len(matcher) == 4 * TICKS
    for broker, spans in by_broker.items():
        assert {_attrs(s)["messaging.consumer.group.name"] for s in spans} == {
            f"alphapanda-{broker}-order-matcher"
        }
    for broker in BROKERS:
        assert run.deltas[f"matcher_ok_{broker}"] == TICKS
    assert run.deltas["matcher_ok_shared"] == 0
