"""Prometheus metrics of the pipeline, named as the Grafana dashboard queries them.

| metric | type | labels |
|---|---|---|
| `alphapanda_events_processed_total` | counter | function, broker, outcome |
| `alphapanda_handler_seconds` | histogram | function, broker |
| `alphapanda_dead_lettered_total` | counter | function, broker, topic, reason |
| `alphapanda_redelivered_total` | counter | function, broker |
| `alphapanda_tick_to_fill_seconds` | histogram | broker, strategy |
| `alphapanda_pnl_rupees` | gauge | broker, strategy, instrument |

`outcome` is `ok`, `failed` (an attempt that raised; it is retried) or `dead_lettered` (bad
input); `topic` of a dead letter is the input topic (the record went to `{topic}.dlq`), and its
`reason` is `undecodable` (not one of our CloudEvents), `invalid_event` (a stage refused it) or
`retries_exhausted`. A redelivery (an event processed before, whose stored outputs the stage
republished) counts in `alphapanda_redelivered_total` only, so that the others count each event
(and each fill's tick-to-fill latency) once.

Shared functions are labelled `broker="shared"`. The metrics live in the default registry, so
`start_metrics_server` (or any other exposition of `prometheus_client.REGISTRY`) serves them.
The recording helpers cache their label children: the wrapper calls them for every event.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

METRICS_PORT_ENV: Final = "ALPHAPANDA_METRICS_PORT"
DEFAULT_METRICS_PORT: Final = 9464
SHARED: Final = "shared"

OUTCOME_OK: Final = "ok"
OUTCOME_FAILED: Final = "failed"
OUTCOME_DEAD_LETTERED: Final = "dead_lettered"

# A stage's work is one Redis transaction (~0.1 ms on loopback) up to a broker call (~100 ms),
# so the buckets start far below Prometheus' 5 ms default.
_HANDLER_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Tick to fill crosses four Kafka hops (each a fetch wait of ~10 ms locally) and a broker call.
_TICK_TO_FILL_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

EVENTS_PROCESSED: Final = Counter(
    "alphapanda_events_processed",
    "Events a function handled, by outcome (failed attempts are retried; dead_lettered is bad input).",
    ("function", "broker", "outcome"),
)
HANDLER_SECONDS: Final = Histogram(
    "alphapanda_handler_seconds",
    "Time a function took to handle one event (one attempt), including its state round trips; "
    "in a batch, the batch's time shared equally by its events.",
    ("function", "broker"),
    buckets=_HANDLER_BUCKETS,
)
DEAD_LETTERED: Final = Counter(
    "alphapanda_dead_lettered",
    "Records a function sent to the dead-letter topic of `topic`, by reason "
    "(undecodable, invalid_event, retries_exhausted).",
    ("function", "broker", "topic", "reason"),
)
REDELIVERED: Final = Counter(
    "alphapanda_redelivered",
    "Events a function had processed before and got again (after a crash, or republished): "
    "the stored outputs were republished and nothing else was counted.",
    ("function", "broker"),
)
TICK_TO_FILL_SECONDS: Final = Histogram(
    "alphapanda_tick_to_fill_seconds",
    "From the exchange timestamp of the tick that caused a trading idea to the fill it produced.",
    ("broker", "strategy"),
    buckets=_TICK_TO_FILL_BUCKETS,
)
PNL_RUPEES: Final = Gauge(
    "alphapanda_pnl_rupees",
    "Realised plus unrealised PnL of one position at its last fill, in rupees.",
    ("broker", "strategy", "instrument"),
)


@dataclass(frozen=True, slots=True)
class StageMetrics:
    """The metric children of one (function, broker), looked up once: labels() takes a lock."""

    _ok: Counter
    _failed: Counter
    _dead_lettered: Counter
    _handler: Histogram
    _redelivered: Counter

    def ok(self, seconds: float) -> None:
        self._ok.inc()
        self._handler.observe(seconds)

    def failed(self, seconds: float) -> None:
        self._failed.inc()
        self._handler.observe(seconds)

    def dead_lettered(self, seconds: float) -> None:
        self._dead_lettered.inc()
        self._handler.observe(seconds)

    def redelivered(self) -> None:
        self._redelivered.inc()


def stage_metrics(function: str, broker: str | None) -> StageMetrics:
    """Return the counters and handler histogram of `function` for `broker` (None: shared)."""
    owner = broker or SHARED
    return StageMetrics(
        EVENTS_PROCESSED.labels(function, owner, OUTCOME_OK),
        EVENTS_PROCESSED.labels(function, owner, OUTCOME_FAILED),
        EVENTS_PROCESSED.labels(function, owner, OUTCOME_DEAD_LETTERED),
        HANDLER_SECONDS.labels(function, owner),
        REDELIVERED.labels(function, owner),
    )


def record_dead_letter(function: str, broker: str | None, topic: str, reason: str) -> None:
    """Count one record sent from `topic` to its dead-letter topic, for `reason`."""
    DEAD_LETTERED.labels(function, broker or SHARED, topic, reason).inc()


def record_tick_to_fill(broker: str, strategy: str, seconds: float) -> None:
    TICK_TO_FILL_SECONDS.labels(broker, strategy).observe(seconds)


def record_pnl(broker: str, strategy: str, instrument: str, rupees: Decimal) -> None:
    PNL_RUPEES.labels(broker, strategy, instrument).set(float(rupees))


_server_lock = threading.Lock()
_server_port: int | None = None


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> int:
    """Serve `/metrics` on `port` (0: any free port) in a daemon thread; return the bound port.

    Idempotent: a second call returns the port of the server already running.
    """
    global _server_port
    with _server_lock:
        if _server_port is None:
            server, _thread = start_http_server(port, addr)
            _server_port = int(server.server_address[1])
        return _server_port


def ensure_metrics_server() -> int | None:
    """Start the server on `ALPHAPANDA_METRICS_PORT` (default 9464; 0 turns it off) unless running.

    For function pods, called on their first event. It never raises: a metrics endpoint that
    cannot bind (say, a second gunicorn worker on the same port) must not fail the event.
    """
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    try:
        port = int(raw) if raw else DEFAULT_METRICS_PORT
    except ValueError:
        log.error("%s=%r is not a port number; metrics are not served", METRICS_PORT_ENV, raw)
        return None
    if port <= 0:
        return None
    try:
        return start_metrics_server(port)
    except OSError as exc:
        log.warning("cannot serve metrics on port %d: %s", port, exc)
        return None
