"""Ticker frames the sandbox builds, parsed by the official client's own parser (facts.md line 168).

A guard for what the audit found correct: packet sizes LTP 8, index quote 28 / full 32, quote 44,
full 184; big-endian; prices /100, CDS /10,000,000, BCD /10,000 by `instrument_token & 0xff`;
heartbeats of 1 byte carry no ticks.
"""

from __future__ import annotations

import struct
from datetime import date
from decimal import Decimal

import pytest
from kiteconnect import KiteTicker

from alphapanda.kite_sandbox._common import ist_now
from alphapanda.kite_sandbox.config import SandboxConfig
from alphapanda.kite_sandbox.exchange import Exchange
from alphapanda.kite_sandbox.instruments import Instrument, equity, index
from alphapanda.kite_sandbox.packets import HEARTBEAT

INFY, NIFTY = 408065, 256265
CDS = (4000 << 8) | 3
BCD = (5000 << 8) | 6


def _currency(token: int, exchange: str) -> Instrument:
    return Instrument(
        instrument_token=token,
        exchange_token=token >> 8,
        tradingsymbol=f"USDINR{exchange}",
        name="USDINR",
        exchange=exchange,
        segment=f"{exchange}-FUT",
        instrument_type="FUT",
        opening_price=Decimal("83.2525"),
        tick_size=Decimal("0.0025"),
        expiry=date(2026, 1, 28),
    )


@pytest.fixture
def exchange() -> Exchange:
    items = [
        equity(INFY, "INFY", "INFOSYS", "1500.05"),
        index(NIFTY, "NIFTY 50", "25000.35"),
        _currency(CDS, "CDS"),
        _currency(BCD, "BCD"),
    ]
    return Exchange(items, config=SandboxConfig(random_walk=False), seed=1, clock=ist_now)


def _sizes(frame: bytes) -> list[int]:
    (count,) = struct.unpack(">H", frame[:2])
    sizes, at = [], 2
    for _ in range(count):
        (size,) = struct.unpack(">H", frame[at : at + 2])
        sizes.append(size)
        at += 2 + size
    assert at == len(frame)
    return sizes


@pytest.mark.parametrize(
    ("mode", "sizes"),
    [("ltp", [8, 8, 8, 8]), ("quote", [44, 28, 44, 44]), ("full", [184, 32, 184, 184])],
)
def test_tick_frame_when_each_mode_then_kites_packet_sizes_and_segment_divisors(
    exchange: Exchange, mode: str, sizes: list[int]
) -> None:
    frame = exchange.tick_frame({INFY: mode, NIFTY: mode, CDS: mode, BCD: mode})
    assert frame is not None

    ticks = {t["instrument_token"]: t for t in KiteTicker("k", "t")._parse_binary(frame)}

    assert _sizes(frame) == sizes
    assert {token: t["last_price"] for token, t in ticks.items()} == {
        INFY: 1500.05,
        NIFTY: 25000.35,
        CDS: 83.2525,
        BCD: 83.2525,
    }
    assert [ticks[t]["tradable"] for t in (INFY, NIFTY, CDS, BCD)] == [True, False, True, True]
    # The raw integers: paise for NSE, 1e-7 rupees for CDS, 1e-4 for BCD, big-endian.
    assert struct.unpack(">II", frame[4:12]) == (INFY, 150005)
    if mode == "full":
        assert ticks[CDS]["depth"]["buy"][0]["price"] == 83.25
        assert len(ticks[INFY]["depth"]["buy"]) == len(ticks[INFY]["depth"]["sell"]) == 5


def test_heartbeat_when_sent_then_one_byte_and_no_ticks() -> None:
    assert len(HEARTBEAT) == 1
    assert KiteTicker("k", "t")._parse_binary(HEARTBEAT) == []
