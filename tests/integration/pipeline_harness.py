"""Drive the real pipeline (dispatcher, Tansu, redis-server) with a fixed tick stream and read it all back."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from alphapanda import telemetry
from alphapanda.bus.dispatcher import Dispatcher
from alphapanda.bus.kafka import from_kafka
from alphapanda.bus.log import partition_end
from alphapanda.config import Settings, load_settings
from alphapanda.events import IST, Event
from alphapanda.feed import TickStamper
from alphapanda.runtime.bootstrap import build_core, connect
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.runtime.feed import fixed_simulation
from alphapanda.state.store import RedisStateStore
from alphapanda.topics import all_topics, bindings

START = datetime(2026, 1, 5, 9, 15, tzinfo=IST)


@contextlib.contextmanager
def traced_servers() -> Iterator[tuple[InMemorySpanExporter, EmbeddedKafka, EmbeddedRedis]]:
    """Tracing into memory (spans exported as they end) around a broker and a redis-server of
    their own; tracing is reset afterwards, so other modules run untraced."""
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing([exporter], batch=False)
    try:
        with EmbeddedKafka() as kafka, EmbeddedRedis() as redis_server:
            yield exporter, kafka, redis_server
    finally:
        telemetry.reset_tracing()


def metric_sample(name: str, labels: dict[str, str]) -> float:
    """A Prometheus sample of this process's registry, 0 before it was ever set."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def settings_for(bootstrap: str, redis_url: str, strategies: Path, **extra: Any) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": bootstrap, "partitions": 3},
        redis={"url": redis_url},
        strategies_file=strategies,
        delivery={"retries": 2, "backoff_delay_s": 0.01},
        **extra,
    )


def tick_events(settings: Settings, count: int, instruments: int, seed: int = 11) -> list[Event]:
    core = build_core(settings)
    stamper = TickStamper()
    return [stamper.stamp(t) for t in fixed_simulation(core.instruments[:instruments], seed, START, count)]


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core = build_core(settings)
        self.store, self.publisher = connect(settings)
        self.dispatcher = Dispatcher(
            bindings(list(settings.brokers)),
            self.core.stage_for,
            self.store,
            self.publisher,
            settings.kafka,
            settings.delivery,
        )

    def __enter__(self) -> Pipeline:
        self.dispatcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispatcher.stop()
        self.publisher.close()

    def publish(self, events: list[Event]) -> None:
        self.publisher.publish(events)

    def publish_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.publisher.publish_records([(topic, key, value, headers)])

    def drain(self, timeout_s: float = 90) -> None:
        assert self.dispatcher.wait_idle(timeout_s, quiet_s=1.0), "the pipeline did not drain"

    @property
    def redis(self) -> RedisStateStore:
        return self.store


def read_all(bootstrap: str, brokers: list[str]) -> dict[str, list[Record]]:
    """Every record on every topic of the deployment, in partition order."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(timeout=10)
        parts = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in all_topics(brokers)
            if t in meta.topics
            for p in meta.topics[t].partitions
        ]
        listed = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        read: dict[tuple[str, int], int] = {}
        consumer.assign(parts)
        out: dict[str, list[Record]] = defaultdict(list)
        while any(read.get(k, 0) < partition_end(consumer, k, n) for k, n in listed.items() if n > 0):
            msgs = consumer.consume(1000, timeout=5)
            if not msgs:
                break
            for m in msgs:
                if m.error():
                    continue
                out[m.topic()].append(Record(m.topic(), m.key(), m.value(), dict(m.headers() or [])))
                read[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
        return out
    finally:
        consumer.close()


def events_of(records: list[Record]) -> list[Event]:
    return [from_kafka(r.key, r.value, list(r.headers.items())) for r in records]


def state_snapshot(store: RedisStateStore) -> dict[str, str]:
    """All trading state in Redis (everything but the processed-event claims)."""
    client = store.client
    out = {}
    for key in client.scan_iter(count=1000):
        name = key.decode()
        if ":claim:" in name:
            continue
        kind = client.type(key).decode()
        if kind == "string":
            out[name] = client.get(key).decode()
        elif kind == "set":
            out[name] = ",".join(sorted(m.decode() for m in client.smembers(key)))
    return out


FAST_CROSS = """
strategies:
  - name: fast_cross
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK, INFY, TCS]
    brokers: [paper]
    params: {fast: 3, slow: 8, quantity: 10}
"""
"""A strategy that crosses often on simulated ticks: many signals from a few hundred ticks."""


def write_strategies(directory: Path, text: str = FAST_CROSS) -> Path:
    path = directory / "strategies.yaml"
    path.write_text(text)
    return path
