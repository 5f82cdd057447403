"""The paper broker: orders matched against the live feed, with depth, slippage, latency, margin
and Indian charges.

`PaperTrader.place` turns a validated signal into what happened at once (submitted, then filled
in one or more parts, failed, or cancelled) and the order that keeps working, if any.
`PaperTrader.on_quote` advances a working order by one later quote of its instrument (the order
matcher calls it on every tick), and `PaperTrader.square_off` closes an intraday position. All
three are pure: the stages read and write Redis around them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

from alphapanda.brokers.base import OrderEvent, OrderIds, Quote, order_fields
from alphapanda.config import FillSettings
from alphapanda.domain.calendar import (
    CalendarCoverageError,
    TradingCalendar,
    ist_date,
    load_trading_calendar,
    to_ist,
)
from alphapanda.domain.charges import ChargeRates, ChargeSchedule, load_charge_schedule, segment_for
from alphapanda.domain.fills import OrderExecution, charge_lines, on_tick_grid, slipped_price
from alphapanda.domain.instruments import Instrument
from alphapanda.domain.margin import check_funds, required_margin
from alphapanda.domain.matching import Execution, Market, MatchOrder, MatchRules, Outcome, is_triggered, match
from alphapanda.events import (
    IST,
    OrderCancelled,
    OrderFailed,
    OrderFilled,
    OrderSubmitted,
    OrderType,
    Product,
    Side,
    Signal,
    Validity,
    derive_id,
)
from alphapanda.immutable import immutable

HALTED = "HALTED"
"""The kill-switch state (`keys.control`) in which a broker takes no new orders but closing ones."""

_ZERO = Decimal(0)
_PAISA = Decimal("0.01")

PaperPayload = OrderSubmitted | OrderFilled | OrderFailed | OrderCancelled


@immutable(slots=True)
class AccountView:
    """What the paper broker knows of the account when an order arrives."""

    available: Decimal
    """Funds free for new margin: the account's available funds minus what resting orders block."""
    halted: bool = False
    position: int = 0
    """The strategy's net position in the instrument: the part of an order that closes it needs no margin."""


@immutable
class PaperOrder:
    """A paper order that is still working, as the order matcher keeps it in Redis."""

    order_id: str
    signal_id: str
    correlationid: str
    strategy: str
    instrument_token: int
    tradingsymbol: str
    exchange: str
    quantity: int
    order_type: OrderType
    """As placed (a triggered SL works as a LIMIT in `working`, but stays an SL order)."""
    product: Product
    flatten: bool
    expires_at: datetime
    working: MatchOrder
    """What is left of the order and the conditions it trades on."""
    executed: OrderExecution = field(default_factory=OrderExecution)
    fills: int = 0
    """Fills so far: the index of the next fill, from which its id is derived."""
    blocked: Decimal = _ZERO
    """Margin blocked for the remaining quantity."""

    @property
    def side(self) -> Side:
        return self.working.side

    @property
    def validity(self) -> Validity:
        return self.working.validity

    @property
    def remaining(self) -> int:
        return self.working.remaining

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "signal_id": self.signal_id,
            "correlationid": self.correlationid,
            "strategy": self.strategy,
            "token": self.instrument_token,
            "symbol": self.tradingsymbol,
            "exchange": self.exchange,
            "quantity": self.quantity,
            "type": self.order_type.value,
            "product": self.product.value,
            "flatten": self.flatten,
            "expires_at": self.expires_at.isoformat(),
            "working": self.working.to_json(),
            "executed": self.executed.to_json(),
            "fills": self.fills,
            "blocked": str(self.blocked),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PaperOrder:
        return cls(
            order_id=raw["order_id"],
            signal_id=raw["signal_id"],
            correlationid=raw["correlationid"],
            strategy=raw["strategy"],
            instrument_token=int(raw["token"]),
            tradingsymbol=raw["symbol"],
            exchange=raw["exchange"],
            quantity=int(raw["quantity"]),
            order_type=OrderType(raw["type"]),
            product=Product(raw["product"]),
            flatten=bool(raw["flatten"]),
            expires_at=datetime.fromisoformat(raw["expires_at"]),
            working=MatchOrder.from_json(raw["working"]),
            executed=OrderExecution.from_json(raw["executed"]),
            fills=int(raw["fills"]),
            blocked=Decimal(raw["blocked"]),
        )


