"""Indian brokerage, taxes and levies on one executed order, from a dated table of rates.

Rates are data (`alphapanda/data/charges.yaml`), never constants here: governments and exchanges
change them several times a year, and a replay of an old day must be charged at that day's rates.
`load_charge_schedule` reads and validates the table; `ChargeSchedule.rates_on` picks the entry in
force on a trade date; `charges_for` turns one executed order and its rates into a
`ChargeBreakdown`. Everything except the loader is pure.

Money is `Decimal` throughout. Each component is rounded half-up, per order, to the unit the
table names (STT to the rupee, the rest to the paisa in the shipped table). GST is charged on the
already-rounded brokerage, exchange charge and SEBI fee, as a contract note shows them.

Call `charges_for` once per executed order with its total filled quantity and price, or
`charges_on_turnover` with its exact traded value when it filled in parts at several prices (an
average price may be no finite decimal): Zerodha's Rs 20 brokerage cap is per order, so charging
each partial fill separately overcharges.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alphapanda.domain.calendar import to_ist
from alphapanda.events import Product, Side
from alphapanda.immutable import immutable

SCHEMA_VERSION: Final = 1
DEFAULT_BROKER: Final = "zerodha"

_HUNDRED: Final = Decimal(100)
_CRORE: Final = Decimal(10_000_000)
_ZERO: Final = Decimal(0)
_PAISA: Final = Decimal("0.01")
_RUPEE: Final = Decimal(1)
_ZERO_PAISE: Final = Decimal("0.00")
"""What `Rounding.apply(0)` gives for either rounding."""
# Wide enough that no product of a turnover and a rate is ever rounded before the final quantize,
# and independent of whatever decimal context the caller has set.
_EXACT: Final = Context(prec=50, rounding=ROUND_HALF_UP)


class Segment(StrEnum):
    EQUITY_DELIVERY = "equity_delivery"
    EQUITY_INTRADAY = "equity_intraday"
    FUTURES = "futures"
    OPTIONS = "options"


class Exchange(StrEnum):
    NSE = "NSE"
    BSE = "BSE"


class ChargeSide(StrEnum):
    """Which leg of a trade pays a component."""

    BUY = "buy"
    SELL = "sell"
    BOTH = "both"

    def applies_to(self, side: Side) -> bool:
        """Return whether an order on `side` pays a component charged on this side."""
        # By identity (BUY pays "buy", SELL pays "sell"): twice per executed order, and an enum's
        # `.value` is a Python-level descriptor.
        return self is ChargeSide.BOTH or (self is ChargeSide.BUY) == (side is Side.BUY)


class Rounding(StrEnum):
    RUPEE = "rupee"
    PAISA = "paisa"

    @property
    def quantum(self) -> Decimal:
        """Return the smallest amount this rounding keeps: one rupee or one paisa."""
        return _QUANTA[self]

    def apply(self, amount: Decimal) -> Decimal:
        """Round `amount` half-up to this unit, written with paise so every component prints alike."""
        # Six times per executed order. Rounded to the paisa, the amount is already written with
        # paise (a second quantize to the same exponent would return it unchanged).
        if self is Rounding.PAISA:
            return amount.quantize(_PAISA, rounding=ROUND_HALF_UP)
        return amount.quantize(_RUPEE, rounding=ROUND_HALF_UP).quantize(_PAISA)


_QUANTA: Final = {Rounding.RUPEE: Decimal(1), Rounding.PAISA: Decimal("0.01")}


class ChargeScheduleError(ValueError):
    """The charges table is unreadable or invalid; the message names the file, entry and field."""


class NoRatesInForceError(LookupError):
    """No entry of the table covers the requested broker, segment, exchange and date."""


# --- the table ----------------------------------------------------------------------------------

NonNegative = Annotated[Decimal, Field(ge=0)]


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FlatBrokerage(_Rule):
    kind: Literal["flat"]
    amount: NonNegative
    rounding: Rounding


class PercentageBrokerage(_Rule):
    kind: Literal["percentage"]
    rate_pct: NonNegative
    cap: NonNegative | None = None
    rounding: Rounding


BrokerageRule = Annotated[FlatBrokerage | PercentageBrokerage, Field(discriminator="kind")]


class SidedRate(_Rule):
    rate_pct: NonNegative
    side: ChargeSide
    rounding: Rounding


class TurnoverRate(_Rule):
    rate_pct: NonNegative
    rounding: Rounding


class PerCroreFee(_Rule):
    per_crore: NonNegative
    rounding: Rounding


class ChargeRates(_Rule):
    """The rates one broker applies to one segment on one exchange from `effective_from` on."""

    broker: str = Field(min_length=1)
    segment: Segment
    exchange: Exchange
    effective_from: date
    source: str = Field(min_length=1, description="Where these rates were read, for the next reviewer.")
    brokerage: BrokerageRule
    stt: SidedRate
    exchange_txn: TurnoverRate
    sebi: PerCroreFee
    gst: TurnoverRate
    stamp_duty: SidedRate


_Key = tuple[str, Segment, Exchange]


@dataclass(frozen=True)
class ChargeSchedule:
    """Every dated rate entry; look one up with `rates_on`."""

    entries: tuple[ChargeRates, ...]
    _index: Mapping[_Key, tuple[ChargeRates, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[_Key, list[ChargeRates]] = {}
        for entry in self.entries:
            grouped.setdefault((entry.broker, entry.segment, entry.exchange), []).append(entry)
        index = {key: tuple(sorted(group, key=lambda e: e.effective_from)) for key, group in grouped.items()}
        object.__setattr__(self, "_index", index)

    def rates_on(
        self,
        trade_date: date,
        segment: Segment | str,
        exchange: Exchange | str,
        *,
        broker: str = DEFAULT_BROKER,
    ) -> ChargeRates:
        """Return the entry in force on `trade_date`: the latest one whose effective_from is not after it.

        `trade_date` may be a timezone-aware datetime, which is read as its date in IST. `exchange`
        accepts Kite's F&O exchange names too (NFO, BFO), since their charges are NSE's and BSE's.
        """
        day = _trade_date(trade_date)
        key = (broker, Segment(segment), charge_exchange(exchange))
        history = self._index.get(key, ())
        position = bisect_right([entry.effective_from for entry in history], day)
        if position == 0:
            first = f"; the earliest entry starts {history[0].effective_from}" if history else ""
            raise NoRatesInForceError(
                f"no {key[0]} charges for {key[1].value} on {key[2].value} in force on {day}{first}"
            )
        return history[position - 1]


def charge_exchange(exchange: Exchange | str) -> Exchange:
    """Map an exchange name as Kite spells it (NSE, BSE, NFO, BFO) to the exchange whose charges apply."""
    name = str(exchange).upper()
    aliases = {"NFO": Exchange.NSE, "BFO": Exchange.BSE}
    if name in aliases:
        return aliases[name]
    try:
        return Exchange(name)
    except ValueError:
        raise ValueError(
            f"no charges are defined for exchange {exchange!r}; expected NSE, BSE, NFO or BFO"
        ) from None


def segment_for(product: Product | str, instrument_type: str) -> Segment:
    """Return the charges segment of an order from its Kite product (CNC/MIS/NRML) and instrument type.

    Raise ValueError for a combination Kite would reject or that the table does not price (MTF).
    """
    prod = str(product).upper()
    kind = instrument_type.upper()
    if kind == "EQ":
        if prod == "CNC":
            return Segment.EQUITY_DELIVERY
        if prod == "MIS":
            return Segment.EQUITY_INTRADAY
    elif kind in ("FUT", "CE", "PE") and prod in ("NRML", "MIS"):
        return Segment.FUTURES if kind == "FUT" else Segment.OPTIONS
    raise ValueError(f"no charges segment for product {product!r} with instrument type {instrument_type!r}")


# --- loading ------------------------------------------------------------------------------------


class _DecimalLoader(yaml.SafeLoader):
    """A YAML loader that reads floats as exact Decimals, so 0.00307 stays 0.00307, and rejects
    a key repeated in one mapping (PyYAML otherwise keeps the last one, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "expected a number", node.start_mark)
    text = str(loader.construct_scalar(node))
    try:
        value = Decimal(text.replace("_", ""))
    except ArithmeticError:
        value = None
    if value is None or not value.is_finite():
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not a finite decimal number", node.start_mark
        )
    return value


