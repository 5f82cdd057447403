"""`ZerodhaTrader`: the Zerodha trading engine, placing live orders through Kite Connect.

It is an `EffectfulStage`, not a pure `Trader`: placing an order acts on the world, so the
stage claims the signal in Redis before it calls Kite and records the outcome after, and a
redelivered signal never becomes a second order (see `ledger.py` for the claim's states).

What each Kite answer means:
- order id            -> `orders.submitted` (with `broker_order_id`); fills come back as order
                         updates (postbacks or the ticker), see `postbacks.py`
- input/order error   -> `orders.failed` with Kite's message; the risk reservation is given back
- token refused       -> `orders.failed` plus an `Alert` on `{broker}.alerts`, and the broker's
                         kill switch goes to HALTED until `alphapanda login`
- HTTP 429            -> back off and place again (the shared rate limit should prevent it)
- no answer           -> look the order up by its tag; still unknown -> raise, so the delivery
                         layer retries the event, which looks again before it places anything
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import redis

from alphapanda.brokers.base import OrderEvent, OrderIds, Quote, order_fields
from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.client import kite_client
from alphapanda.brokers.zerodha.errors import (
    KiteFailure,
    KiteThrottled,
    OrderInFlight,
    OrderOutcomeUnknown,
    ZerodhaUnavailable,
    classify,
    describe,
)
from alphapanda.brokers.zerodha.ledger import DONE, PLACING, ClaimLedger, ClaimRecord
from alphapanda.brokers.zerodha.orders import (
    NotPlaceable,
    OrderContext,
    check_market_protection,
    find_by_tag,
    order_params,
)
from alphapanda.brokers.zerodha.rate_limit import OrderRateLimiter
from alphapanda.brokers.zerodha.session import SessionError, SessionStore, halt_for_token
from alphapanda.config import KiteSettings
from alphapanda.events import (
    IST,
    Alert,
    Event,
    EventType,
    InvalidEvent,
    OrderFailed,
    OrderSubmitted,
    Severity,
    Signal,
    SignalValidated,
    now,
    source_of,
)
from alphapanda.stages.risk_ledger import ledger_reads, release
from alphapanda.state import keys as core_keys
from alphapanda.state.store import Republished, StateStore
from alphapanda.topics import Function

log = logging.getLogger(__name__)

KiteClientFactory = Callable[[str], Any]
"""Access token -> a `KiteConnect` client (the official one; tests point it at the sandbox)."""

_MAX_ROUNDS = 20


class ZerodhaTrader:
    """The trading engine stage of Zerodha-kind brokers (registered in `Core.kind_stages`)."""

    function: Function = Function.TRADING_ENGINE
    accepts: EventType = EventType.SIGNAL_VALIDATED

    def __init__(
        self,
        brokers: frozenset[str],
        kite: KiteSettings,
        *,
        claim_ttl_s: int = 7 * 24 * 3600,
        clients: KiteClientFactory | None = None,
        clock: Callable[[], datetime] = now,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        throttle_retries: int = 4,
        throttle_backoff_s: float = 0.25,
        lookup_attempts: int = 3,
        lookup_backoff_s: float = 0.2,
        rate_wait_max_s: float = 5.0,
    ) -> None:
        if not kite.api_key:
            raise ValueError("a zerodha broker needs ALPHAPANDA_KITE__API_KEY (and __API_SECRET)")
        check_market_protection(kite.market_protection)
        self._app = keys.kite_app(kite.api_key)
        self.brokers = brokers
        self._kite = kite
        self._claim_ttl_s = claim_ttl_s
        self._clients = clients or (lambda token: kite_client(kite, token))
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._throttle_retries = throttle_retries
        self._throttle_backoff_s = throttle_backoff_s
        self._lookup_attempts = lookup_attempts
        self._lookup_backoff_s = lookup_backoff_s
        self._rate_wait_max_s = rate_wait_max_s
        # Long enough for one placement call to time out, short enough that a dead instance's
        # claim is taken over while the signal still matters.
        self.lease_s = 2 * kite.request_timeout_s + 1
        self._client_cache: tuple[str, Any] | None = None

    # -- the stage ---------------------------------------------------------------------------

    def handle(self, event: Event, store: StateStore) -> list[Event]:
        """Place the order for a validated signal, at most once however often the event arrives."""
        broker = self._owner(event)
        client = _redis_of(store)
        ctx = OrderContext.of(event, broker)
        ledger = ClaimLedger(client, keys.signal_claim(broker, ctx.signal_id), self._claim_ttl_s)
        for _ in range(_MAX_ROUNDS):
            outputs = self._round(event, ctx, ledger, client)
            if outputs is not None:
                return outputs
        raise OrderInFlight(f"the claim on signal {ctx.signal_id} kept changing; retry later")

    def _owner(self, event: Event) -> str:
        if event.broker is None or event.broker not in self.brokers:
            raise InvalidEvent(
                f"event {event.id} is for broker {event.broker!r}, not one of {sorted(self.brokers)}"
            )
        return event.broker

    def _round(
        self, event: Event, ctx: OrderContext, ledger: ClaimLedger, client: redis.Redis
    ) -> list[Event] | None:
        """One look at the claim and one step from there; None means look again."""
        raw, record = ledger.read()
        if record is not None and record.state == DONE:
            return Republished(record.events())
        if record is not None and record.state == PLACING and record.lease_until > self._wall():
            self._await_change(ledger, raw, record.lease_until)
            return None
        signal = _validated(event).signal
        if record is None:
            refusal = self._refusal(ctx, event, client)
            if refusal is not None:
                return self._finish(ledger, raw, ctx, [self._failed(event, ctx, refusal)], give_back=True)
        try:
            access_token = SessionStore(client, ctx.broker, self._clock).access_token()
        except SessionError as exc:
            if record is None:
                return self._token_refused(ledger, raw, event, ctx, client, str(exc))
            # An earlier attempt may have placed the order: without a token we cannot look, so
            # the claim stays unknown and the event is retried (after a login it resolves).
            halt_for_token(client, ctx.broker, str(exc))
            raise OrderOutcomeUnknown(f"order {ctx.tag} may be at Kite: {exc}") from None
        kite = self._client(access_token)
        if record is not None:
            # A previous attempt may have placed the order: Kite's book decides, not our guess.
            found = self._lookup(kite, ctx, ledger, raw, client)
            if found is not None:
                return self._placed(ledger, raw, event, ctx, str(found["order_id"]))
            earlier = self._attempt_day(record)
            if earlier != self._attempt_day(None):
                # Kite lists only the day's orders, so "not found" proves nothing about an attempt
                # made on an earlier day: placing now could make it two orders (and a stale one).
                reason = (
                    f"order {ctx.tag} was first sent on {earlier} and its outcome is unknown; Kite lists "
                    "only today's orders, so it is not placed again (check that day's order book; "
                    "`alphapanda reconcile` compares the positions)"
                )
                return self._finish(ledger, raw, ctx, [self._failed(event, ctx, reason)], give_back=True)
            refusal = self._refusal(ctx, event, client)
            if refusal is not None:
                return self._finish(ledger, raw, ctx, [self._failed(event, ctx, refusal)], give_back=True)
        params = order_params(
            signal,
            tag=ctx.tag,
            market_protection=self._kite.market_protection,
            algo_id=self._kite.algo_id,
        )
        try:
            self._limiter(client).acquire()
        except KiteThrottled as exc:
            refused = self._failed(event, ctx, self._not_admitted(exc))
            return self._finish(ledger, raw, ctx, [refused], give_back=True)
        attempt = ClaimRecord.placing(uuid.uuid4().hex, self._wall() + self.lease_s)
        context = (keys.order_context(ctx.broker, ctx.tag), ctx.to_json()) if raw is None else None
        held = ledger.swap(raw, attempt, aux=context)
        if held is None:
            return None
        return self._place(kite, params, event, ctx, ledger, held, client)

    # -- placing -----------------------------------------------------------------------------

    def _place(
        self,
        kite: Any,
        params: Mapping[str, Any],
        event: Event,
        ctx: OrderContext,
        ledger: ClaimLedger,
        held: str,
        client: redis.Redis,
    ) -> list[Event] | None:
        for attempt in range(self._throttle_retries + 1):
            try:
                kite_order_id = str(kite.place_order(**params))
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise  # a bug, not Kite: the lease keeps others off until it runs out
                if failure is KiteFailure.REJECTED:
                    reason = f"Kite rejected the order: {exc}"
                    return self._finish(ledger, held, ctx, [self._failed(event, ctx, reason)], give_back=True)
                if failure is KiteFailure.TOKEN:
                    return self._token_refused(ledger, held, event, ctx, client, describe(exc))
                if failure is KiteFailure.UNKNOWN:
                    log.warning("order %s: no answer from Kite (%s); looking it up", ctx.tag, describe(exc))
                    return self._resolve_unknown(kite, event, ctx, ledger, held, client, describe(exc))
                if attempt == self._throttle_retries:
                    break
                self._sleep(self._throttle_backoff_s * 2**attempt)
                try:
                    self._limiter(client).acquire()
                except KiteThrottled as throttled:
                    # Kite's 429 said the last attempt was not placed.
                    reason = self._not_admitted(throttled)
                    return self._finish(ledger, held, ctx, [self._failed(event, ctx, reason)], give_back=True)
                lease = ClaimRecord.placing(uuid.uuid4().hex, self._wall() + self.lease_s)
                renewed = ledger.swap(held, lease)
                if renewed is None:
                    raise OrderInFlight(f"lost the claim on order {ctx.tag} while backing off") from None
                held = renewed
            else:
                return self._placed(ledger, held, event, ctx, kite_order_id)
        # A 429 is a definite "not placed": the order fails as `_not_admitted` says why.
        reason = (
            f"not placed: Kite answered 429 (too many requests) {self._throttle_retries + 1} times "
            "in a row; another client of the Kite app may be placing orders too"
        )
        return self._finish(ledger, held, ctx, [self._failed(event, ctx, reason)], give_back=True)

    def _resolve_unknown(
        self,
        kite: Any,
        event: Event,
        ctx: OrderContext,
        ledger: ClaimLedger,
        held: str,
        client: redis.Redis,
        why: str,
    ) -> list[Event]:
        found = self._lookup(kite, ctx, ledger, held, client, settle=True)
        if found is not None:
            outputs = self._placed(ledger, held, event, ctx, str(found["order_id"]))
            if outputs is not None:
                return outputs
            raise OrderInFlight(f"order {ctx.tag} was finished by another instance")
        ledger.swap(held, ClaimRecord.unknown(self._wall(), why))
        raise OrderOutcomeUnknown(
            f"Kite did not answer the placement of order {ctx.tag} ({why}) and does not list it yet"
        )

    def _lookup(
        self,
        kite: Any,
        ctx: OrderContext,
        ledger: ClaimLedger,
        held: str | None,
        client: redis.Redis,
        *,
        settle: bool = False,
    ) -> Mapping[str, Any] | None:
        """Kite's order with our tag, or None if Kite's order book (as listed) has none.

        With `settle` a missing order is looked for a few times, because a request whose answer
        was lost may still be on its way into Kite's book. If the book cannot be listed, the
        claim is marked unknown and a retryable error is raised.
        """
        attempts = self._lookup_attempts if settle else 1
        last = "no attempt"
        for attempt in range(max(attempts, 1)):
            if attempt:
                self._sleep(self._lookup_backoff_s * 2 ** (attempt - 1))
            try:
                found = find_by_tag(kite.orders(), ctx.tag)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                last = describe(exc)
                if failure is KiteFailure.TOKEN:
                    halt_for_token(client, ctx.broker, last)
                    self._mark_unknown(ledger, held, last)
                    raise OrderOutcomeUnknown(
                        f"Kite refused the token while looking up order {ctx.tag}; "
                        f"{ctx.broker} is HALTED: run `alphapanda login`"
                    ) from None
                continue
            if found is not None:
                return found
            if not settle:
                return None
            last = "not listed"
        if last == "not listed":
            return None
        self._mark_unknown(ledger, held, last)
        raise OrderOutcomeUnknown(f"could not list Kite's orders to find order {ctx.tag}: {last}")

    def _attempt_day(self, record: ClaimRecord | None) -> date:
        """The IST day of `record`'s attempt (when it went unknown, or its lease began), or of now."""
        if record is None:
            at = self._wall()
        elif record.state == PLACING:
            at = record.lease_until - self.lease_s
        else:
            at = record.since
        return datetime.fromtimestamp(at, IST).date()

    def _mark_unknown(self, ledger: ClaimLedger, held: str | None, why: str) -> None:
        if held is not None:
            ledger.swap(held, ClaimRecord.unknown(self._wall(), why))

    def _await_change(self, ledger: ClaimLedger, raw: str | None, lease_until: float) -> None:
        """Another instance holds the lease: wait until it finishes or its lease runs out."""
        while self._wall() < lease_until:
            self._sleep(0.05)
            current, _ = ledger.read()
            if current != raw:
                return

    # -- outcomes ----------------------------------------------------------------------------

    def _refusal(self, ctx: OrderContext, event: Event, client: redis.Redis) -> str | None:
        signal = _validated(event).signal
        control = client.get(core_keys.control(ctx.broker))
        if control in (b"HALTED", "HALTED") and not signal.flatten:
            return f"broker {ctx.broker} is HALTED: the order was not sent to Kite"
        try:
            order_params(signal, tag=ctx.tag, market_protection=self._kite.market_protection)
        except NotPlaceable as exc:
            return str(exc)
        return None

    def _placed(
        self, ledger: ClaimLedger, held: str | None, event: Event, ctx: OrderContext, kite_order_id: str
    ) -> list[Event] | None:
        signal = _validated(event).signal
        submitted = OrderSubmitted(
            **order_fields(signal, ctx.order_id),
            signal_id=ctx.signal_id,
            order_type=signal.order_type,
            product=signal.product,
            validity=signal.validity,
            price=signal.limit_price,
            trigger_price=signal.trigger_price,
            broker_order_id=kite_order_id,
            submitted_at=self._clock(),
        )
        outputs = [event.child("submitted", submitted, source=_source(ctx.broker))]
        status = {"status": "submitted", "broker_order_id": kite_order_id}
        return self._finish(ledger, held, ctx, outputs, give_back=False, status=status)

    def _token_refused(
        self,
        ledger: ClaimLedger,
        held: str | None,
        event: Event,
        ctx: OrderContext,
        client: redis.Redis,
        why: str,
    ) -> list[Event] | None:
        halt_for_token(client, ctx.broker, why)
        message = (
            f"Kite session unusable for {ctx.broker} ({why}); {ctx.broker} is HALTED: run `alphapanda login`"
        )
        alert = Alert(
            kind="kite_session",
            severity=Severity.CRITICAL,
            message=message,
            details={"broker": ctx.broker, "signal_id": ctx.signal_id},
            raised_at=self._clock(),
        )
        outputs = [
            self._failed(event, ctx, message),
            event.child("alert", alert, source=_source(ctx.broker)),
        ]
        return self._finish(ledger, held, ctx, outputs, give_back=True)

    def _failed(self, event: Event, ctx: OrderContext, reason: str) -> Event:
        signal = _validated(event).signal
        failed = OrderFailed(**order_fields(signal, ctx.order_id), signal_id=ctx.signal_id, reason=reason)
        return event.child("failed", failed, source=_source(ctx.broker))

    def _finish(
        self,
        ledger: ClaimLedger,
        held: str | None,
        ctx: OrderContext,
        outputs: list[Event],
        *,
        give_back: bool,
        status: dict[str, str] | None = None,
    ) -> list[Event] | None:
        record = {"status": "failed" if give_back else "submitted", "signal": ctx.signal_id, "tag": ctx.tag}
        record |= status or {}
        reads: list[str] = []
        writes = None
        if give_back:
            # An order that never reached the market gives back what the risk manager reserved
            # and stops counting as open.
            reads = [
                *ledger_reads(ctx.broker, ctx.instrument_token, ctx.strategy),
                core_keys.quote(ctx.instrument_token),
            ]
            writes = partial(give_back_unfilled, ctx=ctx, unfilled=ctx.quantity)
        done = ledger.swap(
            held,
            ClaimRecord.done(outputs),
            aux=(core_keys.order(ctx.broker, ctx.order_id), json.dumps(record)),
            reads=reads,
            writes=writes,
        )
        return outputs if done is not None else None

    def _not_admitted(self, throttled: KiteThrottled) -> str:
        """Why an order the app's order-rate limit kept out for longer than an order waits failed.

        It fails, as Kite fails an order over its limit, rather than being retried until it is
        dead-lettered: a market order sent half a minute (or a day, past a daily cap) late is
        not the order the strategy asked for, and until it ended it would keep its risk
        reserved and count as open."""
        return (
            f"not placed: {throttled} (an order waits at most {self._rate_wait_max_s:g}s for it; "
            f"the limits are ALPHAPANDA_KITE__ORDERS_PER_SECOND, __ORDERS_PER_MINUTE, __ORDERS_PER_DAY)"
        )

    # -- clients -----------------------------------------------------------------------------

    def _client(self, access_token: str) -> Any:
        cached = self._client_cache
        if cached is None or cached[0] != access_token:
            cached = self._client_cache = (access_token, self._clients(access_token))
        return cached[1]

    def _limiter(self, client: redis.Redis) -> OrderRateLimiter:
        # Kite limits the app, not the broker: every broker placing through it shares the window.
        return OrderRateLimiter(
            client,
            self._app,
            self._kite.orders_per_second,
            self._kite.orders_per_minute,
            per_day=self._kite.orders_per_day,
            max_wait_s=self._rate_wait_max_s,
            sleep=self._sleep,
        )


