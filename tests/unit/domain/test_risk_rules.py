"""The rest of the rule set: each rule's pass, fail (reason with its numbers) and exemptions.

`test_risk.py` covers max order value, max position quantity, the allow-list and `evaluate` on
those; this file covers the context's derived values and every other rule.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alphapanda.config import RiskLimits
from alphapanda.domain.calendar import load_trading_calendar
from alphapanda.domain.risk import (
    DEFAULT_RULES,
    BrokerState,
    CapitalAllocation,
    DailyLossLimit,
    DeliveryShortSell,
    DuplicateSignal,
    InstrumentLimits,
    KillSwitch,
    LastSignal,
    LotSize,
    MaxGrossExposure,
    MaxOpenOrders,
    MaxOrderValue,
    MaxPositionValue,
    PriceBand,
    TradeCountCap,
    TradingSession,
    evaluate,
)
from alphapanda.events import IST, Product, Side
from alphapanda.strategies import StrategyRisk
from risk_signals import MID_SESSION as T
from risk_signals import risk_context as _ctx

D = Decimal
NSE = load_trading_calendar()


# --- the context ------------------------------------------------------------------------------


def test_order_price_when_limit_price_given_then_it_is_the_limit_else_the_reference_price() -> None:
    assert _ctx(price="1000", limit_price="990.50").order_price == D("990.50")
    assert _ctx(price="1000").order_price == D("1000")


@pytest.mark.parametrize(
    ("side", "quantity", "position", "after"),
    [(Side.BUY, 10, 0, 10), (Side.SELL, 10, 0, -10), (Side.SELL, 25, 10, -15), (Side.BUY, 5, -20, -15)],
)
def test_position_after_when_signal_applied_then_signed_sum(
    side: Side, quantity: int, position: int, after: int
) -> None:
    assert _ctx(side, quantity, position=position).position_after == after


@pytest.mark.parametrize(
    ("side", "quantity", "position", "reduces"),
    [
        (Side.SELL, 5, 10, True),  # 10 -> 5
        (Side.SELL, 10, 10, True),  # 10 -> 0, closes
        (Side.BUY, 5, -10, True),  # -10 -> -5
        (Side.BUY, 10, -10, True),  # -10 -> 0
        (Side.SELL, 15, 10, False),  # 10 -> -5 crosses flat
        (Side.BUY, 25, -10, False),  # -10 -> 15 crosses flat
        (Side.SELL, 20, 10, False),  # 10 -> -10: same size, other side
        (Side.BUY, 5, 10, False),  # adds
        (Side.SELL, 5, 0, False),  # opens from flat
        (Side.BUY, 5, 0, False),
    ],
)
def test_reduces_when_position_moves_then_true_only_towards_flat_without_crossing(
    side: Side, quantity: int, position: int, reduces: bool
) -> None:
    assert _ctx(side, quantity, position=position).reduces is reduces


# --- kill switch ------------------------------------------------------------------------------

HALTED_REASON = "the broker is HALTED: only closing signals that reduce a position pass"
REDUCING_REASON = "the broker is REDUCING: only signals that reduce a position pass"


@pytest.mark.parametrize(("side", "position"), [(Side.BUY, 0), (Side.BUY, 10), (Side.SELL, 10)])
def test_kill_switch_when_active_then_every_signal_passes(side: Side, position: int) -> None:
    assert KillSwitch().check(_ctx(side, 10, position=position, broker_state=BrokerState.ACTIVE)) is None


@pytest.mark.parametrize(("side", "position"), [(Side.SELL, 10), (Side.SELL, 4), (Side.BUY, -10)])
def test_kill_switch_when_halted_and_flatten_signal_reduces_then_passes(side: Side, position: int) -> None:
    ctx = _ctx(side, 4, position=position, flatten=True, broker_state=BrokerState.HALTED)

    assert KillSwitch().check(ctx) is None


def test_kill_switch_when_halted_and_reducing_signal_is_not_a_flatten_then_fails() -> None:
    ctx = _ctx(Side.SELL, 5, position=10, broker_state=BrokerState.HALTED)

    assert KillSwitch().check(ctx) == HALTED_REASON


@pytest.mark.parametrize(
    ("side", "quantity", "position"),
    [(Side.SELL, 5, 0), (Side.BUY, 5, 10), (Side.SELL, 15, 10)],
    ids=["opens", "adds", "crosses_flat"],
)
def test_kill_switch_when_halted_and_flatten_signal_does_not_reduce_then_fails(
    side: Side, quantity: int, position: int
) -> None:
    ctx = _ctx(side, quantity, position=position, flatten=True, broker_state=BrokerState.HALTED)

    assert KillSwitch().check(ctx) == HALTED_REASON


@pytest.mark.parametrize("flatten", [False, True])
def test_kill_switch_when_reducing_and_signal_reduces_then_passes(flatten: bool) -> None:
    ctx = _ctx(Side.SELL, 5, position=10, flatten=flatten, broker_state=BrokerState.REDUCING)

    assert KillSwitch().check(ctx) is None


@pytest.mark.parametrize(
    ("side", "quantity", "position"),
    [(Side.BUY, 5, 0), (Side.BUY, 5, 10), (Side.SELL, 15, 10)],
    ids=["opens", "adds", "crosses_flat"],
)
def test_kill_switch_when_reducing_and_signal_does_not_reduce_then_fails(
    side: Side, quantity: int, position: int
) -> None:
    ctx = _ctx(side, quantity, position=position, broker_state=BrokerState.REDUCING)

    assert KillSwitch().check(ctx) == REDUCING_REASON


# --- trading session --------------------------------------------------------------------------


def _closed(at: datetime) -> str:
    return f"the market is closed at {at.isoformat()} (NSE session 09:15-15:30 IST on trading days)"


@pytest.mark.parametrize(
    "at",
    [
        datetime(2025, 11, 24, 9, 15, tzinfo=IST),
        datetime(2025, 11, 24, 15, 29, 59, 999999, tzinfo=IST),
        datetime(2025, 11, 24, 3, 45, tzinfo=UTC),  # 09:15 IST
        datetime(2025, 2, 1, 11, 0, tzinfo=IST),  # Saturday Budget-day special session
    ],
)
def test_trading_session_when_tick_time_in_a_session_then_passes(at: datetime) -> None:
    assert TradingSession().check(_ctx(at=at, calendar=NSE)) is None


@pytest.mark.parametrize(
    "at",
    [
        datetime(2025, 11, 24, 9, 14, 59, tzinfo=IST),
        datetime(2025, 11, 24, 15, 30, tzinfo=IST),
        datetime(2025, 11, 24, 3, 44, 59, tzinfo=UTC),  # 09:14:59 IST
        datetime(2025, 11, 22, 11, 0, tzinfo=IST),  # Saturday
        datetime(2025, 11, 23, 11, 0, tzinfo=IST),  # Sunday
        datetime(2025, 12, 25, 11, 0, tzinfo=IST),  # Christmas, a Thursday, in nse_holidays.csv
        datetime(2026, 1, 26, 11, 0, tzinfo=IST),  # Republic Day, a Monday
    ],
    ids=["0914_59", "1530", "utc_0914_59_ist", "saturday", "sunday", "christmas", "republic_day"],
)
def test_trading_session_when_tick_time_outside_sessions_then_fails_naming_the_instant(at: datetime) -> None:
    assert TradingSession().check(_ctx(at=at, calendar=NSE)) == _closed(at)


def test_trading_session_when_year_not_in_the_calendar_then_fails_naming_the_missing_coverage() -> None:
    reason = TradingSession().check(_ctx(at=datetime(2024, 11, 25, 10, 0, tzinfo=IST), calendar=NSE))

    assert reason == (
        "no NSE holiday calendar covers 2024-11-25: the trading calendar has no holiday data for 2024 "
        "(covers: 2025, 2026); add that year's NSE holiday list"
    )


@pytest.mark.parametrize(
    "at",
    [datetime(2025, 11, 22, 11, 0, tzinfo=IST), datetime(2024, 11, 25, 10, 0, tzinfo=IST)],
    ids=["saturday", "uncovered_year"],
)
def test_trading_session_when_enforcement_is_off_then_any_time_passes(at: datetime) -> None:
    limits = RiskLimits(enforce_session=False)

    assert TradingSession().check(_ctx(at=at, limits=limits, calendar=NSE)) is None


def test_trading_session_when_no_calendar_is_given_then_the_rule_does_not_apply() -> None:
    assert TradingSession().check(_ctx(at=datetime(2025, 11, 22, 11, 0, tzinfo=IST))) is None


def test_trading_session_when_checked_at_any_wall_clock_then_only_the_signals_tick_time_decides() -> None:
    # Both checks run at the same wall-clock moment; a past open instant passes, a closed one does not.
    open_at, closed_at = T, T.replace(hour=16)

    assert TradingSession().check(_ctx(at=open_at, calendar=NSE)) is None
    assert TradingSession().check(_ctx(at=closed_at, calendar=NSE)) == _closed(closed_at)


# --- max order value with a limit price -------------------------------------------------------


def test_max_order_value_when_limit_price_given_then_the_order_is_valued_at_it() -> None:
    limits = RiskLimits(max_order_value=D("100000"))
    # 60 x 2,000 (the limit) = 1,20,000; at the 1,000 reference it would be 60,000.
    reason = MaxOrderValue().check(_ctx(quantity=60, price="1000", limit_price="2000", limits=limits))

    assert reason == "order value Rs 120000.00 exceeds the limit of Rs 100000.00"


# --- max position value -----------------------------------------------------------------------

POSITION_VALUE = RiskLimits(max_position_value=D("100000"))


@pytest.mark.parametrize(("side", "position"), [(Side.BUY, 50), (Side.SELL, -50)])
def test_max_position_value_when_value_after_equals_limit_then_passes(side: Side, position: int) -> None:
    # |position +/- 50| = 100 x 1,000 = 1,00,000
    assert MaxPositionValue().check(_ctx(side, 50, position=position, limits=POSITION_VALUE)) is None


@pytest.mark.parametrize(("side", "position"), [(Side.BUY, 50), (Side.SELL, -50)])
def test_max_position_value_when_value_after_exceeds_limit_then_fails_with_both_amounts(
    side: Side, position: int
) -> None:
    reason = MaxPositionValue().check(_ctx(side, 51, position=position, limits=POSITION_VALUE))

    # 101 x 1,000
    assert reason == "position value would be Rs 101000.00, beyond the per-instrument limit of Rs 100000.00"


def test_max_position_value_when_breached_position_is_reduced_then_passes() -> None:
    # 200 -> 190, still 1,90,000 > 1,00,000
    assert MaxPositionValue().check(_ctx(Side.SELL, 10, position=200, limits=POSITION_VALUE)) is None


def test_max_position_value_when_limit_price_given_then_value_uses_it() -> None:
    # 100 x 1,000.01 = 1,00,001
    reason = MaxPositionValue().check(_ctx(quantity=100, limit_price="1000.01", limits=POSITION_VALUE))

    assert reason == "position value would be Rs 100001.00, beyond the per-instrument limit of Rs 100000.00"


# --- max gross exposure -----------------------------------------------------------------------

GROSS = RiskLimits(max_gross_exposure=D("200000"))


def test_max_gross_exposure_when_gross_after_equals_limit_then_passes() -> None:
    assert MaxGrossExposure().check(_ctx(gross_after=D("200000"), limits=GROSS)) is None


def test_max_gross_exposure_when_gross_after_exceeds_limit_then_fails_with_both_amounts() -> None:
    reason = MaxGrossExposure().check(_ctx(gross_after=D("200000.01"), limits=GROSS))

    assert reason == "gross exposure would be Rs 200000.01, beyond the broker's Rs 200000.00"


def test_max_gross_exposure_when_signal_reduces_then_passes_even_beyond_the_limit() -> None:
    assert (
        MaxGrossExposure().check(_ctx(Side.SELL, 5, position=10, gross_after=D("9e6"), limits=GROSS)) is None
    )


# --- capital allocation -----------------------------------------------------------------------


def test_capital_allocation_when_strategy_has_no_allocation_then_any_exposure_passes() -> None:
    assert CapitalAllocation().check(_ctx(strategy_exposure_after=D("9e9"))) is None


def test_capital_allocation_when_exposure_after_equals_allocation_then_passes() -> None:
    ctx = _ctx(strategy_exposure_after=D("100000"), capital_allocation=D("100000"))

    assert CapitalAllocation().check(ctx) is None


def test_capital_allocation_when_exposure_exceeds_allocation_then_fails_naming_strategy_and_amounts() -> None:
    ctx = _ctx(strategy_exposure_after=D("100000.01"), capital_allocation=D("100000"))

    assert CapitalAllocation().check(ctx) == (
        "strategy ema_fast would hold Rs 100000.01, beyond its allocation of Rs 100000.00"
    )


def test_capital_allocation_when_signal_reduces_then_passes_even_beyond_the_allocation() -> None:
    ctx = _ctx(Side.SELL, 5, position=10, strategy_exposure_after=D("150000"), capital_allocation=D("100000"))

    assert CapitalAllocation().check(ctx) is None


# --- daily loss limit -------------------------------------------------------------------------

LOSS = RiskLimits(daily_loss_limit=D("50000"))


@pytest.mark.parametrize("pnl", ["-49999.99", "0", "12000"])
def test_daily_loss_limit_when_pnl_above_minus_limit_then_passes(pnl: str) -> None:
    assert DailyLossLimit().check(_ctx(day_pnl=D(pnl), limits=LOSS)) is None


@pytest.mark.parametrize(("pnl", "shown"), [("-50000", "-50000.00"), ("-61234.5", "-61234.50")])
def test_daily_loss_limit_when_pnl_at_or_below_minus_limit_then_fails_with_pnl_and_limit(
    pnl: str, shown: str
) -> None:
    reason = DailyLossLimit().check(_ctx(day_pnl=D(pnl), limits=LOSS))

    assert reason == f"today's PnL Rs {shown} breaches the daily loss limit of Rs 50000.00"


def test_daily_loss_limit_when_breached_and_signal_reduces_then_passes() -> None:
    assert DailyLossLimit().check(_ctx(Side.BUY, 5, position=-10, day_pnl=D("-80000"), limits=LOSS)) is None


# --- trade count cap --------------------------------------------------------------------------

CAP = RiskLimits(max_trades_per_day=3)


def test_trade_count_cap_when_below_cap_then_passes() -> None:
    assert TradeCountCap().check(_ctx(trades_today=2, limits=CAP)) is None


@pytest.mark.parametrize("trades", [3, 7])
def test_trade_count_cap_when_cap_reached_then_fails_naming_strategy_count_and_cap(trades: int) -> None:
    reason = TradeCountCap().check(_ctx(trades_today=trades, limits=CAP))

    assert reason == f"strategy ema_fast already sent {trades} orders today (cap 3)"


def test_trade_count_cap_when_cap_reached_and_signal_is_a_flatten_then_passes() -> None:
    ctx = _ctx(Side.SELL, 10, position=10, flatten=True, trades_today=3, limits=CAP)

    assert TradeCountCap().check(ctx) is None


def test_trade_count_cap_when_cap_reached_and_signal_only_reduces_then_still_fails() -> None:
    # Only operator/square-off closes are exempt, not a strategy's own reductions.
    assert TradeCountCap().check(_ctx(Side.SELL, 10, position=10, trades_today=3, limits=CAP)) is not None


# --- max open orders --------------------------------------------------------------------------

OPEN = RiskLimits(max_open_orders=2)


def test_max_open_orders_when_below_limit_then_passes() -> None:
    assert MaxOpenOrders().check(_ctx(open_orders=1, limits=OPEN)) is None


@pytest.mark.parametrize("open_orders", [2, 5])
def test_max_open_orders_when_limit_reached_then_fails_with_count_and_limit(open_orders: int) -> None:
    reason = MaxOpenOrders().check(_ctx(open_orders=open_orders, limits=OPEN))

    assert reason == f"{open_orders} orders are already open (limit 2)"


# --- price band -------------------------------------------------------------------------------


@pytest.mark.parametrize("price", ["1050", "950", "1000", "1049.99"])
def test_price_band_when_signal_price_within_band_of_last_tick_then_passes(price: str) -> None:
    # band 5% of 1,000: 950 .. 1,050 inclusive
    assert PriceBand().check(_ctx(price=price, last_price=D("1000"))) is None


@pytest.mark.parametrize("price", ["1050.05", "949.95"])
def test_price_band_when_signal_price_just_outside_band_then_fails(price: str) -> None:
    assert PriceBand().check(_ctx(price=price, last_price=D("1000"))) is not None


def test_price_band_when_outside_then_reason_names_both_prices_deviation_and_band() -> None:
    reason = PriceBand().check(
        _ctx(price="1060", last_price=D("1000"), limits=RiskLimits(price_band_pct=D("3")))
    )

    assert reason == "signal price 1060 is 6.00% from the last tick 1000 (band 3%)"


def test_price_band_when_no_tick_seen_yet_then_passes() -> None:
    assert PriceBand().check(_ctx(price="99999")) is None


# --- lot size and freeze quantity -------------------------------------------------------------

NIFTY_FUT = InstrumentLimits(lot_size=75, freeze_quantity=1800, derivative=True)


@pytest.mark.parametrize("quantity", [75, 150, 1800])
def test_lot_size_when_derivative_quantity_is_whole_lots_within_freeze_then_passes(quantity: int) -> None:
    assert LotSize().check(_ctx(quantity=quantity, instrument=NIFTY_FUT)) is None


def test_lot_size_when_derivative_quantity_is_not_whole_lots_then_fails_with_quantity_and_lot() -> None:
    reason = LotSize().check(_ctx(quantity=100, instrument=NIFTY_FUT))

    assert reason == "quantity 100 is not a multiple of the lot size 75"


def test_lot_size_when_equity_has_a_lot_size_then_any_quantity_passes() -> None:
    equity = InstrumentLimits(lot_size=75, derivative=False)

    assert LotSize().check(_ctx(quantity=100, instrument=equity)) is None


@pytest.mark.parametrize("instrument", [NIFTY_FUT, InstrumentLimits(freeze_quantity=1800)], ids=["fut", "eq"])
def test_lot_size_when_above_freeze_quantity_then_fails_with_both(instrument: InstrumentLimits) -> None:
    # 1,875 = 25 lots of 75, so only the freeze check fails
    reason = LotSize().check(_ctx(quantity=1875, instrument=instrument))

    assert reason == "quantity 1875 is above the exchange freeze quantity 1800"


# --- duplicate signal -------------------------------------------------------------------------


def _last(side: Side = Side.BUY, quantity: int = 10, *, ago: float = 1.0) -> LastSignal:
    return LastSignal(side, quantity, T - timedelta(seconds=ago))


@pytest.mark.parametrize(("ago", "shown"), [(0.0, "0.000"), (1.0, "1.000"), (1.999, "1.999")])
def test_duplicate_signal_when_same_side_and_quantity_within_window_then_fails_with_gap_and_window(
    ago: float, shown: str
) -> None:
    reason = DuplicateSignal().check(_ctx(Side.BUY, 10, last_signal=_last(ago=ago)))

    assert reason == f"the same BUY 10 was sent {shown}s ago (suppression window 2.0s)"


@pytest.mark.parametrize("ago", [2.0, 60.0, -1.0], ids=["at_window", "long_ago", "later_than_this"])
def test_duplicate_signal_when_last_signal_outside_window_then_passes(ago: float) -> None:
    assert DuplicateSignal().check(_ctx(Side.BUY, 10, last_signal=_last(ago=ago))) is None


@pytest.mark.parametrize("last", [_last(Side.SELL, 10), _last(Side.BUY, 11)], ids=["other_side", "other_qty"])
def test_duplicate_signal_when_side_or_quantity_differs_then_passes(last: LastSignal) -> None:
    assert DuplicateSignal().check(_ctx(Side.BUY, 10, last_signal=last)) is None


def test_duplicate_signal_when_flatten_then_passes() -> None:
    ctx = _ctx(Side.SELL, 10, position=10, flatten=True, last_signal=_last(Side.SELL, 10, ago=0.5))

    assert DuplicateSignal().check(ctx) is None


def test_duplicate_signal_when_window_is_zero_then_the_rule_is_off() -> None:
    ctx = _ctx(Side.BUY, 10, last_signal=_last(ago=0.0), limits=RiskLimits(duplicate_window_s=0))

    assert DuplicateSignal().check(ctx) is None


def test_duplicate_signal_when_no_earlier_signal_then_passes() -> None:
    assert DuplicateSignal().check(_ctx()) is None


# --- delivery_short_sell ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "quantity", "position", "product", "fails"),
    [
        (Side.SELL, 10, 0, Product.CNC, True),  # nothing held: a short sale for delivery
        (Side.SELL, 15, 10, Product.CNC, True),  # more than is held
        (Side.SELL, 10, 10, Product.CNC, False),  # exactly what is held
        (Side.SELL, 5, 10, Product.CNC, False),
        (Side.BUY, 10, -10, Product.CNC, False),  # buying never shorts
        (Side.SELL, 10, 0, Product.MIS, False),  # an intraday short is allowed
        (Side.SELL, 10, 0, Product.NRML, False),  # F&O shorts are allowed
    ],
)
def test_delivery_short_sell_when_a_cnc_sell_exceeds_what_is_held_then_it_fails(
    side: Side, quantity: int, position: int, product: Product, fails: bool
) -> None:
    reason = DeliveryShortSell().check(_ctx(side, quantity, position=position, product=product))
    assert (reason is not None) == fails
    if fails:
        assert reason is not None and "cannot be sold short for delivery" in reason
        assert f"leave the position at {position - quantity}" in reason


# --- the whole rule set -----------------------------------------------------------------------


def test_default_rules_when_listed_then_every_rule_once_in_documented_order() -> None:
    assert [r.name for r in DEFAULT_RULES] == [
        "kill_switch",
        "trading_session",
        "max_order_value",
        "max_position_quantity",
        "max_position_value",
        "max_gross_exposure",
        "capital_allocation",
        "daily_loss_limit",
        "max_trades_per_day",
        "max_open_orders",
        "price_band",
        "lot_size",
        "delivery_short_sell",
        "instrument_allow_list",
        "duplicate_signal",
    ]


def test_evaluate_when_every_rule_fails_then_every_rule_is_listed_with_a_reason() -> None:
    limits = RiskLimits(
        max_order_value=D("1000"),
        max_position_quantity=5,
        max_position_value=D("1000"),
        max_gross_exposure=D("1000"),
        daily_loss_limit=D("100"),
        max_trades_per_day=1,
        max_open_orders=1,
        allowed_instruments=(1,),
    )
    ctx = _ctx(
        Side.SELL,
        10,
        at=datetime(2025, 11, 22, 11, 0, tzinfo=IST),
        limits=limits,
        product=Product.CNC,
        last_price=D("2000"),
        gross_after=D("10000"),
        strategy_exposure_after=D("10000"),
        capital_allocation=D("1000"),
        trades_today=1,
        open_orders=1,
        broker_state=BrokerState.HALTED,
        day_pnl=D("-100"),
        last_signal=LastSignal(Side.SELL, 10, datetime(2025, 11, 22, 10, 59, 59, tzinfo=IST)),
        instrument=InstrumentLimits(lot_size=75, derivative=True),
        calendar=NSE,
    )

    failures = evaluate(ctx)

    assert [f.rule for f in failures] == [r.name for r in DEFAULT_RULES]
    assert [f.reason for f in failures] == [r.check(ctx) for r in DEFAULT_RULES]


def test_evaluate_when_an_ordinary_signal_in_session_then_no_rule_fails() -> None:
    ctx = _ctx(last_price=D("1000"), gross_after=D("10000"), calendar=NSE)

    assert evaluate(ctx) == []


# --- per-strategy overrides -------------------------------------------------------------------


def test_apply_to_when_some_overrides_set_then_only_those_fields_change() -> None:
    broker = RiskLimits(
        max_order_value=D("400000"),
        max_position_quantity=900,
        price_band_pct=D("3"),
        allowed_instruments=(1,),
    )
    risk = StrategyRisk(capital_allocation=D("50000"), max_order_value=D("100000"), max_trades_per_day=20)

    limits = risk.apply_to(broker)

    assert limits == broker.model_copy(update={"max_order_value": D("100000"), "max_trades_per_day": 20})
    assert (limits.max_position_quantity, limits.price_band_pct, limits.allowed_instruments) == (
        900,
        D("3"),
        (1,),
    )


@pytest.mark.parametrize(
    "risk", [StrategyRisk(), StrategyRisk(capital_allocation=D("50000"))], ids=["nothing", "allocation_only"]
)
def test_apply_to_when_no_limit_overridden_then_the_brokers_limits_are_returned(risk: StrategyRisk) -> None:
    broker = RiskLimits(max_order_value=D("400000"))

    assert risk.apply_to(broker) is broker


def test_risk_limits_when_not_configured_then_the_documented_defaults() -> None:
    limits = RiskLimits()

    assert limits.model_dump() == {
        "max_order_value": D("500000"),
        "max_position_quantity": 2000,
        "max_position_value": D("1000000"),
        "max_gross_exposure": D("5000000"),
        "daily_loss_limit": D("50000"),
        "max_trades_per_day": 500,
        "max_open_orders": 50,
        "price_band_pct": D("5"),
        "duplicate_window_s": 2.0,
        "enforce_session": True,
        "allowed_instruments": None,
    }
