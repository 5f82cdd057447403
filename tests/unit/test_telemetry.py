"""Tracing and metrics of a delivery: one trace per idea, branches per broker, W3C headers, counters."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from alphapanda import telemetry
from alphapanda.brokers.factory import TraderFactory
from alphapanda.bus.delivery import DeadLetter, deliver
from alphapanda.bus.kafka import from_kafka, to_kafka
from alphapanda.config import BrokerSettings, FillSettings, Settings
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.strategy import EmaCrossover
from alphapanda.events import IST, Event, EventType, MarketTick, OrderFilled, tick_event
from alphapanda.stages import AnyStage
from alphapanda.stages.portfolio_manager import PortfolioManager
from alphapanda.stages.risk_manager import RiskManager
from alphapanda.stages.strategy_runner import StrategyRunner
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.state.store import MemoryStateStore, StateStore
from alphapanda.strategies import StrategySpec
from alphapanda.topics import Function

D = Decimal
TOKEN = 738561
T0 = datetime(2025, 11, 24, 9, 15, tzinfo=IST)
RELIANCE = Instrument(TOKEN, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", D("0.05"), 1, D("1480"))
BROKERS = ("paper", "paper-2")
# fast=1, slow=2: the first tick seeds the EMAs, the second one above it crosses and buys 10.
SPEC = StrategySpec("ema_test", EmaCrossover(fast=1, slow=2, quantity=10), frozenset({TOKEN}), BROKERS)


@dataclass(frozen=True)
class Stages:
    runner: StrategyRunner
    risk: RiskManager
    engine: TradingEngine
    portfolio: PortfolioManager


@pytest.fixture
def pipeline() -> Stages:
    brokers = frozenset(BROKERS)
    settings = Settings(
        brokers=BROKERS,
        broker={b: BrokerSettings(fills=FillSettings(slippage_bps=D(0))) for b in BROKERS},
    )
    return Stages(
        StrategyRunner([SPEC], brokers),
        # No rules: these tests are about the trace, not about what the risk manager allows.
        RiskManager(brokers, rules=()),
        TradingEngine(brokers, traders=TraderFactory(settings, {TOKEN: RELIANCE})),
        PortfolioManager(brokers),
    )


def _tick(n: int, bid: str, ask: str) -> Event:
    tick = MarketTick(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=D(ask),
        bid=D(bid),
        ask=D(ask),
        exchange_timestamp=T0 + timedelta(seconds=n),
    )
    return tick_event(tick, f"tick-{n}")


def _run(stage: AnyStage, event: Event, store: MemoryStateStore) -> list[Event]:
    result = deliver(stage, event, store)
    assert isinstance(result, list), result
    return result


def _idea(p: Stages, store: MemoryStateStore) -> dict[str, list[Event]]:
    """Seed the EMAs, then send the crossing tick (as the publisher would) through every stage."""
    _run(p.runner, _tick(1, "1479.95", "1480.05"), store)
    (tick,) = telemetry.start_traces([_tick(2, "1489.95", "1490.05")])
    signals = _run(p.runner, tick, store)
    out: dict[str, list[Event]] = {"tick": [tick], "signals": signals}
    for signal in signals:
        (validated,) = _run(p.risk, signal, store)
        submitted, filled = _run(p.engine, validated, store)
        (pnl,) = _run(p.portfolio, filled, store)
        out[str(signal.broker)] = [signal, validated, submitted, filled, pnl]
    return out


def _trace_id(traceparent: str | None) -> str:
    assert traceparent is not None
    return traceparent.split("-")[1]


def _span_id(traceparent: str | None) -> str:
    assert traceparent is not None
    return traceparent.split("-")[2]


def _by_span_id(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {f"{s.context.span_id:016x}": s for s in exporter.get_finished_spans() if s.context}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- one trace per idea ------------------------------------------------------------------------


def test_deliver_when_an_idea_flows_tick_to_pnl_then_every_hop_shares_the_tick_trace(
    spans: InMemorySpanExporter, pipeline: Stages
) -> None:
    flow = _idea(pipeline, MemoryStateStore())

    (tick,) = flow["tick"]
    trace_id = _trace_id(tick.traceparent)
    for broker in BROKERS:
        assert [_trace_id(e.traceparent) for e in flow[broker]] == [trace_id] * 5
    process_spans = [s for s in spans.get_finished_spans() if s.name.startswith("process")]
    traced = [s for s in process_spans if s.context and f"{s.context.trace_id:032x}" == trace_id]
    # strategy runner once, then risk, engine and portfolio per broker
    assert len(traced) == 1 + 3 * len(BROKERS)


def test_deliver_when_outputs_leave_a_stage_then_their_traceparent_is_the_process_span(
    spans: InMemorySpanExporter, pipeline: Stages
) -> None:
    flow = _idea(pipeline, MemoryStateStore())
    by_id = _by_span_id(spans)

    signal, validated, submitted, filled, pnl = flow["paper"]
    chain = [flow["tick"][0], signal, validated, filled, pnl]
    for parent_event, child_event in itertools.pairwise(chain):
        span = by_id[_span_id(child_event.traceparent)]
        assert span.parent is not None
        assert f"{span.parent.span_id:016x}" == _span_id(parent_event.traceparent)
    assert submitted.traceparent == filled.traceparent  # both outputs of one engine span
    root = by_id[_span_id(flow["tick"][0].traceparent)]
    assert (root.name, root.kind, root.parent) == ("create market.equity.ticks", SpanKind.PRODUCER, None)


def test_strategy_runner_when_an_idea_fans_out_to_two_brokers_then_risk_spans_are_sibling_branches(
    spans: InMemorySpanExporter, pipeline: Stages
) -> None:
    flow = _idea(pipeline, MemoryStateStore())
    by_id = _by_span_id(spans)

    risk_spans = [by_id[_span_id(flow[b][1].traceparent)] for b in BROKERS]
    runner_span = by_id[_span_id(flow["signals"][0].traceparent)]
    assert [s.name for s in risk_spans] == ["process paper.signals.raw", "process paper-2.signals.raw"]
    assert {s.parent.span_id for s in risk_spans if s.parent} == {runner_span.context.span_id}
    assert len({s.context.span_id for s in risk_spans}) == 2
    assert [s.attributes["broker"] for s in risk_spans if s.attributes] == list(BROKERS)


def test_process_span_when_an_event_is_delivered_then_it_follows_messaging_semconv(
    spans: InMemorySpanExporter, pipeline: Stages
) -> None:
    flow = _idea(pipeline, MemoryStateStore())
    signal, validated, *_ = flow["paper"]

    span = _by_span_id(spans)[_span_id(validated.traceparent)]
    assert span.name == "process paper.signals.raw"
    assert span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": "paper.signals.raw",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.consumer.group.name": "alphapanda-paper-risk-manager",
        "messaging.message.id": signal.id,
        "messaging.message.conversation_id": signal.correlationid,
        "messaging.kafka.message.key": str(TOKEN),
        "cloudevents.event_id": signal.id,
        "cloudevents.event_source": signal.source,
        "cloudevents.event_type": "com.alphapanda.signal.raw",
        "cloudevents.event_spec_version": "1.0",
        "correlationid": signal.correlationid,
        "causationid": signal.causationid,
        "broker": "paper",
        "alphapanda.function": "risk_manager",
        "alphapanda.outputs": 1,
    }


def test_start_traces_when_an_event_already_has_context_then_it_is_left_alone(
    spans: InMemorySpanExporter,
) -> None:
    traced = replace(_tick(1, "1479.95", "1480.05"), traceparent=f"00-{'a' * 32}-{'b' * 16}-01")

    assert list(telemetry.start_traces([traced])) == [traced]
    assert spans.get_finished_spans() == ()


# --- on the wire -------------------------------------------------------------------------------


def test_to_kafka_when_the_event_has_a_traceparent_then_the_w3c_header_carries_it(
    spans: InMemorySpanExporter,
) -> None:
    (tick,) = telemetry.start_traces([_tick(1, "1479.95", "1480.05")])

    _key, _value, headers = to_kafka(tick)

    assert dict(headers)["traceparent"] == str(tick.traceparent).encode()
    assert dict(headers)["ce_traceparent"] == str(tick.traceparent).encode()
    assert from_kafka(_key, _value, headers).traceparent == tick.traceparent


def test_to_kafka_when_the_event_has_no_trace_context_then_no_traceparent_header() -> None:
    _key, _value, headers = to_kafka(_tick(1, "1479.95", "1480.05"))

    assert "traceparent" not in dict(headers)


# --- tracing off -------------------------------------------------------------------------------


def test_deliver_when_tracing_is_off_then_outputs_carry_the_input_traceparent_unchanged(
    untraced: None, pipeline: Stages
) -> None:
    store = MemoryStateStore()
    origin = f"00-{'c' * 32}-{'d' * 16}-01"
    _run(pipeline.runner, _tick(1, "1479.95", "1480.05"), store)

    (tick,) = telemetry.start_traces([replace(_tick(2, "1489.95", "1490.05"), traceparent=None)])
    signals = _run(pipeline.runner, replace(tick, traceparent=origin), store)

    assert tick.traceparent is None
    assert {s.traceparent for s in signals} == {origin}
    assert not telemetry.tracing_enabled()


def test_tracing_when_the_environment_asks_for_an_unknown_exporter_then_delivery_still_succeeds(
    monkeypatch: pytest.MonkeyPatch, pipeline: Stages
) -> None:
    telemetry.reset_tracing()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-please")
    try:
        assert _run(pipeline.runner, _tick(1, "1479.95", "1480.05"), MemoryStateStore()) == []
        assert not telemetry.tracing_enabled()
    finally:
        telemetry.reset_tracing()


# --- failures ----------------------------------------------------------------------------------


def test_deliver_when_the_input_is_invalid_then_the_span_is_an_error_and_counted_dead_lettered(
    spans: InMemorySpanExporter, pipeline: Stages
) -> None:
    labels = {"function": "risk_manager", "broker": "unknown", "outcome": "dead_lettered"}
    before = _sample("alphapanda_events_processed_total", **labels)
    tick = _tick(1, "1479.95", "1480.05")
    stray = replace(tick, type=EventType.SIGNAL_RAW, broker="nobody")

    result = deliver(pipeline.risk, stray, MemoryStateStore())

    assert isinstance(result, DeadLetter)
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "invalid_event"
    assert _sample("alphapanda_events_processed_total", **labels) == before + 1


@dataclass(frozen=True)
class _Broken:
    function: Function = Function.TRADING_ENGINE
    accepts: EventType = EventType.MARKET_TICK

    def handle(self, event: Event, store: StateStore) -> list[Event]:
        raise ConnectionError("redis went away")


def test_deliver_when_the_stage_raises_then_the_exception_is_recorded_and_counted_failed(
    spans: InMemorySpanExporter,
) -> None:
    labels = {"function": "trading_engine", "broker": "shared", "outcome": "failed"}
    before = _sample("alphapanda_events_processed_total", **labels)

    with pytest.raises(ConnectionError):
        deliver(_Broken(), _tick(1, "1479.95", "1480.05"), MemoryStateStore())

    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "ConnectionError"
    assert [e.name for e in span.events] == ["exception"]
    assert _sample("alphapanda_events_processed_total", **labels) == before + 1


# --- metrics -----------------------------------------------------------------------------------


def test_deliver_when_events_are_handled_then_processed_counter_and_handler_histogram_grow(
    untraced: None, pipeline: Stages
) -> None:
    ok = {"function": "strategy_runner", "broker": "shared", "outcome": "ok"}
    hist = {"function": "strategy_runner", "broker": "shared"}
    before = (
        _sample("alphapanda_events_processed_total", **ok),
        _sample("alphapanda_handler_seconds_count", **hist),
    )

    _run(pipeline.runner, _tick(1, "1479.95", "1480.05"), MemoryStateStore())

    after = (
        _sample("alphapanda_events_processed_total", **ok),
        _sample("alphapanda_handler_seconds_count", **hist),
    )
    assert after == (before[0] + 1, before[1] + 1)


def test_trading_engine_when_it_fills_then_tick_to_fill_latency_and_pnl_are_recorded(
    untraced: None, pipeline: Stages
) -> None:
    labels = {"broker": "paper", "strategy": "ema_test"}
    count_before = _sample("alphapanda_tick_to_fill_seconds_count", **labels)
    sum_before = _sample("alphapanda_tick_to_fill_seconds_sum", **labels)

    flow = _idea(pipeline, MemoryStateStore())

    fill = flow["paper"][3].data
    assert isinstance(fill, OrderFilled)
    expected = (fill.filled_at - (T0 + timedelta(seconds=2))).total_seconds()
    assert _sample("alphapanda_tick_to_fill_seconds_count", **labels) == count_before + 1
    assert _sample("alphapanda_tick_to_fill_seconds_sum", **labels) - sum_before == pytest.approx(expected)
    pnl = _sample("alphapanda_pnl_rupees", broker="paper", strategy="ema_test", instrument="RELIANCE")
    assert pnl == pytest.approx(0.0)  # bought at the ask with no slippage, marked at that quote


# --- set-up from the environment ---------------------------------------------------------------


def test_exporters_from_env_when_only_an_otlp_endpoint_is_set_then_otlp_over_http_is_used() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    (exporter,) = telemetry.exporters_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})

    assert isinstance(exporter, OTLPSpanExporter)


def test_exporters_from_env_when_grpc_is_asked_then_otlp_over_grpc_is_used() -> None:
    # gRPC is the optional protocol: its exporter (and grpcio) need not be installed.
    grpc_exporter = pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    OTLPSpanExporter = grpc_exporter.OTLPSpanExporter

    (exporter,) = telemetry.exporters_from_env(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )

    assert isinstance(exporter, OTLPSpanExporter)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
    ],
)
def test_exporters_from_env_when_nothing_asks_for_traces_then_tracing_is_off(env: dict[str, str]) -> None:
    assert telemetry.exporters_from_env(env) == []


def test_exporters_from_env_when_console_and_a_trace_file_are_asked_then_both_are_built(
    tmp_path: Path,
) -> None:
    exporters = telemetry.exporters_from_env(
        {"OTEL_TRACES_EXPORTER": "console", "ALPHAPANDA_TRACE_FILE": str(tmp_path / "spans.jsonl")}
    )

    assert [type(e) for e in exporters] == [ConsoleSpanExporter, telemetry.JsonLinesSpanExporter]
    exporters[1].shutdown()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "use otlp, console or none"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "http/protobuf or grpc",
        ),
    ],
)
def test_exporters_from_env_when_a_setting_is_unsupported_then_it_says_which(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(telemetry.TelemetryConfigError, match=message):
        telemetry.exporters_from_env(env)


def test_trace_file_when_spans_end_then_each_is_one_json_line(tmp_path: Path, pipeline: Stages) -> None:
    path = tmp_path / "spans.jsonl"
    telemetry.configure_tracing([telemetry.JsonLinesSpanExporter(path)], batch=False)
    try:
        flow = _idea(pipeline, MemoryStateStore())
    finally:
        telemetry.reset_tracing()

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1 + 1 + 1 + 3 * len(BROKERS)  # seed tick, root, runner, three per broker
    trace_id = "0x" + _trace_id(flow["tick"][0].traceparent)
    assert sum(line["context"]["trace_id"] == trace_id for line in lines) == len(lines) - 1