def _construct_date(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "expected a date", node.start_mark)
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a valid date: {exc}", node.start_mark
        ) from None


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_DecimalLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_date)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line: where (line and column, counted from 1), then what."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: "
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context}, line {exc.context_mark.line + 1})"
        return f"{where}{exc.problem}{context}"
    return " ".join(str(exc).split())


def parse_charge_schedule(text: str, origin: str = "charges.yaml") -> ChargeSchedule:
    """Parse and validate the YAML text of a charges table.

    Raise ChargeScheduleError naming the first bad entry and each of its bad fields.
    """
    try:
        document = yaml.load(text, Loader=_DecimalLoader)
    except yaml.YAMLError as exc:
        raise ChargeScheduleError(f"{origin}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(document, dict):
        raise ChargeScheduleError(f"{origin}: expected a mapping with schema_version and entries")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ChargeScheduleError(
            f"{origin}: schema_version must be {SCHEMA_VERSION}, found {document.get('schema_version')!r}"
        )
    raw_entries = document.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise ChargeScheduleError(f"{origin}: 'entries' must be a non-empty list")
    if unknown := set(document) - {"schema_version", "entries"}:
        raise ChargeScheduleError(f"{origin}: unknown top-level keys {sorted(unknown)}")

    entries = [_validate_entry(raw, number, origin) for number, raw in enumerate(raw_entries, start=1)]
    _reject_duplicates(entries, origin)
    return ChargeSchedule(tuple(entries))


def load_charge_schedule(path: str | os.PathLike[str] | None = None) -> ChargeSchedule:
    """Load the charges table at `path`, or the one shipped with alphapanda when `path` is None."""
    if path is None:
        text = resources.files("alphapanda.data").joinpath("charges.yaml").read_text(encoding="utf-8")
        return parse_charge_schedule(text, "shipped charges.yaml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ChargeScheduleError(f"{path}: cannot read charges table: {exc.strerror}") from None
    return parse_charge_schedule(text, str(path))


def _validate_entry(raw: object, number: int, origin: str) -> ChargeRates:
    label = _entry_label(raw)
    if not isinstance(raw, dict):
        raise ChargeScheduleError(f"{origin}: entry {number}: expected a mapping, found {type(raw).__name__}")
    try:
        return ChargeRates.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(part) for part in error['loc'])}': {error['msg']}"
            for error in exc.errors()
        )
        raise ChargeScheduleError(f"{origin}: entry {number} ({label}): {problems}") from None


