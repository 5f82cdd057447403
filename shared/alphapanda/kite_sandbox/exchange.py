"""The sandbox's order management: order lifecycle, matching against the market, trades and portfolio.

All state sits behind one re-entrant lock because it is touched from the server's event loop
(HTTP handlers, market clock) and from test threads (control API). Status changes past the first
happen later, through a scheduler, as they do at Kite: `place_order` returns while the order is
still `PUT ORDER REQ RECEIVED`.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from ._common import Clock, input_error
from .config import SandboxConfig
from .instruments import Instrument
from .market import Market, snap_to_tick
from .orders import (
    AMO_REQ_RECEIVED,
    CANCEL_PENDING,
    CANCELLED,
    COMPLETE,
    FINAL_STATUSES,
    LIVE_STATUSES,
    MODIFY_PENDING,
    MODIFY_VALIDATION_PENDING,
    OPEN,
    OPEN_PENDING,
    PUT_ORDER_REQ_RECEIVED,
    REJECTED,
    TRANSIENT_STATUSES,
    TRIGGER_PENDING,
    TRIGGERED_ORDER_TYPES,
    UPDATE,
    VALIDATION_PENDING,
    Order,
    parse_order_changes,
    parse_order_request,
)
from .packets import encode_frame, encode_packet
from .portfolio import Holding, Portfolio, Trade

log = logging.getLogger(__name__)

Scheduler = Callable[[float, Callable[[], None]], None]
Remainder = Literal["rest", "cancel", "fill"]


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One status change. `status` is what a postback carries (UPDATE for modifications and
    partial fills); `order` is the order snapshot at that moment."""

    status: str
    order: dict[str, Any]
    transient: bool


def thread_scheduler(delay: float, callback: Callable[[], None]) -> None:
    timer = threading.Timer(delay, callback)
    timer.daemon = True
    timer.start()


