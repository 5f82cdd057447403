"""The paper matching model: order type x validity, depth walking, triggers, slippage, latency."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.domain.matching import (
    Execution,
    Level,
    Market,
    MatchOrder,
    MatchRules,
    Outcome,
    can_trade,
    is_marketable,
    is_triggered,
    match,
)
from alphapanda.events import IST, DepthLevel, MarketTick, OrderType, Side, Validity

D = Decimal
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=IST)
NO_SLIP = MatchRules(slippage_bps=D(0), tick_size=D("0.05"))
TWO_BPS = MatchRules(slippage_bps=D(2), tick_size=D("0.05"))


def _market(
    bid: str = "99.95",
    ask: str = "100.00",
    last: str = "100.00",
    *,
    at: datetime = T0,
    asks: list[tuple[str, int]] | None = None,
    bids: list[tuple[str, int]] | None = None,
) -> Market:
    return Market(
        bid=D(bid),
        ask=D(ask),
        last=D(last),
        at=at,
        asks=None if asks is None else tuple(Level(D(p), q) for p, q in asks),
        bids=None if bids is None else tuple(Level(D(p), q) for p, q in bids),
    )


def _order(
    side: Side = Side.BUY,
    quantity: int = 100,
    order_type: OrderType = OrderType.MARKET,
    validity: Validity = Validity.DAY,
    *,
    limit: str | None = None,
    trigger: str | None = None,
    arrives_at: datetime = T0,
) -> MatchOrder:
    return MatchOrder(
        side=side,
        remaining=quantity,
        order_type=order_type,
        validity=validity,
        arrives_at=arrives_at,
        limit_price=None if limit is None else D(limit),
        trigger_price=None if trigger is None else D(trigger),
    )


BOOK_ASKS = [("100.00", 40), ("100.05", 30), ("100.10", 50)]
BOOK_BIDS = [("99.95", 40), ("99.90", 30), ("99.85", 50)]


# --- market orders ----------------------------------------------------------------------------


def test_match_when_market_buy_and_no_depth_then_whole_quantity_fills_at_the_slipped_ask() -> None:
    result = match(_order(quantity=500), _market(), TWO_BPS)

    # 100.00 x 1.0002 = 100.02 -> up to 100.05
    assert result.executions == (Execution(D("100.05"), 500),)
    assert result.outcome is Outcome.FILLED
    assert result.remaining == 0


def test_match_when_market_sell_and_no_depth_then_fills_at_the_slipped_bid() -> None:
    result = match(_order(Side.SELL, 10), _market(), TWO_BPS)

    # 99.95 x 0.9998 = 99.93001 -> down to 99.90
    assert result.executions == (Execution(D("99.90"), 10),)


@pytest.mark.parametrize(
    ("validity", "outcome"), [(Validity.DAY, Outcome.REST), (Validity.IOC, Outcome.CANCEL)]
)
def test_match_when_market_buy_is_larger_than_the_depth_then_walks_every_level_and_remainder_follows_validity(
    validity: Validity, outcome: Outcome
) -> None:
    result = match(_order(quantity=150, validity=validity), _market(asks=BOOK_ASKS), NO_SLIP)

    assert result.executions == (
        Execution(D("100.00"), 40),
        Execution(D("100.05"), 30),
        Execution(D("100.10"), 50),
    )
    assert result.filled_quantity == 120
    assert (result.outcome, result.remaining) == (outcome, 30)
    assert result.taken == (Level(D("100.00"), 40), Level(D("100.05"), 30), Level(D("100.10"), 50))


def test_match_when_market_sell_walks_depth_then_each_level_gets_slippage_against_the_trader() -> None:
    result = match(_order(Side.SELL, 60), _market(bids=BOOK_BIDS), TWO_BPS)

    # 99.95 x 0.9998 = 99.93 -> 99.90;  99.90 x 0.9998 = 99.88 -> 99.85
    assert result.executions == (Execution(D("99.90"), 40), Execution(D("99.85"), 20))
    assert result.outcome is Outcome.FILLED


def test_match_when_walk_depth_is_off_then_the_touch_takes_the_whole_quantity() -> None:
    rules = replace(NO_SLIP, walk_depth=False)

    result = match(_order(quantity=150), _market(asks=BOOK_ASKS), rules)

    assert result.executions == (Execution(D("100.00"), 150),)


def test_match_when_depth_is_known_but_empty_then_nothing_fills_and_ioc_cancels_it_all() -> None:
    result = match(_order(validity=Validity.IOC), _market(asks=[]), NO_SLIP)

    assert (result.executions, result.outcome, result.remaining) == ((), Outcome.CANCEL, 100)


def test_match_when_day_market_remainder_rests_then_it_sweeps_the_next_quote_again() -> None:
    first = match(_order(quantity=150), _market(asks=BOOK_ASKS), NO_SLIP)
    later = _market("100.05", "100.10", at=T0 + timedelta(seconds=1), asks=[("100.10", 500)])

    second = match(first.order, later, NO_SLIP)

    assert first.order.in_book is False
    assert second.executions == (Execution(D("100.10"), 30),)
    assert second.outcome is Outcome.FILLED


# --- limit orders -----------------------------------------------------------------------------


def test_match_when_buy_limit_is_marketable_then_takes_only_levels_within_the_limit_capped_at_it() -> None:
    order = _order(quantity=100, order_type=OrderType.LIMIT, limit="100.05")

    result = match(order, _market(asks=BOOK_ASKS), TWO_BPS)

    # 100.00 slips to 100.05 (the limit); 100.05 slips to 100.10, capped at the limit 100.05;
    # the 100.10 level is beyond the limit and is not taken.
    assert result.executions == (Execution(D("100.05"), 40), Execution(D("100.05"), 30))
    assert (result.outcome, result.remaining) == (Outcome.REST, 30)
    assert result.order.in_book is True


@pytest.mark.parametrize(
    ("validity", "outcome"), [(Validity.DAY, Outcome.REST), (Validity.IOC, Outcome.CANCEL)]
)
def test_match_when_limit_is_not_marketable_then_day_rests_in_the_book_and_ioc_cancels(
    validity: Validity, outcome: Outcome
) -> None:
    order = _order(order_type=OrderType.LIMIT, validity=validity, limit="99.50")

    result = match(order, _market(), NO_SLIP)

    assert result.executions == ()
    assert (result.outcome, result.remaining) == (outcome, 100)


def test_match_when_resting_buy_limit_meets_a_later_ask_below_it_then_fills_passively_at_its_limit() -> None:
    resting = match(_order(order_type=OrderType.LIMIT, limit="99.50"), _market(), NO_SLIP).order
    later = _market("99.30", "99.35", "99.35", at=T0 + timedelta(seconds=5), asks=[("99.35", 500)])

    result = match(resting, later, TWO_BPS)

    assert result.executions == (Execution(D("99.50"), 100),)
    assert result.outcome is Outcome.FILLED


def test_match_when_resting_sell_limit_meets_a_bid_below_it_then_nothing_fills() -> None:
    resting = match(_order(Side.SELL, order_type=OrderType.LIMIT, limit="100.50"), _market(), NO_SLIP).order
    later = _market("100.40", "100.45", at=T0 + timedelta(seconds=5))

    result = match(resting, later, NO_SLIP)

    assert (result.executions, result.outcome, result.traded) == ((), Outcome.REST, True)


def test_match_when_resting_limit_and_depth_is_thin_then_fills_what_is_at_or_through_the_limit() -> None:
    resting = match(_order(order_type=OrderType.LIMIT, limit="99.50"), _market(), NO_SLIP).order
    later = _market(
        "99.40", "99.45", at=T0 + timedelta(seconds=5), asks=[("99.45", 30), ("99.50", 20), ("99.55", 90)]
    )

    result = match(resting, later, NO_SLIP)

    assert result.executions == (Execution(D("99.50"), 30), Execution(D("99.50"), 20))
    assert (result.outcome, result.remaining) == (Outcome.REST, 50)


# --- stop orders ------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "last", "fires"), [
    (Side.BUY, "104.95", False),
    (Side.BUY, "105.00", True),
    (Side.BUY, "105.05", True),
    (Side.SELL, "105.05", False),
    (Side.SELL, "105.00", True),
    (Side.SELL, "104.95", True),
])  # fmt: skip
def test_is_triggered_when_last_reaches_the_trigger_then_buy_fires_at_or_above_sell_at_or_below(
    side: Side, last: str, fires: bool
) -> None:
    assert is_triggered(side, D("105.00"), D(last)) is fires


@pytest.mark.parametrize("validity", [Validity.DAY, Validity.IOC])
def test_match_when_stop_is_not_triggered_then_it_waits_whatever_its_validity(validity: Validity) -> None:
    order = _order(order_type=OrderType.SL_M, validity=validity, trigger="105.00")

    result = match(order, _market(last="104.95"), NO_SLIP)

    assert (result.executions, result.outcome, result.order.triggered) == ((), Outcome.REST, False)


def test_match_when_buy_sl_m_triggers_then_it_fills_as_a_market_order_with_slippage() -> None:
    order = _order(order_type=OrderType.SL_M, trigger="105.00")

    result = match(order, _market("105.00", "105.05", "105.00"), TWO_BPS)

    # 105.05 x 1.0002 = 105.071 -> 105.10
    assert result.executions == (Execution(D("105.10"), 100),)
    assert result.order.triggered is True


def test_match_when_sell_sl_triggers_then_it_works_as_a_limit_at_its_price() -> None:
    order = _order(Side.SELL, order_type=OrderType.SL, trigger="95.00", limit="94.90")
    market = _market("94.85", "94.90", "95.00", bids=[("94.95", 30), ("94.90", 30), ("94.85", 100)])

    result = match(order, market, NO_SLIP)

    assert result.executions == (Execution(D("94.95"), 30), Execution(D("94.90"), 30))
    assert (result.outcome, result.remaining) == (Outcome.REST, 40)
    assert (result.order.order_type, result.order.in_book) == (OrderType.LIMIT, True)


def test_match_when_ioc_sl_triggers_but_its_limit_is_not_marketable_then_it_is_cancelled() -> None:
    order = _order(order_type=OrderType.SL, validity=Validity.IOC, trigger="105.00", limit="105.00")

    result = match(order, _market("105.05", "105.10", "105.00"), NO_SLIP)

    assert (result.executions, result.outcome, result.remaining) == ((), Outcome.CANCEL, 100)


def test_match_when_triggered_stop_meets_later_quotes_then_it_does_not_trigger_twice() -> None:
    order = _order(order_type=OrderType.SL, trigger="105.00", limit="105.00")
    first = match(order, _market("105.05", "105.10", "105.00"), NO_SLIP)
    later = _market("104.90", "104.95", "104.90", at=T0 + timedelta(seconds=1))

    second = match(first.order, later, NO_SLIP)

    assert second.executions == (Execution(D("105.00"), 100),)


# --- latency and quotes already seen ----------------------------------------------------------


def test_match_when_quote_is_older_than_the_orders_arrival_then_it_cannot_trade() -> None:
    order = _order(arrives_at=T0 + timedelta(milliseconds=250))

    result = match(order, _market(at=T0 + timedelta(milliseconds=249)), NO_SLIP)

    assert (result.traded, result.executions, result.order) == (False, (), order)


def test_match_when_quote_is_at_or_after_arrival_then_it_trades() -> None:
    order = _order(arrives_at=T0 + timedelta(milliseconds=250))

    result = match(order, _market(at=T0 + timedelta(milliseconds=250)), NO_SLIP)

    assert result.outcome is Outcome.FILLED


def test_match_when_the_same_quote_comes_again_then_its_depth_is_not_taken_twice() -> None:
    market = _market(asks=BOOK_ASKS)
    first = match(_order(quantity=500), market, NO_SLIP)

    again = match(first.order, market, NO_SLIP)

    assert first.filled_quantity == 120
    assert (again.traded, again.executions) == (False, ())
    assert not can_trade(first.order, market)


# --- the market itself ------------------------------------------------------------------------


def test_market_from_tick_when_depth_is_padded_with_empty_levels_then_keeps_real_ones_best_first() -> None:
    tick = MarketTick(
        instrument_token=1,
        tradingsymbol="X",
        exchange="NSE",
        last_price=D("100"),
        bid=D("99.95"),
        ask=D("100.00"),
        exchange_timestamp=T0,
        depth_buy=(DepthLevel(price=D("99.90"), quantity=5), DepthLevel(price=D("99.95"), quantity=7)),
        depth_sell=(DepthLevel(price=D("100.00"), quantity=3), DepthLevel(price=D("0"), quantity=0)),
    )

    market = Market.from_tick(tick)

    assert market.bids == (Level(D("99.95"), 7), Level(D("99.90"), 5))
    assert market.asks == (Level(D("100.00"), 3),)
    assert market.at == T0


def test_market_after_taking_when_an_order_took_depth_then_the_next_order_sees_only_the_rest() -> None:
    market = _market(asks=BOOK_ASKS)
    first = match(_order(quantity=50), market, NO_SLIP)

    left = market.after_taking(Side.BUY, first.taken)
    second = match(_order(quantity=100), left, NO_SLIP)

    assert left.asks == (Level(D("100.05"), 20), Level(D("100.10"), 50))
    assert second.executions == (Execution(D("100.05"), 20), Execution(D("100.10"), 50))


def test_market_and_order_when_round_tripped_through_json_then_unchanged() -> None:
    market = _market(asks=BOOK_ASKS, bids=BOOK_BIDS)
    order = replace(_order(order_type=OrderType.SL, trigger="105", limit="105.5"), seen_until=T0)

    assert Market.from_json(market.to_json()) == market
    assert Market.from_json(_market().to_json()) == _market()
    assert MatchOrder.from_json(order.to_json()) == order


def test_is_marketable_when_limit_crosses_the_touch_then_true() -> None:
    assert is_marketable(Side.BUY, D("100.00"), _market())
    assert not is_marketable(Side.BUY, D("99.95"), _market())
    assert is_marketable(Side.SELL, D("99.95"), _market())
    assert not is_marketable(Side.SELL, D("100.00"), _market())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantity": 0}, "positive remaining quantity"),
        ({"order_type": OrderType.LIMIT}, "needs a limit price"),
        ({"order_type": OrderType.SL_M}, "needs a trigger price"),
    ],
)
def test_match_order_when_incomplete_then_raises(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _order(**kwargs)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

levels = st.lists(
    st.tuples(st.integers(min_value=0, max_value=20), st.integers(min_value=1, max_value=500)),
    max_size=5,
    unique_by=lambda lv: lv[0],
)


@given(
    side=st.sampled_from(Side),
    quantity=st.integers(min_value=1, max_value=2000),
    depth=levels,
    limit_ticks=st.one_of(st.none(), st.integers(min_value=-5, max_value=25)),
    ioc=st.booleans(),
    bps=st.integers(min_value=0, max_value=50),
)
def test_match_when_any_order_meets_any_book_then_quantities_balance_and_limits_hold(
    side: Side, quantity: int, depth: list[tuple[int, int]], limit_ticks: int | None, ioc: bool, bps: int
) -> None:
    tick = D("0.05")
    sign = 1 if side is Side.BUY else -1
    touch = D("100.00") if side is Side.BUY else D("99.95")
    book = tuple(Level(touch + sign * tick * i, q) for i, q in sorted(depth))
    market = Market(D("99.95"), D("100.00"), D("100.00"), T0, asks=book, bids=book)
    limit = None if limit_ticks is None else touch + sign * tick * limit_ticks
    order = MatchOrder(
        side=side,
        remaining=quantity,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        validity=Validity.IOC if ioc else Validity.DAY,
        arrives_at=T0,
        limit_price=limit,
    )

    result = match(order, market, MatchRules(D(bps), tick))

    assert result.filled_quantity + result.remaining == quantity
    assert result.filled_quantity <= sum(q for _, q in depth)
    assert sum(lv.quantity for lv in result.taken) == result.filled_quantity
    for execution in result.executions:
        assert execution.price % tick == 0
        if limit is not None:
            assert (execution.price <= limit) if side is Side.BUY else (execution.price >= limit)
    if result.remaining:
        assert result.outcome is (Outcome.CANCEL if ioc else Outcome.REST)
