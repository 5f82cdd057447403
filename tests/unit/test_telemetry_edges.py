"""Telemetry at the edges: rejected signals, redeliveries, unreadable records, the order matcher's
broker, and how `alphapanda trace` shows unreadable dead letters."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

from alphapanda import telemetry
from alphapanda.brokers.factory import TraderFactory
from alphapanda.bus.delivery import deliver, deliver_batch
from alphapanda.cli_trace import Hop, Unreadable, render
from alphapanda.config import BrokerSettings, FillSettings, RiskLimits, Settings
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.strategy import EmaCrossover
from alphapanda.events import IST, Event, EventType, MarketTick, tick_event
from alphapanda.runtime import function
from alphapanda.runtime.bootstrap import build_core
from alphapanda.stages.order_matcher import OrderMatcher
from alphapanda.stages.risk_manager import RiskManager
from alphapanda.stages.strategy_runner import StrategyRunner
from alphapanda.stages.trading_engine import TradingEngine
from alphapanda.state.store import MemoryStateStore, Republished, StateStore
from alphapanda.strategies import StrategySpec
from alphapanda.topics import Function
from risk_signals import MID_SESSION, raw_event, risk_signal

D = Decimal
TOKEN = 738561
T0 = datetime(2025, 11, 24, 9, 15, tzinfo=IST)
RELIANCE = Instrument(TOKEN, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", D("0.05"), 1, D("1480"))
SPEC = StrategySpec("ema_edge", EmaCrossover(fast=1, slow=2, quantity=10), frozenset({TOKEN}), ("paper",))
TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def _tick(n: int, price: str) -> Event:
    tick = MarketTick(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=D(price),
        bid=D(price) - D("0.05"),
        ask=D(price),
        exchange_timestamp=T0 + timedelta(seconds=n),
    )
    return tick_event(tick, f"edge-tick-{n}")


def _traders(*brokers: str) -> TraderFactory:
    settings = Settings(
        brokers=brokers, broker={b: BrokerSettings(fills=FillSettings(slippage_bps=D(0))) for b in brokers}
    )
    return TraderFactory(settings, {TOKEN: RELIANCE})


# --- rejected signals --------------------------------------------------------------------------


def test_deliver_when_risk_rejects_a_signal_then_its_span_carries_every_rule_and_reason(
    spans: InMemorySpanExporter,
) -> None:
    risk = RiskManager(frozenset({"paper"}), limits_for=lambda _b: RiskLimits(max_order_value=D(1)))

    (rejected,) = cast(list[Event], deliver(risk, raw_event(risk_signal(at=MID_SESSION)), MemoryStateStore()))

    failures = rejected.data.failures  # type: ignore[union-attr]
    (span,) = spans.get_finished_spans()
    attrs = _attrs(span)
    assert attrs["alphapanda.risk.outcome"] == "rejected"
    assert list(attrs["alphapanda.risk.rules"]) == [f.rule for f in failures]
    assert list(attrs["alphapanda.risk.reasons"]) == [f.reason for f in failures]
    assert "max_order_value" in attrs["alphapanda.risk.rules"]
    assert attrs["alphapanda.risk.rule"] == failures[0].rule
    assert [dict(e.attributes or {}) for e in span.events] == [
        {"alphapanda.risk.rule": f.rule, "alphapanda.risk.reason": f.reason} for f in failures
    ]
    # A rejection is a verdict, not an error.
    assert span.status.status_code is not StatusCode.ERROR


def test_deliver_when_risk_validates_a_signal_then_its_span_names_no_rule(
    spans: InMemorySpanExporter,
) -> None:
    deliver(RiskManager(frozenset({"paper"})), raw_event(risk_signal()), MemoryStateStore())

    (span,) = spans.get_finished_spans()
    assert not any(k.startswith("alphapanda.risk.") for k in _attrs(span))


# --- redeliveries ------------------------------------------------------------------------------


def _seeded_runner(store: MemoryStateStore) -> tuple[StrategyRunner, Event]:
    runner = StrategyRunner([SPEC], frozenset({"paper"}))
    deliver(runner, _tick(1, "1480"), store)
    (tick,) = telemetry.start_traces([_tick(2, "1490")])
    return runner, tick


def test_deliver_when_an_event_is_redelivered_then_it_stays_in_its_trace_and_is_counted_once(
    spans: InMemorySpanExporter,
) -> None:
    store = MemoryStateStore()
    runner, tick = _seeded_runner(store)
    ok = {"function": "strategy_runner", "broker": "shared", "outcome": "ok"}
    again = {"function": "strategy_runner", "broker": "shared"}
    before = (
        _sample("alphapanda_events_processed_total", **ok),
        _sample("alphapanda_redelivered_total", **again),
    )
    spans.clear()

    first = cast(list[Event], deliver(runner, tick, store))
    second = cast(list[Event], deliver(runner, tick, store))

    assert first and type(second) is list
    assert [e.id for e in second] == [e.id for e in first]
    original, redelivery = spans.get_finished_spans()
    assert "alphapanda.redelivered" not in _attrs(original)
    assert _attrs(redelivery)["alphapanda.redelivered"] is True
    assert _trace_id(redelivery) == _trace_id(original) == tick.traceparent.split("-")[1]  # type: ignore[union-attr]
    assert second[0].traceparent is not None and TRACE not in second[0].traceparent
    assert second[0].traceparent.split("-")[1] == _trace_id(original)
    assert _sample("alphapanda_events_processed_total", **ok) == before[0] + 1
    assert _sample("alphapanda_redelivered_total", **again) == before[1] + 1


def test_deliver_when_a_fill_is_redelivered_then_tick_to_fill_is_observed_once(untraced: None) -> None:
    store = MemoryStateStore()
    runner, tick = _seeded_runner(store)
    (signal,) = cast(list[Event], deliver(runner, tick, store))
    (validated,) = cast(list[Event], deliver(RiskManager(frozenset({"paper"}), rules=()), signal, store))
    engine = TradingEngine(frozenset({"paper"}), traders=_traders("paper"))
    labels = {"broker": "paper", "strategy": "ema_edge"}
    before = _sample("alphapanda_tick_to_fill_seconds_count", **labels)

    deliver(engine, validated, store)
    deliver(engine, validated, store)

    assert _sample("alphapanda_tick_to_fill_seconds_count", **labels) == before + 1


class _OwnClaims:
    """An effectful stage keeping its own claims, as the zerodha trader does: a repeat of an
    event answers with the outputs it first produced, marked `Republished`."""

    function = Function.TRADING_ENGINE
    accepts = EventType.SIGNAL_VALIDATED
    brokers = frozenset({"zerodha"})

    def __init__(self) -> None:
        self._done: dict[str, list[Event]] = {}

    def handle(self, event: Event, store: StateStore) -> list[Event]:
        done = self._done.get(event.id)
        if done is not None:
            return Republished(done)
        self._done[event.id] = []
        return []


def test_deliver_when_an_effectful_stage_answers_republished_then_it_is_counted_as_a_redelivery(
    untraced: None,
) -> None:
    stage, event = (
        _OwnClaims(),
        replace(raw_event(risk_signal()), type=EventType.SIGNAL_VALIDATED, broker="zerodha"),
    )
    ok = {"function": "trading_engine", "broker": "zerodha", "outcome": "ok"}
    again = {"function": "trading_engine", "broker": "zerodha"}
    before = (
        _sample("alphapanda_events_processed_total", **ok),
        _sample("alphapanda_redelivered_total", **again),
    )

    deliver(stage, event, MemoryStateStore())  # type: ignore[arg-type]
    second = deliver(stage, event, MemoryStateStore())  # type: ignore[arg-type]

    assert type(second) is list  # the mark does not travel past telemetry
    assert _sample("alphapanda_events_processed_total", **ok) == before[0] + 1
    assert _sample("alphapanda_redelivered_total", **again) == before[1] + 1


def test_deliver_batch_when_events_repeat_then_the_repeats_are_redeliveries_in_their_traces(
    spans: InMemorySpanExporter,
) -> None:
    store = MemoryStateStore()
    runner, tick = _seeded_runner(store)
    later = telemetry.start_traces([_tick(3, "1470")])
    again = {"function": "strategy_runner", "broker": "shared"}
    before = _sample("alphapanda_redelivered_total", **again)
    spans.clear()

    first = deliver_batch(runner, [tick, tick, *later], store)
    second = deliver_batch(runner, [tick], store)

    assert all(type(r) is list for r in [*first.results, *second.results])
    assert [e.id for e in cast(list[Event], second.results[0])] == [
        e.id for e in cast(list[Event], first.results[0])
    ]
    marked = [_attrs(s).get("alphapanda.redelivered", False) for s in spans.get_finished_spans()]
    assert marked == [False, True, False, True]
    assert _sample("alphapanda_redelivered_total", **again) == before + 2
    assert {_trace_id(s) for s in spans.get_finished_spans()[:2]} == {tick.traceparent.split("-")[1]}  # type: ignore[union-attr]


# --- unreadable records ------------------------------------------------------------------------


def test_record_unreadable_when_headers_name_a_trace_then_the_error_span_joins_it_and_is_counted(
    spans: InMemorySpanExporter,
) -> None:
    dead = {
        "function": "order_matcher",
        "broker": "paper",
        "topic": "market.equity.ticks",
        "reason": "undecodable",
    }
    outcome = {"function": "order_matcher", "broker": "paper", "outcome": "dead_lettered"}
    before = (
        _sample("alphapanda_dead_lettered_total", **dead),
        _sample("alphapanda_events_processed_total", **outcome),
    )
    headers = [("traceparent", TRACEPARENT.encode()), ("ce_id", b"bad-1"), ("ce_correlationid", b"idea-9")]

    telemetry.record_unreadable(Function.ORDER_MATCHER, "paper", "market.equity.ticks", "no payload", headers)

    (span,) = spans.get_finished_spans()
    assert span.name == "process market.equity.ticks"
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "no payload"
    assert _trace_id(span) == TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    attrs = _attrs(span)
    assert attrs["error.type"] == "undecodable"
    assert attrs["alphapanda.dead_letter.reason"] == "no payload"
    assert attrs["cloudevents.event_id"] == "bad-1" and attrs["correlationid"] == "idea-9"
    assert attrs["broker"] == "paper"
    assert attrs["messaging.consumer.group.name"] == "alphapanda-paper-order-matcher"
    assert _sample("alphapanda_dead_lettered_total", **dead) == before[0] + 1
    assert _sample("alphapanda_events_processed_total", **outcome) == before[1] + 1


def test_record_unreadable_when_headers_are_garbage_then_the_span_is_a_root(
    spans: InMemorySpanExporter,
) -> None:
    telemetry.record_unreadable(
        "market_feed",
        None,
        "market.equity.ticks",
        "not json",
        [("traceparent", b"\xff\xfe"), ("ce_id", b"x")],
    )

    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert _attrs(span)["broker"] == "shared"
    assert "messaging.consumer.group.name" not in _attrs(span)


def test_record_unreadable_when_tracing_is_off_then_it_is_still_counted(untraced: None) -> None:
    dead = {
        "function": "strategy_runner",
        "broker": "shared",
        "topic": "market.fno.ticks",
        "reason": "undecodable",
    }
    before = _sample("alphapanda_dead_lettered_total", **dead)

    telemetry.record_unreadable(Function.STRATEGY_RUNNER, None, "market.fno.ticks", "no ce_id")

    assert _sample("alphapanda_dead_lettered_total", **dead) == before + 1


def test_function_dead_letter_when_the_request_is_unreadable_then_it_is_traced_for_the_matchers_broker(
    spans: InMemorySpanExporter,
) -> None:
    settings = Settings(brokers=("paper",))
    rt = function.FunctionRuntime(settings, build_core(settings), cast(Any, None), cast(Any, None))
    dead = {
        "function": "order_matcher",
        "broker": "paper",
        "topic": "market.equity.ticks",
        "reason": "undecodable",
    }
    before = _sample("alphapanda_dead_lettered_total", **dead)

    topic, _key, _value, headers = function._dead_letter_record(
        rt,
        Function.ORDER_MATCHER,
        {"id": "bad-2", "traceparent": TRACEPARENT},
        b"{",
        function.DeadLetter("not a tick", 1, cause=telemetry.DEAD_LETTER_UNDECODABLE),
    )

    assert topic == "market.equity.ticks.dlq"
    assert ("ce_deadletterreason", b"not a tick") in headers
    (span,) = spans.get_finished_spans()
    assert _trace_id(span) == TRACE and _attrs(span)["broker"] == "paper"
    assert _sample("alphapanda_dead_lettered_total", **dead) == before + 1


# --- the order matcher's broker ----------------------------------------------------------------


def test_deliver_when_a_matcher_serves_one_broker_then_its_span_and_metrics_name_that_broker(
    spans: InMemorySpanExporter,
) -> None:
    matcher = OrderMatcher(frozenset({"paper", "paper-2"}), traders=_traders("paper", "paper-2"))
    ok = {"function": "order_matcher", "outcome": "ok"}
    before = {
        b: _sample("alphapanda_events_processed_total", broker=b, **ok)
        for b in ("paper", "paper-2", "shared")
    }

    for broker in ("paper", "paper-2"):
        deliver(matcher.for_broker(broker), _tick(1, "1480"), MemoryStateStore())
    deliver(matcher, _tick(1, "1480"), MemoryStateStore())  # two brokers on one delivery: not one's

    got = [
        (_attrs(s)["broker"], _attrs(s)["messaging.consumer.group.name"]) for s in spans.get_finished_spans()
    ]
    assert got == [
        ("paper", "alphapanda-paper-order-matcher"),
        ("paper-2", "alphapanda-paper-2-order-matcher"),
        ("shared", "alphapanda-shared-order-matcher"),
    ]
    after = {b: _sample("alphapanda_events_processed_total", broker=b, **ok) for b in before}
    assert {b: after[b] - before[b] for b in before} == {"paper": 1, "paper-2": 1, "shared": 1}


def test_deliver_when_a_shared_stage_runs_for_one_broker_then_it_stays_shared(
    spans: InMemorySpanExporter,
) -> None:
    deliver(StrategyRunner([SPEC], frozenset({"paper"})), _tick(1, "1480"), MemoryStateStore())

    (span,) = spans.get_finished_spans()
    assert _attrs(span)["broker"] == "shared"


# --- `alphapanda trace` ------------------------------------------------------------------------


def _letter(event_id: str | None, correlationid: str | None, at: datetime | None) -> Unreadable:
    return Unreadable("paper.signals.raw.dlq", "bad payload", at, event_id, correlationid, "paper", None)


def test_render_when_an_ideas_record_is_unreadable_then_it_is_a_row_in_time_order() -> None:
    tick = _tick(1, "1480")
    late = tick.time + timedelta(seconds=2)
    letters = [
        _letter("sig-9", tick.correlationid, late),
        _letter(None, None, None),
        _letter(None, None, late),
    ]

    out = render(tick.correlationid, [Hop(tick, "market.equity.ticks")], letters).splitlines()

    assert out[0] == f"trading idea {tick.correlationid}: 2 events on paper"
    assert "market.equity.ticks" in out[2]
    row = out[3]
    assert "paper.signals.raw.dlq" in row and "sig-9" in row and "unreadable" in row
    assert row.endswith("dead-lettered, unreadable: bad payload")
    assert "+" not in row.split()[2] and "2.000 s" in row
    assert out[4] == "unreadable dead letters that name no trading idea: 2 (2 on paper.signals.raw.dlq)"


def test_render_when_only_an_unreadable_record_names_the_idea_then_it_is_listed() -> None:
    at = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)

    out = render("idea-x", [], [_letter("e-1", "idea-x", at), _letter("e-2", "idea-y", at)]).splitlines()

    assert out[0] == "trading idea idea-x: 1 events on paper"
    assert len(out) == 3 and "e-1" in out[2] and "e-2" not in "\n".join(out)
    assert out[2].startswith("2026-01-05 09:30:00.000")  # shown in IST


def test_render_when_nothing_names_the_idea_then_it_says_so() -> None:
    assert render("idea-z", [], [_letter(None, None, None)]) == "no events with correlationid idea-z"
