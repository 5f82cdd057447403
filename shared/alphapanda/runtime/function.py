"""The functions-framework adapter: a stage behind HTTP, as Knative runs it.

A KafkaSource throws the HTTP reply away and functions-framework ignores the return value, so
the function produces its outputs to Kafka itself and returns (HTTP 200) only after the broker
acknowledged them. Bad input goes to the input topic's `.dlq` and still gets a 2xx, because
retrying it can never succeed; any other error raises, which is a 500, which makes the source
retry with the same event id (hence the same output ids).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudevents.http import CloudEvent

from alphapanda.bus.delivery import DeadLetter, dead_letter_record, deliver
from alphapanda.bus.kafka import EventPublisher, Headers
from alphapanda.config import Settings, load_settings
from alphapanda.events import Event, EventType, InvalidEvent, MarketTick, from_attributes
from alphapanda.metrics import ensure_metrics_server
from alphapanda.runtime.bootstrap import Core, build_core, connect
from alphapanda.state.store import RedisStateStore
from alphapanda.telemetry import record_dead_letter
from alphapanda.topics import ASSET_CLASSES, PIPELINE, Function, market_ticks


@dataclass
class FunctionRuntime:
    settings: Settings
    core: Core
    store: RedisStateStore
    publisher: EventPublisher


_runtime: FunctionRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> FunctionRuntime:
    """Build clients on the first event, not at import (functions-framework imports the module early)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            settings = load_settings()
            if not settings.kafka.bootstrap_servers or not settings.redis.url:
                raise RuntimeError(
                    "a function needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and ALPHAPANDA_REDIS__URL"
                )
            store, publisher = connect(settings)
            _runtime = FunctionRuntime(settings, build_core(settings), store, publisher)
            # Here, in the serving worker, not at import: gunicorn imports the module before
            # it forks, and a server thread started then would not survive into the worker.
            ensure_metrics_server()
        return _runtime


def input_topic(function: Function, attrs: dict[str, Any], data: Any, brokers: tuple[str, ...]) -> str:
    """The topic the event came from: where its dead letter goes."""
    sub = next((s for s in PIPELINE if s.function is function), None)
    if sub is None or "{asset_class}" in sub.source:
        # Market data (the feed's ingest, the strategy runner, the order matcher): by asset class.
        asset = data.get("asset_class") if isinstance(data, dict) else None
        return market_ticks(asset if asset in ASSET_CLASSES else "equity")
    broker = attrs.get("broker")
    return sub.topics(broker if broker in brokers else brokers[0])[0]


def _as_record(attrs: dict[str, Any], data: Any) -> tuple[bytes | None, bytes, Headers]:
    headers: Headers = [
        (f"ce_{k}", str(v).encode()) for k, v in attrs.items() if k not in ("data", "partitionkey")
    ]
    if isinstance(data, bytes | bytearray):
        body = bytes(data)
    elif isinstance(data, str):
        body = data.encode()
    else:
        body = json.dumps(data).encode()
    key = attrs.get("partitionkey")
    return (str(key).encode() if key else None), body, headers


def _decode(cloud_event: CloudEvent) -> tuple[dict[str, Any], Any, Event | DeadLetter]:
    attrs = dict(cloud_event.get_attributes())
    data = cloud_event.get_data()
    try:
        return attrs, data, from_attributes(attrs, data)
    except InvalidEvent as exc:
        return attrs, data, DeadLetter(str(exc), attempts=1)


def _dead_letter(
    rt: FunctionRuntime, function: Function, attrs: dict[str, Any], data: Any, letter: DeadLetter
) -> None:
    topic = input_topic(function, attrs, data, rt.settings.brokers)
    broker = attrs.get("broker")
    record_dead_letter(function, broker if broker in rt.settings.brokers else None, topic)
    key, body, headers = _as_record(attrs, data)
    rt.publisher.publish_records([dead_letter_record(topic, key, body, headers, letter)])


def stage_handler(function: Function) -> Callable[[CloudEvent], None]:
    """Return the CloudEvent handler that runs `function`'s stage."""

    def handle(cloud_event: CloudEvent) -> None:
        rt = runtime()
        attrs, data, decoded = _decode(cloud_event)
        if isinstance(decoded, DeadLetter):
            _dead_letter(rt, function, attrs, data, decoded)
            return
        result = deliver(rt.core.stage_for(function, decoded.broker), decoded, rt.store)
        if isinstance(result, DeadLetter):
            _dead_letter(rt, function, attrs, data, result)
            return
        rt.publisher.publish(result)

    return handle


def tick_ingest_handler() -> Callable[[CloudEvent], None]:
    """Return the market feed's HTTP handler: accept a tick CloudEvent, publish it to its market topic."""

    def handle(cloud_event: CloudEvent) -> None:
        rt = runtime()
        attrs, data, decoded = _decode(cloud_event)
        if isinstance(decoded, Event) and not isinstance(decoded.data, MarketTick):
            decoded = DeadLetter(
                f"the market feed accepts {EventType.MARKET_TICK} only, not {decoded.type}", 1
            )
        if isinstance(decoded, DeadLetter):
            _dead_letter(rt, Function.MARKET_FEED, attrs, data, decoded)
            return
        rt.publisher.publish([decoded])

    return handle
