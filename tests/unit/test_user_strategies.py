"""Strategies of the user's own (`kind: module:Class`): loaded with one-line errors, run by the
pipeline's runner and by the backtest alike, and a failing one isolated (an alert, not a lost tick)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alphapanda import stages
from alphapanda.cli_backtest import strategy_failure_notes
from alphapanda.config import load_settings
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.strategy import OrderIntent, StrategyConfigError, TickView
from alphapanda.events import IST, Alert, Event, MarketTick, Severity, Side, Signal, tick_event
from alphapanda.feed import TickStamper
from alphapanda.runtime.backtest import Backtest, BacktestStateStore
from alphapanda.runtime.bootstrap import build_core
from alphapanda.runtime.feed import fixed_simulation
from alphapanda.stages.strategy_runner import StrategyRunner, failure_alerted
from alphapanda.state import keys
from alphapanda.state.store import MemoryStateStore
from alphapanda.strategies import StrategySpec, parse_strategies

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
D = Decimal
TOKEN = 738561
T0 = datetime(2026, 1, 5, 9, 15, tzinfo=IST)
INSTRUMENTS = [
    Instrument(TOKEN, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", D("0.05"), 1, D("1480")),
]

PLUGINS = '''
from alphapanda.domain.strategy import OrderIntent
from alphapanda.events import Side


class EveryTick:
    """Buys 1 on every tick after the first; counts its ticks in its state; raises on a last
    price above `fail_above`."""

    def __init__(self, fail_above: float = 1e9, bad_state: bool = False) -> None:
        self.fail_above = fail_above
        self.bad_state = bad_state

    def on_tick(self, state, tick):
        n = 1 if state is None else state["n"] + 1
        if state is not None:
            state["n"] = n  # in place, before failing: a failure must leave no trace of it
        if tick.last_price > self.fail_above:
            raise ZeroDivisionError("division by zero")
        if self.bad_state:
            return {"n": n, "price": tick.last_price}, []  # a Decimal: not JSON
        return {"n": n, "seen": (n, "tuple")}, [] if n == 1 else [OrderIntent(Side.BUY, 1, "tick")]


class NoTick:
    pass


def refuses(**params):
    raise ValueError("refused: " + ", ".join(sorted(params)))
'''


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A strategy module of the user's own, importable as `user_plugins_<n>`."""
    name = f"user_plugins_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _file(kind: str, params: str = "{}", product: str = "MIS") -> str:
    return textwrap.dedent(
        f"""
        strategies:
          - name: mine
            kind: "{kind}"
            instruments: [RELIANCE]
            brokers: [paper, zerodha]
            product: {product}
            params: {params}
          - name: ema
            kind: ema_crossover
            instruments: [RELIANCE]
            brokers: [paper]
            params: {{fast: 1, slow: 2, quantity: 10}}
        """
    )


def _specs(text: str) -> list[StrategySpec]:
    return parse_strategies(text, INSTRUMENTS, "my.yaml")


# --- loading ----------------------------------------------------------------------------------


def test_load_when_kind_is_module_and_class_then_the_users_class_is_built_with_its_params(
    plugins: str,
) -> None:
    mine, ema = _specs(_file(f"{plugins}:EveryTick", "{fail_above: 1500}"))

    # Without `sells_short` it is taken to sell short (refused as a delivery strategy), in a
    # wrapper that answers so.
    assert mine.strategy.sells_short is True
    inner = mine.strategy.inner  # type: ignore[attr-defined]
    assert type(inner).__name__ == "EveryTick" and inner.fail_above == 1500
    assert (mine.builtin, ema.builtin) == (False, True)


