"""Instruments as the rest of the core sees them, and the parser for the shipped instrument list."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instrument:
    instrument_token: int
    tradingsymbol: str
    name: str
    exchange: str
    segment: str
    instrument_type: str
    tick_size: Decimal
    lot_size: int
    reference_price: Decimal
    """A recent price, used only to start the simulator somewhere realistic."""
    freeze_quantity: int | None = None
    """The exchange's freeze quantity (F&O): larger orders must be sliced."""

    @property
    def asset_class(self) -> str:
        return "equity" if self.instrument_type == "EQ" else "fno"


_COLUMNS = (
    "instrument_token",
    "tradingsymbol",
    "name",
    "exchange",
    "segment",
    "instrument_type",
    "tick_size",
    "lot_size",
    "reference_price",
)


class InstrumentFileError(ValueError):
    pass


def parse_instruments(text: str, origin: str = "instruments") -> list[Instrument]:
    """Parse instrument CSV text (columns as in the shipped file); raise one clear error per bad row."""
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    if rows and (missing := set(_COLUMNS) - set(rows[0])):
        raise InstrumentFileError(f"{origin}: missing columns {', '.join(sorted(missing))}")
    out: list[Instrument] = []
    for n, row in enumerate(rows, start=2):
        try:
            inst = Instrument(
                instrument_token=int(row["instrument_token"]),
                tradingsymbol=row["tradingsymbol"].strip(),
                name=row["name"].strip(),
                exchange=row["exchange"].strip(),
                segment=row["segment"].strip(),
                instrument_type=row["instrument_type"].strip(),
                tick_size=Decimal(row["tick_size"]),
                lot_size=int(row["lot_size"]),
                reference_price=Decimal(row["reference_price"]),
                freeze_quantity=int(row["freeze_quantity"]) if row.get("freeze_quantity") else None,
            )
        except (ValueError, ArithmeticError) as exc:
            raise InstrumentFileError(f"{origin} line {n}: {exc}") from None
        if inst.tick_size <= 0 or inst.lot_size <= 0 or inst.reference_price <= 0:
            raise InstrumentFileError(f"{origin} line {n}: tick size, lot size and price must be positive")
        out.append(inst)
    if not out:
        raise InstrumentFileError(f"{origin}: no instruments")
    return out


def load_instruments(path: Path | None = None) -> list[Instrument]:
    """Load the given instrument CSV, or the shipped list of liquid NSE equities."""
    if path is None:
        text = resources.files("alphapanda.data").joinpath("nse_instruments.csv").read_text()
        return parse_instruments(text, "shipped nse_instruments.csv")
    return parse_instruments(path.read_text(), str(path))
