"""A strategy of the user's own on the real pipeline (Tansu + redis-server): it trades, its
failures are `strategy_error` alerts (and its recoveries `strategy_recovered`) on `{broker}.alerts`,
not dead-lettered ticks; the other strategy on the same ticks trades on, and all of it is what
the backtest gives on those ticks."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_harness import Pipeline, events_of, read_all, settings_for, tick_events

from alphapanda import topics
from alphapanda.events import Alert, Signal
from alphapanda.runtime.backtest import Backtest, BacktestStateStore
from alphapanda.runtime.bootstrap import build_core
from alphapanda.runtime.embedded import EmbeddedKafka, EmbeddedRedis

MODULE = "pipeline_user_strategy"
PLUGIN = '''
from alphapanda.domain.strategy import OrderIntent
from alphapanda.events import Side


class Alternate:
    """Buys then sells `quantity` every `every` ticks; raises on a last price above `fail_above`."""

    def __init__(self, every: int, quantity: int, fail_above: float) -> None:
        self.every, self.quantity, self.fail_above = every, quantity, fail_above

    def on_tick(self, state, tick):
        if float(tick.last_price) > self.fail_above:
            raise RuntimeError(f"no trading above {self.fail_above}")
        n = 1 if state is None else state["n"] + 1
        long = False if state is None else state["long"]
        if n % self.every:
            return {"n": n, "long": long}, []
        side = Side.SELL if long else Side.BUY
        return {"n": n, "long": not long}, [OrderIntent(side, self.quantity, "alternate")]
'''
TICKS = 400


@pytest.fixture
def strategies_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / f"{MODULE}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "strategies.yaml"
    yield path
    sys.modules.pop(MODULE, None)


def test_pipeline_when_a_users_strategy_trades_and_fails_then_it_matches_the_backtest(
    kafka: EmbeddedKafka, redis_server: EmbeddedRedis, strategies_file: Path
) -> None:
    def settings_with(fail_above: str):  # type: ignore[no-untyped-def]
        strategies_file.write_text(
            f"""
strategies:
  - name: mine
    kind: {MODULE}:Alternate
    instruments: [RELIANCE, HDFCBANK]
    brokers: [paper]
    params: {{every: 7, quantity: 5, fail_above: {fail_above}}}
  - name: ema
    kind: ema_crossover
    instruments: [RELIANCE, HDFCBANK]
    brokers: [paper]
    params: {{fast: 3, slow: 8, quantity: 10}}
"""
        )
        return settings_for(
            kafka.bootstrap_servers,
            redis_server.url,
            strategies_file,
            broker={"paper": {"fills": {"fill_quote": "signal"}, "risk": {"max_open_orders": 10_000}}},
        )

    ticks = tick_events(settings_with("1e9"), TICKS, instruments=2)
    # A threshold a few of the ticks pass: the strategy fails on those and only those.
    threshold = sorted(t.data.last_price for t in ticks)[-6]  # type: ignore[attr-defined]
    settings = settings_with(str(threshold))
    expected = Backtest(build_core(settings), BacktestStateStore(), fast=False).run(ticks)

    with Pipeline(settings) as pipeline:
        pipeline.publish(ticks)
        pipeline.drain()

    log = read_all(kafka.bootstrap_servers, ["paper"])
    alerts = events_of(log.get(topics.alerts("paper"), []))
    raw = events_of(log[topics.signals_raw("paper")])
    failures = [e for e in alerts if isinstance(e.data, Alert) and e.data.kind == "strategy_error"]
    failed_on = sum(1 for t in ticks if t.data.last_price > threshold)  # type: ignore[attr-defined]
    assert expected.strategy_failures["mine"] == failed_on >= 3
    assert 1 <= len(failures) <= failed_on  # one per run of failures in a row, fewer if long
    # Its failures and its recoveries, alert for alert, are the backtest's.
    assert sorted(e.id for e in alerts) == sorted(e.id for e in expected.alerts)
    assert not log.get(topics.dlq(topics.market_ticks("equity")))
    strategies = {e.data.strategy for e in raw if isinstance(e.data, Signal)}
    assert strategies == {"mine", "ema"}
    assert len(raw) == expected.events["SIGNAL_RAW"]
    filled = events_of(log[topics.orders_filled("paper")])
    assert sorted(e.id for e in filled) == sorted(e.id for e in expected.fills)
