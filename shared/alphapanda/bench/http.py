"""`alphapanda bench http`: CloudEvents/s through one functions-framework stage (the risk
manager, publishing to Kafka and claiming in Redis) against a no-op functions-framework function,
both served the same way and driven by the same client at the same concurrency.

Beside each rate it prints CPU per request, read from /proc: the function's server (gunicorn's
master and worker), and for the stage the broker and redis-server it waits on. On two cores the
rates move with whatever else runs; CPU per request moves much less, so it is what to compare
between two versions of the code.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from alphapanda.bus.kafka import ensure_topics
from alphapanda.events import IST, Event, EventType, Side, Signal, to_attributes
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from alphapanda.topics import all_topics

FUNCTIONS = Path(__file__).resolve().parents[3] / "functions"
NOOP = Path(__file__).with_name("noop_function.py")
# One in-flight request, and three: a KafkaSource with ordered delivery sends one event per
# partition at a time, and the chart gives each topic three partitions.
DEFAULT_CLIENTS = (1, 3)


def _serve(source: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions_framework",
            "--source",
            str(source),
            "--target",
            "handle",
            "--signature-type",
            "cloudevent",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/")
            conn.getresponse().read()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"functions-framework on {source} did not start")


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of `pid` and its children (gunicorn's worker); 0 without /proc."""
    if pid is None:
        return 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (the 14th and 15th fields)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class _Run:
    rate: float
    """Requests per second."""
    server_us: float
    """CPU of the function's server per request, in microseconds."""
    backend_us: float
    """CPU of the broker and redis-server per request, in microseconds."""


def _timed(
    port: int,
    requests: Sequence[tuple[dict[str, str], bytes]],
    clients: int,
    server: int,
    backends: Sequence[int | None],
) -> _Run:
    """`_post_all`, with the CPU the server and the backends spent on it, per request."""
    before = _cpu_seconds(server), sum(_cpu_seconds(b) for b in backends)
    rate = _post_all(port, requests, clients)
    after = _cpu_seconds(server), sum(_cpu_seconds(b) for b in backends)
    n = len(requests)
    return _Run(rate, (after[0] - before[0]) / n * 1e6, (after[1] - before[1]) / n * 1e6)


