"""OpenTelemetry set-up and propagation, and the one wrapper every delivery runs through.

One trading idea is one trace: the event that enters the pipeline without trace context (a
tick, as the market feed publishes it) starts a trace with a `create {topic}` PRODUCER span;
every delivery of an event to a stage is a `process {topic}` CONSUMER span whose parent is the
event's `traceparent`; and the stage's outputs carry that span's context as their
`traceparent` (the CloudEvent extension, and the W3C `traceparent` Kafka header that Knative's
data plane reads). So tick -> signal -> risk -> order -> fill -> PnL chain into one trace, and
the strategy runner's copies of a signal for several brokers become sibling branches of it.
The dispatcher's batched path records the same span and metrics per event with
`record_delivery`, after its transaction committed (a redone transaction is recorded once).

What else a span says:
- a rejected signal's span names every rule that failed and why (`alphapanda.risk.rules`,
  `alphapanda.risk.reasons`, one span event per rule);
- a redelivery (the claim was there: the stage republished its stored outputs) stays in the
  trace of its record, is marked `alphapanda.redelivered`, and is counted apart
  (`alphapanda_redelivered_total`), not as a second `ok` or a second tick-to-fill: a store
  answers from a claim with `Republished` outputs, as the zerodha trader does;
- a record that is not one of our events gets a `process {topic}` span with an error status
  (`error.type` `undecodable`, its traceparent header as parent if it has one), as well as the
  dead-letter counter with its reason (`record_unreadable`);
- a broker-scoped stage fed by a shared topic (the order matcher on ticks, which carry no
  broker) is labelled with the one broker it serves, in spans and metrics alike.

Tracing is configured from the standard variables, lazily on the first event (a forked
functions-framework worker sets up its own exporter threads):
- `OTEL_TRACES_EXPORTER` = `otlp`, `console` and/or `none`; unset, `otlp` is chosen when
  `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. The OTLP
  protocol is `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`, the default, or `grpc`).
- `ALPHAPANDA_TRACE_FILE=PATH` appends every span to PATH as one JSON object per line.
- `OTEL_SDK_DISABLED=true` turns tracing off whatever else is set; the SDK itself reads
  `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER[_ARG]`.
With none of these, tracing is off and the wrapper costs a clock read and two metric updates.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from time import perf_counter
from typing import IO, TYPE_CHECKING, Final, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from alphapanda import metrics
from alphapanda.events import (
    Event,
    InvalidEvent,
    OrderFilled,
    PnlSnapshot,
    SignalRejected,
    SignalValidated,
)
from alphapanda.state.store import Republished
from alphapanda.topics import PIPELINE, Function, Scope

if TYPE_CHECKING:
    from alphapanda.stages import AnyStage
    from alphapanda.state.store import StateStore

log = logging.getLogger(__name__)

TRACE_FILE_ENV: Final = "ALPHAPANDA_TRACE_FILE"
DEFAULT_SERVICE_NAME: Final = "alphapanda"
TRACER_NAME: Final = "alphapanda"


class TelemetryConfigError(ValueError):
    """The OTEL_* / ALPHAPANDA_TRACE_FILE settings name an exporter that cannot be built."""


# --- set-up -----------------------------------------------------------------------------------


@dataclass
class _Tracing:
    configured: bool = False
    tracer: Tracer | None = None  # None: tracing is off, and the wrapper takes its fast path
    provider: TracerProvider | None = None
    # The provider we made global: once shut down it must not be adopted as someone else's.
    global_provider: TracerProvider | None = None


_tracing = _Tracing()
_lock = threading.Lock()
_lazy_lock = threading.Lock()
_propagator: Final = TraceContextTextMapPropagator()
_ROOT: Final = Context()


class JsonLinesSpanExporter(SpanExporter):
    """Append each finished span to a file as one JSON object per line (for local runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def exporters_from_env(env: Mapping[str, str] | None = None) -> list[SpanExporter]:
    """Return the span exporters the environment asks for (empty: tracing off)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "otlp":
            exporters.append(_otlp_exporter(env))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise TelemetryConfigError(
                f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none"
            )
    trace_file = env.get(TRACE_FILE_ENV, "").strip()
    if trace_file:
        exporters.append(JsonLinesSpanExporter(Path(trace_file)))
    return exporters


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    # The exporters read the endpoint, headers, timeout and compression from OTEL_* themselves.
    if protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TelemetryConfigError(
                "OTLP over HTTP needs the opentelemetry-exporter-otlp-proto-http package"
            ) from None
        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise TelemetryConfigError(
                "OTLP over gRPC needs the opentelemetry-exporter-otlp-proto-grpc package"
            ) from None
        # The gRPC exporter is optional (not a dependency), so its type may be unknown here.
        grpc_exporter: SpanExporter = GrpcSpanExporter()
        return grpc_exporter
    raise TelemetryConfigError(f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc")


def configure_tracing(
    exporters: Sequence[SpanExporter] | None = None,
    *,
    service_name: str = DEFAULT_SERVICE_NAME,
    batch: bool = True,
) -> bool:
    """Set up tracing with `exporters` (default: those the environment asks for); return whether it is on.

    Replaces an earlier set-up (flushing it). `batch=False` exports each span as it ends, which
    tests with an in-memory exporter want. Raise `TelemetryConfigError` on a bad setting.
    """
    chosen = list(exporters_from_env() if exporters is None else exporters)
    with _lock:
        _shutdown_locked()
        _tracing.configured = True
        if not chosen:
            # Someone else (e.g. `opentelemetry-instrument`) may already have set up the SDK.
            existing = trace.get_tracer_provider()
            if isinstance(existing, TracerProvider) and existing is not _tracing.global_provider:
                _tracing.tracer = existing.get_tracer(TRACER_NAME)
            return _tracing.tracer is not None
        resource = Resource.create({})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service_name}))
        provider = TracerProvider(resource=resource)
        for exporter in chosen:
            provider.add_span_processor(
                BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
            )
        _tracing.provider = provider
        _tracing.tracer = provider.get_tracer(TRACER_NAME)
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            # The first provider becomes the global one too, so that other instrumentation
            # (HTTP clients, Redis) joins the same traces. The API allows setting it only once.
            trace.set_tracer_provider(provider)
            _tracing.global_provider = provider
        return True


def shutdown_tracing() -> None:
    """Flush and stop the exporters; tracing is off until configured again."""
    with _lock:
        _shutdown_locked()


def reset_tracing() -> None:
    """Flush and forget the set-up: the next event configures tracing from the environment again."""
    with _lock:
        _shutdown_locked()
        _tracing.configured = False


def _shutdown_locked() -> None:
    if _tracing.provider is not None:
        _tracing.provider.shutdown()
    _tracing.provider = None
    _tracing.tracer = None


def tracing_enabled() -> bool:
    return _tracer() is not None


def _tracer() -> Tracer | None:
    if _tracing.configured:
        return _tracing.tracer
    with _lazy_lock:  # several workers' first events arrive together: set up once
        if not _tracing.configured:
            try:
                configure_tracing()
            except Exception:
                # Called from inside a delivery: a bad telemetry setting must not fail (and so
                # dead-letter) trading events. Say so once and run untraced.
                log.exception("tracing is off: its settings are invalid")
                with _lock:
                    _tracing.configured = True
    return _tracing.tracer


# --- propagation ------------------------------------------------------------------------------


def traceparent_of(span: trace.Span) -> str | None:
    """Return the W3C `traceparent` of `span` (None for an invalid span context)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_of(traceparent: str | None) -> Context | None:
    """Return the parent context a `traceparent` names (None: start a new trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def start_traces(events: Iterable[Event]) -> Iterable[Event]:
    """Start a trace (a `create {topic}` span) for every event without trace context; pass the rest.

    The publisher calls this for everything it produces, so whatever enters the pipeline (the
    market feed's ticks) is the root of the trace of everything it causes.
    """
    tracer = _tracer()
    if tracer is None:
        return events
    out: list[Event] = []
    for event in events:
        if event.traceparent is not None:
            out.append(event)
            continue
        topic = _topic_of(event)
        attributes = _event_attributes(event, topic)
        attributes["messaging.operation.type"] = "create"
        attributes["messaging.operation.name"] = "create"
        # Never current: nothing runs inside it, and the empty context makes it a root.
        span = tracer.start_span(
            f"create {topic}", context=_ROOT, kind=SpanKind.PRODUCER, attributes=attributes
        )
        out.append(replace(event, traceparent=traceparent_of(span)))
        span.end()
    return out


# --- the delivery wrapper ---------------------------------------------------------------------

_R = TypeVar("_R")
Deliver = Callable[["AnyStage", Event, "StateStore"], "list[Event] | _R"]


@dataclass(frozen=True, slots=True)
class _Bound:
    """What the wrapper needs for one (stage, broker), resolved once rather than per event."""

    stage: AnyStage  # held, so that the id(stage) in the cache key is never reused
    function: str
    broker: str
    consumer_group: str
    metrics: metrics.StageMetrics


_bound: dict[tuple[int, str | None], _Bound] = {}


def _bind(stage: AnyStage, event: Event) -> _Bound:
    if len(_bound) > 1024:
        _bound.clear()  # bad input naming ever new brokers must not grow the cache for ever
    function, broker = stage.function.value, _broker_label(stage, event)
    bound = _Bound(
        stage,
        function,
        broker,
        _consumer_group(stage.function, broker),
        metrics.stage_metrics(function, broker),
    )
    _bound[(id(stage), event.broker)] = bound
    return bound


def traced_delivery(deliver: Deliver[_R]) -> Deliver[_R]:
    """Wrap one delivery of an event to a stage (the dispatcher's and the function runtime's).

    The wrapper opens a `process {topic}` CONSUMER span under the event's `traceparent`, stamps
    the outputs with that span's context, and records the Prometheus metrics: outcome, handler
    time, tick-to-fill latency of fills and the PnL of snapshots. A result that is not a list of
    events is a dead letter (bad input); an exception is a failed attempt and propagates.
    """

    @functools.wraps(deliver)
    def wrapper(stage: AnyStage, event: Event, store: StateStore) -> list[Event] | _R:
        bound = _bound.get((id(stage), event.broker)) or _bind(stage, event)
        tracer = _tracing.tracer if _tracing.configured else _tracer()
        if tracer is not None:
            return _traced(tracer, bound, deliver, stage, event, store)
        started = perf_counter()
        try:
            result = deliver(stage, event, store)
        except BaseException:
            bound.metrics.failed(perf_counter() - started)
            raise
        _account(bound, event, result, perf_counter() - started, redelivered=_is_redelivery(result))
        return _plain(result)

    return wrapper


def _traced(
    tracer: Tracer, bound: _Bound, deliver: Deliver[_R], stage: AnyStage, event: Event, store: StateStore
) -> list[Event] | _R:
    started = perf_counter()
    span = _start_span(tracer, bound, event)
    # Current while the stage runs, so that instrumented clients (Redis, HTTP) join the trace.
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        try:
            result = deliver(stage, event, store)
        except BaseException as exc:
            _fail(span, exc)
            bound.metrics.failed(perf_counter() - started)
            raise
        redelivered = _is_redelivery(result)
        result = _finish(span, result, redelivered=redelivered)
        _account(bound, event, result, perf_counter() - started, redelivered=redelivered)
        return result
    finally:
        otel_context.detach(token)
        span.end()


def record_delivery(
    stage: AnyStage,
    event: Event,
    result: list[Event] | _R,
    *,
    started_ns: int,
    finished_ns: int,
    seconds: float,
) -> list[Event] | _R:
    """Record, after the fact, one delivery of `event` that a batch committed; return `result` stamped.

    The batched path decides many events in one state transaction, which may be redone on a
    conflict: only the attempt that committed may show up in traces and metrics, so nothing is
    recorded while it runs. The span gets the attempt's real start and end (wall clock, ns), and
    the outputs its context as their `traceparent`, exactly as `traced_delivery` would stamp them.
    `seconds` is the event's share of the batch's time, for the handler histogram.
    """
    bound = _bound.get((id(stage), event.broker)) or _bind(stage, event)
    redelivered = _is_redelivery(result)
    tracer = _tracing.tracer if _tracing.configured else _tracer()
    if tracer is not None:
        span = _start_span(tracer, bound, event, started_ns)
        result = _finish(span, result, redelivered=redelivered)
        span.end(end_time=finished_ns)
    _account(bound, event, result, seconds, redelivered=redelivered)
    return _plain(result)


def record_failed_delivery(
    stage: AnyStage,
    event: Event,
    exc: BaseException,
    *,
    started_ns: int,
    finished_ns: int,
    seconds: float,
) -> None:
    """Record one failed attempt (it is retried) of `event` in a batch that committed the others."""
    bound = _bound.get((id(stage), event.broker)) or _bind(stage, event)
    tracer = _tracing.tracer if _tracing.configured else _tracer()
    if tracer is not None:
        span = _start_span(tracer, bound, event, started_ns)
        _fail(span, exc, finished_ns)
        span.end(end_time=finished_ns)
    bound.metrics.failed(seconds)


def _start_span(tracer: Tracer, bound: _Bound, event: Event, started_ns: int | None = None) -> trace.Span:
    topic = _topic_of(event)
    # An event naming a broker keeps it (even one the stage does not run: spans, unlike metric
    # labels, may say anything); a tick takes the broker of the consumer it was delivered to.
    attributes = _event_attributes(event, topic, bound.broker if event.broker is None else None)
    attributes["messaging.operation.type"] = "process"
    attributes["messaging.operation.name"] = "process"
    attributes["messaging.consumer.group.name"] = bound.consumer_group
    attributes["alphapanda.function"] = bound.function
    return tracer.start_span(
        f"process {topic}",
        context=context_of(event.traceparent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        start_time=started_ns,
    )


def _finish(span: trace.Span, result: list[Event] | _R, *, redelivered: bool = False) -> list[Event] | _R:
    """Stamp the outputs of a successful delivery with `span`, or mark a dead letter on it."""
    if isinstance(result, list):
        traceparent = traceparent_of(span)
        outputs = cast(list[Event], result)
        span.set_attribute("alphapanda.outputs", len(outputs))
        if redelivered:
            span.set_attribute("alphapanda.redelivered", True)
        for out in outputs:
            if isinstance(out.data, SignalRejected):
                _mark_rejection(span, out.data)
        return [replace(e, traceparent=traceparent) for e in outputs]
    reason = str(getattr(result, "reason", result))
    span.set_attribute("error.type", DEAD_LETTER_INVALID)
    span.set_attribute("alphapanda.dead_letter.reason", reason)
    span.set_status(Status(StatusCode.ERROR, reason))
    return result


def _mark_rejection(span: trace.Span, rejected: SignalRejected) -> None:
    # Parallel arrays: a signal fails several rules at once, and TraceQL can match an element
    # ({ span.alphapanda.risk.rules = "max_order_value" }); the events keep each rule with its reason.
    rules = [f.rule for f in rejected.failures]
    span.set_attribute("alphapanda.risk.outcome", "rejected")
    span.set_attribute("alphapanda.risk.rules", rules)
    span.set_attribute("alphapanda.risk.reasons", [f.reason for f in rejected.failures])
    span.set_attribute("alphapanda.risk.rule", rules[0])
    for failure in rejected.failures:
        span.add_event(
            "risk rule failed",
            {"alphapanda.risk.rule": failure.rule, "alphapanda.risk.reason": failure.reason},
        )


def _fail(span: trace.Span, exc: BaseException, when_ns: int | None = None) -> None:
    span.record_exception(exc, timestamp=when_ns)
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _broker_label(stage: AnyStage, event: Event) -> str:
    broker = event.broker
    if broker is None:
        return served_broker(stage) or metrics.SHARED
    # A label value from bad input (a broker this stage does not run) would add a series per
    # typo; such events are dead-lettered anyway.
    known: frozenset[str] | None = getattr(stage, "brokers", None)
    return broker if known is None or broker in known else "unknown"


def served_broker(stage: AnyStage) -> str | None:
    """The one broker a broker-scoped stage serves, for events that carry none (ticks)."""
    sub = next((s for s in PIPELINE if s.function is stage.function), None)
    known: frozenset[str] | None = getattr(stage, "brokers", None)
    if sub is None or sub.scope is not Scope.BROKER or known is None or len(known) != 1:
        # Several brokers (an order matcher serving every paper broker of a process) cannot be
        # told apart on one delivery: such a stage stays `shared`, as before.
        return None
    (broker,) = known
    return broker


def _account(
    bound: _Bound, event: Event, result: object, seconds: float, *, redelivered: bool = False
) -> None:
    if not isinstance(result, list):
        bound.metrics.dead_lettered(seconds)
        return
    if redelivered:
        # The first delivery counted the event and its fills; this one changed nothing.
        bound.metrics.redelivered()
        return
    bound.metrics.ok(seconds)
    for out in result:
        data = out.data
        if isinstance(data, OrderFilled) and isinstance(event.data, SignalValidated) and out.broker:
            # The signal carries the exchange time of the tick that caused the idea.
            latency = (data.filled_at - event.data.signal.tick_time).total_seconds()
            metrics.record_tick_to_fill(out.broker, data.strategy, latency)
        elif isinstance(data, PnlSnapshot) and out.broker:
            metrics.record_pnl(
                out.broker, data.strategy, data.tradingsymbol, data.realised_pnl + data.unrealised_pnl
            )


DEAD_LETTER_UNDECODABLE: Final = "undecodable"
"""Dead-letter reason: the record is not one of our CloudEvents (no stage ever saw it)."""
DEAD_LETTER_INVALID: Final = "invalid_event"
"""Dead-letter reason: a stage refused the event as bad input."""
DEAD_LETTER_EXHAUSTED: Final = "retries_exhausted"
"""Dead-letter reason: every attempt failed."""


def record_dead_letter(
    function: Function | str, broker: str | None, topic: str, reason: str = DEAD_LETTER_INVALID
) -> None:
    """Count a record of `topic` sent to its dead-letter topic, by `reason` (one of the `DEAD_LETTER_*`)."""
    metrics.record_dead_letter(str(function), broker, topic, reason)


def record_unreadable(
    function: Function | str,
    broker: str | None,
    topic: str,
    reason: str,
    headers: Sequence[tuple[str, bytes]] = (),
) -> None:
    """Record a record of `topic` that is not one of our events, on its way to the dead-letter topic.

    No stage sees it, so this is its only trace: an error span under the record's own
    `traceparent` header, if it has a valid one (a broken payload of a traced event stays in
    its trace), the dead-letter counter (reason `undecodable`), and a `dead_lettered` outcome.
    """
    function_name = str(function)
    owner = broker or metrics.SHARED
    metrics.record_dead_letter(function_name, broker, topic, DEAD_LETTER_UNDECODABLE)
    metrics.stage_metrics(function_name, broker).dead_lettered(0.0)
    tracer = _tracing.tracer if _tracing.configured else _tracer()
    if tracer is None:
        return
    found = _header_texts(headers)
    traceparent = found.get("traceparent") or found.get("ce_traceparent")
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "alphapanda.function": function_name,
        "broker": owner,
        "error.type": DEAD_LETTER_UNDECODABLE,
        "alphapanda.dead_letter.reason": reason,
    }
    consumer = next((s for s in PIPELINE if s.function.value == function_name), None)
    if consumer is not None:  # the market feed's ingest is a source, in no consumer group
        attributes["messaging.consumer.group.name"] = consumer.consumer_group(broker)
    for header, attribute in (
        ("ce_id", "cloudevents.event_id"),
        ("ce_correlationid", "correlationid"),
        ("ce_causationid", "causationid"),
        ("ce_type", "cloudevents.event_type"),
    ):
        if header in found:
            attributes[attribute] = found[header]
    span = tracer.start_span(
        f"process {topic}",
        context=context_of(traceparent) or _ROOT,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )
    span.set_status(Status(StatusCode.ERROR, reason))
    span.end()


def _header_texts(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers:
        try:
            out.setdefault(name.lower(), raw.decode())
        except UnicodeDecodeError:
            continue  # a header that is not text cannot name a trace or an id anyway
    return out


# --- redeliveries -----------------------------------------------------------------------------


def _is_redelivery(result: object) -> bool:
    return isinstance(result, Republished)


def _plain(result: list[Event] | _R) -> list[Event] | _R:
    """The outputs as a plain list: the mark is for telemetry, not for the caller."""
    return list(result) if isinstance(result, Republished) else result


def _topic_of(event: Event) -> str:
    try:
        return event.topic
    except InvalidEvent:
        return "unknown"


def _event_attributes(event: Event, topic: str, broker: str | None = None) -> dict[str, str]:
    attrs = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.message.id": event.id,
        "messaging.message.conversation_id": event.correlationid,
        "messaging.kafka.message.key": event.partitionkey,
        "cloudevents.event_id": event.id,
        "cloudevents.event_source": event.source,
        "cloudevents.event_type": event.type.value,
        "cloudevents.event_spec_version": "1.0",
        # Plain names too, for TraceQL: { span.correlationid = "..." && span.broker = "paper" }.
        "correlationid": event.correlationid,
        "causationid": event.causationid,
        "broker": broker or event.broker or metrics.SHARED,
    }
    return attrs


@functools.lru_cache(maxsize=256)
def _consumer_group(function: Function, broker: str | None) -> str:
    sub = next((s for s in PIPELINE if s.function is function), None)
    if sub is None:
        return f"alphapanda-{broker or metrics.SHARED}-{function.dns_name}"
    return sub.consumer_group(broker)
