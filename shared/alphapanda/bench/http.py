"""`alphapanda bench http`: CloudEvents/s through one functions-framework stage (the risk
manager, publishing to Kafka and claiming in Redis) against a no-op functions-framework function."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from alphapanda.bus.kafka import ensure_topics
from alphapanda.events import IST, Event, EventType, Side, Signal, to_attributes
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from alphapanda.topics import all_topics

FUNCTIONS = Path(__file__).resolve().parents[3] / "functions"
NOOP = Path(__file__).with_name("noop_function.py")


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


def _signal(n: int) -> tuple[dict[str, str], bytes]:
    signal = Signal(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="bench",
        side=Side.BUY if n % 2 == 0 else Side.SELL,
        quantity=1,
        reference_price=Decimal("1480.00"),
        tick_time=datetime(2026, 1, 5, 10, 0, tzinfo=IST),
    )
    event = Event(
        id=f"bench-{n}",
        type=EventType.SIGNAL_RAW,
        source="/bench",
        data=signal,
        partitionkey="738561",
        correlationid=f"idea-{n}",
        causationid=f"tick-{n}",
        broker="paper",
    )
    headers = {f"ce-{k}": v for k, v in to_attributes(event).items() if k != "datacontenttype"}
    headers["content-type"] = "application/json"
    return headers, signal.model_dump_json().encode()


def _post_all(port: int, events: int, offset: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    requests = [_signal(offset + n) for n in range(events)]
    started = time.perf_counter()
    for headers, body in requests:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"the function answered {response.status}")
    return events / (time.perf_counter() - started)


def bench(events: int, runs: int) -> None:
    print(f"alphapanda bench http: {events:,} binary-mode CloudEvents per run, one keep-alive client")
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
        try:
            _post_all(stage_port, 50, offset=10**8)  # first event builds the clients
            noop_rates, stage_rates = [], []
            for run in range(runs):
                noop_rates.append(_post_all(noop_port, events, offset=run * events))
                stage_rates.append(_post_all(stage_port, events, offset=run * events))
                print(
                    f"  run {run + 1}: no-op {noop_rates[-1]:,.0f}/s, risk_manager {stage_rates[-1]:,.0f}/s"
                )
        finally:
            for proc in (noop, stage):
                proc.terminate()
                proc.wait(10)
    noop_median = sorted(noop_rates)[len(noop_rates) // 2]
    stage_median = sorted(stage_rates)[len(stage_rates) // 2]
    print(f"no-op function:        {noop_median:,.0f} events/s (median of {runs})")
    print(f"risk_manager function: {stage_median:,.0f} events/s (median of {runs})")
    print(f"ratio: {stage_median / noop_median:.1%} of the no-op (target 70%)")