@pytest.mark.parametrize(
    ("kind", "params", "product", "message"),
    [
        (
            "no_such_module_xyz:Thing",
            "{}",
            "MIS",
            "my.yaml: strategy 'mine': cannot import module 'no_such_module_xyz' of kind "
            "'no_such_module_xyz:Thing' (No module named 'no_such_module_xyz'): install it, or add "
            "its directory to PYTHONPATH",
        ),
        ("{m}:Missing", "{}", "MIS", "my.yaml: strategy 'mine': module '{m}' has no class 'Missing'"),
        (
            "{m}:NoTick",
            "{}",
            "MIS",
            "my.yaml: strategy 'mine': {m}:NoTick has no on_tick(state, tick) method",
        ),
        (
            "{m}:EveryTick",
            "{fail_onn: 3}",
            "MIS",
            "my.yaml: strategy 'mine': {m}:EveryTick params are wrong: TypeError: "
            "EveryTick.__init__() got an unexpected keyword argument 'fail_onn'",
        ),
        (
            "{m}:refuses",
            "{a: 1}",
            "MIS",
            "my.yaml: strategy 'mine': {m}:refuses params are wrong: ValueError: refused: a",
        ),
        (
            "{m}:EveryTick",
            "{}",
            "CNC",
            "my.yaml: strategy 'mine': a CNC (delivery) strategy cannot sell short (Indian equities "
            "cannot be sold short for delivery): set params.long_only: true, or use product MIS",
        ),
        ("bad module:X", "{}", "MIS", "my.yaml: strategy 'mine': kind 'bad module:X' is neither a built-in"),
        (
            "rsi",
            "{}",
            "MIS",
            "my.yaml: strategy 'mine': unknown strategy kind 'rsi'; known: ema_crossover, or",
        ),
    ],
)
def test_load_when_the_users_strategy_cannot_be_built_then_one_line_says_why(
    plugins: str, kind: str, params: str, product: str, message: str
) -> None:
    with pytest.raises(StrategyConfigError) as raised:
        _specs(_file(kind.format(m=plugins), params, product))

    text = str(raised.value)
    assert text.startswith(message.format(m=plugins)) and "\n" not in text


def test_load_when_the_shipped_example_is_given_then_its_breakout_and_ema_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from alphapanda.domain.instruments import load_instruments

    breakout, ema = parse_strategies(
        (EXAMPLES / "strategies.yaml").read_text(), load_instruments(), "examples/strategies.yaml"
    )

    assert (breakout.name, breakout.builtin, ema.builtin) == ("breakout", False, True)


# --- the example strategy ---------------------------------------------------------------------


def test_channel_breakout_when_price_breaks_the_channel_then_it_goes_long_then_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from channel_breakout import ChannelBreakout

    strategy = ChannelBreakout(lookback=3, quantity=10)
    state = None
    sent = []
    for price in ("100", "101", "100.5", "100.8", "101.5", "101", "99", "99.5"):
        state, intents = strategy.on_tick(
            state, TickView(TOKEN, D(price), D(price), D(price), D(price), 0, T0)
        )
        sent.append([(i.side, i.quantity) for i in intents])

    # 101.5 breaks above 101 (the high of 101, 100.5, 100.8); 99 below 100.5 (of 100.8, 101.5, 101).
    assert sent == [[], [], [], [], [(Side.BUY, 10)], [], [(Side.SELL, 20)], []]
    assert json.loads(json.dumps(state)) == state
    with pytest.raises(StrategyConfigError, match="lookback >= 2"):
        ChannelBreakout(lookback=1, quantity=10)


# --- the runner -------------------------------------------------------------------------------


def _tick(n: int, price: str = "1480.00") -> Event:
    tick = MarketTick(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        last_price=D(price),
        bid=D(price) - D("0.05"),
        ask=D(price) + D("0.05"),
        exchange_timestamp=T0 + timedelta(seconds=n),
    )
    return tick_event(tick, f"tick-{n}")


def test_runner_when_a_users_strategy_raises_then_it_alerts_each_broker_keeps_its_state_and_others_trade(
    plugins: str,
) -> None:
    specs = _specs(_file(f"{plugins}:EveryTick", "{fail_above: 1485}"))
    runner = StrategyRunner(specs, brokers=frozenset({"paper", "zerodha"}))
    store = MemoryStateStore()

    stages.process(runner, _tick(1, "1480.00"), store)
    outputs = stages.process(runner, _tick(2, "1490.00"), store)

    alerts = [e for e in outputs if isinstance(e.data, Alert)]
    signals = [e for e in outputs if isinstance(e.data, Signal)]
    assert sorted(e.broker or "" for e in alerts) == ["paper", "zerodha"]
    alert = alerts[0].data
    assert isinstance(alert, Alert)
    assert (alert.kind, alert.details) == (
        "strategy_error",
        {"strategy": "mine", "instrument_token": str(TOKEN), "failures_in_a_row": "1"},
    )
    assert alert.message == (
        "strategy 'mine' failed on NSE:RELIANCE at 2026-01-05T09:15:02+05:30: on_tick raised "
        "ZeroDivisionError: division by zero; it sent nothing for this tick (next alert if it "
        "fails on 10 ticks in a row)"
    )
    # The EMA strategy on the same tick still crossed and signalled.
    assert [(s.data.strategy, s.broker) for s in signals] == [("ema", "paper")]  # type: ignore[attr-defined]
    # The failing strategy's state is as the first tick left it; the next tick carries on from it.
    assert json.loads(store.get(keys.indicator("mine", TOKEN)) or "") == {"n": 1, "seen": [1, "tuple"]}
    third = stages.process(runner, _tick(3), store)
    mine = [e.broker for e in third if isinstance(e.data, Signal) and e.data.strategy == "mine"]
    assert sorted(b or "" for b in mine) == ["paper", "zerodha"]
    recovered = [e.data for e in third if isinstance(e.data, Alert)]
    assert [(a.kind, a.severity, a.details["failures_in_a_row"]) for a in recovered] == [
        ("strategy_recovered", Severity.INFO, "1")
    ] * 2
    assert recovered[0].message == (
        "strategy 'mine' trades again on NSE:RELIANCE at 2026-01-05T09:15:03+05:30 after failing "
        "on 1 tick in a row"
    )
    assert store.get(keys.strategy_failures("mine", TOKEN)) == "0"


