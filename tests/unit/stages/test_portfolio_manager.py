"""The portfolio manager's accounting: margin by product, funds available, today's PnL, charges."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from alphapanda import stages
from alphapanda.config import BrokerSettings, FillSettings
from alphapanda.domain.portfolio import Book, Position
from alphapanda.events import IST, EventType, PnlSnapshot, Product, Side
from alphapanda.stages.portfolio_manager import Account, PortfolioManager, position_margin
from alphapanda.stages.risk_manager import day_pnl_total
from alphapanda.state import keys
from alphapanda.state.store import Decision, MemoryStateStore
from fill_events import fill_event

D = Decimal
TOKEN = 738561
OTHER = 408065
SLOT = f"ema_test:{TOKEN}"
AT = datetime(2025, 11, 24, 10, 0, tzinfo=IST)
DAY = "2025-11-24"
# leverage 4 and 15% so that MIS, NRML and CNC margins all differ
SETTINGS = BrokerSettings(
    starting_cash=D("100000"), fills=FillSettings(mis_leverage=D("4"), nrml_margin_pct=D("15"))
)


@pytest.fixture
def store() -> MemoryStateStore:
    return MemoryStateStore()


def _manager() -> PortfolioManager:
    return PortfolioManager(brokers=frozenset({"paper"}), settings_for=lambda _b: SETTINGS)


def _seed(store: MemoryStateStore, writes: dict[str, str]) -> None:
    store.process_once(
        "test:claim:seed:" + ",".join(writes), [], lambda _: Decision(outputs=[], writes=writes)
    )


def _ltp(store: MemoryStateStore, price: str, token: int = TOKEN) -> None:
    _seed(store, {keys.quote(token): json.dumps({"bid": price, "ask": price, "ltp": price})})


_fill = fill_event


def _account(store: MemoryStateStore) -> dict[str, object]:
    return json.loads(store.get(keys.account("paper")) or "")


def _day(store: MemoryStateStore, day: str = DAY) -> dict[str, object]:
    return json.loads(store.get(keys.day_pnl("paper", day)) or "")


# --- margin -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "margin"),
    [("MIS", "3750"), ("NRML", "2250"), ("CNC", "15000")],
)
def test_position_margin_when_product_given_then_mis_over_leverage_nrml_a_share_cnc_in_full(
    product: str, margin: str
) -> None:
    # value 10 x 1,500 = 15,000: MIS / 4 = 3,750; NRML 15% = 2,250; CNC all of it
    assert position_margin(Position(10, D("1500"), product=product), SETTINGS) == D(margin)


def test_position_margin_when_nrml_share_differs_from_mis_leverage_then_each_uses_its_own() -> None:
    settings = BrokerSettings(fills=FillSettings(mis_leverage=D("5"), nrml_margin_pct=D("12")))
    pos = Position(-20, D("500"))  # short: value |-20| x 500 = 10,000

    assert position_margin(pos, settings) == D("2000")
    assert position_margin(Position(-20, D("500"), product="NRML"), settings) == D("1200")


def test_position_margin_when_defaults_then_mis_is_a_fifth_and_nrml_a_fifth() -> None:
    assert position_margin(Position(10, D("1500")), BrokerSettings()) == D("3000")
    assert position_margin(Position(10, D("1500"), product="NRML"), BrokerSettings()) == D("3000")


# --- the account ------------------------------------------------------------------------------


def test_account_available_when_computed_then_starting_plus_realised_less_charges_and_margin() -> None:
    account = Account(
        D("100000"), realised=D("250"), charges=D("40"), margin={"a:1": "3000", "b:2": "1500.5"}
    )

    # 1,00,000 + 250 - 40 - 4,500.5
    assert account.available == D("95709.5")


def test_account_json_when_round_tripped_then_equal_and_available_is_written() -> None:
    account = Account(D("100000"), D("250"), D("40"), {"a:1": "3000"})

    raw = account.to_json()

    assert Account.from_json(raw, D("1")) == account
    assert json.loads(raw)["available"] == "97210"  # 1,00,000 + 250 - 40 - 3,000


def test_account_from_json_when_no_record_yet_then_starting_cash_only() -> None:
    assert Account.from_json(None, D("5000")) == Account(D("5000"))


@pytest.mark.parametrize(
    ("product", "margin", "available"),
    [(Product.MIS, "3750", "96230"), (Product.NRML, "2250", "97730"), (Product.CNC, "15000", "84980")],
)
def test_decide_when_fill_opens_a_position_then_account_holds_its_product_margin(
    store: MemoryStateStore, product: Product, margin: str, available: str
) -> None:
    stages.process(_manager(), _fill(Side.BUY, 10, "1500", product=product, charges="20"), store)

    # 1,00,000 - 20 charges - margin
    assert _account(store) == {
        "starting_cash": "100000",
        "realised": "0",
        "charges": "20",
        "margin": {SLOT: margin},
        "available": available,
    }


def test_decide_when_position_closed_then_its_margin_slot_is_removed_and_pnl_realised(
    store: MemoryStateStore,
) -> None:
    stages.process(_manager(), _fill(Side.BUY, 10, "1500", product=Product.CNC, charges="20"), store)

    stages.process(
        _manager(), _fill(Side.SELL, 10, "1510", product=Product.CNC, charges="21", fill_id="f2"), store
    )

    # realised 10 x 10 = 100; charges 41; 1,00,000 + 100 - 41
    assert _account(store) == {
        "starting_cash": "100000",
        "realised": "100",
        "charges": "41",
        "margin": {},
        "available": "100059",
    }


def test_decide_when_position_partly_closed_then_margin_is_recomputed_on_what_is_left(
    store: MemoryStateStore,
) -> None:
    stages.process(_manager(), _fill(Side.BUY, 10, "1500"), store)

    stages.process(_manager(), _fill(Side.SELL, 4, "1490", fill_id="f2"), store)

    # 6 x 1,500 / 4 = 2,250; realised 4 x -10 = -40; 1,00,000 - 40 - 2,250
    account = _account(store)
    assert (account["margin"], account["realised"], account["available"]) == ({SLOT: "2250"}, "-40", "97710")


def test_decide_when_several_strategies_and_instruments_hold_positions_then_margin_sums_their_slots(
    store: MemoryStateStore,
) -> None:
    manager = _manager()
    stages.process(manager, _fill(Side.BUY, 10, "1500", product=Product.MIS, fill_id="f1"), store)
    stages.process(
        manager, _fill(Side.SELL, 5, "1600", product=Product.NRML, token=OTHER, fill_id="f2"), store
    )
    stages.process(
        manager, _fill(Side.BUY, 2, "1500", product=Product.CNC, strategy="other", fill_id="f3"), store
    )

    # MIS 15,000 / 4 = 3,750; NRML 8,000 x 15% = 1,200; CNC 3,000; 1,00,000 - 7,950
    account = _account(store)
    assert account["margin"] == {SLOT: "3750", f"ema_test:{OTHER}": "1200", f"other:{TOKEN}": "3000"}
    assert account["available"] == "92050"


# --- today's PnL ------------------------------------------------------------------------------


def test_decide_when_fill_opens_then_day_pnl_realises_minus_charges_and_marks_at_the_fill(
    store: MemoryStateStore,
) -> None:
    _ltp(store, "1490")

    stages.process(_manager(), _fill(Side.BUY, 10, "1500", charges="20"), store)

    # realised 0 - 20 charges; marked at the fill price 1,500 (not the stored 1,490): 0
    assert _day(store) == {"realised": "-20", "unrealised": {SLOT: "0"}}
    assert day_pnl_total(store.get(keys.day_pnl("paper", DAY))) == D("-20")


def test_decide_when_fill_reduces_then_day_pnl_adds_realised_less_charges_and_remarks_the_rest(
    store: MemoryStateStore,
) -> None:
    _ltp(store, "1490")
    stages.process(_manager(), _fill(Side.BUY, 10, "1500", charges="20"), store)

    stages.process(_manager(), _fill(Side.SELL, 4, "1510", charges="10", fill_id="f2"), store)

    # realised -20 + 4 x 10 - 10 = 10; the rest marked at this fill, (1,510 - 1,500) x 6 = 60
    assert _day(store) == {"realised": "10", "unrealised": {SLOT: "60"}}


def test_decide_when_fills_on_two_instruments_then_each_slot_keeps_its_own_unrealised(
    store: MemoryStateStore,
) -> None:
    _ltp(store, "1490")
    _ltp(store, "1620", token=OTHER)
    stages.process(_manager(), _fill(Side.BUY, 10, "1500", fill_id="f1"), store)
    stages.process(_manager(), _fill(Side.BUY, 10, "1510", fill_id="f2"), store)

    stages.process(_manager(), _fill(Side.SELL, 5, "1600", token=OTHER, fill_id="f3"), store)

    # long 20 @1,505 marked at its last fill 1,510: +100; the short 5 @1,600 at its own fill: 0.
    # A fill on one instrument leaves the other's slot as it was.
    assert _day(store)["unrealised"] == {SLOT: "100", f"ema_test:{OTHER}": "0"}
    assert day_pnl_total(store.get(keys.day_pnl("paper", DAY))) == D("100")


def test_decide_when_fills_on_two_ist_days_then_each_day_has_its_own_record(store: MemoryStateStore) -> None:
    stages.process(_manager(), _fill(Side.BUY, 10, "1500", charges="5"), store)

    next_day = datetime(2025, 11, 25, 10, 0, tzinfo=IST)
    stages.process(_manager(), _fill(Side.SELL, 10, "1520", charges="6", fill_id="f2", at=next_day), store)

    assert _day(store)["realised"] == "-5"
    assert _day(store, "2025-11-25") == {"realised": "194", "unrealised": {SLOT: "0"}}


# --- the book and the snapshot ----------------------------------------------------------------


def test_decide_when_fill_has_charges_then_book_cash_falls_by_value_and_charges(
    store: MemoryStateStore,
) -> None:
    stages.process(_manager(), _fill(Side.BUY, 10, "1500", product=Product.NRML, charges="20.75"), store)

    book = Book.from_json(json.loads(store.get(keys.book("paper", "ema_test")) or ""))
    assert (book.cash, book.charges_paid, book.trade_count) == (D("-15020.75"), D("20.75"), 1)
    assert book.position(TOKEN) == Position(10, D("1500"), product="NRML")


def test_decide_when_fill_booked_then_snapshot_carries_position_marks_cash_and_charges(
    store: MemoryStateStore,
) -> None:
    _ltp(store, "1490")
    stages.process(_manager(), _fill(Side.BUY, 10, "1500", charges="20"), store)

    (out,) = stages.process(_manager(), _fill(Side.SELL, 4, "1510", charges="10", fill_id="f2"), store)

    # cash -15,020 + 6,040 - 10 = -8,990
    assert out.data == PnlSnapshot(
        instrument_token=TOKEN,
        tradingsymbol="RELIANCE",
        exchange="NSE",
        strategy="ema_test",
        net_quantity=6,
        average_price=D("1500"),
        last_price=D("1510"),
        realised_pnl=D("40"),
        unrealised_pnl=D("60"),
        cash=D("-8990"),
        charges_paid=D("30"),
        trade_count=2,
        as_of=AT,
    )
    assert out.type is EventType.PNL_SNAPSHOT