class Exchange:
    def __init__(
        self,
        instruments: Iterable[Instrument],
        *,
        config: SandboxConfig,
        seed: int,
        clock: Clock,
        holdings: Iterable[Holding] = (),
        scheduler: Scheduler = thread_scheduler,
    ) -> None:
        self.lock = threading.RLock()
        self.config = config
        self._clock = clock
        items = list(instruments)
        self._by_key = {item.key: item for item in items}
        self._by_token = {item.instrument_token: item for item in items}
        if len(self._by_key) != len(items) or len(self._by_token) != len(items):
            raise ValueError("instrument keys and tokens must be unique")
        self.market = Market(
            items, seed=seed, clock=clock, volatility=config.volatility, random_walk=config.random_walk
        )
        self.portfolio = Portfolio(holdings, config.opening_cash, config.margin_rates)
        self._scheduler = scheduler
        self._orders: dict[str, Order] = {}
        self._trades: list[Trade] = []
        self._order_listeners: list[Callable[[OrderEvent], None]] = []
        self._tick_listeners: list[Callable[[list[int]], None]] = []
        self._order_seq = itertools.count(1)
        self._exchange_seq = itertools.count(1)
        self._trade_seq = itertools.count(1)
        self._reject_next: deque[str] = deque()
        self._partial_next: deque[tuple[int, Remainder]] = deque()

    def set_scheduler(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def add_order_listener(self, listener: Callable[[OrderEvent], None]) -> None:
        self._order_listeners.append(listener)

    def add_tick_listener(self, listener: Callable[[list[int]], None]) -> None:
        self._tick_listeners.append(listener)

    @property
    def instruments(self) -> list[Instrument]:
        return list(self._by_token.values())

    def resolve(self, ref: str | int) -> Instrument:
        """An instrument by `EXCHANGE:SYMBOL` or by instrument token."""
        found = self.lookup(ref)
        if found is None:
            raise KeyError(f"unknown instrument {ref!r}")
        return found

    def lookup(self, ref: str | int) -> Instrument | None:
        if isinstance(ref, int):
            return self._by_token.get(ref)
        if ref.isdigit():
            return self._by_token.get(int(ref))
        return self._by_key.get(ref)

    def reject_next_order(self, message: str) -> None:
        with self.lock:
            self._reject_next.append(message)

    def partial_fill_next(self, quantity: int, remainder: Remainder) -> None:
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        with self.lock:
            self._partial_next.append((quantity, remainder))

    def place(self, variety: str, params: Mapping[str, str]) -> str:
        with self.lock:
            request = parse_order_request(
                variety, params, self._by_key, tag_max_length=self.config.tag_max_length
            )
            now = self._clock()
            order = Order(
                order_id=f"{now:%y%m%d}{1_000_000_000_000 + next(self._order_seq):013d}",
                variety=request.variety,
                instrument=request.instrument,
                transaction_type=request.transaction_type,
                order_type=request.order_type,
                product=request.product,
                validity=request.validity,
                validity_ttl=request.validity_ttl,
                quantity=request.quantity,
                disclosed_quantity=request.disclosed_quantity,
                price=request.price,
                trigger_price=request.trigger_price,
                market_protection=request.market_protection,
                tag=request.tag,
                algo_id=request.algo_id,
                guid=f"SBX{len(self._orders) + 1:012d}",
                placed_at=now,
                updated_at=now,
            )
            if self._reject_next:
                order.forced_rejection = self._reject_next.popleft()
            if self._partial_next:
                quantity, remainder = self._partial_next.popleft()
                order.first_fill_cap = quantity
                order.hold_remainder = remainder == "rest"
                order.cancel_remainder = remainder == "cancel"
            self._orders[order.order_id] = order
            self._transition(order, PUT_ORDER_REQ_RECEIVED)
            self._later(order.order_id, self._validate)
            return order.order_id

    def modify(self, variety: str, order_id: str, params: Mapping[str, str]) -> str:
        with self.lock:
            order = self._get(order_id, variety)
            self._require_live(order, "modified")
            if order.modifications >= self.config.max_modifications:
                raise input_error("Maximum allowed order modifications exceeded.")
            changes = parse_order_changes(order, params)
            prior = order.status
            order.order_type = changes.order_type
            order.quantity = changes.quantity
            order.disclosed_quantity = changes.disclosed_quantity
            order.price = changes.price
            order.trigger_price = changes.trigger_price
            order.validity = changes.validity
            order.market_protection = changes.market_protection
            order.modifications += 1
            order.modified = True
            order.rested = False
            self._transition(order, MODIFY_VALIDATION_PENDING)
            self._later(order_id, lambda o: self._finish_modify(o, prior))
            return order_id

    def cancel(self, variety: str, order_id: str) -> str:
        with self.lock:
            order = self._get(order_id, variety)
            self._require_live(order, "cancelled")
            self._transition(order, CANCEL_PENDING)
            self._later(order_id, self._finish_cancel)
            return order_id

    def fill(self, order_id: str, quantity: int | None = None, price: Decimal | None = None) -> None:
        """Force an execution of a resting order (control API), ignoring limit and trigger."""
        with self.lock:
            order = self._get(order_id, None)
            if order.status == TRIGGER_PENDING:
                order.triggered = True
                self._transition(order, OPEN)
            if order.status != OPEN:
                raise ValueError(f"order {order_id} is {order.status}, not OPEN")
            qty = order.pending_quantity if quantity is None else quantity
            if not 0 < qty <= order.pending_quantity:
                raise ValueError(f"cannot fill {qty} of {order.pending_quantity} pending")
            fill_price = self.market.ltp(order.instrument.instrument_token) if price is None else price
            self._execute(order, qty, snap_to_tick(fill_price, order.instrument.price_step))

    def orders(self, tag: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            user = self.config.user_id
            return [o.snapshot(user) for o in self._orders.values() if tag is None or o.tag == tag]

    def order_history(self, order_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in self._get(order_id, None).history]

    def order(self, order_id: str) -> dict[str, Any]:
        with self.lock:
            return self._get(order_id, None).snapshot(self.config.user_id)

    def trades(self, order_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            if order_id is not None:
                self._get(order_id, None)
            return [t.render() for t in self._trades if order_id is None or t.order_id == order_id]

    def positions(self) -> dict[str, list[dict[str, Any]]]:
        with self.lock:
            return self.portfolio.positions(self._prices)

    def holdings(self) -> list[dict[str, Any]]:
        with self.lock:
            return self.portfolio.holdings(self._prices)

    def margins(self, segment: str | None = None) -> dict[str, Any]:
        with self.lock:
            both = self.portfolio.margins(self._prices, self._order_margin(None))
        if segment is None:
            return both
        if segment not in both:
            raise input_error("Invalid segment.")
        result: dict[str, Any] = both[segment]
        return result

    def quote(self, refs: Iterable[str], kind: Literal["full", "ohlc", "ltp"]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with self.lock:
            for ref in refs:
                item = self.lookup(ref)
                if item is None:
                    # Kite leaves unknown instruments out of the answer rather than failing the call.
                    continue
                out[ref] = self._render_quote(item, kind)
        return out

    def tick_frame(self, modes: Mapping[int, str]) -> bytes | None:
        """A ticker frame with one packet per (token, mode); None when nothing matches."""
        with self.lock:
            packets = [
                encode_packet(self.market.state(token), mode)
                for token, mode in modes.items()
                if token in self._by_token
            ]
        return encode_frame(packets) if packets else None

    def price(self, ref: str | int) -> Decimal:
        with self.lock:
            return self.market.ltp(self.resolve(ref).instrument_token)

    def step_market(self) -> list[int]:
        with self.lock:
            moved = self.market.step()
            self._on_prices(moved)
        return moved

    def set_price(self, ref: str | int, price: Decimal, *, hold: bool) -> None:
        with self.lock:
            token = self.resolve(ref).instrument_token
            self.market.set_price(token, price, hold=hold)
            self._on_prices([token])

    def release_price(self, ref: str | int) -> None:
        with self.lock:
            self.market.release(self.resolve(ref).instrument_token)

    def _prices(self, item: Instrument) -> tuple[Decimal, Decimal]:
        state = self.market.state(item.instrument_token)
        return state.ltp, state.close

    def _get(self, order_id: str, variety: str | None) -> Order:
        order = self._orders.get(order_id)
        if order is None:
            raise input_error("Couldn't find that `order_id`.")
        if variety is not None and variety != order.variety:
            raise input_error("Invalid `variety` for this order.")
        return order

    def _require_live(self, order: Order, verb: str) -> None:
        if order.status in FINAL_STATUSES:
            raise input_error(f"Order cannot be {verb} as it is {order.status.lower()}.")
        if order.status not in LIVE_STATUSES:
            raise input_error(f"Order cannot be {verb} as it is being processed. Try later.")

    def _later(self, order_id: str, stage: Callable[[Order], None], delay: float | None = None) -> None:
        def run() -> None:
            try:
                with self.lock:
                    stage(self._orders[order_id])
            except Exception:
                log.exception("sandbox order stage failed for %s", order_id)

        self._scheduler(self.config.order_latency if delay is None else delay, run)

    def _transition(self, order: Order, status: str, event_status: str | None = None) -> None:
        order.status = status
        order.updated_at = self._clock()
        snapshot = order.snapshot(self.config.user_id)
        order.history.append(snapshot)
        event = OrderEvent(event_status or status, dict(snapshot), status in TRANSIENT_STATUSES)
        for listener in self._order_listeners:
            listener(event)

    def _validate(self, order: Order) -> None:
        if order.status != PUT_ORDER_REQ_RECEIVED:
            return
        self._transition(order, VALIDATION_PENDING)
        rejection = self._rms_rejection(order)
        if rejection is not None:
            order.status_message, order.status_message_raw = rejection
            self._transition(order, REJECTED)
            return
        if order.variety == "amo":
            self._transition(order, AMO_REQ_RECEIVED)
            return
        self._later(order.order_id, self._send_to_exchange)

    def _send_to_exchange(self, order: Order) -> None:
        if order.status != VALIDATION_PENDING:
            return
        now = self._clock()
        order.exchange_order_id = str(1_000_000_000_000_000 + next(self._exchange_seq))
        order.exchange_timestamp = now
        order.exchange_update_timestamp = now
        self._transition(order, OPEN_PENDING)
        if order.validity == "TTL" and order.validity_ttl:
            self._later(order.order_id, self._expire_ttl, delay=order.validity_ttl * 60.0)
        self._open(order, None)

    def _open(self, order: Order, event_status: str | None) -> None:
        if order.order_type in TRIGGERED_ORDER_TYPES and not order.triggered:
            if not self._trigger_hit(order):
                self._transition(order, TRIGGER_PENDING, event_status)
                return
            order.triggered = True
        self._transition(order, OPEN, event_status)
        self._match(order)

    def _finish_modify(self, order: Order, prior: str) -> None:
        if order.status != MODIFY_VALIDATION_PENDING:
            return
        self._transition(order, MODIFY_PENDING)
        if prior == AMO_REQ_RECEIVED:
            self._transition(order, AMO_REQ_RECEIVED, UPDATE)
            return
        if order.order_type not in TRIGGERED_ORDER_TYPES:
            order.triggered = False
        self._open(order, UPDATE)

    def _finish_cancel(self, order: Order) -> None:
        if order.status != CANCEL_PENDING:
            return
        order.cancelled_quantity = order.quantity - order.filled_quantity
        self._transition(order, CANCELLED)

    def _expire_ttl(self, order: Order) -> None:
        if order.status in LIVE_STATUSES:
            self._cancel_remainder(order, "Order cancelled as its TTL validity expired.")

    def _cancel_remainder(self, order: Order, message: str) -> None:
        order.cancelled_quantity = order.quantity - order.filled_quantity
        order.status_message = message
        self._transition(order, CANCELLED)

    def _trigger_hit(self, order: Order) -> bool:
        ltp = self.market.ltp(order.instrument.instrument_token)
        return ltp >= order.trigger_price if order.is_buy else ltp <= order.trigger_price

    def _on_prices(self, tokens: list[int]) -> None:
        if not tokens:
            return
        moved = set(tokens)
        for order in list(self._orders.values()):
            if order.instrument.instrument_token not in moved:
                continue
            if order.status == TRIGGER_PENDING and self._trigger_hit(order):
                order.triggered = True
                order.rested = False
                self._transition(order, OPEN)
                self._match(order)
            elif order.status == OPEN:
                self._match(order)
        for listener in self._tick_listeners:
            listener(tokens)

    def _match(self, order: Order) -> None:
        if order.status != OPEN:
            return
        if order.hold_remainder and order.filled_quantity:
            return
        ltp = self.market.ltp(order.instrument.instrument_token)
        if order.order_type in ("MARKET", "SL-M"):
            marketable, price = True, ltp
        else:
            marketable = ltp <= order.price if order.is_buy else ltp >= order.price
            # An arriving order takes the market price; a resting one is filled at its limit.
            price = order.price if order.rested else ltp
        if not marketable:
            if order.validity == "IOC":
                self._cancel_remainder(order, "IOC order could not be matched.")
            else:
                order.rested = True
            return
        quantity = order.pending_quantity
        if order.first_fill_cap is not None:
            quantity = min(quantity, order.first_fill_cap)
            order.first_fill_cap = None
        cap = self.config.fill_quantity_cap
        if cap is not None:
            quantity = min(quantity, cap)
        lot = order.instrument.lot_size if order.instrument.is_derivative else 1
        if lot > 1 and quantity % lot:
            quantity = max(lot, quantity - quantity % lot)
        self._execute(order, quantity, price)

    def _execute(self, order: Order, quantity: int, price: Decimal) -> None:
        now = self._clock()
        order.filled_quantity += quantity
        order.fill_value += price * quantity
        order.exchange_update_timestamp = now
        self._trades.append(
            Trade(
                trade_id=str(10_000_000 + next(self._trade_seq)),
                order_id=order.order_id,
                exchange_order_id=order.exchange_order_id or "",
                instrument=order.instrument,
                product=order.product,
                transaction_type=order.transaction_type,
                quantity=quantity,
                price=price,
                fill_timestamp=now,
                order_timestamp=order.placed_at,
            )
        )
        self.portfolio.apply_fill(order.instrument, order.product, order.is_buy, quantity, price)
        if order.filled_quantity >= order.quantity:
            self._transition(order, COMPLETE)
            return
        order.rested = True
        self._transition(order, OPEN, UPDATE)
        if order.validity == "IOC" or order.cancel_remainder:
            self._cancel_remainder(order, "Unfilled quantity cancelled.")
        elif not order.hold_remainder:
            # Liquidity returns after a moment even if the price is held still.
            self._later(order.order_id, self._match)

    def _reference_price(self, order: Order) -> Decimal:
        if order.order_type in ("LIMIT", "SL"):
            return order.price
        if order.order_type == "SL-M":
            return order.trigger_price
        return self.market.ltp(order.instrument.instrument_token)

    def _order_margin(self, exclude: Order | None) -> Decimal:
        total = Decimal(0)
        for order in self._orders.values():
            if order is exclude or order.status in FINAL_STATUSES or order.status == PUT_ORDER_REQ_RECEIVED:
                continue
            if not order.is_buy and order.product == "CNC":
                continue
            rate = self.portfolio.margin_rate(order.product)
            total += order.pending_quantity * self._reference_price(order) * rate
        return total

    def _rms_rejection(self, order: Order) -> tuple[str, str] | None:
        if order.forced_rejection is not None:
            return order.forced_rejection, f"RMS:{order.forced_rejection}"
        item = order.instrument
        if order.order_type in TRIGGERED_ORDER_TYPES and self._trigger_hit(order):
            side = "buy" if order.is_buy else "sell"
            relation = "higher" if order.is_buy else "lower"
            message = (
                f"Trigger price for stoploss {side} orders should be {relation} than the last traded price."
            )
            return message, f"RMS:Rule: Check trigger price for {side} stoploss order"
        if order.product == "CNC" and not order.is_buy:
            sellable = (
                self.portfolio.holding_quantity(item)
                + self.portfolio.position_quantity(item, "CNC")
                - self._pending_cnc_sells(order)
            )
            if order.quantity > sellable:
                message = (
                    f"Insufficient holdings for {item.tradingsymbol}. "
                    f"Required quantity is {order.quantity} but available quantity is {max(sellable, 0)}."
                )
                return (
                    message,
                    f"RMS:Holdings Exceeds,Required:{order.quantity}, Available:{max(sellable, 0)}",
                )
            return None
        position = self.portfolio.position_quantity(item, order.product)
        covering = max(0, -position) if order.is_buy else max(0, position)
        added = max(0, order.quantity - covering)
        required = (
            added * self._reference_price(order) * self.portfolio.margin_rate(order.product)
        ).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        available = self.portfolio.available_margin(self._prices, self._order_margin(order)).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )
        if required > available:
            message = (
                f"Insufficient funds. Required margin is {required} but available margin is {available}. "
                "Check the orderbook for open orders."
            )
            raw = (
                f"RMS:Margin Exceeds,Required:{required}, Available:{available} for entity "
                f"account-{self.config.user_id} across exchange across segment across product "
            )
            return message, raw
        return None

    def _pending_cnc_sells(self, exclude: Order) -> int:
        return sum(
            o.pending_quantity
            for o in self._orders.values()
            if o is not exclude
            and o.instrument is exclude.instrument
            and o.product == "CNC"
            and not o.is_buy
            and o.status not in FINAL_STATUSES
            and o.status != PUT_ORDER_REQ_RECEIVED
        )

    def _render_quote(self, item: Instrument, kind: Literal["full", "ohlc", "ltp"]) -> dict[str, Any]:
        state = self.market.state(item.instrument_token)
        if kind == "ltp":
            return {"instrument_token": item.instrument_token, "last_price": state.ltp}
        ohlc = {"open": state.open, "high": state.high, "low": state.low, "close": state.close}
        if kind == "ohlc":
            return {"instrument_token": item.instrument_token, "last_price": state.ltp, "ohlc": ohlc}
        band = snap_to_tick(state.close * Decimal("0.1"), item.price_step)

        def side(levels: list[Any]) -> list[dict[str, Any]]:
            return [{"price": lv.price, "quantity": lv.quantity, "orders": lv.orders} for lv in levels]

        return {
            "instrument_token": item.instrument_token,
            "timestamp": state.timestamp,
            "last_trade_time": state.last_trade_time,
            "last_price": state.ltp,
            "last_quantity": state.last_quantity,
            "buy_quantity": state.total_buy_quantity,
            "sell_quantity": state.total_sell_quantity,
            "volume": state.volume,
            "average_price": state.average_price,
            "oi": state.oi,
            "oi_day_high": state.oi_day_high,
            "oi_day_low": state.oi_day_low,
            "net_change": state.net_change,
            "lower_circuit_limit": state.close - band,
            "upper_circuit_limit": state.close + band,
            "ohlc": ohlc,
            "depth": {"buy": side(state.bids), "sell": side(state.asks)},
        }