@immutable(slots=True)
class Emitted:
    """One order event and its role, from which the stage derives the event id."""

    role: str
    payload: PaperPayload


@immutable
class PaperStep:
    """What placing an order, or one quote, did to it."""

    emitted: list[Emitted]
    order: PaperOrder | None
    """The order if it keeps working; None once it is finished."""
    status: Literal["open", "filled", "failed", "cancelled"]
    unfilled: int = 0
    """Quantity that stopped working without filling (failed, cancelled, expired): the risk
    reservation to give back."""
    margin_change: Decimal = _ZERO
    """Change of the margin blocked by working orders (+ blocks, - frees)."""
    market: Market | None = None
    """The market after this order took its share of the depth, for the next order on the tick."""

    @property
    def done(self) -> bool:
        return self.order is None


def fill_role(n: int) -> str:
    """The role of an order's n-th fill event. The first keeps the plain name it always had."""
    return "filled" if n == 0 else f"filled/{n}"


def _blocked_for(required: Decimal, remaining: int, quantity: int) -> Decimal:
    """The share of an order's margin its unfilled remainder keeps blocked, rounded up."""
    return (required * remaining / quantity).quantize(_PAISA, rounding=ROUND_CEILING)


@dataclass(frozen=True)
class PaperTrader:
    instruments: Mapping[int, Instrument]
    fills: FillSettings = field(default_factory=FillSettings)
    starting_cash: Decimal = Decimal("1000000")
    charges: ChargeSchedule = field(default_factory=load_charge_schedule)
    calendar: TradingCalendar = field(default_factory=load_trading_calendar)
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Answers of `rates` and `session_end` by their inputs: both read immutable tables (the
    charge schedule, the calendar) and are asked the same question for every order of a day."""

    @property
    def slippage_bps(self) -> Decimal:
        return self.fills.slippage_bps

    @property
    def fill_quote(self) -> Literal["latest", "signal"]:
        return self.fills.fill_quote

    # --- the Trader protocol ------------------------------------------------------------------

    def execute(self, signal: Signal, ids: OrderIds, quote: Quote | None) -> list[OrderEvent]:
        """Place `signal` with no account state (starting cash free, not halted, flat).

        The trading engine calls `place`, which also reports cancellations and the working
        order; the `Trader` protocol has no room for those, so they are left out here.
        """
        step = self.place(
            signal,
            ids,
            self.market_for(signal, quote, None),
            AccountView(available=self.starting_cash),
            correlationid=ids.signal_id,
        )
        return [e.payload for e in step.emitted if not isinstance(e.payload, OrderCancelled)]

    # --- placing ------------------------------------------------------------------------------

    def market_for(self, signal: Signal, quote: Quote | None, view: Market | None) -> Market | None:
        """The quote a new order meets: the signal's own touch (fill_quote=signal), else the
        freshest of the latest quote and the matcher's last tick (which has depth)."""
        own = self.signal_market(signal)
        if own is not None:
            return own
        if view is not None and (quote is None or quote.at is None or view.at >= quote.at):
            return view
        if quote is None:
            return None
        # A quote stored without its exchange time is at least as new as the signal it caused.
        return Market(quote.bid, quote.ask, quote.last_price, quote.at or signal.tick_time)

    def signal_market(self, signal: Signal) -> Market | None:
        """The signal's own touch if that is what a new order meets (fill_quote=signal), else None.

        `market_for` ignores the quote and the last tick then; a caller that must decode those
        first (the backtest builds the last tick's `Market`) can skip that when this answers."""
        if self.fills.fill_quote == "signal" and signal.bid is not None and signal.ask is not None:
            return Market(signal.bid, signal.ask, signal.reference_price, signal.tick_time)
        return None

    def place(
        self,
        signal: Signal,
        ids: OrderIds,
        market: Market | None,
        account: AccountView,
        *,
        correlationid: str,
    ) -> PaperStep:
        """Submit `signal` as an order and match it against `market` at once, as far as it can."""
        # Event time, not the wall clock: a replayed day's orders, fills and charges belong to
        # that day, as its ticks and the risk manager's checks do.
        common = order_fields(signal, ids.order_id)
        submitted = OrderSubmitted(
            **common,
            signal_id=ids.signal_id,
            order_type=signal.order_type,
            product=signal.product,
            validity=signal.validity,
            price=signal.limit_price,
            trigger_price=signal.trigger_price,
            submitted_at=signal.tick_time,
        )
        reason, required = self._check(signal, market, account)
        if reason is not None:
            failed = OrderFailed(**common, signal_id=ids.signal_id, reason=reason)
            return PaperStep(
                [Emitted("submitted", submitted), Emitted("failed", failed)],
                None,
                "failed",
                unfilled=signal.quantity,
                market=market,
            )
        assert market is not None
        order = PaperOrder(
            order_id=ids.order_id,
            signal_id=ids.signal_id,
            correlationid=correlationid,
            strategy=signal.strategy,
            instrument_token=signal.instrument_token,
            tradingsymbol=signal.tradingsymbol,
            exchange=signal.exchange,
            quantity=signal.quantity,
            order_type=signal.order_type,
            product=signal.product,
            flatten=signal.flatten,
            expires_at=self.session_end(signal.tick_time),
            working=MatchOrder(
                side=signal.side,
                remaining=signal.quantity,
                order_type=signal.order_type,
                validity=signal.validity,
                arrives_at=signal.tick_time + timedelta(milliseconds=self.fills.latency_ms),
                limit_price=signal.limit_price,
                trigger_price=signal.trigger_price,
            ),
            blocked=required,
        )
        why = self._too_late(signal, order, market)
        if why is not None:
            cancelled = self._cancelled(order, order.quantity, 0, why, max(signal.tick_time, market.at))
            return PaperStep(
                [Emitted("submitted", submitted), Emitted("cancelled", cancelled)],
                None,
                "cancelled",
                unfilled=signal.quantity,
                market=market,
            )

        def fill_id(n: int) -> str:
            return ids.fill_id if n == 0 else derive_id(ids.fill_id, str(n))

        step = self._advance(order, market, fill_id)
        # The step with the submission first and the margin the order now blocks (a new order
        # blocked nothing before); spelled out rather than `dataclasses.replace`, which inspects
        # the fields on every call of this per-order path.
        return PaperStep(
            [Emitted("submitted", submitted), *step.emitted],
            step.order,
            step.status,
            unfilled=step.unfilled,
            margin_change=(step.order.blocked if step.order is not None else _ZERO),
            market=step.market,
        )

    def _too_late(self, signal: Signal, order: PaperOrder, market: Market) -> str | None:
        """Why a new order is cancelled at once, as `on_quote` would cancel it working, or None."""
        if signal.tick_time < order.expires_at <= market.at:
            # Signalled in the session, but the quote it meets is from after the close.
            return f"{order.validity.value} order expired"
        if (
            signal.product is Product.MIS
            and not signal.flatten
            and self.square_off_due(signal.tick_time)
            and self._in_session(signal.tick_time)
        ):
            # The day's square-off runs once (on the first tick after it), so an MIS order that
            # filled between it and the close would leave an intraday position open overnight.
            # (Outside the session only a run without the risk manager's session rule trades:
            # as before.)
            return "MIS order cancelled at the square-off time"
        return None

    def _in_session(self, at: datetime) -> bool:
        try:
            return self.calendar.is_open(at)
        except CalendarCoverageError:
            return False

    def _check(
        self, signal: Signal, market: Market | None, account: AccountView
    ) -> tuple[str | None, Decimal]:
        """Why the order cannot be placed (or None), and the margin it needs."""
        inst = self.instruments.get(signal.instrument_token)
        if inst is None:
            return f"unknown instrument {signal.instrument_token}", _ZERO
        if account.halted and not signal.flatten:
            return "broker halted", _ZERO
        price_problem = _price_problem(signal, inst.tick_size)
        if price_problem is not None:
            return price_problem, _ZERO
        try:
            self.rates(signal.product, inst, signal.tick_time)
        except (ValueError, LookupError) as exc:
            return str(exc), _ZERO
        if market is None:
            return f"no market data yet for {signal.tradingsymbol}", _ZERO
        trigger_problem = _trigger_problem(signal, market.last)
        if trigger_problem is not None:
            return trigger_problem, _ZERO
        required = required_margin(
            signal.product,
            signal.side,
            signal.quantity,
            _margin_price(signal, market),
            account.position,
            mis_leverage=self.fills.mis_leverage,
            nrml_margin_pct=self.fills.nrml_margin_pct,
        )
        return check_funds(account.available, required), required

    # --- working orders -----------------------------------------------------------------------

    def on_quote(
        self,
        order: PaperOrder,
        market: Market,
        *,
        fill_id: Callable[[int], str],
        halted: bool = False,
        square_off_due: bool = False,
    ) -> PaperStep:
        """Advance a working order by one later quote: expire, cancel, trigger or fill it."""
        if market.at >= order.expires_at:
            return self._cancel(order, market, f"{order.validity.value} order expired")
        if halted and not order.flatten:
            return self._cancel(order, market, "broker halted")
        if square_off_due and order.product is Product.MIS and not order.flatten:
            return self._cancel(order, market, "MIS order cancelled at the square-off time")
        return self._advance(order, market, fill_id)

    def _advance(self, order: PaperOrder, market: Market, fill_id: Callable[[int], str]) -> PaperStep:
        inst = self.instruments[order.instrument_token]
        rules = MatchRules(self.fills.slippage_bps, inst.tick_size, self.fills.walk_depth)
        result = match(order.working, market, rules)
        if not result.traded:
            return PaperStep([], order, "open", market=market)
        rates = self.rates(order.product, inst, market.at)
        emitted, executed = self._fill_events(order, result.executions, rates, fill_id, market.at)
        after = market.after_taking(order.side, result.taken)
        if result.outcome is Outcome.FILLED:
            return PaperStep(emitted, None, "filled", margin_change=-order.blocked, market=after)
        left = result.order.remaining
        if result.outcome is Outcome.CANCEL:
            cancelled = self._cancelled(
                order, left, executed.quantity, "IOC order: unfilled remainder cancelled", market.at
            )
            return PaperStep(
                [*emitted, Emitted("cancelled", cancelled)],
                None,
                "cancelled",
                unfilled=left,
                margin_change=-order.blocked,
                market=after,
            )
        blocked = _blocked_for(order.blocked, left, order.remaining)
        working = replace(
            order, working=result.order, executed=executed, fills=order.fills + len(emitted), blocked=blocked
        )
        return PaperStep(emitted, working, "open", margin_change=blocked - order.blocked, market=after)

    def _fill_events(
        self,
        order: PaperOrder,
        executions: tuple[Execution, ...],
        rates: ChargeRates,
        fill_id: Callable[[int], str],
        filled_at: datetime,
    ) -> tuple[list[Emitted], OrderExecution]:
        emitted: list[Emitted] = []
        executed = order.executed
        for i, execution in enumerate(executions):
            n = order.fills + i
            executed, charged = executed.after_fill(order.side, execution.quantity, execution.price, rates)
            fill = OrderFilled(
                instrument_token=order.instrument_token,
                tradingsymbol=order.tradingsymbol,
                exchange=order.exchange,
                order_id=order.order_id,
                fill_id=fill_id(n),
                strategy=order.strategy,
                side=order.side,
                quantity=execution.quantity,
                price=execution.price,
                product=order.product,
                order_quantity=order.quantity,
                remaining_quantity=order.quantity - executed.quantity,
                charges=charged.total,
                charge_lines=charge_lines(charged),
                signal_id=order.signal_id,
                flatten=order.flatten,
                filled_at=filled_at,
            )
            emitted.append(Emitted(fill_role(n), fill))
        return emitted, executed

    def _cancel(self, order: PaperOrder, market: Market, reason: str) -> PaperStep:
        cancelled = self._cancelled(order, order.remaining, order.executed.quantity, reason, market.at)
        return PaperStep(
            [Emitted("cancelled", cancelled)],
            None,
            "cancelled",
            unfilled=order.remaining,
            margin_change=-order.blocked,
            market=market,
        )

    @staticmethod
    def _cancelled(
        order: PaperOrder, quantity: int, filled: int, reason: str, at: datetime
    ) -> OrderCancelled:
        return OrderCancelled(
            instrument_token=order.instrument_token,
            tradingsymbol=order.tradingsymbol,
            exchange=order.exchange,
            order_id=order.order_id,
            signal_id=order.signal_id,
            strategy=order.strategy,
            side=order.side,
            quantity=quantity,
            filled_quantity=filled,
            reason=reason,
            cancelled_at=at,
        )

    # --- intraday square-off ------------------------------------------------------------------

    def square_off(
        self,
        strategy: str,
        position: int,
        market: Market,
        *,
        instrument_token: int,
        order_id: str,
        signal_id: str,
        fill_id: str,
    ) -> list[Emitted]:
        """Close `position` at the touch (plus slippage) as an MIS market order marked `flatten`.

        It takes the whole quantity at the touch rather than walking the depth: the broker's
        square-off must leave the position flat, whatever the book shows.
        """
        inst = self.instruments[instrument_token]
        side = Side.SELL if position > 0 else Side.BUY
        quantity = abs(position)
        price = slipped_price(side, market.touch(side), self.fills.slippage_bps, inst.tick_size)
        common: dict[str, Any] = {
            "instrument_token": instrument_token,
            "tradingsymbol": inst.tradingsymbol,
            "exchange": inst.exchange,
            "order_id": order_id,
            "strategy": strategy,
            "side": side,
            "quantity": quantity,
        }
        submitted = OrderSubmitted(
            **common,
            signal_id=signal_id,
            order_type=OrderType.MARKET,
            product=Product.MIS,
            validity=Validity.DAY,
            submitted_at=market.at,
        )
        _, charged = OrderExecution().after_fill(
            side, quantity, price, self.rates(Product.MIS, inst, market.at)
        )
        filled = OrderFilled(
            **common,
            fill_id=fill_id,
            price=price,
            product=Product.MIS,
            order_quantity=quantity,
            remaining_quantity=0,
            charges=charged.total,
            charge_lines=charge_lines(charged),
            signal_id=signal_id,
            flatten=True,
            filled_at=market.at,
        )
        return [Emitted("submitted", submitted), Emitted("filled", filled)]

    def square_off_due(self, at: datetime) -> bool:
        """Whether intraday positions are closed at instant `at` (the IST wall clock, by event time)."""
        moment = to_ist(at)
        return moment >= self.square_off_instant(moment.date())

    def square_off_instant(self, day: date, zone: datetime | None = None) -> datetime:
        """The instant the square-off is due on IST date `day`: `square_off_due(at)` holds for an
        instant `at` of that day exactly when `at >= square_off_instant(day)`. In `zone`'s time
        zone when given (comparing datetimes of one zone is cheaper).

        The configured time; on a special session that closes at another time (Muhurat trading),
        the same lead before that session's close, as `TradingCalendar.square_off_time` keeps it.
        """
        key = ("square_off", day)
        instant: datetime | None = self._memo.get(key)
        if instant is None:
            instant = self._memo[key] = self._square_off_instant(day)
        return instant if zone is None else instant.astimezone(zone.tzinfo)

    def _square_off_instant(self, day: date) -> datetime:
        configured = datetime.combine(day, self.fills.square_off_time, IST)
        try:
            bounds = self.calendar.session_bounds(day)
        except (CalendarCoverageError, ValueError):
            return configured  # no session that day, or a year the holiday list does not cover
        normal_close = datetime.combine(day, self.calendar.hours.close, IST)
        if bounds.close == normal_close:
            return configured
        return max(bounds.close - (normal_close - configured), bounds.open)

    # --- reference data -----------------------------------------------------------------------

    def rates(self, product: Product, inst: Instrument, at: datetime) -> ChargeRates:
        """The charges in force for `product` on `inst` on the trading day of `at`."""
        key = ("rates", product, inst.instrument_type, inst.exchange, ist_date(at))
        found: ChargeRates | None = self._memo.get(key)
        if found is None:
            segment = segment_for(product.value, inst.instrument_type)
            found = self.charges.rates_on(at, segment, inst.exchange, broker=self.fills.charges_broker)
            self._memo[key] = found
        return found

    def session_end(self, at: datetime) -> datetime:
        """When a DAY order placed at `at` expires: the close of that day's session.

        On a day without a session (a simulation run at the weekend) it lives until midnight;
        in a year the holiday list does not cover, the normal close is assumed.
        """
        day = ist_date(at)
        key = ("session_end", day)
        found: datetime | None = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._session_end(day)
        return found

    def _session_end(self, day: date) -> datetime:
        try:
            return self.calendar.session_bounds(day).close
        except CalendarCoverageError:
            return datetime.combine(day, self.calendar.hours.close, IST)
        except ValueError:
            return datetime.combine(day + timedelta(days=1), time(0), IST)


