"""Market simulator: reproducible, on the tick grid, a sane book, timestamps and inputs checked."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice

import pytest

from alphapanda.domain.instruments import Instrument
from alphapanda.domain.simulator import MarketSimulator, SimulatorParams
from alphapanda.events import IST, MarketTick

START = datetime(2025, 11, 24, 9, 15, tzinfo=IST)
RELIANCE = Instrument(
    738561, "RELIANCE", "RELIANCE INDUSTRIES", "NSE", "NSE", "EQ", Decimal("0.05"), 1, Decimal("1480")
)
ITC = Instrument(424961, "ITC", "ITC", "NSE", "NSE", "EQ", Decimal("0.01"), 1, Decimal("0.03"))
NIFTY_FUT = Instrument(
    13238786, "NIFTY25DECFUT", "NIFTY", "NFO", "NFO-FUT", "FUT", Decimal("0.05"), 75, Decimal("26000")
)


def _ticks(n: int, seed: int = 7, **kwargs: object) -> list[MarketTick]:
    instruments = kwargs.pop("instruments", [RELIANCE, ITC])
    return list(islice(MarketSimulator(instruments, seed=seed, start=START, **kwargs), n))  # type: ignore[arg-type]


def test_simulator_when_same_seed_then_same_ticks() -> None:
    assert _ticks(200, seed=42) == _ticks(200, seed=42)


def test_simulator_when_seed_differs_then_prices_differ() -> None:
    assert [t.bid for t in _ticks(50, seed=1)] != [t.bid for t in _ticks(50, seed=2)]


def test_simulator_when_running_then_every_price_is_on_the_instruments_tick_grid() -> None:
    tick_size = {RELIANCE.instrument_token: RELIANCE.tick_size, ITC.instrument_token: ITC.tick_size}

    for t in _ticks(400, params=SimulatorParams(annual_volatility=2.0)):
        size = tick_size[t.instrument_token]
        depth = (*(t.depth_buy or ()), *(t.depth_sell or ()))
        prices = [t.bid, t.ask, t.last_price, *(d.price for d in depth)]
        assert all(p > 0 and p % size == 0 for p in prices), t


def test_simulator_when_running_then_bid_below_ask_by_the_spread_and_last_at_the_touch() -> None:
    params = SimulatorParams(spread_ticks=2)

    for t in _ticks(200, instruments=[RELIANCE], params=params):
        assert t.bid < t.ask
        assert t.ask - t.bid == 4 * RELIANCE.tick_size
        assert t.last_price in (t.bid, t.ask)


def test_simulator_when_depth_on_then_five_levels_each_side_moving_away_from_the_touch() -> None:
    t = _ticks(1, instruments=[RELIANCE])[0]

    assert t.depth_buy is not None and t.depth_sell is not None
    assert [d.price for d in t.depth_buy] == [t.bid - RELIANCE.tick_size * i for i in range(5)]
    assert [d.price for d in t.depth_sell] == [t.ask + RELIANCE.tick_size * i for i in range(5)]
    assert (t.bid_quantity, t.ask_quantity) == (t.depth_buy[0].quantity, t.depth_sell[0].quantity)


def test_simulator_when_depth_off_then_no_depth_and_default_touch_quantities() -> None:
    t = _ticks(1, params=SimulatorParams(with_depth=False))[0]

    assert (t.depth_buy, t.depth_sell, t.bid_quantity, t.ask_quantity) == (None, None, 1000, 1000)


def test_simulator_when_price_near_zero_then_bid_stays_at_least_one_tick() -> None:
    for t in _ticks(100, instruments=[ITC], params=SimulatorParams(spread_ticks=5)):
        assert t.bid >= ITC.tick_size


def test_simulator_when_several_instruments_then_round_robin_with_per_instrument_clock() -> None:
    ticks = _ticks(6, instruments=[RELIANCE, ITC, NIFTY_FUT], params=SimulatorParams(seconds_per_tick=0.5))

    assert [t.instrument_token for t in ticks] == [738561, 424961, 13238786] * 2
    assert [t.exchange_timestamp for t in ticks] == [START] * 3 + [START + timedelta(seconds=0.5)] * 3
    assert [t.asset_class for t in ticks[:3]] == ["equity", "equity", "fno"]


def test_simulator_when_running_then_volume_is_cumulative_in_lots() -> None:
    ticks = [
        t
        for t in _ticks(40, instruments=[RELIANCE, NIFTY_FUT])
        if t.instrument_token == NIFTY_FUT.instrument_token
    ]

    volumes = [t.volume for t in ticks]
    assert volumes == sorted(volumes) and len(set(volumes)) == len(volumes)
    assert all(v % NIFTY_FUT.lot_size == 0 for v in volumes)


def test_next_tick_when_time_given_then_tick_is_stamped_with_it() -> None:
    at = datetime(2025, 11, 24, 10, 0, tzinfo=IST)

    assert MarketSimulator([RELIANCE], seed=1, start=START).next_tick(at).exchange_timestamp == at


def test_simulator_when_start_is_naive_then_raises() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MarketSimulator([RELIANCE], seed=1, start=datetime(2025, 11, 24, 9, 15))


def test_simulator_when_no_instruments_then_raises() -> None:
    with pytest.raises(ValueError, match="at least one instrument"):
        MarketSimulator([], seed=1, start=START)
