"""A risk officer's boundary tests of the pure rules: at and one paisa over each limit, flips,
sells from flat, the kill switch, prices the rules cannot value, and the clarity of every reason.

Each `*_bug_*`-style test below names the rule and what a user expects; the others pin behaviour
that was checked and found correct, so a regression fails them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alphapanda.config import RiskLimits
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.domain.risk import (
    BrokerState,
    CapitalAllocation,
    DailyLossLimit,
    DuplicateSignal,
    KillSwitch,
    LastSignal,
    MaxGrossExposure,
    MaxOpenOrders,
    MaxOrderValue,
    MaxPositionQuantity,
    MaxPositionValue,
    PriceBand,
    RiskContext,
    TradeCountCap,
    TradingSession,
    evaluate,
)
from alphapanda.events import IST, Side
from risk_signals import MID_SESSION as T
from risk_signals import risk_context as _ctx

D = Decimal
NSE = load_trading_calendar()


def _rules(ctx: RiskContext) -> dict[str, str]:
    return {f.rule: f.reason for f in evaluate(ctx)}


# --- limits at the boundary and one paisa over (default limits, found correct) -----------------


def test_max_order_value_when_exactly_the_default_limit_then_passes_and_one_paisa_over_fails() -> None:
    # 500 x 1,000.00 = 5,00,000.00 (the default); 500 x 1,000.00002 = 5,00,000.01
    assert MaxOrderValue().check(_ctx(quantity=500, price="1000.00")) is None
    assert MaxOrderValue().check(_ctx(quantity=500, price="1000.00002")) == (
        "order value Rs 500000.01 exceeds the limit of Rs 500000.00"
    )


def test_max_position_quantity_when_exactly_2000_then_passes_and_2001_fails_on_either_side() -> None:
    assert MaxPositionQuantity().check(_ctx(Side.BUY, 1000, position=1000, price="1")) is None
    assert MaxPositionQuantity().check(_ctx(Side.SELL, 1000, position=-1000, price="1")) is None
    assert MaxPositionQuantity().check(_ctx(Side.BUY, 1001, position=1000, price="1")) == (
        "position would be 2001, beyond the limit of 2000 per instrument"
    )
    assert MaxPositionQuantity().check(_ctx(Side.SELL, 1001, position=-1000, price="1")) == (
        "position would be -2001, beyond the limit of 2000 per instrument"
    )


def test_max_position_value_when_exactly_ten_lakh_then_passes_and_one_paisa_over_fails() -> None:
    # 1,000 x 1,000 = 10,00,000; 1,000 x 1,000.00001 = 10,00,000.01
    assert MaxPositionValue().check(_ctx(quantity=500, position=500, price="1000")) is None
    assert MaxPositionValue().check(_ctx(quantity=500, position=500, price="1000.00001")) == (
        "position value would be Rs 1000000.01, beyond the per-instrument limit of Rs 1000000.00"
    )


def test_max_gross_exposure_when_exactly_fifty_lakh_then_passes_and_one_paisa_over_fails() -> None:
    assert MaxGrossExposure().check(_ctx(gross_after=D("5000000.00"))) is None
    assert MaxGrossExposure().check(_ctx(gross_after=D("5000000.01"))) == (
        "gross exposure would be Rs 5000000.01, beyond the broker's Rs 5000000.00"
    )


def test_daily_loss_limit_when_loss_one_paisa_short_of_the_limit_then_passes_and_at_it_fails() -> None:
    assert DailyLossLimit().check(_ctx(day_pnl=D("-49999.99"))) is None
    assert DailyLossLimit().check(_ctx(day_pnl=D("-50000.00"))) is not None
    assert DailyLossLimit().check(_ctx(day_pnl=D("-50000.01"))) is not None


def test_trade_cap_when_499_sent_then_the_500th_passes_and_the_501st_fails() -> None:
    assert TradeCountCap().check(_ctx(trades_today=499)) is None
    assert TradeCountCap().check(_ctx(trades_today=500)) == (
        "strategy ema_fast already sent 500 orders today (cap 500)"
    )


def test_max_open_orders_when_49_open_then_the_50th_passes_and_the_51st_fails() -> None:
    assert MaxOpenOrders().check(_ctx(open_orders=49)) is None
    assert MaxOpenOrders().check(_ctx(open_orders=50)) == "50 orders are already open (limit 50)"


def test_duplicate_window_when_same_signal_just_inside_two_seconds_then_suppressed_at_two_passes() -> None:
    just_inside = LastSignal(Side.BUY, 10, T - timedelta(seconds=2) + timedelta(microseconds=1))
    at_window = LastSignal(Side.BUY, 10, T - timedelta(seconds=2))

    assert DuplicateSignal().check(_ctx(last_signal=just_inside)) is not None
    assert DuplicateSignal().check(_ctx(last_signal=at_window)) is None


def test_price_band_when_exactly_five_percent_then_passes_and_one_paisa_beyond_fails() -> None:
    assert PriceBand().check(_ctx(price="1050.00", last_price=D("1000"))) is None
    assert PriceBand().check(_ctx(price="950.00", last_price=D("1000"))) is None
    assert PriceBand().check(_ctx(price="1050.01", last_price=D("1000"))) is not None
    assert PriceBand().check(_ctx(price="949.99", last_price=D("1000"))) is not None


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (datetime(2025, 11, 24, 9, 0, tzinfo=IST), False),  # pre-open order entry
        (datetime(2025, 11, 24, 9, 8, tzinfo=IST), False),  # pre-open matching
        (datetime(2025, 11, 24, 9, 15, tzinfo=IST), True),
        (datetime(2025, 11, 24, 15, 29, tzinfo=IST), True),  # the closing minute
        (datetime(2025, 11, 24, 15, 29, 59, tzinfo=IST), True),
        (datetime(2025, 11, 24, 15, 30, tzinfo=IST), False),
        (datetime(2025, 11, 24, 15, 40, tzinfo=IST), False),  # post-close session
        (datetime(2025, 11, 24, 9, 59, 59, tzinfo=UTC), True),  # 15:29:59 IST
        (datetime(2025, 11, 24, 10, 0, tzinfo=UTC), False),  # 15:30 IST
    ],
)
def test_trading_session_when_around_pre_open_and_the_close_then_only_0915_to_1530_ist_trades(
    at: datetime, is_open: bool
) -> None:
    assert (TradingSession().check(_ctx(at=at, calendar=NSE)) is None) is is_open


# --- position flips and sells from flat (found correct) ---------------------------------------


def test_flip_when_long_100_sells_200_then_order_valued_for_both_legs_position_for_the_result() -> None:
    limits = RiskLimits(max_order_value=D("199999"), max_position_quantity=99, max_position_value=D("99999"))
    ctx = _ctx(Side.SELL, 200, position=100, limits=limits, broker_state=BrokerState.REDUCING)

    assert ctx.position_after == -100
    assert not ctx.reduces
    assert _rules(ctx) == {
        "kill_switch": "the broker is REDUCING: only signals that reduce a position pass",
        # both legs: 200 x 1,000
        "max_order_value": "order value Rs 200000.00 exceeds the limit of Rs 199999.00",
        # the result: short 100
        "max_position_quantity": "position would be -100, beyond the limit of 99 per instrument",
        "max_position_value": (
            "position value would be Rs 100000.00, beyond the per-instrument limit of Rs 99999.00"
        ),
    }


def test_sell_when_flat_then_it_opens_a_short_checked_like_any_opening_order() -> None:
    ctx = _ctx(Side.SELL, 10, position=0, broker_state=BrokerState.REDUCING)

    assert (ctx.position_after, ctx.reduces) == (-10, False)
    assert KillSwitch().check(ctx) == "the broker is REDUCING: only signals that reduce a position pass"
    assert KillSwitch().check(_ctx(Side.SELL, 10, position=0)) is None


@pytest.mark.parametrize(
    ("state", "side", "quantity", "position", "flatten", "passes"),
    [
        (BrokerState.REDUCING, Side.SELL, 40, 100, False, True),  # reduces
        (BrokerState.REDUCING, Side.SELL, 100, 100, False, True),  # closes
        (BrokerState.REDUCING, Side.BUY, 40, 100, False, False),  # increases
        (BrokerState.REDUCING, Side.SELL, 200, 100, False, False),  # flips
        (BrokerState.HALTED, Side.SELL, 100, 100, True, True),  # flatten closes
        (BrokerState.HALTED, Side.SELL, 40, 100, False, False),  # reduces, not a flatten
        (BrokerState.HALTED, Side.BUY, 40, 100, True, False),  # "flatten" that increases
    ],
)
def test_kill_switch_when_reducing_or_halted_then_only_what_the_state_allows_passes(
    state: BrokerState, side: Side, quantity: int, position: int, flatten: bool, passes: bool
) -> None:
    ctx = _ctx(side, quantity, position=position, flatten=flatten, broker_state=state)

    assert (KillSwitch().check(ctx) is None) is passes


# --- bug: a flatten bigger than the order-value limit could never pass ------------------------


def test_max_order_value_when_a_flatten_closes_a_position_worth_more_than_the_limit_then_it_passes() -> None:
    # max_order_value: 800 shares built in two orders of 4 lakh each (within every limit) are worth
    # 8 lakh; the operator's flatten must close them in one order, or a HALTED broker is stuck.
    ctx = _ctx(Side.SELL, 800, position=800, flatten=True, broker_state=BrokerState.HALTED)

    assert _rules(ctx) == {}


def test_max_order_value_when_a_flatten_would_open_a_position_then_the_limit_still_applies() -> None:
    ctx = _ctx(Side.SELL, 800, position=0, flatten=True)

    assert MaxOrderValue().check(ctx) == "order value Rs 800000.00 exceeds the limit of Rs 500000.00"


def test_max_order_value_when_an_ordinary_exit_exceeds_the_limit_then_it_still_fails() -> None:
    ctx = _ctx(Side.SELL, 800, position=800)

    assert MaxOrderValue().check(ctx) == "order value Rs 800000.00 exceeds the limit of Rs 500000.00"


# --- bug: "reduces" judged on the whole broker, not the strategy's own position ----------------


def test_capital_allocation_when_flat_strategy_sells_against_anothers_long_then_allocation_applies() -> None:
    # The broker holds 1,000 long (another strategy's); this strategy is flat and sells 500: the
    # broker's net shrinks, but this strategy now holds Rs 5,00,000 of short against Rs 1,00,000.
    ctx = _ctx(
        Side.SELL,
        500,
        position=1000,
        strategy_position_quantity=0,
        strategy_exposure_after=D("500000"),
        capital_allocation=D("100000"),
    )

    assert ctx.reduces and not ctx.strategy_reduces  # the broker's net shrinks, the strategy opens
    assert CapitalAllocation().check(ctx) == (
        "strategy ema_fast would hold Rs 500000.00, beyond its allocation of Rs 100000.00"
    )


def test_kill_switch_when_halted_and_strategies_hold_opposite_positions_then_each_flatten_passes() -> None:
    # Strategy A long 800, strategy B short 300: the broker is net long 500. A's flatten (sell 800)
    # takes the broker to -300 and B's (buy 300) to 800; judged on the broker both were refused
    # and nothing could ever be closed.
    flatten_a = _ctx(
        Side.SELL,
        800,
        position=500,
        strategy_position_quantity=800,
        flatten=True,
        broker_state=BrokerState.HALTED,
    )
    flatten_b = _ctx(
        Side.BUY,
        300,
        position=500,
        strategy_position_quantity=-300,
        flatten=True,
        broker_state=BrokerState.HALTED,
    )

    assert _rules(flatten_a) == {}
    assert _rules(flatten_b) == {}


def test_kill_switch_when_reducing_and_strategies_net_flat_then_each_may_close_its_own_position() -> None:
    ctx = _ctx(Side.SELL, 100, position=0, strategy_position_quantity=100, broker_state=BrokerState.REDUCING)

    assert ctx.reduces
    assert _rules(ctx) == {}


# --- bug: a limit price far from the market slipped past the price band -----------------------


def test_price_band_when_a_sell_limit_is_far_below_the_market_then_it_fails_naming_the_limit() -> None:
    # A SELL LIMIT at Rs 1 on a Rs 1,000 stock fills at once at ~1,000, yet was valued at Rs 1:
    # 2,000 shares (Rs 20 lakh) passed a Rs 5 lakh order-value limit.
    ctx = _ctx(Side.SELL, 2000, price="1000", limit_price="1", last_price=D("1000"))

    assert PriceBand().check(ctx) == ("limit price 1 is 99.90% from the last tick 1000 (band 5%)")


def test_price_band_when_a_limit_is_at_the_band_then_passes_and_one_paisa_beyond_fails() -> None:
    assert PriceBand().check(_ctx(Side.SELL, limit_price="950.00", last_price=D("1000"))) is None
    assert PriceBand().check(_ctx(Side.BUY, limit_price="1050.00", last_price=D("1000"))) is None
    assert PriceBand().check(_ctx(Side.SELL, limit_price="949.99", last_price=D("1000"))) == (
        "limit price 949.99 is 5.01% from the last tick 1000 (band 5%)"
    )


def test_price_band_when_no_tick_seen_then_a_limit_is_judged_against_the_signals_own_price() -> None:
    ctx = _ctx(Side.SELL, 2000, price="1000", limit_price="1")

    assert PriceBand().check(ctx) == "limit price 1 is 99.90% from the signal price 1000 (band 5%)"


# --- bug: prices a rule cannot value ----------------------------------------------------------


@pytest.mark.parametrize("limit", ["-1000", "0"])
def test_max_order_value_when_limit_price_is_not_positive_then_fails_saying_so(limit: str) -> None:
    # A negative limit made the order value negative (it passed, and reserved negative exposure);
    # a zero limit was silently read as "no limit" and valued at the reference price.
    ctx = _ctx(quantity=10, limit_price=limit)

    assert MaxOrderValue().check(ctx) == f"limit price {limit} is not positive: the order cannot be valued"


def test_price_band_when_the_last_tick_price_is_zero_then_fails_with_a_reason_instead_of_crashing() -> None:
    assert PriceBand().check(_ctx(last_price=D("0"))) == (
        "the last tick price 0 is not positive: the price band cannot be judged"
    )


# --- bug: reasons that show an amount over its limit as equal to it ---------------------------


def test_price_band_when_one_paisa_beyond_then_the_deviation_shown_is_beyond_the_band() -> None:
    # 1,050.01 is 5.001% from 1,000; "5.00% (band 5%)" reads as inside the band.
    assert PriceBand().check(_ctx(price="1050.01", last_price=D("1000"))) == (
        "signal price 1050.01 is 5.01% from the last tick 1000 (band 5%)"
    )


def test_max_order_value_when_half_a_paisa_over_then_the_reason_shows_the_exact_value() -> None:
    # A mid price on a one-paisa tick ends in half a paisa: 1 x 1,30,000.005 > 1,30,000.
    ctx = _ctx(quantity=1, price="130000.005", limits=RiskLimits(max_order_value=D("130000")))

    assert MaxOrderValue().check(ctx) == "order value Rs 130000.005 exceeds the limit of Rs 130000.00"


def test_every_rejection_when_every_rule_fails_then_each_reason_is_non_empty_and_names_a_number() -> None:
    limits = RiskLimits(
        max_order_value=D("1"),
        max_position_quantity=1,
        max_position_value=D("1"),
        max_gross_exposure=D("1"),
        max_trades_per_day=1,
        max_open_orders=1,
    )
    ctx = _ctx(
        quantity=10,
        limits=limits,
        broker_state=BrokerState.REDUCING,
        gross_after=D("2"),
        trades_today=1,
        open_orders=1,
        day_pnl=D("-60000"),
        last_price=D("2000"),
        capital_allocation=D("1"),
        strategy_exposure_after=D("2"),
        last_signal=LastSignal(Side.BUY, 10, T),
    )

    reasons = _rules(ctx)
    assert len(reasons) == 11
    assert all(reasons.values())
    # every limit's reason carries the numbers it was judged on
    assert all(any(ch.isdigit() for ch in r) for rule, r in reasons.items() if rule != "kill_switch")
