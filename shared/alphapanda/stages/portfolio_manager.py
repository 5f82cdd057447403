"""Portfolio manager: fills update positions, cash and PnL per broker and strategy.

Besides each strategy's book it keeps two broker-wide records, in the same transaction:
the account (realised PnL, charges, margin held by open positions, funds available), which the
paper broker checks orders against, and today's PnL (realised, and unrealised per position as
last marked), which the risk manager checks the daily loss limit against.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from alphapanda.config import BrokerSettings
from alphapanda.domain.calendar import ist_date
from alphapanda.domain.charges import dp_charge, sold_from_holdings
from alphapanda.domain.portfolio import ZERO, Book, Position, keepable_sum, kept_total, sum_decimals
from alphapanda.events import Event, EventType, OrderFilled, PnlSnapshot, Product, source_of
from alphapanda.immutable import immutable
from alphapanda.stages import BrokerScoped
from alphapanda.state import keys
from alphapanda.state.store import Decision
from alphapanda.topics import Function


def position_margin(position: Position, settings: BrokerSettings) -> Decimal:
    """Funds an open position holds: MIS its value over the leverage, NRML a share, CNC all of it."""
    value = abs(position.net_quantity) * position.average_price
    if position.product == Product.MIS:
        return value / settings.fills.mis_leverage
    if position.product == Product.NRML:
        return value * settings.fills.nrml_margin_pct / 100
    return value


@immutable
class Account:
    starting_cash: Decimal
    realised: Decimal = ZERO
    charges: Decimal = ZERO
    margin: dict[str, str] = field(default_factory=dict)
    """`strategy:token` -> rupees held by that open position."""
    held: Decimal | None = field(default=None, compare=False)
    """The sum of `margin`, when known: kept up to date by `PortfolioManager.apply`, so an account
    held decoded across fills (the backtest) is not re-summed over every position per order. Only
    compared, never stored (the stored `available` is summed afresh, with a fresh sum's digits)."""

    @property
    def available(self) -> Decimal:
        held = self.held if self.held is not None else sum_decimals(self.margin.values())
        return self.starting_cash + self.realised - self.charges - held

    def to_json(self) -> str:
        return json.dumps(
            {
                "starting_cash": str(self.starting_cash),
                "realised": str(self.realised),
                "charges": str(self.charges),
                "margin": self.margin,
                "available": str(
                    self.starting_cash + self.realised - self.charges - sum_decimals(self.margin.values())
                ),
            },
            sort_keys=True,
        )

    def with_held(self) -> Account:
        """This account with `held` known if it can be kept (see `kept_total`): summed once, here."""
        if self.held is not None:
            return self
        return Account(
            self.starting_cash, self.realised, self.charges, self.margin, keepable_sum(self.margin.values())
        )

    @classmethod
    def from_json(cls, raw: str | None, starting_cash: Decimal) -> Account:
        if not raw:
            return cls(starting_cash)
        data = json.loads(raw)
        return cls(
            Decimal(data["starting_cash"]),
            Decimal(data["realised"]),
            Decimal(data["charges"]),
            data["margin"],
        )


@dataclass(frozen=True)
class PortfolioManager(BrokerScoped):
    settings_for: Callable[[str], BrokerSettings] = field(default=lambda _b: BrokerSettings())
    function: Function = Function.PORTFOLIO_MANAGER
    accepts: EventType = EventType.ORDER_FILLED

    def reads(self, event: Event) -> list[str]:
        fill = _fill(event)
        broker = self.owner(event)
        day = ist_date(fill.filled_at).isoformat()
        return [keys.book(broker, fill.strategy), keys.account(broker), keys.day_pnl(broker, day)]

    def decide(self, event: Event, values: dict[str, str | None]) -> Decision:
        fill = _fill(event)
        broker = self.owner(event)
        settings = self.settings_for(broker)
        book_key, account_key, day_key = self.reads(event)
        raw_book = values[book_key]
        update = self.apply(
            event,
            Book.from_json(json.loads(raw_book)) if raw_book else None,
            Account.from_json(values[account_key], settings.starting_cash),
            DayPnl.from_json(values[day_key]),
        )
        return Decision(
            outputs=update.outputs,
            writes={
                book_key: json.dumps(update.book.to_json()),
                account_key: update.account.to_json(),
                day_key: update.day.to_json(),
            },
            set_adds={keys.books_index(broker): fill.strategy},
        )

    def apply(self, event: Event, old_book: Book | None, account: Account, day: DayPnl) -> PortfolioUpdate:
        """The fill in `event` applied to the strategy's book, the account and today's PnL: pure.

        `decide` feeds it from stored values; the backtest from values it keeps decoded.
        """
        fill = _fill(event)
        broker = self.owner(event)
        settings = self.settings_for(broker)
        old_book = old_book if old_book is not None else Book(cash=ZERO)
        token = fill.instrument_token
        slot = f"{fill.strategy}:{token}"
        holdings, dp_sold = day.held, day.dp_sold
        dp = ZERO
        if fill.product is Product.CNC:
            sold, left = sold_from_holdings(
                holdings.get(slot), old_book.position(token).net_quantity, fill.side, fill.quantity
            )
            holdings = {**holdings, slot: left}
            if sold and token not in dp_sold:
                # Per scrip per day for the whole demat account: this broker's, across strategies.
                dp = dp_charge(settings.dp_charge, settings.dp_charge_gst_pct)
                dp_sold = tuple(sorted((*dp_sold, token)))
        charges = fill.charges + dp if dp else fill.charges
        book = old_book.with_fill(token, fill.side, fill.quantity, fill.price, charges, fill.product.value)
        pos = book.position(token)
        realised_delta = pos.realised_pnl - old_book.position(token).realised_pnl
        # Marked at the fill's own price, the freshest price of the instrument that this event
        # carries: a mark read from the latest quote would depend on how far the feed has run.
        # The periodic mark-to-market (runtime/marks.py) moves it with the market in between.
        mark = fill.price

        margin = dict(account.margin)
        old_margin = margin.get(slot)
        if pos.net_quantity:
            new_margin = position_margin(pos, settings)
            margin[slot] = str(new_margin)
        else:
            new_margin = ZERO
            margin.pop(slot, None)
        held = kept_total(account.held, Decimal(old_margin) if old_margin is not None else ZERO, new_margin)
        account = Account(
            account.starting_cash,
            account.realised + realised_delta,
            account.charges + charges,
            margin,
            held,
        )
        unrealised = pos.unrealised_pnl(mark)
        old_unrealised = day.unrealised.get(slot)
        day_total = kept_total(
            day.unrealised_total, Decimal(old_unrealised) if old_unrealised is not None else ZERO, unrealised
        )
        day = DayPnl(
            day.realised + realised_delta - charges,
            {**day.unrealised, slot: str(unrealised)},
            day_total,
            holdings,
            dp_sold,
        )

        snapshot = PnlSnapshot(
            instrument_token=fill.instrument_token,
            tradingsymbol=fill.tradingsymbol,
            exchange=fill.exchange,
            strategy=fill.strategy,
            net_quantity=pos.net_quantity,
            average_price=pos.average_price,
            last_price=mark,
            realised_pnl=pos.realised_pnl,
            unrealised_pnl=unrealised,
            cash=book.cash,
            charges_paid=book.charges_paid,
            trade_count=book.trade_count,
            dp_charges=dp,
            as_of=fill.filled_at,
        )
        source = source_of(self.function.value, broker)
        return PortfolioUpdate([event.child("pnl", snapshot, source=source)], book, account, day)


@immutable(slots=True)
class DayPnl:
    """Today's PnL record of a broker: realised (less charges), and unrealised per position slot;
    and what the DP charge needs to know of the day's delivery sales."""

    realised: Decimal = ZERO
    unrealised: dict[str, str] = field(default_factory=dict)
    """`strategy:token` -> rupees, as last marked."""
    unrealised_total: Decimal | None = field(default=None, compare=False)
    """The sum of `unrealised`, when known (see `Account.held`): only compared and formatted."""
    held: dict[str, int] = field(default_factory=dict)
    """`strategy:token` -> what is left unsold today of what the delivery position carried into the
    day (set from its first delivery fill of the day; see `sold_from_holdings`)."""
    dp_sold: tuple[int, ...] = ()
    """Instruments sold from holdings today, so charged the day's DP charge (sorted)."""

    @property
    def total(self) -> Decimal:
        if self.unrealised_total is not None:
            return self.realised + self.unrealised_total
        return self.realised + sum_decimals(self.unrealised.values())

    def with_total(self) -> DayPnl:
        """This record with `unrealised_total` known if it can be kept: summed once, here."""
        if self.unrealised_total is not None:
            return self
        return DayPnl(
            self.realised, self.unrealised, keepable_sum(self.unrealised.values()), self.held, self.dp_sold
        )

    def to_json(self) -> str:
        record: dict[str, Any] = {"realised": str(self.realised), "unrealised": self.unrealised}
        # Only on a day with delivery fills: every other day's record stays as it was.
        if self.held:
            record["held"] = self.held
        if self.dp_sold:
            record["dp_sold"] = list(self.dp_sold)
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> DayPnl:
        if not raw:
            return cls(Decimal("0"))
        record = json.loads(raw)
        return cls(
            Decimal(record.get("realised", "0")),
            dict(record.get("unrealised", {})),
            held={k: int(v) for k, v in record.get("held", {}).items()},
            dp_sold=tuple(int(t) for t in record.get("dp_sold", ())),
        )


@immutable(slots=True)
class PortfolioUpdate:
    outputs: list[Event]
    book: Book
    account: Account
    day: DayPnl


def _fill(event: Event) -> OrderFilled:
    assert isinstance(event.data, OrderFilled)
    return event.data
