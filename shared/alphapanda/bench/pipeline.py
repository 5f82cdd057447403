"""`alphapanda bench pipeline`: the Kafka pipeline on the embedded broker and Redis, next to the
raw broker's own produce -> consume round trip and Redis' own round trip and pipelined rate,
measured on the same machine in the same run (the bounds the pipeline is compared with)."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from alphapanda.bus.dispatcher import Dispatcher
from alphapanda.bus.kafka import ensure_topics
from alphapanda.bus.log import read_log
from alphapanda.config import Settings, load_settings
from alphapanda.events import Event, OrderFilled, Signal, SignalValidated
from alphapanda.runtime.bootstrap import build_core, connect, infrastructure
from alphapanda.runtime.feed import FeedPlan, FeedProcess
from alphapanda.topics import Function, bindings, orders_filled, signals_raw, signals_validated


@dataclass(frozen=True)
class PipelineFigures:
    ticks: int
    seconds: float
    """From the first batch a stage began to the last one a stage finished: the pipeline at work."""
    fills: int
    latency_ms: list[float]
    redis_commands: int
    """Commands Redis processed during the run (INFO stats), for commands per tick."""
    wall_seconds: float = 0.0
    """From the feed's start to the pipeline found drained: `seconds` plus the feed's producer
    start-up (its first send waits ~0.5 s for the idempotent producer's id) and the idle check."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds during the run: each stage's worker thread, this whole process, and the
    broker, Redis and the market feed (child processes), to say where the time goes."""

    def cpu_us_per_tick(self, part: str) -> float:
        return self.cpu.get(part, 0.0) / self.ticks * 1e6

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.seconds

    @property
    def wall_ticks_per_s(self) -> float:
        return self.ticks / self.wall_seconds if self.wall_seconds > 0 else 0.0


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
        # The market feed as `alphapanda run` starts it: its own process, publishing as fast
        # as the broker takes them (rate 0) or at `rate`.
        feed = FeedProcess(
            FeedPlan(
                live.kafka.bootstrap_servers,
                live.kafka.ack_timeout_s,
                rate,
                tuple(core.instruments),
                seed=3,
                limit=ticks,
                namespace=f"bench-{uuid.uuid4()}",
            )
        )
        feed.start()
        if not feed.ready.wait(60):
            raise RuntimeError("the feed process did not start")
        commands_before = _redis_commands(store.client)
        cpu_before = _cpu_now(dispatcher)
        started = time.monotonic()
        feed.join(600)
        if feed.failed is not None or feed.published != ticks:
            raise RuntimeError(f"the feed published {feed.published:,} of {ticks:,} ticks: {feed.failed}")
        if not dispatcher.wait_idle(timeout_s=600, quiet_s=0.5):
            raise RuntimeError("the pipeline did not drain")
        wall = time.monotonic() - started - 0.5  # the quiet period is not work
        firsts = [w.stats.first_batch_at for w in dispatcher.workers if w.stats.first_batch_at is not None]
        lasts = [w.stats.last_batch_at for w in dispatcher.workers if w.stats.last_batch_at is not None]
        if not firsts or not lasts:
            raise RuntimeError("no stage handled a batch")
        elapsed = max(lasts) - min(firsts)
        cpu_after = _cpu_now(dispatcher)
        cpu_after["feed"] = feed.cpu_s
        dispatcher.stop()
        publisher.close()
        commands = _redis_commands(store.client) - commands_before
        latency = _tick_to_fill_ms(live.kafka.bootstrap_servers, "paper")
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
        return PipelineFigures(ticks, elapsed, len(latency), latency, commands, wall, cpu)


def _cpu_now(dispatcher: Dispatcher) -> dict[str, float]:
    """CPU seconds so far: per stage worker, this process in all, and each child process."""
    times = os.times()
    cpu = {"process": times.user + times.system}
    for w in dispatcher.workers:
        cpu[w.binding.function.value] = cpu.get(w.binding.function.value, 0.0) + w.stats.cpu_s
    cpu.update(_children_cpu())
    return cpu


def _children_cpu() -> dict[str, float]:
    """CPU seconds of this process' children (the embedded broker and Redis), by command name.

    Linux only (/proc); elsewhere the account just leaves them out.
    """
    out: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for task in tasks:
        try:
            children = Path(f"/proc/self/task/{task}/children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = "redis" if comm.startswith("redis") else "broker" if comm.startswith("tansu") else comm
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _redis_commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def _redis_bounds(url: str, commands: int = 20_000, batch: int = 100) -> tuple[float, float]:
    """Redis' own ceiling here: SET commands/s one round trip at a time, and pipelined by `batch`."""
    client = redis.Redis.from_url(url)
    value = b"x" * 200
    t0 = time.perf_counter()
    for n in range(commands // 10):
        client.set(f"bench:one:{n}", value)
    one = (commands // 10) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for start in range(0, commands, batch):
        pipe = client.pipeline(transaction=False)
        for n in range(start, start + batch):
            pipe.set(f"bench:pipe:{n}", value)
        pipe.execute()
    return one, commands / (time.perf_counter() - t0)


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


def _median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench(ticks: int, rate_for_latency: float, runs: int) -> None:
    with TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp))
        print(f"alphapanda bench pipeline: {ticks:,} ticks, {runs} runs, embedded Tansu + redis-server")
        throughput: list[float] = []
        per_tick: list[float] = []
        accounts: list[PipelineFigures] = []
        for n in range(runs):
            figures = _run_pipeline(settings, ticks, rate=0)
            throughput.append(figures.ticks_per_s)
            per_tick.append(figures.redis_commands / figures.ticks)
            accounts.append(figures)
            print(
                f"  run {n + 1}: {figures.ticks_per_s:,.0f} ticks/s end to end, first tick handled to last "
                f"event handled ({figures.wall_ticks_per_s:,.0f} counting the feed's start-up and the "
                f"drain check; {figures.fills:,} fills, "
                f"{figures.redis_commands / figures.ticks:.1f} Redis commands a tick)"
            )
        p50s: list[float] = []
        p99s: list[float] = []
        fills = 0
        for n in range(runs):
            paced = _run_pipeline(settings, min(ticks, int(rate_for_latency * 20)), rate=rate_for_latency)
            p50s.append(_pct(paced.latency_ms, 0.5))
            p99s.append(_pct(paced.latency_ms, 0.99))
            fills += len(paced.latency_ms)
            print(
                f"  paced run {n + 1} at {rate_for_latency:,.0f} ticks/s: tick -> fill "
                f"p50 {p50s[-1]:,.1f} ms, p99 {p99s[-1]:,.1f} ms ({len(paced.latency_ms):,} fills)"
            )
        with infrastructure(settings) as live:
            raw_latency, raw_rate = _raw_round_trip(
                live.kafka.bootstrap_servers, 300, live.kafka.fetch_wait_max_ms
            )
            redis_one, redis_pipelined = _redis_bounds(live.redis.url)
    median = statistics.median(throughput)
    p50, p99 = _median_of(p50s), _median_of(p99s)
    raw50, raw99 = _pct(raw_latency, 0.5), _pct(raw_latency, 0.99)
    target_p99 = 4 * raw99 + 10
    print(
        f"pipeline, sustained:       {median:,.0f} ticks/s (median of {runs}); target 50,000 "
        f"({median / 50_000:.1%} of it)"
    )
    print(f"raw broker consume:        {raw_rate:,.0f} msgs/s; pipeline / raw = {median / raw_rate:.4f}")
    print(
        f"redis (same server):       {redis_one:,.0f} ops/s one round trip at a time, "
        f"{redis_pipelined:,.0f} ops/s pipelined by 100; pipeline / pipelined redis = "
        f"{median / redis_pipelined:.4f}"
    )
    commands = statistics.median(per_tick)
    print(
        f"redis work:                {commands:.1f} commands a tick (scripts' own included): Redis alone, "
        f"pipelined, would allow {redis_pipelined / commands:,.0f} ticks/s"
    )
    print(
        f"tick -> fill at {rate_for_latency:,.0f} ticks/s: p50 {p50:,.1f} ms, p99 {p99:,.1f} ms "
        f"(medians of {runs} runs, {fills:,} fills)"
    )
    print(
        f"raw produce -> consume:    p50 {raw50:,.2f} ms, p99 {raw99:,.2f} ms "
        f"(fetch.wait.max.ms {settings.kafka.fetch_wait_max_ms})"
    )
    verdict = "met" if p99 <= target_p99 else f"missed by {p99 - target_p99:,.1f} ms"
    print(f"p99 target (4 x raw p99 + 10 ms): {target_p99:,.1f} ms: {verdict}")
    _print_cpu(accounts)


def _print_cpu(runs: Sequence[PipelineFigures]) -> None:
    """Where the time goes: CPU microseconds a tick, medians over the throughput runs."""

    def us(part: str) -> float:
        return statistics.median(r.cpu_us_per_tick(part) for r in runs)

    stages = [f.value for f in Function if any(f.value in r.cpu for r in runs)]
    workers = sum(us(s) for s in stages)
    process = us("process")
    print(
        f"cpu a tick (us, median):   this process {process:,.0f} = stage workers {workers:,.0f} ("
        + ", ".join(f"{s} {us(s):,.0f}" for s in stages)
        + f") + client threads {process - workers:,.0f}; market feed process {us('feed'):,.0f}; "
        f"broker {us('broker'):,.0f}; redis {us('redis'):,.0f}"
    )
    total = process + us("feed") + us("broker") + us("redis")
    cores = os.cpu_count() or 1
    print(
        f"cpu bound:                 {total:,.0f} us of CPU a tick on {cores} cores: at most "
        f"{cores / total * 1e6:,.0f} ticks/s with every core busy and nothing else running"
    )