def test_failure_alerted_when_failures_go_on_then_only_powers_of_ten_are_alerted() -> None:
    assert [n for n in range(1, 20_001) if failure_alerted(n)] == [1, 10, 100, 1000, 10_000]


def test_runner_when_a_users_strategy_fails_on_every_tick_then_its_alerts_thin_out_and_say_how_long(
    plugins: str,
) -> None:
    specs = _specs(_file(f"{plugins}:EveryTick", "{fail_above: 1485}"))
    runner = StrategyRunner(specs, brokers=frozenset({"paper"}))
    store = MemoryStateStore()

    failing = [stages.process(runner, _tick(n, "1490.00"), store) for n in range(1, 121)]
    back = stages.process(runner, _tick(121, "1480.00"), store)

    alerted = {n: e.data for n, out in enumerate(failing, 1) for e in out if isinstance(e.data, Alert)}
    assert list(alerted) == [1, 10, 100]
    assert [a.details["failures_in_a_row"] for a in alerted.values()] == ["1", "10", "100"]  # type: ignore[union-attr]
    assert alerted[100].message == (  # type: ignore[union-attr]
        "strategy 'mine' failed again on NSE:RELIANCE at 2026-01-05T09:16:40+05:30: on_tick raised "
        "ZeroDivisionError: division by zero; it has failed on the last 100 ticks in a row and "
        "sent nothing for them (next alert at 1000)"
    )
    assert store.get(keys.strategy_failures("mine", TOKEN)) == "0"
    (recovered,) = [e.data for e in back if isinstance(e.data, Alert)]
    assert (recovered.kind, recovered.details["failures_in_a_row"]) == ("strategy_recovered", "120")  # type: ignore[union-attr]
    # A replayed redelivery of a failing tick changes nothing: the count is per tick, once.
    assert stages.process(runner, _tick(120, "1490.00"), store) == failing[-1]
    assert store.get(keys.strategy_failures("mine", TOKEN)) == "0"


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        ("bad_state", "its state must be plain JSON (dicts, lists, str, numbers): Object of type Decimal"),
        ("not_a_pair", "on_tick must return (state, intents), not list"),
        ("not_an_intent", "on_tick returned str, not an OrderIntent"),
        ("zero_quantity", "an OrderIntent needs a Side, a whole quantity above 0 and a text reason"),
    ],
)
def test_runner_when_a_users_strategy_answers_wrongly_then_it_is_a_strategy_error(
    answer: str, failure: str
) -> None:
    class Wrong:
        sells_short = True

        def on_tick(self, state: Any, tick: TickView) -> Any:
            return {
                "bad_state": ({"price": tick.last_price}, []),
                "not_a_pair": [],
                "not_an_intent": ({}, ["buy"]),
                "zero_quantity": ({}, [OrderIntent(Side.BUY, 0, "x")]),
            }[answer]

    spec = StrategySpec("wrong", Wrong(), frozenset({TOKEN}), ("paper",), builtin=False)
    runner = StrategyRunner([spec], brokers=frozenset({"paper"}))
    store = MemoryStateStore()

    (alert,) = stages.process(runner, _tick(1), store)

    assert isinstance(alert.data, Alert)
    assert failure in alert.data.message
    assert store.get(keys.indicator("wrong", TOKEN)) is None


# --- the backtest -----------------------------------------------------------------------------


