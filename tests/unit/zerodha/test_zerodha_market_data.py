"""Pure market-data rules: ticker packets to MarketTick, connection sharding, instrument records."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from alphapanda.brokers.zerodha.instruments import InstrumentRecord
from alphapanda.brokers.zerodha.ticker_feed import FeedInstrument, shards, tick_from_packet
from alphapanda.events import IST

SBIN = FeedInstrument(779521, "SBIN", "NSE")
NIFTY = FeedInstrument(256265, "NIFTY 50", "NSE")
RECEIVED = datetime(2026, 1, 5, 10, 0, 5, tzinfo=IST)


def _full_packet(**overrides: Any) -> dict[str, Any]:
    """A full-mode packet as KiteTicker._parse_binary hands it to on_ticks."""
    local = datetime.fromtimestamp(datetime(2026, 1, 5, 10, 0, 1, tzinfo=IST).timestamp())
    packet: dict[str, Any] = {
        "tradable": True,
        "mode": "full",
        "instrument_token": 779521,
        "last_price": 801.25,
        "volume_traded": 12345,
        "exchange_timestamp": local,
        "last_trade_time": local,
        "depth": {
            # The client divides integer paise by 100.0, as here.
            "buy": [{"quantity": 10 * i, "price": (80120 - 5 * i) / 100.0, "orders": i} for i in range(1, 6)],
            "sell": [{"quantity": 5 * i, "price": (80130 + 5 * i) / 100.0, "orders": i} for i in range(1, 6)],
        },
    }
    return packet | overrides


def test_tick_from_packet_when_full_mode_then_touch_depth_volume_and_ist_exchange_time() -> None:
    tick = tick_from_packet(_full_packet(), SBIN, RECEIVED)

    assert tick is not None
    assert (tick.last_price, tick.bid, tick.ask) == (Decimal("801.25"), Decimal("801.15"), Decimal("801.35"))
    assert (tick.bid_quantity, tick.ask_quantity, tick.volume) == (10, 5, 12345)
    assert tick.depth_buy is not None and tick.depth_sell is not None
    assert [lv.orders for lv in tick.depth_buy] == [1, 2, 3, 4, 5]
    assert tick.exchange_timestamp == datetime(2026, 1, 5, 10, 0, 1, tzinfo=IST)
    assert tick.exchange_timestamp.tzinfo is not None
    assert (tick.tradingsymbol, tick.exchange, tick.asset_class) == ("SBIN", "NSE", "equity")


def test_tick_from_packet_when_index_then_touch_is_the_index_value_without_depth() -> None:
    packet = {"tradable": False, "mode": "full", "instrument_token": 256265, "last_price": 25012.5}

    tick = tick_from_packet(packet, NIFTY, RECEIVED)

    assert tick is not None
    assert tick.bid == tick.ask == tick.last_price == Decimal("25012.5")
    assert tick.depth_buy is None and tick.exchange_timestamp == RECEIVED


@pytest.mark.parametrize(
    "overrides",
    [
        {"last_price": 0},
        {"depth": {"buy": [], "sell": [{"quantity": 5, "price": 801.3, "orders": 1}]}},
        {
            "depth": {
                "buy": [{"quantity": 0, "price": 801.2, "orders": 0}],
                "sell": [{"quantity": 5, "price": 801.3}],
            }
        },
        {"depth": None},
    ],
)
def test_tick_from_packet_when_no_trade_or_one_side_of_the_book_empty_then_no_tick(
    overrides: dict[str, Any],
) -> None:
    assert tick_from_packet(_full_packet(**overrides), SBIN, RECEIVED) is None


def test_shards_when_more_tokens_than_a_connection_takes_then_split_in_order_without_duplicates() -> None:
    assert shards([1, 2, 3, 2, 4, 5], per_connection=2) == [[1, 2], [3, 4], [5]]
    assert shards(range(9000)) == [list(range(i, i + 3000)) for i in (0, 3000, 6000)]


@pytest.mark.parametrize(("tokens", "message"), [([], "no instruments"), (range(9001), "Kite allows 3")])
def test_shards_when_none_or_beyond_three_connections_then_error(tokens: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shards(tokens)


def test_instrument_record_when_read_from_client_row_then_decimal_tick_and_json_round_trip() -> None:
    row = {
        "instrument_token": 13238786,
        "exchange_token": "51714",
        "tradingsymbol": "NIFTY26JANFUT",
        "name": "NIFTY",
        "last_price": 0.0,
        "expiry": date(2026, 1, 27),
        "strike": 0.0,
        "tick_size": 0.1,
        "lot_size": 75,
        "instrument_type": "FUT",
        "segment": "NFO-FUT",
        "exchange": "NFO",
    }

    record = InstrumentRecord.from_kite(row)

    assert (record.tick_size, record.lot_size, record.asset_class, record.key) == (
        Decimal("0.1"),
        75,
        "fno",
        "NFO:NIFTY26JANFUT",
    )
    assert InstrumentRecord.from_json(record.to_json()) == record