def _price_problem(signal: Signal, tick_size: Decimal) -> str | None:
    """Why the order's prices are unacceptable to an exchange, or None."""
    kind = signal.order_type
    needs_limit = kind in (OrderType.LIMIT, OrderType.SL)
    needs_trigger = kind in (OrderType.SL, OrderType.SL_M)
    for name, price, needed in (
        ("limit", signal.limit_price, needs_limit),
        ("trigger", signal.trigger_price, needs_trigger),
    ):
        if not needed:
            continue
        if price is None or price <= 0:
            return f"a {kind.value} order needs a positive {name} price"
        if not on_tick_grid(price, tick_size):
            return f"{name} price {price} is not a multiple of the tick size {tick_size}"
    if kind is OrderType.SL:
        assert signal.limit_price is not None and signal.trigger_price is not None
        if signal.side is Side.BUY and signal.limit_price < signal.trigger_price:
            return "a buy SL order's limit price must be at or above its trigger price"
        if signal.side is Side.SELL and signal.limit_price > signal.trigger_price:
            return "a sell SL order's limit price must be at or below its trigger price"
    return None


def _trigger_problem(signal: Signal, last: Decimal) -> str | None:
    """Why Kite's RMS would refuse a stop the market has already passed, or None.

    Zerodha rejects a stop-loss buy whose trigger is not above the last traded price (a sell:
    not below) rather than triggering it at once, with these messages; the local Kite sandbox
    answers the same, so a strategy meets the same refusal on paper as live.
    """
    if signal.order_type not in (OrderType.SL, OrderType.SL_M) or signal.trigger_price is None:
        return None
    if not is_triggered(signal.side, signal.trigger_price, last):
        return None
    side, relation = ("buy", "higher") if signal.side is Side.BUY else ("sell", "lower")
    return (
        f"Trigger price for stoploss {side} orders should be {relation} than the last traded price"
        f" (last traded {last}, trigger {signal.trigger_price})."
    )


def _margin_price(signal: Signal, market: Market) -> Decimal:
    """The price margin is blocked at: the limit, the trigger of an SL-M, else the touch."""
    if signal.order_type in (OrderType.LIMIT, OrderType.SL) and signal.limit_price is not None:
        return signal.limit_price
    if signal.order_type is OrderType.SL_M and signal.trigger_price is not None:
        return signal.trigger_price
    return market.touch(signal.side)


def load_resting(raw: str | None) -> list[PaperOrder]:
    """The working orders stored under `keys.resting_orders`, oldest first."""
    return [PaperOrder.from_json(item) for item in json.loads(raw)] if raw else []


def dump_resting(orders: list[PaperOrder]) -> str:
    return json.dumps([o.to_json() for o in orders])