def _entry_label(raw: object) -> str:
    if not isinstance(raw, dict):
        return "?"
    parts = [str(raw.get(name, "?")) for name in ("broker", "segment", "exchange")]
    return f"{' '.join(parts)} from {raw.get('effective_from', '?')}"


def _reject_duplicates(entries: Sequence[ChargeRates], origin: str) -> None:
    seen: dict[tuple[str, Segment, Exchange, date], int] = {}
    for number, entry in enumerate(entries, start=1):
        key = (entry.broker, entry.segment, entry.exchange, entry.effective_from)
        if key in seen:
            raise ChargeScheduleError(
                f"{origin}: entry {number} ({entry.broker} {entry.segment.value} {entry.exchange.value} "
                f"from {entry.effective_from}) repeats entry {seen[key]}; keep one per date"
            )
        seen[key] = number


# --- computing ----------------------------------------------------------------------------------


class ChargeableFill(Protocol):
    """What `charges_for` reads from an executed order; `events.OrderFilled` has this shape."""

    @property
    def side(self) -> Side: ...

    @property
    def quantity(self) -> int: ...

    @property
    def price(self) -> Decimal: ...


@immutable(slots=True)
class ExecutedOrder:
    """An executed order as `charges_for` needs it: side, total filled quantity, average price.

    For options `price` is the premium per unit and `quantity` counts units, not lots.
    """

    side: Side
    quantity: int
    price: Decimal


