"""`alphapanda bench pipeline`: the Kafka pipeline on the embedded broker and Redis, next to the
raw broker's own produce -> consume round trip on the same machine."""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from confluent_kafka import Consumer, Producer, TopicPartition

from alphapanda.bus.dispatcher import Dispatcher
from alphapanda.bus.kafka import ensure_topics
from alphapanda.bus.log import read_log
from alphapanda.config import Settings, load_settings
from alphapanda.events import Event, OrderFilled, Signal, SignalValidated
from alphapanda.feed import TickStamper
from alphapanda.runtime.bootstrap import build_core, connect, infrastructure
from alphapanda.runtime.feed import live_simulation
from alphapanda.topics import bindings, orders_filled, signals_raw, signals_validated


@dataclass(frozen=True)
class PipelineFigures:
    ticks: int
    seconds: float
    fills: int
    latency_ms: list[float]

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.seconds


def _settings(tmp: Path) -> Settings:
    (tmp / "strategies.yaml").write_text(
        "strategies:\n  - name: ema\n    kind: ema_crossover\n    instruments: all\n"
        "    brokers: [paper]\n    params: {fast: 5, slow: 20, quantity: 10}\n"
    )
    big = 10**12
    # Wall-clock ticks (latency is measured on the wall clock), so the session rule is off, and
    # no limit may reject: the bench measures the pipeline, not the risk settings.
    return load_settings(
        strategies_file=tmp / "strategies.yaml",
        broker={
            "paper": {
                "risk": {
                    "enforce_session": False,
                    "max_open_orders": big,
                    "max_trades_per_day": big,
                    "max_gross_exposure": big,
                    "max_position_value": big,
                    "max_order_value": big,
                    "max_position_quantity": big,
                    "duplicate_window_s": 0,
                    "price_band_pct": 100,
                }
            }
        },
    )


def _run_pipeline(settings: Settings, ticks: int, rate: float) -> PipelineFigures:
    with infrastructure(settings) as live:
        core = build_core(live)
        store, publisher = connect(live)
        dispatcher = Dispatcher(
            bindings(list(live.brokers)), core.stage_for, store, publisher, live.kafka, live.delivery
        )
        dispatcher.start()
        stamper = TickStamper(namespace=f"bench-{uuid.uuid4()}")
        source = live_simulation(core.instruments, seed=3)
        started = time.monotonic()
        sent = 0
        batch = 500 if rate == 0 else max(1, int(rate / 100))
        while sent < ticks:
            n = min(batch, ticks - sent)
            publisher.publish([stamper.stamp(next(source)) for _ in range(n)])
            sent += n
            if rate:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        if not dispatcher.wait_idle(timeout_s=600, quiet_s=0.5):
            raise RuntimeError("the pipeline did not drain")
        elapsed = time.monotonic() - started - 0.5  # the quiet period is not work
        dispatcher.stop()
        publisher.close()
        latency = _tick_to_fill_ms(live.kafka.bootstrap_servers, "paper")
        return PipelineFigures(ticks, elapsed, len(latency), latency)


def _tick_to_fill_ms(bootstrap: str, broker: str) -> list[float]:
    """Fill event time minus the exchange time of the tick that caused it (both wall clock here)."""
    signals: dict[str, Event] = {}
    validated: dict[str, Event] = {}
    fills: list[Event] = []
    for record in read_log(
        bootstrap, [signals_raw(broker), signals_validated(broker), orders_filled(broker)]
    ):
        e = record.event
        if e is None:
            continue
        if isinstance(e.data, Signal):
            signals[e.id] = e
        elif isinstance(e.data, SignalValidated):
            validated[e.id] = e
        elif isinstance(e.data, OrderFilled):
            fills.append(e)
    out = []
    for fill in fills:
        v = validated.get(fill.causationid)
        s = signals.get(v.causationid) if v else None
        if s is not None and isinstance(s.data, Signal):
            out.append((fill.time - s.data.tick_time) / timedelta(milliseconds=1))
    return out


def _raw_round_trip(bootstrap: str, messages: int, fetch_wait_ms: int) -> tuple[list[float], float]:
    """Produce -> consume latency of single messages, and the consume rate of a batch."""
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], 1)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 0}
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic,
            "fetch.wait.max.ms": fetch_wait_ms,
            "log_level": 3,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    latencies = []
    for _ in range(messages):
        t0 = time.perf_counter()
        producer.produce(topic, value=b"x" * 200)
        producer.flush()
        while not [m for m in consumer.consume(1, 1.0) if not m.error()]:
            pass
        latencies.append((time.perf_counter() - t0) * 1000)
    bulk = 200_000
    for _ in range(bulk):
        while True:
            try:
                producer.produce(topic, value=b"x" * 200)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    t0 = time.perf_counter()
    got = 0
    while got < bulk:
        got += len([m for m in consumer.consume(1000, 1.0) if not m.error()])
    rate = bulk / (time.perf_counter() - t0)
    consumer.close()
    return latencies, rate


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def bench(ticks: int, rate_for_latency: float, runs: int) -> None:
    with TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp))
        print(f"alphapanda bench pipeline: {ticks:,} ticks, {runs} runs, embedded Tansu + redis-server")
        throughput = []
        for n in range(runs):
            figures = _run_pipeline(settings, ticks, rate=0)
            throughput.append(figures.ticks_per_s)
            print(f"  run {n + 1}: {figures.ticks_per_s:,.0f} ticks/s end to end ({figures.fills:,} fills)")
        paced = _run_pipeline(settings, min(ticks, int(rate_for_latency * 20)), rate=rate_for_latency)
        with infrastructure(settings) as live:
            raw_latency, raw_rate = _raw_round_trip(
                live.kafka.bootstrap_servers, 300, live.kafka.fetch_wait_max_ms
            )
    median = statistics.median(throughput)
    p50, p99 = _pct(paced.latency_ms, 0.5), _pct(paced.latency_ms, 0.99)
    raw50, raw99 = _pct(raw_latency, 0.5), _pct(raw_latency, 0.99)
    print(f"pipeline, sustained:       {median:,.0f} ticks/s (median of {runs}); target 50,000")
    print(f"raw broker consume:        {raw_rate:,.0f} msgs/s; pipeline / raw = {median / raw_rate:.4f}")
    print(
        f"tick -> fill at {rate_for_latency:,.0f} ticks/s: p50 {p50:,.1f} ms, p99 {p99:,.1f} ms "
        f"({len(paced.latency_ms):,} fills)"
    )
    print(f"raw produce -> consume:    p50 {raw50:,.2f} ms, p99 {raw99:,.2f} ms (same fetch wait)")
    print(f"p99 target (4 x raw p99 + 10 ms): {4 * raw99 + 10:,.1f} ms")
