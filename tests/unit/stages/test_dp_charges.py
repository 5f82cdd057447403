"""The depository (DP) charge: once per scrip per day on which a broker's delivery holdings are
sold, whatever the quantity, across strategies; never on intraday, on buys, or on selling
shares bought the same day."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from alphapanda import stages
from alphapanda.config import BrokerSettings
from alphapanda.domain.charges import dp_charge, sold_from_holdings
from alphapanda.events import IST, Event, PnlSnapshot, Product, Side
from alphapanda.stages.portfolio_manager import PortfolioManager
from alphapanda.state import keys
from alphapanda.state.store import MemoryStateStore
from fill_events import INFY, RELIANCE, fill_event

D = Decimal
MONDAY = datetime(2025, 11, 24, 10, 0, tzinfo=IST)
TUESDAY = MONDAY + timedelta(days=1)
WEDNESDAY = MONDAY + timedelta(days=2)
SETTINGS = BrokerSettings(starting_cash=D("10000000"))
DP = D("15.93")
"""Rs 13.5 + 18% GST = 15.93."""


def test_dp_charge_when_the_default_rate_then_13_50_plus_gst_to_the_paisa() -> None:
    assert dp_charge(D("13.5"), D("18")) == DP
    assert dp_charge(D("13.25"), D("18")) == D("15.64")  # 15.635 rounds half up
    assert dp_charge(D("0"), D("18")) == 0


@pytest.mark.parametrize(
    ("held_today", "before", "side", "quantity", "expected"),
    [
        (None, 10, Side.SELL, 4, (4, 6)),  # first delivery fill of the day: carried 10
        (6, 6, Side.SELL, 10, (6, 0)),  # sells more than is left of the holding
        (None, 10, Side.BUY, 5, (0, 10)),  # a buy draws on nothing
        (0, 5, Side.SELL, 5, (0, 0)),  # sells what it bought today: not from holdings
        (None, 0, Side.SELL, 3, (0, 0)),  # nothing carried in
        (None, -5, Side.SELL, 3, (0, 0)),  # a short carries no holding
    ],
)
def test_sold_from_holdings_when_a_delivery_fill_then_what_it_takes_from_the_days_holding(
    held_today: int | None, before: int, side: Side, quantity: int, expected: tuple[int, int]
) -> None:
    assert sold_from_holdings(held_today, before, side, quantity) == expected


def _apply(store: MemoryStateStore, *fills: Event) -> list[PnlSnapshot]:
    manager = PortfolioManager(brokers=frozenset({"paper"}), settings_for=lambda _b: SETTINGS)
    out = []
    for fill in fills:
        (snapshot,) = stages.process(manager, fill, store)
        assert isinstance(snapshot.data, PnlSnapshot)
        out.append(snapshot.data)
    return out


def _cnc(side: Side, quantity: int, at: datetime, n: int, **more: object) -> Event:
    return fill_event(side, quantity, "1500", product=Product.CNC, at=at, fill_id=f"fill-{n}", **more)  # type: ignore[arg-type]


def _account_charges(store: MemoryStateStore) -> Decimal:
    return D(json.loads(store.get(keys.account("paper")) or "")["charges"])


def test_portfolio_when_a_holding_is_sold_in_two_fills_next_day_then_one_dp_charge() -> None:
    store = MemoryStateStore()
    bought, first, second = _apply(
        store,
        _cnc(Side.BUY, 10, MONDAY, 1),
        _cnc(Side.SELL, 4, TUESDAY, 2),
        _cnc(Side.SELL, 6, TUESDAY + timedelta(hours=1), 3),
    )

    assert (bought.dp_charges, first.dp_charges, second.dp_charges) == (0, DP, 0)
    assert second.charges_paid == DP and second.net_quantity == 0
    assert _account_charges(store) == DP
    day = json.loads(store.get(keys.day_pnl("paper", "2025-11-25")) or "")
    assert day["dp_sold"] == [RELIANCE] and day["held"] == {f"ema_test:{RELIANCE}": 0}
    assert D(day["realised"]) == -DP  # sold at cost: the day lost exactly the DP charge


def test_portfolio_when_shares_bought_today_are_sold_today_then_no_dp_charge() -> None:
    store = MemoryStateStore()
    snapshots = _apply(store, _cnc(Side.BUY, 10, TUESDAY, 1), _cnc(Side.SELL, 10, TUESDAY, 2))

    assert [s.dp_charges for s in snapshots] == [0, 0]
    assert _account_charges(store) == 0


def test_portfolio_when_part_held_and_part_bought_today_then_dp_only_once_the_holding_is_reached() -> None:
    # Carried 5 into Tuesday, bought 5 more; selling 10 draws 5 from the holding: charged.
    store = MemoryStateStore()
    *_, sold = _apply(
        store, _cnc(Side.BUY, 5, MONDAY, 1), _cnc(Side.BUY, 5, TUESDAY, 2), _cnc(Side.SELL, 10, TUESDAY, 3)
    )

    assert sold.dp_charges == DP


def test_portfolio_when_two_strategies_sell_one_scrips_holding_the_same_day_then_one_dp_charge() -> None:
    # One demat account per broker: the depository charges the scrip once a day.
    store = MemoryStateStore()
    snapshots = _apply(
        store,
        _cnc(Side.BUY, 10, MONDAY, 1, strategy="a"),
        _cnc(Side.BUY, 10, MONDAY, 2, strategy="b"),
        _cnc(Side.SELL, 10, TUESDAY, 3, strategy="a"),
        _cnc(Side.SELL, 10, TUESDAY, 4, strategy="b"),
        _cnc(Side.SELL, 1, TUESDAY, 5, strategy="b", token=INFY),
    )

    assert [s.dp_charges for s in snapshots] == [0, 0, DP, 0, 0]  # INFY: nothing held
    assert _account_charges(store) == DP


def test_portfolio_when_a_holding_is_sold_on_two_days_then_charged_each_day() -> None:
    store = MemoryStateStore()
    snapshots = _apply(
        store, _cnc(Side.BUY, 10, MONDAY, 1), _cnc(Side.SELL, 4, TUESDAY, 2), _cnc(Side.SELL, 6, WEDNESDAY, 3)
    )

    assert [s.dp_charges for s in snapshots] == [0, DP, DP]
    assert _account_charges(store) == 2 * DP


def test_portfolio_when_an_intraday_position_is_sold_next_day_then_no_dp_charge() -> None:
    store = MemoryStateStore()
    snapshots = _apply(
        store,
        fill_event(Side.BUY, 10, "1500", product=Product.MIS, at=MONDAY, fill_id="fill-1"),
        fill_event(Side.SELL, 10, "1500", product=Product.MIS, at=TUESDAY, fill_id="fill-2"),
    )

    assert [s.dp_charges for s in snapshots] == [0, 0]
    assert store.get(keys.day_pnl("paper", "2025-11-25")) == json.dumps(
        {"realised": "0", "unrealised": {f"ema_test:{RELIANCE}": "0"}}, sort_keys=True
    )


def test_portfolio_when_dp_charge_set_to_zero_then_none_is_taken() -> None:
    store = MemoryStateStore()
    free = BrokerSettings(starting_cash=D("10000000"), dp_charge=D("0"))
    manager = PortfolioManager(brokers=frozenset({"paper"}), settings_for=lambda _b: free)
    for fill in (_cnc(Side.BUY, 10, MONDAY, 1), _cnc(Side.SELL, 10, TUESDAY, 2)):
        stages.process(manager, fill, store)

    assert _account_charges(store) == 0
