"""Order updates in: Kite postbacks over HTTP, and the ticker's order messages, both processed once.

`OrderUpdateProcessor` is the one conversion path. It finds the order's context by its tag
(orders without one of our tags are not ours and are ignored), then claims the update per
(order id, filled quantity, status) together with the progress, order status and risk
give-back it writes, so a postback Kite sends twice, or an update that arrives both as a
postback and on the ticker, reaches the portfolio once (a repeat republishes the same events).

`PostbackEndpoint` is the HTTP side: it verifies Kite's checksum before it touches anything
(401 otherwise), and answers 200 only after Kafka acknowledged the events.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.charges import LiveChargeRates
from alphapanda.brokers.zerodha.orders import OrderContext
from alphapanda.brokers.zerodha.trader import give_back_unfilled
from alphapanda.brokers.zerodha.updates import (
    InvalidOrderUpdate,
    OrderUpdate,
    Progress,
    interpret,
    to_events,
    verify_checksum,
)
from alphapanda.config import ConfigError, Settings, cannot_start, load_settings
from alphapanda.domain.instruments import load_instruments
from alphapanda.events import Event, now
from alphapanda.stages.risk_ledger import ledger_reads
from alphapanda.state import keys as core_keys
from alphapanda.state.store import Decision, StateStore
from alphapanda.topics import zerodha_brokers

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, events: Iterable[Event]) -> int: ...


class OrderUpdateProcessor:
    """Turn Kite order updates of the zerodha `brokers` into order events, each update once.

    The brokers share one Kite app (the deployment has one set of Kite credentials), and Kite
    sends all of an app's updates to its one postback URL, so one processor takes them all and
    finds each order's broker by its tag (derived from the broker's own signal id).

    `charges` estimates each fill's charges (None: fills carry none); it is asked for, not
    defaulted, so that no process leaves its live fills uncharged by omission."""

    def __init__(
        self,
        store: StateStore,
        brokers: Sequence[str],
        *,
        charges: LiveChargeRates | None,
        clock: Callable[[], datetime] = now,
    ) -> None:
        if isinstance(brokers, str) or not brokers:
            raise ValueError(f"OrderUpdateProcessor needs a sequence of zerodha brokers, not {brokers!r}")
        self._store = store
        self.brokers = tuple(brokers)
        self._charges = charges
        self._clock = clock

    def _context(self, tag: str) -> tuple[str, OrderContext] | None:
        """The broker that placed the order tagged `tag`, and the order's context; None if none did."""
        for broker in self.brokers:
            raw = self._store.get(keys.order_context(broker, tag))
            if raw is not None:
                return broker, OrderContext.from_json(raw)
        return None

    def process(self, update: OrderUpdate) -> list[Event] | None:
        """The events `update` means (the stored ones if it was processed before), or None when
        the order is not one Alpha Panda placed."""
        if not update.tag:
            return None
        found = self._context(update.tag)
        if found is None:
            return None
        broker, ctx = found
        progress_key = keys.order_progress(broker, update.order_id)
        order_key = core_keys.order(broker, ctx.order_id)
        reads = [
            progress_key,
            order_key,
            core_keys.quote(ctx.instrument_token),
            *ledger_reads(broker, ctx.instrument_token, ctx.strategy),
        ]
        at = update.updated_at or self._clock()
        rates = (
            self._charges.for_order(ctx.instrument_token, ctx.exchange, ctx.product, at)
            if self._charges is not None
            else None
        )

        def decide(values: dict[str, str | None]) -> Decision:
            progress = Progress.from_json(values[progress_key])
            meaning = interpret(update, ctx, progress, at, rates)
            writes: dict[str, str] = {}
            if meaning.progress != progress:
                writes[progress_key] = meaning.progress.to_json()
            if meaning.emitted:
                status = json.loads(values[order_key] or "{}")
                status |= {
                    "status": update.status,
                    "signal": ctx.signal_id,
                    "tag": ctx.tag,
                    "broker_order_id": update.order_id,
                    "filled": meaning.progress.filled,
                }
                writes[order_key] = json.dumps(status)
            if meaning.ended_unfilled is not None:
                writes |= give_back_unfilled(values, ctx=ctx, unfilled=meaning.ended_unfilled)
            return Decision(outputs=to_events(meaning, ctx, update.order_id, at), writes=writes)

        claim = keys.update_claim(broker, update.order_id, update.filled_quantity, update.status)
        return self._store.process_once(claim, reads, decide)

    def process_payload(self, payload: Mapping[str, Any]) -> list[Event] | None:
        return self.process(OrderUpdate.from_payload(payload))


@dataclass(frozen=True)
class PostbackResponse:
    status: int
    body: str


