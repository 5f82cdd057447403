"""EMA crossover: warm-up, hand-computed EMAs, entry and flip sizes, and parameter checks."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from alphapanda.domain.strategy import (
    EmaCrossover,
    OrderIntent,
    StrategyConfigError,
    StrategyState,
    TickView,
    build_strategy,
)
from alphapanda.events import IST, Side


def _view(mid: str) -> TickView:
    price = Decimal(mid)
    return TickView(738561, price, price, price, price, 0, datetime(2026, 1, 5, 9, 15, tzinfo=IST))


def _run(
    strategy: EmaCrossover, prices: list[str], state: StrategyState | None = None
) -> tuple[StrategyState | None, list[list[OrderIntent]]]:
    per_tick = []
    for price in prices:
        state, intents = strategy.on_tick(state, _view(price))
        per_tick.append(intents)
    return state, per_tick


def test_on_tick_when_first_tick_then_both_emas_are_seeded_with_the_price() -> None:
    state, intents = EmaCrossover(fast=3, slow=7, quantity=10).on_tick(None, _view("100"))

    assert state == {"fast": 100.0, "slow": 100.0, "n": 1, "target": 0}
    assert intents == []


def test_on_tick_when_three_ticks_then_emas_match_hand_computation() -> None:
    # fast=3 -> alpha 2/4 = 0.5; slow=7 -> alpha 2/8 = 0.25 (both exact in binary).
    # t2 @104: fast = 100 + 0.5*4  = 102,  slow = 100 + 0.25*4  = 101
    # t3 @112: fast = 102 + 0.5*10 = 107,  slow = 101 + 0.25*11 = 103.75
    state, _ = _run(EmaCrossover(fast=3, slow=7, quantity=10), ["100", "104", "112"])

    assert state == {"fast": 107.0, "slow": 103.75, "n": 3, "target": 0}


def test_on_tick_when_fewer_than_slow_ticks_then_no_signal_even_though_fast_is_above() -> None:
    prices = [str(100 + i) for i in range(7)]

    _, per_tick = _run(EmaCrossover(fast=3, slow=7, quantity=10), prices)

    assert per_tick[:6] == [[]] * 6
    assert per_tick[6] == [OrderIntent(Side.BUY, 10, "EMA(3) crossed above EMA(7)")]


def test_on_tick_when_trend_reverses_then_first_signal_is_q_and_each_flip_is_2q() -> None:
    # fast=1 -> alpha 1 (fast EMA is the price); slow=3 -> alpha 0.5.
    # t1 100: f=100 s=100 | t2 110: f=110 s=105 (n=2, warming) | t3 110: f=110 s=107.5 -> BUY 10
    # t4 90: f=90 s=98.75 -> SELL 20 | t5 80: f=80 s=89.375 (still below) | t6 120: f=120 s=104.6875 -> BUY 20
    state, per_tick = _run(
        EmaCrossover(fast=1, slow=3, quantity=10), ["100", "110", "110", "90", "80", "120"]
    )

    assert per_tick == [
        [],
        [],
        [OrderIntent(Side.BUY, 10, "EMA(1) crossed above EMA(3)")],
        [OrderIntent(Side.SELL, 20, "EMA(1) crossed below EMA(3)")],
        [],
        [OrderIntent(Side.BUY, 20, "EMA(1) crossed above EMA(3)")],
    ]
    assert state == {"fast": 120.0, "slow": 104.6875, "n": 6, "target": 10}


def test_on_tick_when_price_never_moves_then_emas_are_equal_and_no_signal() -> None:
    _, per_tick = _run(EmaCrossover(fast=2, slow=4, quantity=10), ["250.5"] * 10)

    assert per_tick == [[]] * 10


def test_on_tick_when_state_goes_through_json_then_result_is_unchanged() -> None:
    strategy = EmaCrossover(fast=1, slow=3, quantity=10)
    state, _ = _run(strategy, ["100", "110", "110"])

    assert strategy.on_tick(json.loads(json.dumps(state)), _view("90")) == strategy.on_tick(
        state, _view("90")
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fast": 5, "slow": 5, "quantity": 1}, "1 <= fast < slow"),
        ({"fast": 20, "slow": 5, "quantity": 1}, "fast=20, slow=5"),
        ({"fast": 0, "slow": 5, "quantity": 1}, "1 <= fast < slow"),
        ({"fast": 5, "slow": 20, "quantity": 0}, "quantity > 0"),
        ({"fast": 5, "slow": 20, "quantity": -3}, r"got -3"),
    ],
)
def test_ema_crossover_when_params_are_bad_then_raises_config_error(
    params: dict[str, int], message: str
) -> None:
    with pytest.raises(StrategyConfigError, match=message):
        EmaCrossover(**params)


def test_build_strategy_when_kind_known_then_builds_it() -> None:
    assert build_strategy("ema_crossover", {"fast": 5, "slow": 20, "quantity": 10}) == EmaCrossover(5, 20, 10)


def test_build_strategy_when_kind_unknown_then_error_lists_known_kinds() -> None:
    with pytest.raises(StrategyConfigError, match="unknown strategy kind 'rsi'; known: ema_crossover"):
        build_strategy("rsi", {})


def test_build_strategy_when_param_unknown_then_error_names_kind() -> None:
    with pytest.raises(StrategyConfigError, match=r"ema_crossover params are wrong: .*'window'"):
        build_strategy("ema_crossover", {"fast": 5, "slow": 20, "quantity": 10, "window": 3})


def test_on_tick_when_long_only_then_it_holds_nothing_below_and_each_flip_is_q() -> None:
    # The same prices as the reversal test above: BUY 10 at t3, then below at t4 (target 0, not
    # -10: SELL 10), still below at t5, above again at t6 (BUY 10).
    strategy = EmaCrossover(fast=1, slow=3, quantity=10, long_only=True)
    state, per_tick = _run(strategy, ["100", "110", "110", "90", "80", "120"])

    assert per_tick == [
        [],
        [],
        [OrderIntent(Side.BUY, 10, "EMA(1) crossed above EMA(3)")],
        [OrderIntent(Side.SELL, 10, "EMA(1) crossed below EMA(3)")],
        [],
        [OrderIntent(Side.BUY, 10, "EMA(1) crossed above EMA(3)")],
    ]
    assert state is not None and state["target"] == 10
    assert not strategy.sells_short and EmaCrossover(fast=1, slow=3, quantity=10).sells_short


def test_on_tick_when_long_only_and_it_starts_below_then_no_order_until_above() -> None:
    # t3 70: f=70 s=85 below (target stays 0: nothing to do) | t4 100: f=100 s=92.5 -> BUY 10
    _, per_tick = _run(EmaCrossover(fast=1, slow=3, quantity=10, long_only=True), ["100", "100", "70", "100"])

    assert per_tick == [[], [], [], [OrderIntent(Side.BUY, 10, "EMA(1) crossed above EMA(3)")]]


def test_ema_crossover_when_long_only_is_not_a_bool_then_raises_config_error() -> None:
    with pytest.raises(StrategyConfigError, match="long_only true or false"):
        EmaCrossover(fast=1, slow=3, quantity=10, long_only="yes")  # type: ignore[arg-type]