def _backtest_inputs(tmp: Path, plugins: str, fail_above: str) -> tuple[Any, list[Event]]:
    (tmp / "strategies.yaml").write_text(
        textwrap.dedent(
            f"""
            strategies:
              - name: mine
                kind: "{plugins}:EveryTick"
                instruments: [RELIANCE, INFY]
                brokers: [paper]
                params: {{fail_above: {fail_above}}}
              - name: ema
                kind: ema_crossover
                instruments: [RELIANCE, INFY]
                brokers: [paper]
                params: {{fast: 2, slow: 5, quantity: 10}}
            """
        )
    )
    settings = load_settings(brokers=("paper",), strategies_file=tmp / "strategies.yaml")
    core = build_core(settings)
    chosen = [i for i in core.instruments if i.tradingsymbol in ("RELIANCE", "INFY")]
    stamper = TickStamper()
    ticks = [
        stamper.stamp(t) for t in fixed_simulation(chosen, 5, datetime(2026, 1, 5, 10, 0, tzinfo=IST), 400)
    ]
    return settings, ticks


def test_backtest_when_a_users_strategy_runs_then_fast_and_general_paths_agree_to_the_byte(
    tmp_path: Path, plugins: str
) -> None:
    all_ticks = _backtest_inputs(tmp_path, plugins, "1e9")[1]
    threshold = sorted(t.data.last_price for t in all_ticks)[-3]  # type: ignore[attr-defined]
    settings, ticks = _backtest_inputs(tmp_path, plugins, str(threshold))
    expected = sum(1 for t in ticks if t.data.last_price > threshold)  # type: ignore[attr-defined]
    general_store, fast_store = BacktestStateStore(), BacktestStateStore()

    general = Backtest(build_core(settings), general_store, fast=False).run(ticks)
    fast = Backtest(build_core(settings), fast_store, fast=True).run(ticks)

    assert fast.report.dumps() == general.report.dumps()
    assert [e.id for e in fast.fills] == [e.id for e in general.fills]
    assert fast_store.snapshot() == general_store.snapshot()
    assert [e.id for e in fast.alerts] == [e.id for e in general.alerts]
    # A few ticks above the threshold, each failed on and counted, and the run went on trading.
    assert expected >= 2
    assert fast.strategy_failures == general.strategy_failures == Counter({"mine": expected})
    # ... and the JSON report says so too, for a script that reads only that.
    assert json.loads(fast.report.dumps())["strategy_failures"] == {"mine": expected}
    kinds = Counter(a.data.kind for a in fast.alerts)  # type: ignore[attr-defined]
    assert 1 <= kinds["strategy_error"] <= expected and kinds["strategy_recovered"] <= kinds["strategy_error"]
    assert {f.data.strategy for f in fast.fills} == {"mine", "ema"}  # type: ignore[attr-defined]
    notes = strategy_failure_notes(fast)
    assert len(notes) == 1 and notes[0].startswith(
        f"warning: strategy 'mine' failed on {expected} ticks and sent nothing on them; "
        "the first: strategy 'mine' failed on NSE:"
    )


def test_backtest_when_a_users_strategy_fails_on_every_tick_then_both_paths_count_each_and_alert_few(
    tmp_path: Path, plugins: str
) -> None:
    settings, ticks = _backtest_inputs(tmp_path, plugins, "0")
    general_store, fast_store = BacktestStateStore(), BacktestStateStore()

    general = Backtest(build_core(settings), general_store, fast=False).run(ticks)
    fast = Backtest(build_core(settings), fast_store, fast=True).run(ticks)

    assert fast.report.dumps() == general.report.dumps()
    assert fast_store.snapshot() == general_store.snapshot()
    assert [e.id for e in fast.alerts] == [e.id for e in general.alerts]
    # 100+ ticks on each of two instruments: alerts at the 1st, 10th and 100th failure of each.
    assert Counter(t.data.instrument_token for t in ticks).most_common()[-1][1] >= 100  # type: ignore[attr-defined]
    in_a_row = sorted(int(a.data.details["failures_in_a_row"]) for a in fast.alerts)  # type: ignore[attr-defined]
    assert in_a_row == [1, 1, 10, 10, 100, 100]
    assert fast.strategy_failures == general.strategy_failures == Counter({"mine": len(ticks)})
    assert {f.data.strategy for f in fast.fills} == {"ema"}  # type: ignore[attr-defined]


def test_backtest_command_when_the_example_is_run_then_the_users_strategy_trades(tmp_path: Path) -> None:
    """The README's command for the example, in a fresh interpreter with only PYTHONPATH set."""
    out = tmp_path / "report.json"
    command = (
        "import sys; from alphapanda.cli import main; sys.exit(main(sys.argv[1:]))",
        "backtest",
        "--ticks",
        "shared/alphapanda/data/sample_day_nse.csv",
        "--strategies",
        "examples/strategies.yaml",
        "--json",
        str(out),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": "examples"}
    done = subprocess.run(
        [sys.executable, "-c", *command], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    fills = json.loads(out.read_text())["fills"]
    assert {f["strategy"] for f in fills} == {"breakout", "ema_fast"}
