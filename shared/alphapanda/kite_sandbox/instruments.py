"""Instruments the sandbox trades, and the instrument dump CSV Kite serves at `GET /instruments`."""

from __future__ import annotations

import calendar
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from ._common import ist_now

# Segment ids are the low byte of an instrument token; the ticker divides prices by segment.
SEGMENT_NSE = 1
SEGMENT_NFO = 2
SEGMENT_CDS = 3
SEGMENT_BSE = 4
SEGMENT_BFO = 5
SEGMENT_BCD = 6
SEGMENT_MCX = 7
SEGMENT_INDICES = 9
SEGMENT_NCO = 12

CASH_EXCHANGES = frozenset({"NSE", "BSE"})
DERIVATIVE_EXCHANGES = frozenset({"NFO", "BFO", "CDS", "BCD", "MCX"})
COMMODITY_EXCHANGES = frozenset({"MCX"})

CSV_COLUMNS = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One row of the instrument dump plus the price the sandbox opens it at."""

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    exchange: str
    segment: str
    instrument_type: str
    opening_price: Decimal
    tick_size: Decimal = Decimal("0.05")
    lot_size: int = 1
    expiry: date | None = None
    strike: Decimal = Decimal(0)
    open_interest: int = 0

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def segment_id(self) -> int:
        return self.instrument_token & 0xFF

    @property
    def is_index(self) -> bool:
        return self.segment_id == SEGMENT_INDICES

    @property
    def tradable(self) -> bool:
        return not self.is_index

    @property
    def is_derivative(self) -> bool:
        return self.exchange in DERIVATIVE_EXCHANGES

    @property
    def price_divisor(self) -> int:
        # Mirrors kiteconnect.ticker._parse_binary: CDS in 1e7ths, BCD/NCO in 1e4ths, the rest in paise.
        if self.segment_id == SEGMENT_CDS:
            return 10_000_000
        if self.segment_id in (SEGMENT_BCD, SEGMENT_NCO):
            return 10_000
        return 100

    @property
    def price_step(self) -> Decimal:
        # Indices carry tick_size 0 in the dump but still need a step for the random walk.
        return self.tick_size if self.tick_size > 0 else Decimal("0.05")


def equity(
    instrument_token: int,
    tradingsymbol: str,
    name: str,
    opening_price: Decimal | str,
    *,
    exchange: str = "NSE",
    tick_size: Decimal | str = "0.05",
) -> Instrument:
    """An NSE/BSE cash-market equity; `exchange_token` is the token without its segment byte."""
    return Instrument(
        instrument_token=instrument_token,
        exchange_token=instrument_token >> 8,
        tradingsymbol=tradingsymbol,
        name=name,
        exchange=exchange,
        segment=exchange,
        instrument_type="EQ",
        opening_price=Decimal(opening_price),
        tick_size=Decimal(tick_size),
    )


def index(instrument_token: int, tradingsymbol: str, opening_price: Decimal | str) -> Instrument:
    """An NSE index: streamed by the ticker, never tradable."""
    return Instrument(
        instrument_token=instrument_token,
        exchange_token=instrument_token >> 8,
        tradingsymbol=tradingsymbol,
        name=tradingsymbol,
        exchange="NSE",
        segment="INDICES",
        instrument_type="EQ",
        opening_price=Decimal(opening_price),
        tick_size=Decimal(0),
        lot_size=0,
    )


def future(
    instrument_token: int,
    underlying: str,
    expiry: date,
    opening_price: Decimal | str,
    *,
    lot_size: int,
    exchange: str = "NFO",
    tick_size: Decimal | str = "0.05",
    open_interest: int = 0,
) -> Instrument:
    """A monthly future; the tradingsymbol follows Kite's `NIFTY26JANFUT` pattern."""
    symbol = f"{underlying}{expiry:%y}{calendar.month_abbr[expiry.month].upper()}FUT"
    return Instrument(
        instrument_token=instrument_token,
        exchange_token=instrument_token >> 8,
        tradingsymbol=symbol,
        name=underlying,
        exchange=exchange,
        segment=f"{exchange}-FUT",
        instrument_type="FUT",
        opening_price=Decimal(opening_price),
        tick_size=Decimal(tick_size),
        lot_size=lot_size,
        expiry=expiry,
        open_interest=open_interest,
    )


def monthly_expiry(today: date) -> date:
    """The last Tuesday of today's month (NSE index derivatives expiry), or next month's once it passed."""
    year, month = today.year, today.month
    for _ in range(2):
        last_day = date(year, month, calendar.monthrange(year, month)[1])
        candidate = last_day - timedelta(days=(last_day.weekday() - calendar.TUESDAY) % 7)
        if candidate >= today:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable: next month always has a last Tuesday after today")


def default_instruments(today: date | None = None) -> list[Instrument]:
    """A handful of real NSE equities and indices (tokens as published in Kite's dump) and one
    NIFTY future. Opening prices, the future's token and its lot size are illustrative."""
    expiry = monthly_expiry(today or ist_now().date())
    return [
        equity(408065, "INFY", "INFOSYS", "1500.00"),
        equity(738561, "RELIANCE", "RELIANCE INDUSTRIES", "1400.00"),
        equity(2953217, "TCS", "TATA CONSULTANCY SERV LT", "3100.00"),
        equity(341249, "HDFCBANK", "HDFC BANK", "950.00"),
        equity(779521, "SBIN", "STATE BANK OF INDIA", "800.00"),
        index(256265, "NIFTY 50", "25000.00"),
        index(260105, "NIFTY BANK", "56000.00"),
        future(13238786, "NIFTY", expiry, "25100.00", lot_size=75, open_interest=12_000_000),
    ]


def _csv_decimal(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def instruments_csv(instruments: Iterable[Instrument]) -> str:
    """Render the dump with Kite's columns; `last_price` is 0 as in the daily file."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in instruments:
        writer.writerow(
            (
                item.instrument_token,
                item.exchange_token,
                item.tradingsymbol,
                item.name,
                "0",
                item.expiry.isoformat() if item.expiry else "",
                _csv_decimal(item.strike),
                _csv_decimal(item.tick_size),
                item.lot_size,
                item.instrument_type,
                item.segment,
                item.exchange,
            )
        )
    return buffer.getvalue()
