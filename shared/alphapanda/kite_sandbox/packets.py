"""KiteTicker binary frames: a 2-byte packet count, then per packet a 2-byte length and the packet.

Layouts (big-endian, prices scaled by the segment divisor) follow kiteconnect.ticker._parse_binary:
LTP 8 bytes; index quote 28 / index full 32; quote 44; full 184 with 5+5 depth entries of
(quantity int32, price int32, orders int16, 2 bytes padding) from offset 64.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from .market import DEPTH_LEVELS, DepthLevel, InstrumentState

MODE_LTP = "ltp"
MODE_QUOTE = "quote"
MODE_FULL = "full"
MODES = (MODE_LTP, MODE_QUOTE, MODE_FULL)

HEARTBEAT = b"\x00"

_DEPTH_ENTRY = struct.Struct(">IIH2x")


def _scaled(price: Decimal, divisor: int) -> int:
    return int((price * divisor).to_integral_value(rounding=ROUND_HALF_UP))


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _depth(levels: list[DepthLevel], divisor: int) -> bytes:
    padded = levels + [DepthLevel(Decimal(0), 0, 0)] * (DEPTH_LEVELS - len(levels))
    return b"".join(
        _DEPTH_ENTRY.pack(level.quantity, _scaled(level.price, divisor), level.orders)
        for level in padded[:DEPTH_LEVELS]
    )


def encode_packet(state: InstrumentState, mode: str) -> bytes:
    item = state.instrument
    div = item.price_divisor
    token = item.instrument_token
    ltp = _scaled(state.ltp, div)
    if mode == MODE_LTP:
        return struct.pack(">II", token, ltp)
    if item.is_index:
        body = struct.pack(
            ">IIIIIIi",
            token,
            ltp,
            _scaled(state.high, div),
            _scaled(state.low, div),
            _scaled(state.open, div),
            _scaled(state.close, div),
            _scaled(state.net_change, div),
        )
        if mode == MODE_FULL:
            body += struct.pack(">I", _epoch(state.timestamp))
        return body
    body = struct.pack(
        ">IIIIIIIIIII",
        token,
        ltp,
        state.last_quantity,
        _scaled(state.average_price, div),
        state.volume,
        state.total_buy_quantity,
        state.total_sell_quantity,
        _scaled(state.open, div),
        _scaled(state.high, div),
        _scaled(state.low, div),
        _scaled(state.close, div),
    )
    if mode == MODE_FULL:
        body += struct.pack(
            ">IIIII",
            _epoch(state.last_trade_time),
            state.oi,
            state.oi_day_high,
            state.oi_day_low,
            _epoch(state.timestamp),
        )
        body += _depth(state.bids, div) + _depth(state.asks, div)
    return body


def encode_frame(packets: Iterable[bytes]) -> bytes:
    items = list(packets)
    return struct.pack(">H", len(items)) + b"".join(struct.pack(">H", len(p)) + p for p in items)
