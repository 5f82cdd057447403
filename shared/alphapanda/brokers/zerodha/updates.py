"""Kite order updates (postbacks and the ticker's order messages) turned into our order events.

Pure: `OrderUpdate.from_payload` parses Kite's body, `verify_checksum` checks a postback, and
`interpret` decides, from what we already turned into fills (`Progress`), which events an
update means. Kite reports cumulative `filled_quantity` and `average_price`; a fill is the
increase since the last update we processed, priced so that the fills' value adds up to
Kite's average.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from alphapanda.brokers.zerodha.orders import OrderContext
from alphapanda.domain.charges import ChargeBreakdown, ChargeRates
from alphapanda.domain.fills import OrderExecution, charge_lines
from alphapanda.events import (
    IST,
    TYPE_OF,
    Event,
    OrderCancelled,
    OrderFailed,
    OrderFilled,
    OrderUpdated,
    Payload,
    Product,
    derive_id,
    source_of,
)

COMPLETE = "COMPLETE"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
FINAL_STATUSES = frozenset({COMPLETE, CANCELLED, REJECTED})
SOURCE_FUNCTION = "order_updates"
_PAISA = Decimal("0.01")
_PRICE_STEP = {"CDS": Decimal("0.0000001"), "BCD": Decimal("0.0001"), "NCO": Decimal("0.0001")}
"""Finer price steps than the paisa, as KiteTicker's divisors for these segments show (10^7, 10^4)."""
_KITE_TIME = "%Y-%m-%d %H:%M:%S"


class InvalidOrderUpdate(ValueError):
    """A body that is not a Kite order update."""


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    """Kite's postback checksum: hex SHA-256 of order_id + order_timestamp + api_secret."""
    return hashlib.sha256(f"{order_id}{order_timestamp}{api_secret}".encode()).hexdigest()


def verify_checksum(payload: Mapping[str, Any], api_secret: str) -> bool:
    """Whether a postback body was signed by Kite with our app's secret."""
    order_id, stamp, given = payload.get("order_id"), payload.get("order_timestamp"), payload.get("checksum")
    if not (api_secret and isinstance(order_id, str) and isinstance(stamp, str) and isinstance(given, str)):
        return False
    # Compared as bytes: `compare_digest` raises TypeError for str with non-ASCII characters, and
    # a forged body must be refused (401), not crash the endpoint.
    expected = postback_checksum(order_id, stamp, api_secret).encode()
    return hmac.compare_digest(expected, given.encode("utf-8", "surrogatepass"))


