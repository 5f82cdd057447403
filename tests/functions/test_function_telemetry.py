"""A stage behind functions-framework continues the caller's trace and serves Prometheus metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests
from test_http_functions import FunctionServer, _read, _signal_event

from alphapanda import topics
from alphapanda.bus.kafka import ensure_topics, from_kafka
from alphapanda.events import to_attributes
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis, free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _spans(path: Path, timeout_s: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return [json.loads(line) for line in path.read_text().splitlines()]
        time.sleep(0.1)
    return []


def test_post_when_the_event_carries_a_traceparent_then_the_function_continues_that_trace_and_counts_it(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    ensure_topics(kafka.bootstrap_servers, topics.all_topics(["paper"]), 1)
    metrics_port = free_port()
    spans_file = tmp_path / "spans.jsonl"
    env = {
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ALPHAPANDA_REDIS__URL": redis_server.url,
        "ALPHAPANDA_BROKERS": "paper",
        "ALPHAPANDA_METRICS_PORT": str(metrics_port),
        "ALPHAPANDA_TRACE_FILE": str(spans_file),
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # export within 50 ms rather than the default 5 s
        "OTEL_SERVICE_NAME": "paper-risk-manager",
    }
    server = FunctionServer("risk_manager", env)
    try:
        event = _signal_event()
        attrs = {**to_attributes(event), "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
        assert server.post(attrs, event.data.model_dump_json().encode()).status_code == 200

        ((headers, value),) = _read(kafka.bootstrap_servers, topics.signals_validated("paper"), expect=1)
        scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        spans = _spans(spans_file)
    finally:
        server.stop()

    out = from_kafka(b"738561", value, list(headers.items()))
    _version, trace_id, span_id, _flags = str(out.traceparent).split("-")
    assert headers["traceparent"] == str(out.traceparent).encode()
    (span,) = spans
    assert span["name"] == "process paper.signals.raw"
    assert span["kind"] == "SpanKind.CONSUMER"
    assert span["context"]["trace_id"] == f"0x{TRACE_ID}" == f"0x{trace_id}"
    assert span["parent_id"] == f"0x{PARENT_SPAN}"
    assert span["context"]["span_id"] == f"0x{span_id}"
    assert span["attributes"]["correlationid"] == "idea-1"
    assert span["resource"]["attributes"]["service.name"] == "paper-risk-manager"
    assert (
        'alphapanda_events_processed_total{broker="paper",function="risk_manager",outcome="ok"} 1.0'
        in scraped
    )