@immutable(slots=True)
class ChargeBreakdown:
    """What one or more executed orders cost, by component, in rupees."""

    brokerage: Decimal
    stt: Decimal
    exchange_txn: Decimal
    sebi: Decimal
    gst: Decimal
    stamp_duty: Decimal
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        total = self.brokerage + self.stt + self.exchange_txn + self.sebi + self.gst + self.stamp_duty
        object.__setattr__(self, "total", total)

    def __add__(self, other: ChargeBreakdown) -> ChargeBreakdown:
        return ChargeBreakdown(
            brokerage=self.brokerage + other.brokerage,
            stt=self.stt + other.stt,
            exchange_txn=self.exchange_txn + other.exchange_txn,
            sebi=self.sebi + other.sebi,
            gst=self.gst + other.gst,
            stamp_duty=self.stamp_duty + other.stamp_duty,
        )

    @classmethod
    def zero(cls) -> ChargeBreakdown:
        """Return a breakdown of nothing, the start of a sum."""
        return cls(_ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO)

    @classmethod
    def sum(cls, breakdowns: Iterable[ChargeBreakdown]) -> ChargeBreakdown:
        """Return the component-wise sum of `breakdowns`."""
        total = cls.zero()
        for breakdown in breakdowns:
            total = total + breakdown
        return total

    def to_json(self) -> dict[str, str]:
        """The components (not the total, which follows from them) as exact decimal strings."""
        return {k: str(v) for k, v in self.as_dict().items() if k != "total"}

    @classmethod
    def from_json(cls, raw: dict[str, str]) -> ChargeBreakdown:
        return cls(**{k: Decimal(v) for k, v in raw.items()})

    def as_dict(self) -> dict[str, Any]:
        """Return the components and total keyed by name, for events and logs."""
        return {
            "brokerage": self.brokerage,
            "stt": self.stt,
            "exchange_txn": self.exchange_txn,
            "sebi": self.sebi,
            "gst": self.gst,
            "stamp_duty": self.stamp_duty,
            "total": self.total,
        }


def charges_for(fill: ChargeableFill, rates: ChargeRates) -> ChargeBreakdown:
    """Compute brokerage, STT, exchange charge, SEBI fee, GST and stamp duty on one executed order."""
    # Converted only when not a `Side` already (an enum call costs a Python-level lookup).
    side = fill.side if type(fill.side) is Side else Side(fill.side)
    if not isinstance(fill.price, Decimal):
        raise TypeError(f"price must be a Decimal, not {type(fill.price).__name__}: money is never a float")
    if fill.quantity <= 0:
        raise ValueError(f"quantity must be positive, got {fill.quantity}")
    if fill.price < 0:
        raise ValueError(f"price must not be negative, got {fill.price}")
    with localcontext(_EXACT):
        turnover = fill.price * fill.quantity
    return _charges_on(side is Side.BUY, turnover, _compiled(rates))


def charges_on_turnover(side: Side, quantity: int, turnover: Decimal, rates: ChargeRates) -> ChargeBreakdown:
    """Compute the charges of one executed order from its exact turnover, sum(price x quantity).

    For an order filled in parts at different prices: its average price (turnover / quantity)
    may be no finite decimal, and multiplied back it can fall a hair short of the turnover and
    round a component the other way at a half rupee or half paisa. `quantity` is the order's
    total filled quantity, checked only.
    """
    side = side if type(side) is Side else Side(side)
    if not isinstance(turnover, Decimal):
        raise TypeError(f"turnover must be a Decimal, not {type(turnover).__name__}: money is never a float")
    if quantity <= 0:
        raise ValueError(f"quantity must be positive, got {quantity}")
    if turnover < 0:
        raise ValueError(f"turnover must not be negative, got {turnover}")
    return _charges_on(side is Side.BUY, turnover, _compiled(rates))


def _charges_on(buy: bool, turnover: Decimal, c: _CompiledRates) -> ChargeBreakdown:
    with localcontext(_EXACT):
        if c.brokerage_flat is not None:
            brokerage = c.brokerage_flat
        else:
            amount = turnover * c.brokerage_rate
            if c.brokerage_cap is not None:
                amount = min(amount, c.brokerage_cap)
            brokerage = c.brokerage_round(amount)
        stt = c.stt_round(turnover * c.stt_rate) if (c.stt_buy if buy else c.stt_sell) else _ZERO_PAISE
        exchange_txn = c.exchange_round(turnover * c.exchange_rate)
        sebi = c.sebi_round(turnover * c.sebi_rate)
        gst = c.gst_round((brokerage + exchange_txn + sebi) * c.gst_rate)
        stamp_duty = (
            c.stamp_round(turnover * c.stamp_rate) if (c.stamp_buy if buy else c.stamp_sell) else _ZERO_PAISE
        )
    return ChargeBreakdown(
        brokerage=brokerage, stt=stt, exchange_txn=exchange_txn, sebi=sebi, gst=gst, stamp_duty=stamp_duty
    )


def _round_paisa(amount: Decimal) -> Decimal:
    return amount.quantize(_PAISA, rounding=ROUND_HALF_UP)


def _round_rupee(amount: Decimal) -> Decimal:
    return amount.quantize(_RUPEE, rounding=ROUND_HALF_UP).quantize(_PAISA)


_ROUND: Final = {Rounding.PAISA: _round_paisa, Rounding.RUPEE: _round_rupee}