def _requests(first: int, events: int, clients: int) -> list[tuple[dict[str, str], bytes]]:
    """`events` signals with ids from `first`; request i is for instrument i % clients.

    `_post_all` gives client c every request i with i % clients == c, so each client sends the
    signals of one instrument, as each in-flight event of an ordered KafkaSource comes from a
    partition (hence a partition key) of its own. They still share one strategy and broker, so
    concurrent requests contend for the broker's risk state as they would in production.
    """
    return [_signal(first + i, instrument=i % clients, nth=i // clients) for i in range(events)]


def _signal(n: int, instrument: int = 0, nth: int = 0) -> tuple[dict[str, str], bytes]:
    token = 738561 + instrument
    signal = Signal(
        instrument_token=token,
        tradingsymbol=f"BENCH{instrument}",
        exchange="NSE",
        strategy="bench",
        # Buy and sell in turn, so that the position stays flat and every signal passes.
        side=Side.BUY if nth % 2 == 0 else Side.SELL,
        quantity=1,
        reference_price=Decimal("1480.00"),
        tick_time=datetime(2026, 1, 5, 10, 0, tzinfo=IST),
    )
    event = Event(
        id=f"bench-{n}",
        type=EventType.SIGNAL_RAW,
        source="/bench",
        data=signal,
        partitionkey=str(token),
        correlationid=f"idea-{n}",
        causationid=f"tick-{n}",
        broker="paper",
    )
    headers = {f"ce-{k}": v for k, v in to_attributes(event).items() if k != "datacontenttype"}
    headers["content-type"] = "application/json"
    return headers, signal.model_dump_json().encode()


def _post_all(port: int, requests: Sequence[tuple[dict[str, str], bytes]], clients: int) -> float:
    """POST `requests` from `clients` keep-alive connections at once; return requests/s.

    Each client is a thread with its own connection, sending its next request when the last
    answered (as a KafkaSource does per partition with ordered delivery). The client is
    http.client, which spends little of its time in Python, so at these rates it is not what
    limits a run; whatever it costs, both functions pay it alike.
    """
    shares = [requests[i::clients] for i in range(clients)]
    ready = threading.Barrier(clients + 1)
    failures: list[BaseException] = []

    def client(share: Sequence[tuple[dict[str, str], bytes]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.connect()  # outside the timed part, like the keep-alive connection it models
            ready.wait()
            for headers, body in share:
                conn.request("POST", "/", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"the function answered {response.status}")
        except BaseException as exc:
            failures.append(exc)
            ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: raised below
        ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return len(requests) / elapsed


def bench(events: int, runs: int, clients: Sequence[int] = DEFAULT_CLIENTS) -> None:
    """Print events/s of the no-op and the risk manager function at each client concurrency.

    Both servers run side by side with the same settings, get the same warm-up, and at each
    run the same requests (the same events) from the same client; which goes first alternates
    from run to run, so drifting background load does not favour either.
    """
    print(
        f"alphapanda bench http: {events:,} binary-mode CloudEvents per run, {runs} runs, "
        f"concurrent keep-alive clients: {', '.join(str(c) for c in clients)}"
    )
    print(f"server: {_server_settings()} for both functions")
    rates: dict[int, tuple[list[_Run], list[_Run]]] = {c: ([], []) for c in clients}
    with EmbeddedKafka() as kafka, EmbeddedRedis() as redis_server:
        ensure_topics(kafka.bootstrap_servers, all_topics(["paper"]), 1)
        env = {
            "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "ALPHAPANDA_REDIS__URL": redis_server.url,
            "ALPHAPANDA_BROKERS": "paper",
            "ALPHAPANDA_BROKER__PAPER__RISK__MAX_OPEN_ORDERS": str(10**9),
            "ALPHAPANDA_BROKER__PAPER__RISK__MAX_TRADES_PER_DAY": str(10**9),
            "ALPHAPANDA_BROKER__PAPER__RISK__DUPLICATE_WINDOW_S": "0",
        }
        noop, noop_port = _serve(NOOP, env)
        stage, stage_port = _serve(FUNCTIONS / "risk_manager" / "main.py", env)
        backends = (kafka.pid, redis_server.pid)
        try:
            # The same warm-up for both: the stage's first event builds its clients.
            warm_up = _requests(10**8, 100, max(clients))
            for port in (noop_port, stage_port):
                _post_all(port, warm_up, max(clients))
            batch = 0
            for level in clients:
                noop_rates, stage_rates = rates[level]
                for run in range(runs):
                    # Fresh event ids for every run: a repeated id would be a redelivery, which the
                    # stage answers from its claim without deciding or writing anything.
                    requests = _requests(batch * events, events, level)
                    batch += 1
                    order = [(noop, noop_port, noop_rates), (stage, stage_port, stage_rates)]
                    for proc, port, into in order if run % 2 == 0 else order[::-1]:
                        into.append(_timed(port, requests, level, proc.pid, backends))
                    print(
                        f"  {level} client(s), run {run + 1}: no-op {_show(noop_rates[-1])}, "
                        f"risk_manager {_show(stage_rates[-1])}"
                    )
        finally:
            for proc in (noop, stage):
                proc.terminate()
                proc.wait(10)
    for level in clients:
        noop_runs, stage_runs = rates[level]
        noop_median = statistics.median(r.rate for r in noop_runs)
        stage_median = statistics.median(r.rate for r in stage_runs)
        print(
            f"{level} client(s): no-op {noop_median:,.0f} events/s, risk_manager {stage_median:,.0f} "
            f"events/s (medians of {runs}): ratio {stage_median / noop_median:.1%} (target 70%); "
            f"CPU per request: no-op server {_median_us(noop_runs, 'server_us')}, risk_manager "
            f"server {_median_us(stage_runs, 'server_us')} + broker and Redis "
            f"{_median_us(stage_runs, 'backend_us')}"
        )


def _show(run: _Run) -> str:
    return f"{run.rate:,.0f}/s ({run.server_us:,.0f} us CPU/request)"


def _median_us(runs: Sequence[_Run], field: str) -> str:
    return f"{statistics.median(getattr(r, field) for r in runs):,.0f} us"


def _server_settings() -> str:
    """What functions-framework's gunicorn will run with (its defaults, or THREADS/WORKERS)."""
    threads = os.environ.get("THREADS") or str((os.cpu_count() or 1) * 4)
    workers = os.environ.get("WORKERS") or "1"
    return f"functions-framework's gunicorn, {workers} worker(s) x {threads} threads"
