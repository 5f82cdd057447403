"""The strategies file: which strategies run, on which instruments, for which brokers."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alphapanda.config import RiskLimits
from alphapanda.domain.charges import segment_for
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.strategy import STRATEGY_KINDS, Strategy, StrategyConfigError, build_strategy
from alphapanda.events import Product
from alphapanda.topics import validate_broker_name


class StrategyRisk(BaseModel):
    """A strategy's own risk settings: its capital allocation, and limits tighter than its broker's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capital_allocation: Decimal | None = Field(default=None, gt=0, description="Rupees of exposure at most.")
    max_order_value: Decimal | None = Field(default=None, gt=0)
    max_position_quantity: int | None = Field(default=None, gt=0)
    max_position_value: Decimal | None = Field(default=None, gt=0)
    max_trades_per_day: int | None = Field(default=None, gt=0)

    def apply_to(self, limits: RiskLimits) -> RiskLimits:
        """The broker's limits with this strategy's overrides on top; an override only tightens.

        Every overridable limit is a ceiling, so a strategy file can never lift its broker's.
        """
        overrides = {
            name: value
            for name, value in self.model_dump(exclude_none=True, exclude={"capital_allocation"}).items()
            if value < getattr(limits, name)
        }
        return limits.model_copy(update=overrides) if overrides else limits


class StrategyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="Lowercase letters, digits, underscores.")
    kind: str = Field(
        min_length=1,
        description="A built-in strategy (ema_crossover) or `module:Class`, a strategy class of "
        "your own that Python can import.",
    )
    instruments: list[str] | Literal["all"]
    brokers: list[str] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    product: Product = Field(
        default=Product.MIS,
        description="The Kite product of its orders: MIS (intraday, squared off), CNC (delivery), "
        "NRML (F&O carried overnight).",
    )
    risk: StrategyRisk = Field(default_factory=StrategyRisk)


class StrategiesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategies: list[StrategyEntry] = Field(min_length=1)


@dataclass(frozen=True)
class StrategySpec:
    name: str
    strategy: Strategy
    tokens: frozenset[int]
    brokers: tuple[str, ...]
    risk: StrategyRisk = field(default_factory=StrategyRisk)
    product: Product = Product.MIS
    """The product of every order the strategy sends."""
    builtin: bool = True
    """One of `STRATEGY_KINDS`, whose state is known to be plain JSON; a strategy class of the
    user's own (`module:Class`) is not, so the backtest keeps its state as the pipeline does."""


_SEE_SHIPPED = "(see the shipped alphapanda/data/strategies.yaml)"


def strategies_document(text: str, origin: str) -> dict[str, Any]:
    """The YAML document of a strategies file, or `StrategyConfigError` with one line saying why it
    is none: not YAML (where), or not a mapping with a `strategies:` list at the top."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StrategyConfigError(f"{origin}{where}: not valid YAML: {problem} {_SEE_SHIPPED}") from None
    if not isinstance(doc, dict) or "strategies" not in doc:
        found = "nothing" if doc is None else f"a {type(doc).__name__}"
        if isinstance(doc, dict):
            found = "keys " + ", ".join(map(str, doc)) if doc else "an empty mapping"
        raise StrategyConfigError(
            f"{origin}: found {found}, not a `strategies:` list at the top {_SEE_SHIPPED}"
        )
    return doc


def read_strategies_text(path: Path) -> str:
    """The text of strategies file `path`; `StrategyConfigError` if it is not UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StrategyConfigError(f"{path}: not a text file: give a strategies YAML file") from None