class _CompiledRates(NamedTuple):
    """One `ChargeRates` as `charges_for` computes with it: each percentage already divided by
    100 (the SEBI fee by a crore) and each rounding a plain function. Every product stays exact
    in the 50-digit context, so `turnover * (rate / 100)` is the same amount as
    `turnover * rate / 100`, and rounds the same."""

    brokerage_flat: Decimal | None
    brokerage_rate: Decimal
    brokerage_cap: Decimal | None
    brokerage_round: Callable[[Decimal], Decimal]
    stt_rate: Decimal
    stt_buy: bool
    stt_sell: bool
    stt_round: Callable[[Decimal], Decimal]
    exchange_rate: Decimal
    exchange_round: Callable[[Decimal], Decimal]
    sebi_rate: Decimal
    sebi_round: Callable[[Decimal], Decimal]
    gst_rate: Decimal
    gst_round: Callable[[Decimal], Decimal]
    stamp_rate: Decimal
    stamp_buy: bool
    stamp_sell: bool
    stamp_round: Callable[[Decimal], Decimal]


_COMPILED: dict[int, tuple[ChargeRates, _CompiledRates]] = {}
"""id(rates) -> (rates, compiled): the rates object is kept so its id is never reused meanwhile."""


def _compiled(rates: ChargeRates) -> _CompiledRates:
    found = _COMPILED.get(id(rates))
    if found is not None and found[0] is rates:
        return found[1]
    if len(_COMPILED) > 10_000:
        _COMPILED.clear()
    b = rates.brokerage
    with localcontext(_EXACT):
        compiled = _CompiledRates(
            brokerage_flat=b.rounding.apply(b.amount) if isinstance(b, FlatBrokerage) else None,
            brokerage_rate=_ZERO if isinstance(b, FlatBrokerage) else b.rate_pct / _HUNDRED,
            brokerage_cap=None if isinstance(b, FlatBrokerage) else b.cap,
            brokerage_round=_ROUND[b.rounding],
            stt_rate=rates.stt.rate_pct / _HUNDRED,
            stt_buy=rates.stt.side.applies_to(Side.BUY),
            stt_sell=rates.stt.side.applies_to(Side.SELL),
            stt_round=_ROUND[rates.stt.rounding],
            exchange_rate=rates.exchange_txn.rate_pct / _HUNDRED,
            exchange_round=_ROUND[rates.exchange_txn.rounding],
            sebi_rate=rates.sebi.per_crore / _CRORE,
            sebi_round=_ROUND[rates.sebi.rounding],
            gst_rate=rates.gst.rate_pct / _HUNDRED,
            gst_round=_ROUND[rates.gst.rounding],
            stamp_rate=rates.stamp_duty.rate_pct / _HUNDRED,
            stamp_buy=rates.stamp_duty.side.applies_to(Side.BUY),
            stamp_sell=rates.stamp_duty.side.applies_to(Side.SELL),
            stamp_round=_ROUND[rates.stamp_duty.rounding],
        )
    _COMPILED[id(rates)] = (rates, compiled)
    return compiled


def _trade_date(value: date) -> date:
    # A datetime is also a date; read it as an instant rather than trusting its wall-clock date.
    return to_ist(value).date() if isinstance(value, datetime) else value


# --- the depository (DP) charge ---------------------------------------------------------------


def dp_charge(amount: Decimal, gst_pct: Decimal) -> Decimal:
    """The DP charge with its GST, to the paisa (half up): what one scrip's sale from delivery
    holdings costs on one day, whatever the quantity (Rs 13.5 + 18% GST is Rs 15.93).

    Not part of an order's charges: the depository levies it when shares leave the demat
    account, once per scrip per day, and it shows in the funds ledger, not the contract note.
    """
    return _round_paisa(amount * (1 + gst_pct / 100))


def sold_from_holdings(
    held_today: int | None, position_before: int, side: Side, quantity: int
) -> tuple[int, int]:
    """How much of one delivery (CNC) fill is sold from holdings, and the holdings left today.

    `held_today` is what remains today of the quantity the position carried into the day, or
    None before the position's first delivery fill of the day, when the position before this
    fill is exactly what it carried in. Shares bought today are not holdings yet (they settle
    later), so a buy draws on nothing, and a sell of shares bought today is not from holdings.
    """
    held = max(position_before, 0) if held_today is None else held_today
    if side is Side.BUY:
        return 0, held
    sold = min(quantity, held)
    return sold, held - sold