class ZerodhaStageOnly:
    """What `TraderFactory` hands out for a Zerodha broker: live orders are placed by the
    `ZerodhaTrader` stage, which claims the signal before calling Kite; the pure `Trader` seam
    (decide, then commit) cannot do that safely, so it must never be used for them."""

    def __init__(self, broker: str) -> None:
        self.broker = broker

    def execute(self, signal: Signal, ids: OrderIds, quote: Quote | None) -> list[OrderEvent]:
        raise ZerodhaUnavailable(
            f"broker {self.broker!r}: orders go through ZerodhaTrader (Core.kind_stages), not TradingEngine"
        )


def give_back_unfilled(values: dict[str, str | None], *, ctx: OrderContext, unfilled: int) -> dict[str, str]:
    """The risk-ledger writes that end an order with `unfilled` of it never traded."""
    raw_quote = values.get(core_keys.quote(ctx.instrument_token))
    price = Quote.from_json(json.loads(raw_quote)).last_price if raw_quote else Decimal(ctx.reference_price)
    return release(
        values,
        ctx.broker,
        ctx.instrument_token,
        ctx.strategy,
        ctx.side.sign * unfilled,
        price,
        order_done=True,
    )


def _redis_of(store: StateStore) -> redis.Redis:
    client = getattr(store, "client", None)
    if not isinstance(client, redis.Redis):
        raise TypeError("ZerodhaTrader needs the Redis state store: its claims are shared by every instance")
    return client


def _validated(event: Event) -> SignalValidated:
    if not isinstance(event.data, SignalValidated):
        raise InvalidEvent(f"the trading engine accepts validated signals, not {event.type}")
    return event.data


def _source(broker: str) -> str:
    return source_of(Function.TRADING_ENGINE.value, broker)
