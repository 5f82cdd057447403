"""Pre-trade risk rules: each rule passing and failing, reductions of breached positions, evaluate."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from alphapanda.config import RiskLimits
from alphapanda.domain.risk import (
    DEFAULT_RULES,
    InstrumentAllowList,
    MaxOrderValue,
    MaxPositionQuantity,
    RiskContext,
    evaluate,
)
from alphapanda.events import IST, RuleFailure, Side, Signal

TOKEN = 738561
LIMITS = RiskLimits(max_order_value=Decimal("100000"), max_position_quantity=100)


def _ctx(
    side: Side = Side.BUY,
    quantity: int = 10,
    *,
    position: int = 0,
    reference_price: str = "1000",
    last_price: str | None = None,
    limits: RiskLimits = LIMITS,
    token: int = TOKEN,
) -> RiskContext:
    signal = Signal(
        instrument_token=token,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="ema_fast",
        side=side,
        quantity=quantity,
        reference_price=Decimal(reference_price),
        tick_time=datetime(2025, 11, 24, 9, 15, tzinfo=IST),
    )
    return RiskContext(
        signal=signal,
        limits=limits,
        position_quantity=position,
        last_price=Decimal(last_price) if last_price is not None else None,
    )


# --- max order value --------------------------------------------------------------------------


def test_max_order_value_when_value_equals_limit_then_passes() -> None:
    assert MaxOrderValue().check(_ctx(quantity=100, reference_price="1000")) is None


def test_max_order_value_when_value_exceeds_limit_then_fails_with_both_amounts() -> None:
    reason = MaxOrderValue().check(_ctx(quantity=101, reference_price="1000"))

    assert reason == "order value Rs 101000.00 exceeds the limit of Rs 100000.00"


def test_max_order_value_when_last_price_differs_then_the_signals_own_price_is_used() -> None:
    # Valued at the strategy's price, so the decision is the same on every replay:
    # 60 x 2,000 = 1,20,000 fails whatever the last tick says; 60 x 1,000 = 60,000 passes.
    assert MaxOrderValue().check(_ctx(quantity=60, reference_price="2000", last_price="1000")) is not None
    assert MaxOrderValue().check(_ctx(quantity=60, reference_price="1000", last_price="2000")) is None


def test_max_order_value_when_selling_then_value_is_still_checked() -> None:
    assert MaxOrderValue().check(_ctx(Side.SELL, 101, reference_price="1000")) is not None


# --- max position quantity ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "quantity", "position"),
    [(Side.BUY, 50, 50), (Side.SELL, 50, -50), (Side.SELL, 200, 100), (Side.BUY, 10, 0)],
)
def test_max_position_when_position_after_within_limit_then_passes(
    side: Side, quantity: int, position: int
) -> None:
    assert MaxPositionQuantity().check(_ctx(side, quantity, position=position)) is None


@pytest.mark.parametrize(
    ("side", "quantity", "position", "after"),
    [(Side.BUY, 51, 50, 101), (Side.SELL, 51, -50, -101), (Side.SELL, 101, 0, -101)],
)
def test_max_position_when_position_after_beyond_limit_then_fails_naming_it(
    side: Side, quantity: int, position: int, after: int
) -> None:
    reason = MaxPositionQuantity().check(_ctx(side, quantity, position=position))

    assert reason == f"position would be {after}, beyond the limit of 100 per instrument"


@pytest.mark.parametrize(("side", "position"), [(Side.SELL, 150), (Side.BUY, -150)])
def test_max_position_when_breached_position_is_reduced_then_passes(side: Side, position: int) -> None:
    assert MaxPositionQuantity().check(_ctx(side, 10, position=position)) is None


@pytest.mark.parametrize(("side", "position"), [(Side.BUY, 150), (Side.SELL, -150)])
def test_max_position_when_breached_position_is_increased_then_fails(side: Side, position: int) -> None:
    assert MaxPositionQuantity().check(_ctx(side, 1, position=position)) is not None


@pytest.mark.parametrize(("quantity", "after"), [(300, -150), (270, -120)])
def test_max_position_when_breached_position_flips_beyond_limit_then_fails(quantity: int, after: int) -> None:
    # +150 -> -150 or -120 goes through flat and opens a fresh short beyond the limit.
    reason = MaxPositionQuantity().check(_ctx(Side.SELL, quantity, position=150))

    assert reason == f"position would be {after}, beyond the limit of 100 per instrument"


def test_max_position_when_breached_position_flips_within_limit_then_passes() -> None:
    assert MaxPositionQuantity().check(_ctx(Side.SELL, 200, position=150)) is None


# --- allow list -------------------------------------------------------------------------------


def test_allow_list_when_unset_then_every_instrument_passes() -> None:
    assert InstrumentAllowList().check(_ctx(token=1)) is None


def test_allow_list_when_empty_then_nothing_may_trade() -> None:
    assert InstrumentAllowList().check(_ctx(limits=RiskLimits(allowed_instruments=()))) is not None


def test_allow_list_when_instrument_listed_then_passes() -> None:
    limits = RiskLimits(allowed_instruments=(1, TOKEN))

    assert InstrumentAllowList().check(_ctx(limits=limits)) is None


def test_allow_list_when_instrument_not_listed_then_fails_naming_symbol_and_token() -> None:
    limits = RiskLimits(allowed_instruments=(1, 2))

    assert InstrumentAllowList().check(_ctx(limits=limits)) == "RELIANCE (738561) is not on the allow-list"


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_when_every_rule_passes_then_returns_no_failures() -> None:
    assert evaluate(_ctx()) == []


def test_evaluate_when_several_rules_fail_then_returns_each_failure_in_rule_order() -> None:
    limits = RiskLimits(max_order_value=Decimal("1000"), max_position_quantity=5, allowed_instruments=(1,))

    failures = evaluate(_ctx(quantity=10, limits=limits))

    assert [f.rule for f in failures] == ["max_order_value", "max_position_quantity", "instrument_allow_list"]
    assert all(isinstance(f, RuleFailure) and f.reason for f in failures)


def test_evaluate_when_only_one_rule_fails_then_returns_only_that_failure() -> None:
    failures = evaluate(_ctx(quantity=101, position=-100))

    assert failures == [
        RuleFailure(
            rule="max_order_value", reason="order value Rs 101000.00 exceeds the limit of Rs 100000.00"
        )
    ]


def test_evaluate_when_given_a_subset_of_rules_then_only_those_run() -> None:
    assert evaluate(_ctx(quantity=500), rules=[InstrumentAllowList()]) == []
    assert len(evaluate(_ctx(quantity=500), rules=DEFAULT_RULES)) == 2
