"""Every event delivered twice, and a worker killed between applying state and committing:
final positions, cash and the risk ledger are identical to a clean run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from pipeline_harness import Pipeline, read_all, settings_for, state_snapshot, tick_events, write_strategies

from alphapanda import topics
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis
from alphapanda.state.store import RedisStateStore

HERE = Path(__file__).resolve().parent
TICKS = 500
OPEN_ORDERS = 1_000_000


@pytest.fixture
def strategies_file(tmp_path: Path) -> Path:
    return write_strategies(tmp_path)


def _settings(kafka: EmbeddedKafka, redis_server: EmbeddedRedis, strategies_file: Path):  # type: ignore[no-untyped-def]
    return settings_for(
        kafka.bootstrap_servers,
        redis_server.url,
        strategies_file,
        # Deterministic fills (the signal's own touch), so two runs agree to the paisa; and no
        # open-order cap, whose verdict depends on how far the trading engine has got (timing).
        broker={"paper": {"fills": {"fill_quote": "signal"}, "risk": {"max_open_orders": OPEN_ORDERS}}},
    )


def _fill_ids(bootstrap: str) -> set[str]:
    log = read_all(bootstrap, ["paper"])
    return {r.headers["ce_id"].decode() for r in log[topics.orders_filled("paper")]}


def _env(kafka: EmbeddedKafka, redis_server: EmbeddedRedis, strategies_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        ALPHAPANDA_REDIS__URL=redis_server.url,
        ALPHAPANDA_STRATEGIES_FILE=str(strategies_file),
        ALPHAPANDA_BROKER__PAPER__FILLS__FILL_QUOTE="signal",
        ALPHAPANDA_BROKER__PAPER__RISK__MAX_OPEN_ORDERS=str(OPEN_ORDERS),
        # Small batches, so the kill lands in the middle of the stream.
        ALPHAPANDA_DELIVERY__BATCH_SIZE="40",
    )
    return env


def test_pipeline_when_inputs_repeat_and_a_worker_dies_before_committing_then_state_matches_a_clean_run(
    strategies_file: Path,
) -> None:
    with EmbeddedKafka() as kafka, EmbeddedRedis() as redis_server:
        settings = _settings(kafka, redis_server, strategies_file)
        ticks = tick_events(settings, TICKS, instruments=4)
        with Pipeline(settings) as pipeline:
            pipeline.publish(ticks)
            pipeline.drain()
            clean = state_snapshot(pipeline.store)
        clean_fills = _fill_ids(kafka.bootstrap_servers)

    with EmbeddedKafka() as kafka, EmbeddedRedis() as redis_server:
        settings = _settings(kafka, redis_server, strategies_file)
        with Pipeline(settings) as pipeline:  # creates the topics; its dispatcher is stopped at once
            pipeline.publish([e for tick in ticks for e in (tick, tick)])
        env = _env(kafka, redis_server, strategies_file)
        script = str(HERE / "pipeline_process.py")
        for group, nth in (
            ("alphapanda-shared-strategy-runner", 3),
            ("alphapanda-paper-portfolio-manager", 2),
        ):
            died = subprocess.run(
                [sys.executable, script, "--die-before-commit", f"{group}:{nth}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert died.returncode == -9, died.stdout + died.stderr
        finished = subprocess.run(
            [sys.executable, script], env=env, capture_output=True, text=True, timeout=180
        )
        assert finished.returncode == 0, finished.stdout + finished.stderr
        chaos = state_snapshot(RedisStateStore(redis.Redis.from_url(redis_server.url), 3600))
        chaos_fills = _fill_ids(kafka.bootstrap_servers)

    assert any(k.startswith("paper:book:") for k in clean)
    assert any(k.startswith("paper:risk:position:") for k in clean)
    assert chaos == clean
    # Redelivery and replays republished some fills, but never a new one.
    assert chaos_fills == clean_fills


def test_redis_store_when_a_claim_exists_or_repeats_in_a_batch_then_those_answers_are_republished(
    redis_server: EmbeddedRedis,
) -> None:
    from alphapanda.state.store import Decision, Republished, Work

    store = RedisStateStore(redis.Redis.from_url(redis_server.url), claim_ttl_s=3600)
    work = Work("paper:claim:test:evt-1", [], lambda _values: Decision(outputs=[], writes={"k": "v"}))

    first = store.process_batch([work, work]).done
    again = store.process_once(work.claim_key, [], work.decide)

    assert [isinstance(d.outputs, Republished) for d in first] == [False, True]
    assert isinstance(again, Republished)