def describe_entry_error(exc: ValidationError, raw: dict[str, Any]) -> str:
    """The first error of a strategies document, located as its author wrote it: `strategy
    'ema_fast' (entry 2): brokers is missing` rather than the env-style `strategies__1__brokers`."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    where = ""
    if len(loc) >= 2 and loc[0] == "strategies" and loc[1].isdigit():
        index = int(loc[1])
        entry = raw["strategies"][index] if isinstance(raw.get("strategies"), list) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        named = isinstance(name, str) and loc[2:3] != ["name"]
        where = f"strategy {name!r} (entry {index + 1})" if named else f"entry {index + 1}"
        loc = loc[2:]
    subject = ": ".join(part for part in (where, ".".join(loc)) if part)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "missing":
        return f"{subject} is missing{more}"
    if err["type"] == "extra_forbidden":
        model = StrategyRisk if loc[:1] == ["risk"] else StrategyEntry if where else StrategiesFile
        return f"{subject} is not a setting (known: {', '.join(model.model_fields)}){more}"
    given = err.get("input")
    # The values as written, since an allowed value's case matters (products are MIS, CNC, NRML).
    shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{subject} is invalid: {msg[:1].lower()}{msg[1:]}{shown}{more}"


def parse_strategies(text: str, instruments: Sequence[Instrument], origin: str) -> list[StrategySpec]:
    """Validate a strategies YAML document against the instrument list; errors name the entry."""
    raw = strategies_document(text, origin)
    try:
        doc = StrategiesFile.model_validate(raw)
    except ValidationError as exc:
        raise StrategyConfigError(f"{origin}: {describe_entry_error(exc, raw)}") from None
    by_symbol = {i.tradingsymbol: i.instrument_token for i in instruments}
    by_token = {i.instrument_token: i for i in instruments}
    specs: list[StrategySpec] = []
    seen: set[str] = set()
    for entry in doc.strategies:
        where = f"{origin}: strategy {entry.name!r}"
        if entry.name in seen:
            raise StrategyConfigError(f"{where} is defined twice")
        seen.add(entry.name)
        if entry.instruments == "all":
            tokens = frozenset(by_symbol.values())
        else:
            unknown = [s for s in entry.instruments if s not in by_symbol]
            if unknown:
                raise StrategyConfigError(f"{where}: unknown instruments {', '.join(unknown)}")
            tokens = frozenset(by_symbol[s] for s in entry.instruments)
        try:
            for b in entry.brokers:
                validate_broker_name(b)
            strategy = (
                build_strategy(entry.kind, entry.params)
                if entry.kind in STRATEGY_KINDS or ":" not in entry.kind
                else build_user_strategy(entry.kind, entry.params)
            )
        except (StrategyConfigError, ValueError) as exc:
            raise StrategyConfigError(f"{where}: {exc}") from None
        problem = _product_problem(entry.product, strategy, [by_token[t] for t in sorted(tokens)])
        if problem:
            raise StrategyConfigError(f"{where}: {problem}")
        specs.append(
            StrategySpec(
                entry.name,
                strategy,
                tokens,
                tuple(entry.brokers),
                entry.risk,
                entry.product,
                builtin=entry.kind in STRATEGY_KINDS,
            )
        )
    return specs


def build_user_strategy(kind: str, params: Mapping[str, Any]) -> Strategy:
    """Import `module:Class` and build it with `params`; `StrategyConfigError` says what is wrong.

    The class needs `on_tick(state, tick) -> (state, intents)` (see `domain.strategy.Strategy`);
    `sells_short` is optional (without it the strategy is taken to sell short). Imported here,
    not in the domain: importing runs the user's module, which is I/O the pure core keeps out.
    """
    module_name, _, class_name = kind.partition(":")
    if not module_name or not class_name or not all(p.isidentifier() for p in module_name.split(".")):
        raise StrategyConfigError(
            f"kind {kind!r} is neither a built-in ({', '.join(STRATEGY_KINDS)}) nor `module:Class`"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise StrategyConfigError(
            f"cannot import module {module_name!r} of kind {kind!r} ({exc}): install it, or add "
            "its directory to PYTHONPATH"
        ) from None
    except Exception as exc:  # the user's module failed while it was imported
        raise StrategyConfigError(
            f"importing module {module_name!r} of kind {kind!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    cls = getattr(module, class_name, None)
    if not callable(cls):
        raise StrategyConfigError(f"module {module_name!r} has no class {class_name!r}")
    try:
        strategy = cls(**params)
    except StrategyConfigError:
        raise
    except Exception as exc:  # wrong params, or the class's own checks refused them
        raise StrategyConfigError(f"{kind} params are wrong: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(strategy, "on_tick", None)):
        raise StrategyConfigError(f"{kind} has no on_tick(state, tick) method")
    if not hasattr(strategy, "sells_short"):
        strategy = _SellsShort(strategy)
    return strategy  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _SellsShort:
    """A user's strategy without `sells_short`, taken to sell short (refused as CNC unless it
    says otherwise): the safe answer, since a delivery short sale is what must never be sent."""

    inner: Any
    sells_short: bool = True

    def on_tick(self, state: Any, tick: Any) -> Any:
        return self.inner.on_tick(state, tick)


def _products_for(instrument_type: str) -> list[Product]:
    """The products an instrument of `instrument_type` trades as: those the charges engine
    prices for it (`segment_for`, Kite's product/instrument rules), MIS first."""
    allowed = []
    for product in Product:
        try:
            segment_for(product, instrument_type)
        except ValueError:
            continue
        allowed.append(product)
    return sorted(allowed, key=lambda p: p is not Product.MIS)


def _product_problem(product: Product, strategy: Strategy, instruments: Sequence[Instrument]) -> str | None:
    """What is wrong with trading `instruments` as `product` with `strategy`, or None.

    Checked when the file is read, so that a strategy that can never trade as configured is
    refused with a reason instead of having every signal rejected by Kite or the risk manager.
    """
    for inst in instruments:
        allowed = _products_for(inst.instrument_type)
        if product not in allowed:
            kind = "an equity" if inst.asset_class == "equity" else "a futures or options contract"
            return (
                f"product {product.value} cannot trade {inst.tradingsymbol} ({kind}): "
                f"use {' or '.join(p.value for p in allowed)}"
            )
    if product is Product.CNC and strategy.sells_short:
        return (
            "a CNC (delivery) strategy cannot sell short (Indian equities cannot be sold short for "
            "delivery): set params.long_only: true, or use product MIS"
        )
    return None


def load_strategies(path: Path | None, instruments: Sequence[Instrument]) -> list[StrategySpec]:
    """Load the given strategies YAML, or the shipped example."""
    if path is None:
        text = resources.files("alphapanda.data").joinpath("strategies.yaml").read_text()
        return parse_strategies(text, instruments, "shipped strategies.yaml")
    return parse_strategies(read_strategies_text(path), instruments, str(path))