def kite_time(text: Any) -> datetime | None:
    """Kite's `YYYY-MM-DD HH:MM:SS` (IST wall-clock time, no zone) as an aware datetime."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.strptime(text, _KITE_TIME).replace(tzinfo=IST)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    order_id: str
    status: str
    tag: str | None
    instrument_token: int
    tradingsymbol: str
    exchange: str
    quantity: int
    filled_quantity: int
    cancelled_quantity: int
    average_price: Decimal
    status_message: str
    updated_at: datetime | None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> OrderUpdate:
        try:
            tag = payload.get("tag") or next(iter(payload.get("tags") or ()), None)
            return cls(
                order_id=_text(payload["order_id"]),
                status=_text(payload["status"]),
                tag=str(tag) if tag else None,
                instrument_token=int(payload.get("instrument_token") or 0),
                tradingsymbol=str(payload.get("tradingsymbol") or ""),
                exchange=str(payload.get("exchange") or ""),
                quantity=int(payload["quantity"]),
                filled_quantity=int(payload.get("filled_quantity") or 0),
                cancelled_quantity=int(payload.get("cancelled_quantity") or 0),
                average_price=Decimal(str(payload.get("average_price") or 0)),
                status_message=str(payload.get("status_message") or ""),
                updated_at=kite_time(payload.get("exchange_update_timestamp"))
                or kite_time(payload.get("exchange_timestamp"))
                or kite_time(payload.get("order_timestamp")),
            )
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise InvalidOrderUpdate(f"not a Kite order update: {type(exc).__name__} {exc}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


@dataclass(frozen=True, slots=True)
class Progress:
    """What of one Kite order is already accounted for: filled quantity, its value, the charges
    estimated on it so far (`charges.LiveChargeRates`), and the end."""

    filled: int = 0
    value: Decimal = Decimal(0)
    final: str = ""
    charged: ChargeBreakdown = field(default_factory=ChargeBreakdown.zero)

    def to_json(self) -> str:
        return json.dumps(
            {
                "filled": self.filled,
                "value": str(self.value),
                "final": self.final,
                "charged": self.charged.to_json(),
            }
        )

    @classmethod
    def from_json(cls, raw: str | None) -> Progress:
        if not raw:
            return cls()
        data = json.loads(raw)
        # Progress stored before charges were estimated has no "charged": nothing was charged.
        charged = data.get("charged")
        return cls(
            int(data["filled"]),
            Decimal(data["value"]),
            str(data.get("final", "")),
            ChargeBreakdown.from_json(charged) if charged else ChargeBreakdown.zero(),
        )


@dataclass(frozen=True)
class Interpretation:
    """What one update means: events to emit (id parts, payload), the new progress, and, if the
    order ended, how much of it never traded (for the risk give-back)."""

    emitted: list[tuple[tuple[str, ...], Payload]] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    ended_unfilled: int | None = None


def interpret(
    update: OrderUpdate,
    ctx: OrderContext,
    progress: Progress,
    at: datetime,
    rates: ChargeRates | None = None,
) -> Interpretation:
    """Decide the events `update` means, given what `progress` already accounted for.

    With `rates`, a fill carries the charges of the whole order so far minus what its earlier
    fills carried (`OrderExecution.after_fill`, as a paper fill is charged); without, none."""
    if progress.final or update.filled_quantity < progress.filled:
        # Kite may deliver an older state after a newer one, or anything after the order ended:
        # it must not undo or repeat anything.
        return Interpretation(progress=progress)
    when = update.updated_at or at
    emitted: list[tuple[tuple[str, ...], Payload]] = []
    final = update.status if update.status in FINAL_STATUSES else ""
    common: dict[str, Any] = {
        "instrument_token": ctx.instrument_token,
        "tradingsymbol": ctx.tradingsymbol,
        "exchange": ctx.exchange,
        "order_id": ctx.order_id,
        "strategy": ctx.strategy,
        "side": ctx.side,
    }
    delta = update.filled_quantity - progress.filled
    new_progress = Progress(progress.filled, progress.value, final or progress.final, progress.charged)
    if delta > 0:
        price = _fill_price(update, progress, delta, ctx.exchange)
        charged = ChargeBreakdown.zero()
        order_charged = progress.charged
        if rates is not None:
            executed = OrderExecution(progress.filled, progress.value, progress.charged)
            executed, charged = executed.after_fill(ctx.side, delta, price, rates)
            order_charged = executed.charged
        new_progress = Progress(
            update.filled_quantity, progress.value + price * delta, new_progress.final, order_charged
        )
        still_open = (
            0 if final else max(update.quantity - update.filled_quantity - update.cancelled_quantity, 0)
        )
        fill = OrderFilled(
            **common,
            fill_id=derive_id(ctx.order_id, "fill", str(update.filled_quantity)),
            quantity=delta,
            price=price,
            product=Product(ctx.product),
            order_quantity=update.quantity,
            remaining_quantity=still_open,
            signal_id=ctx.signal_id,
            flatten=ctx.flatten,
            filled_at=when,
            charges=charged.total,
            charge_lines=charge_lines(charged) if rates is not None else None,
        )
        emitted.append((("fill", str(update.filled_quantity)), fill))
    unfilled = max(update.quantity - update.filled_quantity, 0)
    ended: int | None = None
    if update.status == REJECTED:
        reason = update.status_message or "rejected by Kite"
        emitted.append(
            (
                ("failed",),
                OrderFailed(
                    **common,
                    signal_id=ctx.signal_id,
                    quantity=update.quantity,
                    reason=f"Kite rejected the order: {reason}",
                ),
            )
        )
        ended = unfilled
    elif update.status == CANCELLED:
        if unfilled > 0:
            emitted.append(
                (
                    ("cancelled",),
                    OrderCancelled(
                        **common,
                        signal_id=ctx.signal_id,
                        quantity=unfilled,
                        filled_quantity=update.filled_quantity,
                        reason=update.status_message or "cancelled at Kite",
                        cancelled_at=when,
                    ),
                )
            )
        ended = unfilled
    elif update.status == COMPLETE:
        ended = 0
    if not emitted:
        emitted.append(
            (
                (update.status.replace(" ", "_"), str(update.filled_quantity)),
                OrderUpdated(
                    **common,
                    broker_order_id=update.order_id,
                    quantity=update.quantity,
                    status=update.status,
                    filled_quantity=update.filled_quantity,
                    average_price=update.average_price or None,
                    message=update.status_message,
                    updated_at=when,
                ),
            )
        )
    return Interpretation(emitted, new_progress, ended)


def _fill_price(update: OrderUpdate, progress: Progress, delta: int, exchange: str) -> Decimal:
    # Kite's average is over the whole filled quantity, so this fill's price is what makes the
    # value of all fills so far equal average x filled. Rounded to the segment's price step (the
    # paisa, but finer for currency derivatives, which tick in 0.0025 rupees): Kite rounds its
    # average, and every exchange price is a whole number of steps.
    total = update.average_price * update.filled_quantity
    step = _PRICE_STEP.get(exchange, _PAISA)
    price = ((total - progress.value) / delta).quantize(step, rounding=ROUND_HALF_UP)
    return price if price > 0 else update.average_price


def to_events(
    interpretation: Interpretation, ctx: OrderContext, kite_order_id: str, at: datetime
) -> list[Event]:
    """The interpretation's payloads as events: ids derived from the order's signal event and
    the update, so the same update always yields the same ids."""
    source = source_of(SOURCE_FUNCTION, ctx.broker)
    return [
        Event(
            id=derive_id(ctx.event_id, "kite", kite_order_id, *parts),
            type=TYPE_OF[type(payload)],
            source=source,
            data=payload,
            partitionkey=ctx.partitionkey,
            correlationid=ctx.correlationid,
            causationid=ctx.submitted_id,
            broker=ctx.broker,
            time=at,
            traceparent=ctx.traceparent,
        )
        for parts, payload in interpretation.emitted
    ]
