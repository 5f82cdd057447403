"""Backtest: the pipeline's handlers in-process give the same result on every run, on either
state store, and the same fills and books as the Kafka pipeline on the same ticks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from pipeline_harness import Pipeline, read_all, settings_for, state_snapshot, tick_events, write_strategies

from alphapanda import topics
from alphapanda.bus.kafka import from_kafka
from alphapanda.config import Settings
from alphapanda.events import Event, OrderFilled
from alphapanda.runtime.backtest import Backtest, BacktestResult, BacktestStateStore
from alphapanda.runtime.bootstrap import build_core
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.state.store import RedisStateStore, StateStore

TICKS = 400
SAMPLE_DAY = Path(__file__).resolve().parents[2] / "shared/alphapanda/data/sample_day_nse.csv"


@pytest.fixture
def strategies_file(tmp_path: Path) -> Path:
    return write_strategies(tmp_path)


def _settings(strategies_file: Path, bootstrap: str = "", redis_url: str = "") -> Settings:
    # Fills at the signal's own touch and no open-order cap, as in test_effectively_once: the
    # Kafka pipeline's verdicts must not depend on how far each stage has got.
    return settings_for(
        bootstrap,
        redis_url,
        strategies_file,
        broker={"paper": {"fills": {"fill_quote": "signal"}, "risk": {"max_open_orders": 1_000_000}}},
    )


def _run(settings: Settings, ticks: list[Event], store: StateStore) -> BacktestResult:
    return Backtest(build_core(settings), store).run(ticks)


def _fills(result: BacktestResult) -> set[tuple[str, str]]:
    out = set()
    for event in result.fills:
        assert isinstance(event.data, OrderFilled)
        out.add((event.id, str(event.data.price)))
    return out


def _books(snapshot: dict[str, str]) -> dict[str, object]:
    return {k: json.loads(v) for k, v in snapshot.items() if k.startswith("paper:book:")}


def test_backtest_when_run_twice_on_the_same_ticks_then_reports_are_byte_identical(
    strategies_file: Path,
) -> None:
    settings = _settings(strategies_file)
    ticks = tick_events(settings, TICKS, instruments=4)
    first = _run(settings, ticks, BacktestStateStore())
    second = _run(settings, ticks, BacktestStateStore())
    assert first.report.trades > 0
    assert first.report.dumps() == second.report.dumps()


def test_backtest_when_state_is_redis_instead_of_memory_then_fills_pnl_and_books_match(
    strategies_file: Path,
) -> None:
    settings = _settings(strategies_file)
    ticks = tick_events(settings, TICKS, instruments=4)
    memory = BacktestStateStore()
    in_memory = _run(settings, ticks, memory)
    with EmbeddedRedis() as server:
        store = RedisStateStore(redis.Redis.from_url(server.url), 3600)
        in_redis = _run(settings, ticks, store)
        redis_books = _books(state_snapshot(store))
    assert in_memory.report.dumps() == in_redis.report.dumps()
    assert _fills(in_memory) == _fills(in_redis)
    assert redis_books == _books(memory.snapshot())


def test_backtest_when_compared_with_the_kafka_pipeline_on_the_same_ticks_then_fills_and_books_match(
    strategies_file: Path,
) -> None:
    with EmbeddedKafka() as kafka, EmbeddedRedis() as redis_server:
        settings = _settings(strategies_file, kafka.bootstrap_servers, redis_server.url)
        ticks = tick_events(settings, TICKS, instruments=4)
        with Pipeline(settings) as pipeline:
            pipeline.publish(ticks)
            pipeline.drain()
            kafka_books = _books(state_snapshot(pipeline.store))
        log = read_all(kafka.bootstrap_servers, ["paper"])
    kafka_fills = set()
    for record in log[topics.orders_filled("paper")]:
        event = from_kafka(record.key, record.value, list(record.headers.items()))
        assert isinstance(event.data, OrderFilled)
        kafka_fills.add((event.id, str(event.data.price)))

    memory = BacktestStateStore()
    result = _run(settings, ticks, memory)
    assert kafka_fills
    assert _fills(result) == kafka_fills
    assert _books(memory.snapshot()) == kafka_books


def test_backtest_cli_when_run_on_the_shipped_sample_day_then_writes_a_json_report(tmp_path: Path) -> None:
    out, plot = tmp_path / "report.json", tmp_path / "equity.html"
    code = (
        "import sys, argparse\n"
        "from alphapanda import cli_backtest\n"
        "p = argparse.ArgumentParser(); s = p.add_subparsers(dest='command')\n"
        "cli_backtest.register(s)\n"
        "sys.exit(cli_backtest.run(p.parse_args(sys.argv[1:])))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "backtest",
            "--ticks",
            str(SAMPLE_DAY),
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["ticks"] == 6000
    assert report["trades"] > 0
    assert {"net_pnl", "charges", "win_rate", "max_drawdown", "sharpe", "sharpe_basis"} <= set(report)
    assert "<svg" in plot.read_text()
    assert "net PnL" in done.stdout
