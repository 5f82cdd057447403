"""The order model and Kite's input validation for placing and modifying orders."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ._common import input_error
from .instruments import CASH_EXCHANGES, Instrument

# Statuses as the API spells them (note the abbreviated "REQ").
PUT_ORDER_REQ_RECEIVED = "PUT ORDER REQ RECEIVED"
VALIDATION_PENDING = "VALIDATION PENDING"
OPEN_PENDING = "OPEN PENDING"
MODIFY_VALIDATION_PENDING = "MODIFY VALIDATION PENDING"
MODIFY_PENDING = "MODIFY PENDING"
TRIGGER_PENDING = "TRIGGER PENDING"
CANCEL_PENDING = "CANCEL PENDING"
AMO_REQ_RECEIVED = "AMO REQ RECEIVED"
OPEN = "OPEN"
COMPLETE = "COMPLETE"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
# Not an order status: the event name postbacks use for a modification or a partial fill.
UPDATE = "UPDATE"

TRANSIENT_STATUSES = frozenset(
    {
        PUT_ORDER_REQ_RECEIVED,
        VALIDATION_PENDING,
        OPEN_PENDING,
        MODIFY_VALIDATION_PENDING,
        MODIFY_PENDING,
        CANCEL_PENDING,
    }
)
LIVE_STATUSES = frozenset({OPEN, TRIGGER_PENDING, AMO_REQ_RECEIVED})
FINAL_STATUSES = frozenset({COMPLETE, CANCELLED, REJECTED})

VARIETIES = frozenset({"regular", "amo", "co", "iceberg", "auction"})
SUPPORTED_VARIETIES = frozenset({"regular", "amo"})
EXCHANGES = frozenset({"NSE", "BSE", "NFO", "CDS", "BFO", "MCX", "BCD"})
TRANSACTION_TYPES = frozenset({"BUY", "SELL"})
ORDER_TYPES = frozenset({"MARKET", "LIMIT", "SL", "SL-M"})
CASH_PRODUCTS = frozenset({"CNC", "MIS", "MTF"})
DERIVATIVE_PRODUCTS = frozenset({"NRML", "MIS"})
VALIDITIES = frozenset({"DAY", "IOC", "TTL"})
PROTECTED_ORDER_TYPES = frozenset({"MARKET", "SL-M"})
PRICED_ORDER_TYPES = frozenset({"LIMIT", "SL"})
TRIGGERED_ORDER_TYPES = frozenset({"SL", "SL-M"})

_TAG_PATTERN = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(slots=True)
class Order:
    order_id: str
    variety: str
    instrument: Instrument
    transaction_type: str
    order_type: str
    product: str
    validity: str
    validity_ttl: int | None
    quantity: int
    disclosed_quantity: int
    price: Decimal
    trigger_price: Decimal
    market_protection: Decimal
    tag: str | None
    algo_id: str | None
    guid: str
    placed_at: datetime
    updated_at: datetime
    status: str = PUT_ORDER_REQ_RECEIVED
    status_message: str | None = None
    status_message_raw: str | None = None
    exchange_order_id: str | None = None
    exchange_timestamp: datetime | None = None
    exchange_update_timestamp: datetime | None = None
    filled_quantity: int = 0
    cancelled_quantity: int = 0
    fill_value: Decimal = Decimal(0)
    modified: bool = False
    modifications: int = 0
    triggered: bool = False
    rested: bool = False
    first_fill_cap: int | None = None
    hold_remainder: bool = False
    cancel_remainder: bool = False
    forced_rejection: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_buy(self) -> bool:
        return self.transaction_type == "BUY"

    @property
    def pending_quantity(self) -> int:
        if self.status in FINAL_STATUSES:
            return 0
        return self.quantity - self.filled_quantity - self.cancelled_quantity

    @property
    def average_price(self) -> Decimal:
        if not self.filled_quantity:
            return Decimal(0)
        return (self.fill_value / self.filled_quantity).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)

    def snapshot(self, placed_by: str) -> dict[str, Any]:
        """The order as `GET /orders` renders it (field order as in Kite's mocks)."""
        item = self.instrument
        return {
            "placed_by": placed_by,
            "order_id": self.order_id,
            "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None,
            "status": self.status,
            "status_message": self.status_message,
            "status_message_raw": self.status_message_raw,
            "order_timestamp": self.updated_at,
            "exchange_update_timestamp": self.exchange_update_timestamp,
            "exchange_timestamp": self.exchange_timestamp,
            "variety": self.variety,
            "modified": self.modified,
            "exchange": item.exchange,
            "tradingsymbol": item.tradingsymbol,
            "instrument_token": item.instrument_token,
            "order_type": self.order_type,
            "transaction_type": self.transaction_type,
            "validity": self.validity,
            "validity_ttl": self.validity_ttl or 0,
            "product": self.product,
            "quantity": self.quantity,
            "disclosed_quantity": self.disclosed_quantity,
            "price": self.price,
            "trigger_price": self.trigger_price,
            "average_price": self.average_price,
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity,
            "market_protection": self.market_protection,
            "meta": {"algo_id": self.algo_id} if self.algo_id else {},
            "tag": self.tag,
            "tags": [self.tag] if self.tag else [],
            "guid": self.guid,
        }


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """Validated `POST /orders/:variety` parameters."""

    variety: str
    instrument: Instrument
    transaction_type: str
    order_type: str
    product: str
    validity: str
    validity_ttl: int | None
    quantity: int
    disclosed_quantity: int
    price: Decimal
    trigger_price: Decimal
    market_protection: Decimal
    tag: str | None
    algo_id: str | None


@dataclass(frozen=True, slots=True)
class OrderChanges:
    """Validated `PUT /orders/:variety/:order_id` parameters, already merged with the order."""

    order_type: str
    quantity: int
    disclosed_quantity: int
    price: Decimal
    trigger_price: Decimal
    validity: str
    market_protection: Decimal


def _blank(value: str | None) -> bool:
    return value is None or value.strip() == ""


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or _blank(value):
        raise input_error(f"Missing `{name}`.")
    return value.strip()


def _choice(value: str, allowed: frozenset[str], name: str) -> str:
    if value not in allowed:
        raise input_error(f"Invalid `{name}`.")
    return value


def _int(value: str | None, name: str, *, default: int | None = None, minimum: int = 0) -> int:
    if value is None or _blank(value):
        if default is None:
            raise input_error(f"Missing `{name}`.")
        return default
    try:
        number = int(value)
    except ValueError:
        try:
            as_decimal = Decimal(value)
        except InvalidOperation:
            raise input_error(f"Invalid `{name}`.") from None
        if as_decimal != as_decimal.to_integral_value():
            raise input_error(f"Invalid `{name}`.") from None
        number = int(as_decimal)
    if number < minimum:
        raise input_error(f"Invalid `{name}`.")
    return number


def _decimal(value: str | None, name: str) -> Decimal:
    if value is None or _blank(value):
        return Decimal(0)
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise input_error(f"Invalid `{name}`.") from None
    if not number.is_finite():
        raise input_error(f"Invalid `{name}`.")
    return number


def _check_tick(value: Decimal, instrument: Instrument, label: str) -> None:
    tick = instrument.tick_size
    if tick > 0 and value % tick != 0:
        raise input_error(
            f"Tick size for this script is {tick.normalize():f}. "
            f"Kindly enter {label} in the multiple of tick size."
        )


def _check_prices(
    instrument: Instrument,
    transaction_type: str,
    order_type: str,
    price: Decimal,
    trigger_price: Decimal,
) -> tuple[Decimal, Decimal]:
    if order_type in PRICED_ORDER_TYPES:
        if price <= 0:
            raise input_error("Price must be greater than zero for LIMIT and SL orders.")
        _check_tick(price, instrument, "price")
    else:
        price = Decimal(0)
    if order_type in TRIGGERED_ORDER_TYPES:
        if trigger_price <= 0:
            raise input_error("Trigger price must be greater than zero for SL and SL-M orders.")
        _check_tick(trigger_price, instrument, "trigger price")
        if order_type == "SL" and transaction_type == "BUY" and trigger_price > price:
            raise input_error(
                "Trigger price for stoploss buy orders should be less than or equal to the price."
            )
        if order_type == "SL" and transaction_type == "SELL" and trigger_price < price:
            raise input_error(
                "Trigger price for stoploss sell orders should be more than or equal to the price."
            )
    else:
        trigger_price = Decimal(0)
    return price, trigger_price


def _check_market_protection(order_type: str, protection: Decimal, given: bool) -> Decimal:
    # Exchange rule from April 2026: MARKET and SL-M need a non-zero protection (-1 = auto).
    if given and not (protection == -1 or 0 <= protection <= 100):
        raise input_error("Invalid `market_protection`. Allowed values are -1 (auto) or 0 to 100.")
    if order_type in PROTECTED_ORDER_TYPES and protection == 0:
        raise input_error(
            "Market protection is mandatory for MARKET and SL-M orders. "
            "Set `market_protection` to -1 (auto) or a percentage from 1 to 100."
        )
    return protection


def _check_quantity(instrument: Instrument, quantity: int) -> None:
    if quantity <= 0:
        raise input_error("Invalid `quantity`.")
    if instrument.is_derivative and instrument.lot_size > 1 and quantity % instrument.lot_size:
        raise input_error(f"Quantity should be a multiple of lot size ({instrument.lot_size}).")


def parse_order_request(
    variety: str,
    params: Mapping[str, str],
    instruments: Mapping[str, Instrument],
    *,
    tag_max_length: int,
) -> OrderRequest:
    """Validate a placement the way Kite's API layer does; raises KiteError(InputException)."""
    if variety not in VARIETIES:
        raise input_error("Invalid `variety`.")
    if variety not in SUPPORTED_VARIETIES:
        raise input_error(f"Order variety `{variety}` is not supported by the Kite sandbox.")
    exchange = _choice(_required(params, "exchange"), EXCHANGES, "exchange")
    symbol = _required(params, "tradingsymbol")
    instrument = instruments.get(f"{exchange}:{symbol}")
    if instrument is None:
        raise input_error("Invalid `tradingsymbol`. The instrument does not exist or has expired.")
    if not instrument.tradable:
        raise input_error(f"`{symbol}` is an index and cannot be traded.")
    transaction_type = _choice(_required(params, "transaction_type"), TRANSACTION_TYPES, "transaction_type")
    order_type = _choice(_required(params, "order_type"), ORDER_TYPES, "order_type")
    product = _required(params, "product")
    allowed_products = CASH_PRODUCTS if instrument.exchange in CASH_EXCHANGES else DERIVATIVE_PRODUCTS
    if product not in allowed_products:
        raise input_error(f"Invalid `product`. {product} is not allowed for {instrument.exchange}.")
    quantity = _int(params.get("quantity"), "quantity")
    _check_quantity(instrument, quantity)
    disclosed = _int(params.get("disclosed_quantity"), "disclosed_quantity", default=0)
    if disclosed > quantity:
        raise input_error("Disclosed quantity cannot be more than the order quantity.")
    validity = _choice((params.get("validity") or "DAY").strip(), VALIDITIES, "validity")
    validity_ttl: int | None = None
    if validity == "TTL":
        validity_ttl = _int(params.get("validity_ttl"), "validity_ttl", minimum=1)
    price, trigger_price = _check_prices(
        instrument,
        transaction_type,
        order_type,
        _decimal(params.get("price"), "price"),
        _decimal(params.get("trigger_price"), "trigger_price"),
    )
    raw_protection = params.get("market_protection")
    protection = _check_market_protection(
        order_type, _decimal(raw_protection, "market_protection"), not _blank(raw_protection)
    )
    raw_tag = params.get("tag")
    tag = None if raw_tag is None or _blank(raw_tag) else raw_tag.strip()
    if tag is not None:
        if len(tag) > tag_max_length:
            raise input_error(f"Tag length should not exceed {tag_max_length} characters.")
        if not _TAG_PATTERN.match(tag):
            raise input_error("Tag should be alphanumeric.")
    raw_algo = params.get("algo_id")
    return OrderRequest(
        variety=variety,
        instrument=instrument,
        transaction_type=transaction_type,
        order_type=order_type,
        product=product,
        validity=validity,
        validity_ttl=validity_ttl,
        quantity=quantity,
        disclosed_quantity=disclosed,
        price=price,
        trigger_price=trigger_price,
        market_protection=protection,
        tag=tag,
        algo_id=None if raw_algo is None or _blank(raw_algo) else raw_algo.strip(),
    )


def parse_order_changes(order: Order, params: Mapping[str, str]) -> OrderChanges:
    """Merge a modification into the order's current values and validate the result."""
    order_type = order.order_type
    if not _blank(params.get("order_type")):
        order_type = _choice(params["order_type"].strip(), ORDER_TYPES, "order_type")
    quantity = order.quantity
    if not _blank(params.get("quantity")):
        quantity = _int(params.get("quantity"), "quantity")
        _check_quantity(order.instrument, quantity)
        if quantity <= order.filled_quantity:
            raise input_error("Quantity cannot be less than or equal to the filled quantity.")
    disclosed = order.disclosed_quantity
    if not _blank(params.get("disclosed_quantity")):
        disclosed = _int(params.get("disclosed_quantity"), "disclosed_quantity")
    if disclosed > quantity:
        raise input_error("Disclosed quantity cannot be more than the order quantity.")
    validity = order.validity
    if not _blank(params.get("validity")):
        validity = _choice(params["validity"].strip(), VALIDITIES, "validity")
    price = order.price if _blank(params.get("price")) else _decimal(params.get("price"), "price")
    trigger = (
        order.trigger_price
        if _blank(params.get("trigger_price"))
        else _decimal(params.get("trigger_price"), "trigger_price")
    )
    price, trigger = _check_prices(order.instrument, order.transaction_type, order_type, price, trigger)
    raw_protection = params.get("market_protection")
    protection = (
        order.market_protection if _blank(raw_protection) else _decimal(raw_protection, "market_protection")
    )
    protection = _check_market_protection(order_type, protection, not _blank(raw_protection))
    return OrderChanges(
        order_type=order_type,
        quantity=quantity,
        disclosed_quantity=disclosed,
        price=price,
        trigger_price=trigger,
        validity=validity,
        market_protection=protection,
    )
