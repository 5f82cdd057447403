"""Pure rules for Kite orders: the tag, the placement parameters and the order's context."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from alphapanda.events import Event, OrderType, Side, Signal, SignalValidated, derive_id

TAG_PREFIX = "ap"
TAG_LENGTH = 20
VARIETY = "regular"


def order_tag(signal_id: str) -> str:
    """The Kite `tag` of the order for `signal_id`: alphanumeric, 20 characters, deterministic.

    The tag is how we find an order whose placement answer was lost: a retry derives the same
    tag and asks Kite for it before it decides to place anything.
    """
    digest = hashlib.sha256(signal_id.encode()).hexdigest()
    return TAG_PREFIX + digest[: TAG_LENGTH - len(TAG_PREFIX)]


class NotPlaceable(ValueError):
    """The signal cannot become a Kite order (e.g. a LIMIT order without a price)."""


def order_params(
    signal: Signal, *, tag: str, market_protection: Decimal, algo_id: str = ""
) -> dict[str, Any]:
    """The keyword arguments of `KiteConnect.place_order` for `signal`."""
    params: dict[str, Any] = {
        "variety": VARIETY,
        "exchange": signal.exchange,
        "tradingsymbol": signal.tradingsymbol,
        "transaction_type": signal.side.value,
        "quantity": signal.quantity,
        "product": signal.product.value,
        "order_type": signal.order_type.value,
        "validity": signal.validity.value,
        "tag": tag,
    }
    kind = signal.order_type
    if kind in (OrderType.LIMIT, OrderType.SL):
        if signal.limit_price is None or signal.limit_price <= 0:
            raise NotPlaceable(f"a {kind} order needs a positive limit_price")
        params["price"] = str(signal.limit_price)
    if kind in (OrderType.SL, OrderType.SL_M):
        if signal.trigger_price is None or signal.trigger_price <= 0:
            raise NotPlaceable(f"a {kind} order needs a positive trigger_price")
        params["trigger_price"] = str(signal.trigger_price)
    if kind in (OrderType.MARKET, OrderType.SL_M):
        # Exchanges reject MARKET and SL-M orders without protection (since April 2026).
        params["market_protection"] = str(check_market_protection(market_protection))
    if algo_id:
        params["algo_id"] = algo_id
    return params


def check_market_protection(value: Decimal) -> Decimal:
    """Kite accepts -1 (Kite chooses) or a percentage in (0, 100]; 0 is rejected by exchanges."""
    if value == -1 or Decimal(0) < value <= Decimal(100):
        return value
    raise ValueError(
        f"ALPHAPANDA_KITE__MARKET_PROTECTION={value} is invalid: use -1 (Kite chooses) or a "
        "percentage above 0 and at most 100; exchanges reject MARKET and SL-M orders without it"
    )


def find_by_tag(orders: Iterable[Mapping[str, Any]], tag: str) -> Mapping[str, Any] | None:
    """The first of Kite's orders carrying `tag` (Kite reports it as `tag` and in `tags`)."""
    for order in orders:
        if order.get("tag") == tag or tag in (order.get("tags") or ()):
            return order
    return None


@dataclass(frozen=True, slots=True)
class OrderContext:
    """Everything an order update needs to become our events, stored (by tag) before Kite sees
    the order, so that even the fastest postback finds it."""

    broker: str
    tag: str
    signal_id: str
    event_id: str
    order_id: str
    submitted_id: str
    correlationid: str
    partitionkey: str
    traceparent: str | None
    strategy: str
    side: Side
    quantity: int
    instrument_token: int
    tradingsymbol: str
    exchange: str
    product: str
    flatten: bool
    reference_price: str
    """The price the strategy saw: values a give-back when no quote is at hand."""

    @classmethod
    def of(cls, event: Event, broker: str) -> OrderContext:
        """The context of the order a validated-signal event asks for."""
        assert isinstance(event.data, SignalValidated)
        signal = event.data.signal
        signal_id = event.causationid
        return cls(
            broker=broker,
            tag=order_tag(signal_id),
            signal_id=signal_id,
            event_id=event.id,
            order_id=derive_id(event.id, "order"),
            submitted_id=derive_id(event.id, "submitted"),
            correlationid=event.correlationid,
            partitionkey=event.partitionkey,
            traceparent=event.traceparent,
            strategy=signal.strategy,
            side=signal.side,
            quantity=signal.quantity,
            instrument_token=signal.instrument_token,
            tradingsymbol=signal.tradingsymbol,
            exchange=signal.exchange,
            product=signal.product.value,
            flatten=signal.flatten,
            reference_price=str(signal.reference_price),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> OrderContext:
        data = json.loads(raw)
        data["side"] = Side(data["side"])
        return cls(**data)
