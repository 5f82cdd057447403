"""The totals a decoded ledger, account and day record keep across changes (so a backtest never
re-sums every instrument per order) always equal a fresh sum of what they total: kept while the
amounts add exactly (prices in paise), summed afresh once an amount is too long (an average
price from a division)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from alphapanda.config import BrokerSettings, FillSettings
from alphapanda.events import IST, Event, EventType, OrderFilled, Product, Side, source_of
from alphapanda.stages.portfolio_manager import Account, DayPnl, PortfolioManager
from alphapanda.stages.risk_ledger import LedgerView

AT = datetime(2025, 11, 24, 10, 0, tzinfo=IST)
SETTINGS = BrokerSettings(
    starting_cash=Decimal("1000000"),
    fills=FillSettings(mis_leverage=Decimal("4"), nrml_margin_pct=Decimal("15")),
)
changes = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=5),  # token
        st.integers(min_value=-300, max_value=300),  # signed quantity
        st.decimals(min_value=Decimal("0.05"), max_value=Decimal("5000"), places=2),
        st.sampled_from([-1, 0, 1]),
    ),
    max_size=40,
)


@given(changes)
def test_ledger_total_when_kept_across_changes_then_equals_a_fresh_sum(
    steps: list[tuple[int, int, Decimal, int]],
) -> None:
    kept = LedgerView(0, Decimal(0), Decimal(0), {}, 0).with_total()
    for token, quantity, price, delta in steps:
        kept = kept.changed(token, quantity, price, delta)
        fresh = LedgerView(
            kept.position, kept.notional, kept.gross, kept.strategy_positions, kept.open_orders
        )
        assert kept.strategy_total is not None
        assert kept.strategy_exposure() == fresh.strategy_exposure()


def _fill(n: int, token: int, side: Side, quantity: int, price: Decimal, product: Product) -> Event:
    fill = OrderFilled(
        instrument_token=token,
        tradingsymbol=f"SYM{token}",
        exchange="NSE",
        order_id=f"order-{n}",
        fill_id=f"fill-{n}",
        strategy="ema",
        side=side,
        quantity=quantity,
        price=price,
        product=product,
        charges=Decimal("1.23"),
        filled_at=AT,
    )
    return Event(
        id=f"fill-{n}",
        type=EventType.ORDER_FILLED,
        source=source_of("trading_engine", "paper"),
        data=fill,
        partitionkey=str(token),
        correlationid=f"idea-{n}",
        causationid=f"validated-{n}",
        broker="paper",
    )


fills = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=5),
        st.sampled_from(list(Side)),
        st.integers(min_value=1, max_value=300),
        st.decimals(min_value=Decimal("0.05"), max_value=Decimal("5000"), places=2),
        st.sampled_from(list(Product)),
    ),
    max_size=30,
)


@given(fills)
def test_account_and_day_totals_when_kept_across_fills_then_equal_fresh_sums(
    steps: list[tuple[int, Side, int, Decimal, Product]],
) -> None:
    manager = PortfolioManager(brokers=frozenset({"paper"}), settings_for=lambda _b: SETTINGS)
    account = Account(SETTINGS.starting_cash).with_held()
    day = DayPnl().with_total()
    book = None
    for n, (token, side, quantity, price, product) in enumerate(steps):
        update = manager.apply(_fill(n, token, side, quantity, price, product), book, account, day)
        book, account, day = update.book, update.account, update.day
        assert (
            account.available
            == Account(account.starting_cash, account.realised, account.charges, account.margin).available
        )
        assert day.total == DayPnl(day.realised, day.unrealised).total


def test_totals_when_prices_are_in_paise_then_kept_without_a_fresh_sum() -> None:
    manager = PortfolioManager(brokers=frozenset({"paper"}), settings_for=lambda _b: SETTINGS)
    account, day, book = Account(SETTINGS.starting_cash).with_held(), DayPnl().with_total(), None
    for n, (side, price) in enumerate([(Side.BUY, "100.05"), (Side.SELL, "101.10"), (Side.SELL, "99.95")]):
        update = manager.apply(_fill(n, 1, side, 100, Decimal(price), Product.MIS), book, account, day)
        book, account, day = update.book, update.account, update.day
        assert account.held is not None and day.unrealised_total is not None
    assert account.held == Decimal("2498.75")  # short 100 @ 99.95, MIS at leverage 4


def test_kept_total_when_an_amount_is_too_long_then_unknown() -> None:
    ledger = LedgerView(0, Decimal(0), Decimal(0), {}, 0).with_total()
    assert ledger.changed(1, 3, Decimal(1) / 3, 1).strategy_total is None
    assert ledger.changed(1, 3, Decimal("1.25"), 1).strategy_total == Decimal("3.75")
