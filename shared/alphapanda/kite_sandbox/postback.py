"""Order-update payloads (postback and WebSocket) and the background postback sender."""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ._common import dumps
from .exchange import OrderEvent

log = logging.getLogger(__name__)

_PAYLOAD_FIELDS = (
    "placed_by",
    "order_id",
    "exchange_order_id",
    "parent_order_id",
    "status",
    "status_message",
    "status_message_raw",
    "order_timestamp",
    "exchange_update_timestamp",
    "exchange_timestamp",
    "variety",
    "exchange",
    "tradingsymbol",
    "instrument_token",
    "order_type",
    "transaction_type",
    "validity",
    "product",
    "quantity",
    "disclosed_quantity",
    "price",
    "trigger_price",
    "average_price",
    "filled_quantity",
    "pending_quantity",
    "cancelled_quantity",
    "market_protection",
    "meta",
    "tag",
    "guid",
)


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    return hashlib.sha256(f"{order_id}{order_timestamp}{api_secret}".encode()).hexdigest()


def order_update_payload(
    event: OrderEvent, *, user_id: str, app_id: int, api_secret: str | None
) -> dict[str, Any]:
    """The documented postback body; WebSocket updates carry the same body with a blank checksum."""
    order: dict[str, Any] = json.loads(dumps(event.order))
    quantity = int(order["quantity"])
    unfilled = quantity - int(order["filled_quantity"]) - int(order["pending_quantity"])
    checksum = (
        ""
        if api_secret is None
        else postback_checksum(order["order_id"], order["order_timestamp"], api_secret)
    )
    payload: dict[str, Any] = {
        "user_id": user_id,
        "unfilled_quantity": unfilled,
        "app_id": app_id,
        "checksum": checksum,
    }
    for name in _PAYLOAD_FIELDS:
        payload[name] = order.get(name)
    payload["status"] = event.status
    return payload


@dataclass(frozen=True, slots=True)
class PostbackDelivery:
    """One attempted POST: the payload and either the HTTP status or the error text."""

    payload: dict[str, Any]
    status: int | None
    error: str | None


class PostbackSender:
    """POSTs payloads one at a time, in order, from a daemon thread (never blocks the exchange)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self._timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._deliveries: list[PostbackDelivery] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="kite-sandbox-postback", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, payload: dict[str, Any]) -> None:
        self._queue.put(payload)

    @property
    def deliveries(self) -> list[PostbackDelivery]:
        with self._lock:
            return list(self._deliveries)

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            self._record(payload, *self._post(payload))

    def _post(self, payload: dict[str, Any]) -> tuple[int | None, str | None]:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return int(response.status), None
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError) as exc:
            log.warning("postback to %s failed: %s", self.url, exc)
            return None, str(exc)

    def _record(self, payload: dict[str, Any], status: int | None, error: str | None) -> None:
        with self._lock:
            self._deliveries.append(PostbackDelivery(payload, status, error))
