from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex
from sandbox_orders import place

from alphapanda.kite_sandbox import Holding, KiteSandbox, SandboxConfig, default_instruments

INFY = "NSE:INFY"


def statuses(kite: Any, order_id: str) -> list[str]:
    return [entry["status"] for entry in kite.order_history(order_id)]


def test_place_market_order_when_price_set_then_completes_at_that_price_through_documented_states(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500.05")

    order_id = place(kite, quantity=3, tag="alpha1")
    sandbox.wait_for_order(order_id)

    assert len(order_id) == 19 and order_id.isdigit()
    assert statuses(kite, order_id) == [
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "OPEN",
        "COMPLETE",
    ]
    order = kite.orders()[-1]
    assert (order["order_id"], order["status"], order["filled_quantity"]) == (order_id, "COMPLETE", 3)
    assert order["average_price"] == 1500.05
    assert order["tag"] == "alpha1"
    trades = kite.order_trades(order_id)
    assert [(t["quantity"], t["average_price"]) for t in trades] == [(3, 1500.05)]
    assert kite.trades() == trades


def test_place_limit_order_when_price_not_crossed_then_rests_open_and_fills_at_limit_once_crossed(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500")
    order_id = place(kite, order_type="LIMIT", price=1490, market_protection=None)
    assert sandbox.wait_for_order(order_id, {"OPEN"})["pending_quantity"] == 1

    sandbox.set_price(INFY, "1488")

    done = sandbox.wait_for_order(order_id)
    assert done["status"] == "COMPLETE"
    assert done["average_price"] == Decimal("1490")


def test_place_sl_buy_when_trigger_reached_then_trigger_pending_then_fills(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500")
    order_id = place(kite, order_type="SL", price=1515, trigger_price=1510, market_protection=None)
    sandbox.wait_for_order(order_id, {"TRIGGER PENDING"})

    sandbox.set_price(INFY, "1512")

    assert sandbox.wait_for_order(order_id)["average_price"] == Decimal("1512")
    assert statuses(kite, order_id)[-3:] == ["TRIGGER PENDING", "OPEN", "COMPLETE"]


def test_place_slm_sell_when_trigger_reached_then_fills_at_market(sandbox: KiteSandbox, kite: Any) -> None:
    sandbox.set_price(INFY, "1500")
    order_id = place(kite, transaction_type="SELL", order_type="SL-M", trigger_price=1490)
    sandbox.wait_for_order(order_id, {"TRIGGER PENDING"})

    sandbox.set_price(INFY, "1487.5")

    done = sandbox.wait_for_order(order_id)
    assert (done["status"], done["average_price"]) == ("COMPLETE", Decimal("1487.5"))


def test_modify_order_when_limit_is_open_then_new_price_applies_through_modify_states(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500")
    order_id = place(kite, order_type="LIMIT", price=1450, quantity=5, market_protection=None)
    sandbox.wait_for_order(order_id, {"OPEN"})

    assert kite.modify_order("regular", order_id, price=1460, quantity=4) == order_id
    sandbox.wait_for_order(order_id, {"OPEN"})
    time.sleep(0.05)

    order = kite.order_history(order_id)[-1]
    assert (order["price"], order["quantity"], order["status"], order["modified"]) == (1460, 4, "OPEN", True)
    assert statuses(kite, order_id)[-3:] == ["MODIFY VALIDATION PENDING", "MODIFY PENDING", "OPEN"]


def test_modify_order_when_made_marketable_then_fills_at_market(sandbox: KiteSandbox, kite: Any) -> None:
    sandbox.set_price(INFY, "1500")
    order_id = place(kite, order_type="LIMIT", price=1450, market_protection=None)
    sandbox.wait_for_order(order_id, {"OPEN"})

    kite.modify_order("regular", order_id, order_type="LIMIT", price=1505)

    assert sandbox.wait_for_order(order_id)["average_price"] == Decimal("1500")


def test_cancel_order_when_open_then_cancelled_with_pending_quantity_cancelled(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500")
    order_id = place(kite, order_type="LIMIT", price=1400, quantity=7, market_protection=None)
    sandbox.wait_for_order(order_id, {"OPEN"})

    assert kite.cancel_order("regular", order_id) == order_id

    done = sandbox.wait_for_order(order_id)
    assert (done["status"], done["cancelled_quantity"], done["pending_quantity"]) == ("CANCELLED", 7, 0)
    assert statuses(kite, order_id)[-2:] == ["CANCEL PENDING", "CANCELLED"]
    with pytest.raises(kex.InputException):
        kite.cancel_order("regular", order_id)


@pytest.mark.parametrize("order_type", ["MARKET", "SL-M"])
@pytest.mark.parametrize("protection", [0, None])
def test_place_order_when_market_protection_zero_or_missing_then_input_exception(
    sandbox: KiteSandbox, kite: Any, order_type: str, protection: int | None
) -> None:
    with pytest.raises(kex.InputException) as raised:
        place(kite, order_type=order_type, trigger_price=1600, market_protection=protection)

    assert raised.value.code == 400
    assert sandbox.orders() == []


def test_place_order_when_tag_longer_than_20_chars_then_input_exception(
    sandbox: KiteSandbox, kite: Any
) -> None:
    with pytest.raises(kex.InputException):
        place(kite, tag="a" * 21)
    with pytest.raises(kex.InputException):
        place(kite, tag="not-alnum")

    assert place(kite, tag="a" * 20)
    assert len(sandbox.orders()) == 1


def test_place_order_when_tradingsymbol_unknown_then_input_exception(sandbox: KiteSandbox, kite: Any) -> None:
    with pytest.raises(kex.InputException):
        place(kite, tradingsymbol="NOSUCHSTOCK")
    with pytest.raises(kex.InputException):
        place(kite, tradingsymbol="NIFTY 50")


def test_place_future_when_quantity_not_a_lot_multiple_then_input_exception(
    sandbox: KiteSandbox, kite: Any
) -> None:
    future = next(i for i in kite.instruments("NFO") if i["instrument_type"] == "FUT")
    lot = future["lot_size"]
    with pytest.raises(kex.InputException):
        place(kite, exchange="NFO", tradingsymbol=future["tradingsymbol"], product="NRML", quantity=lot + 1)
    with pytest.raises(kex.InputException):
        place(kite, exchange="NFO", tradingsymbol=future["tradingsymbol"], product="CNC", quantity=lot)

    order_id = place(
        kite, exchange="NFO", tradingsymbol=future["tradingsymbol"], product="NRML", quantity=lot
    )

    assert sandbox.wait_for_order(order_id)["filled_quantity"] == lot


def test_place_order_when_more_than_ten_in_one_second_then_http_429_network_exception(
    sandbox: KiteSandbox, kite: Any
) -> None:
    placed = [place(kite, tag=f"burst{n}") for n in range(10)]

    with pytest.raises(kex.NetworkException) as raised:
        place(kite, tag="burst10")

    assert raised.value.code == 429
    assert len(placed) == len(sandbox.orders()) == 10
    kite.orders()  # other endpoints are not throttled by the order limit
    time.sleep(1.05)
    assert place(kite, tag="after")


def test_positions_when_buy_and_partial_sell_filled_then_net_and_day_reflect_fills(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500")
    sandbox.wait_for_order(place(kite, quantity=10))
    sandbox.set_price(INFY, "1510")
    sandbox.wait_for_order(place(kite, transaction_type="SELL", quantity=4))

    positions = kite.positions()

    (net,) = positions["net"]
    assert positions["day"] == positions["net"]
    assert (net["tradingsymbol"], net["product"], net["quantity"]) == ("INFY", "MIS", 6)
    assert (net["buy_quantity"], net["buy_value"], net["sell_quantity"], net["sell_value"]) == (
        10,
        15000,
        4,
        6040,
    )
    assert (net["average_price"], net["last_price"]) == (1500, 1510)
    assert net["pnl"] == 6040 - 15000 + 6 * 1510


def test_place_order_when_partial_fill_configured_then_open_with_partial_until_filled(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500")
    sandbox.partial_fill_next(3)
    order_id = place(kite, quantity=10)

    partial = sandbox.wait_for_order(order_id, {"OPEN"})
    deadline = time.monotonic() + 2
    while partial["filled_quantity"] == 0 and time.monotonic() < deadline:
        partial = sandbox.order(order_id)
    assert (partial["filled_quantity"], partial["pending_quantity"]) == (3, 7)

    sandbox.fill_order(order_id)

    assert sandbox.wait_for_order(order_id)["status"] == "COMPLETE"
    assert [t["quantity"] for t in kite.order_trades(order_id)] == [3, 7]


def test_place_ioc_limit_when_not_marketable_then_cancelled(sandbox: KiteSandbox, kite: Any) -> None:
    sandbox.set_price(INFY, "1500")

    order_id = place(kite, order_type="LIMIT", price=1400, validity="IOC", market_protection=None)

    assert sandbox.wait_for_order(order_id)["status"] == "CANCELLED"


def test_place_order_when_funds_insufficient_then_order_rejected_with_rms_message(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.set_price(INFY, "1500")

    order_id = place(kite, product="CNC", quantity=1000)

    rejected = sandbox.wait_for_order(order_id)
    assert rejected["status"] == "REJECTED"
    assert rejected["status_message"].startswith("Insufficient funds")
    assert kite.order_history(order_id)[-1]["exchange_order_id"] is None


def test_cnc_sell_when_no_holdings_then_rejected(sandbox: KiteSandbox, kite: Any) -> None:
    order_id = place(kite, product="CNC", transaction_type="SELL")

    assert "Insufficient holdings" in sandbox.wait_for_order(order_id)["status_message"]


def test_place_order_when_rejection_injected_then_rejected_with_that_message(
    sandbox: KiteSandbox, kite: Any
) -> None:
    sandbox.reject_next_order("Blocked by test")

    order_id = place(kite)

    assert sandbox.wait_for_order(order_id)["status_message"] == "Blocked by test"
    assert statuses(kite, order_id) == ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "REJECTED"]


def test_cnc_sell_when_holding_exists_then_completes_and_holdings_show_it(fast_config: SandboxConfig) -> None:
    instruments = default_instruments()
    sbin = next(i for i in instruments if i.tradingsymbol == "SBIN")
    holding = Holding(instrument=sbin, quantity=10, average_price=Decimal("700"), isin="INE062A01020")
    with KiteSandbox(instruments=instruments, holdings=[holding], config=fast_config) as sandbox:
        kite: Any = KiteConnect(sandbox.api_key, root=sandbox.root, disable_ssl=True)
        kite.set_access_token(sandbox.create_session())
        sandbox.set_price("NSE:SBIN", "805")

        order_id = place(kite, tradingsymbol="SBIN", product="CNC", transaction_type="SELL", quantity=6)

        assert sandbox.wait_for_order(order_id)["status"] == "COMPLETE"
        (row,) = kite.holdings()
        assert (row["tradingsymbol"], row["quantity"], row["used_quantity"]) == ("SBIN", 10, 6)
        assert row["pnl"] == (805 - 700) * 10
        too_many = place(kite, tradingsymbol="SBIN", product="CNC", transaction_type="SELL", quantity=5)
        assert sandbox.wait_for_order(too_many)["status"] == "REJECTED"