class PostbackEndpoint:
    """The postback handler, free of any web framework: request body in, status and text out.

    The update is claimed (with its events) before they are published, so a failed publish is
    tried again here, `publish_attempts` times in all with doubling waits from `backoff_s`:
    Kite is not known to resend a postback that was not answered 200, and an update that no
    one repeats would otherwise reach the portfolio only as a reconciliation break. Should
    every attempt fail, the answer is 503, and the same update again (a resent postback, or
    the ticker's copy) publishes the same events.
    """

    def __init__(
        self,
        api_secret: Callable[[], str],
        processor: Callable[[], OrderUpdateProcessor],
        publisher: Callable[[], Publisher],
        *,
        publish_attempts: int = 3,
        backoff_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_secret = api_secret
        self._processor = processor
        self._publisher = publisher
        self._attempts = max(1, publish_attempts)
        self._backoff_s = backoff_s
        self._sleep = sleep

    def __call__(self, body: bytes) -> PostbackResponse:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict) or not verify_checksum(payload, self._api_secret()):
            # Nothing is read or written for an unsigned body: anyone can reach this URL.
            return PostbackResponse(401, "invalid checksum")
        try:
            update = OrderUpdate.from_payload(payload)
        except InvalidOrderUpdate as exc:
            return PostbackResponse(400, str(exc))
        events = self._processor().process(update)
        if events is None:
            return PostbackResponse(200, "ignored: not an Alpha Panda order")
        failure: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                self._publisher().publish(events)
                return PostbackResponse(200, f"ok: {len(events)} events")
            except Exception as exc:  # Kafka unreachable or not acknowledging: tried again
                failure = exc
        log.error(
            "order update %s (%s) not published after %d attempts: %s; the same update again "
            "publishes it, and `alphapanda reconcile` shows what it misses",
            update.order_id,
            update.status,
            self._attempts,
            failure,
        )
        return PostbackResponse(503, f"not published: {failure}")


def served_brokers(settings: Settings) -> tuple[str, ...]:
    """The zerodha brokers order updates are for: all of the deployment's, at least one."""
    brokers = zerodha_brokers(settings.brokers)
    if not brokers:
        raise ConfigError("ALPHAPANDA_BROKERS names no zerodha broker (e.g. ALPHAPANDA_BROKERS=zerodha)")
    return brokers


class _Runtime:
    """Clients built on the first signed postback, never at import (functions-framework imports early)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        self._processor: OrderUpdateProcessor | None = None
        self._publisher: Publisher | None = None

    def settings(self) -> Settings:
        with self._lock:
            if self._settings is None:
                self._settings = load_settings()
            return self._settings

    def api_secret(self) -> str:
        return self.settings().kite.api_secret.get_secret_value()

    def check(self) -> None:
        """Read and check the settings as the server starts: a wrong or missing one stops it
        with one line, rather than failing every postback while the pod looks healthy."""
        try:
            settings = self.settings()
            if not settings.kafka.bootstrap_servers or not settings.redis.url:
                raise ConfigError(
                    "order_updates needs ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS and ALPHAPANDA_REDIS__URL"
                )
            if not settings.kite.api_secret.get_secret_value():
                raise ConfigError(
                    "order_updates needs ALPHAPANDA_KITE__API_SECRET to check Kite's postback checksums"
                )
            served_brokers(settings)
        except ConfigError as exc:
            raise cannot_start("order_updates", exc) from None

    def _connect(self) -> None:
        from alphapanda.runtime.bootstrap import connect

        settings = self.settings()
        store, publisher = connect(settings)
        charges = LiveChargeRates.shipped(load_instruments(settings.instruments_file))
        with self._lock:
            self._processor = OrderUpdateProcessor(store, served_brokers(settings), charges=charges)
            self._publisher = publisher

    def processor(self) -> OrderUpdateProcessor:
        if self._processor is None:
            self._connect()
        assert self._processor is not None
        return self._processor

    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._connect()
        assert self._publisher is not None
        return self._publisher


def postback_endpoint() -> PostbackEndpoint:
    """The endpoint as `functions/order_updates` serves it: settings and clients from the environment."""
    runtime = _Runtime()
    runtime.check()
    return PostbackEndpoint(runtime.api_secret, runtime.processor, runtime.publisher)


class TickerOrderUpdates:
    """The ticker's `on_order_update` for deployments without a public HTTPS postback URL.

    Ticker updates carry a blank checksum (the WebSocket itself is authenticated), so they go
    straight to the processor. Processing runs off the ticker's thread, in order, and retries
    a failing update a few times (Redis or Kafka may blip) before it gives up with an error log.
    """

    def __init__(
        self,
        processor: OrderUpdateProcessor,
        publisher: Publisher,
        *,
        retries: int = 5,
        backoff_s: float = 0.2,
    ) -> None:
        self._processor = processor
        self._publisher = publisher
        self._retries = retries
        self._backoff_s = backoff_s
        self._queue: queue.SimpleQueue[Mapping[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kite-order-updates", daemon=True)
        self.processed = 0
        self.failed = 0

    def start(self) -> TickerOrderUpdates:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def __call__(self, _ws: Any, payload: Mapping[str, Any]) -> None:
        self._queue.put(payload)

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            for attempt in range(self._retries + 1):
                try:
                    events = self._processor.process_payload(payload)
                    if events:
                        self._publisher.publish(events)
                    self.processed += 1
                    break
                except InvalidOrderUpdate as exc:
                    log.warning("ignoring a ticker order message: %s", exc)
                    break
                except Exception as exc:  # Redis or Kafka trouble; this thread must outlive it
                    if attempt == self._retries:
                        self.failed += 1
                        log.error(
                            "order update %s lost after %d attempts: %s",
                            payload.get("order_id"),
                            attempt + 1,
                            exc,
                        )
                    else:
                        time.sleep(self._backoff_s * 2**attempt)
