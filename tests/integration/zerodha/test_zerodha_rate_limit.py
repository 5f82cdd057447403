"""The shared order-rate limit: one Lua sliding window in a real redis-server for every instance,
and three ZerodhaTrader instances placing real orders in the Kite sandbox under it."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest
import redis
from kiteconnect import KiteConnect
from zerodha_env import API_KEY, BROKER, SBIN, validated

from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.errors import KiteThrottled
from alphapanda.brokers.zerodha.rate_limit import OrderRateLimiter
from alphapanda.brokers.zerodha.session import complete_login
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.config import KiteSettings
from alphapanda.events import OrderFailed, OrderSubmitted
from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
from alphapanda.runtime.embedded import EmbeddedRedis
from alphapanda.state import keys as core_keys
from alphapanda.state.store import RedisStateStore


def test_acquire_when_three_instances_share_redis_then_no_second_ever_holds_more_than_the_limit(
    redis_server: EmbeddedRedis,
) -> None:
    limiters = [
        OrderRateLimiter(redis.Redis.from_url(redis_server.url), "zerodha", per_second=5, per_minute=200)
        for _ in range(3)
    ]

    def place(limiter: OrderRateLimiter) -> None:
        for _ in range(5):
            limiter.acquire()

    threads = [threading.Thread(target=place, args=(limiter,)) for limiter in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    admitted = _admissions(redis_server, "zerodha")
    assert len(admitted) == 15
    # Any 6 admissions span at least a second; 15 at 5 a second take two.
    assert min(admitted[i + 5] - admitted[i] for i in range(len(admitted) - 5)) >= 1000
    assert admitted[-1] - admitted[0] >= 2000


def test_acquire_when_minute_budget_is_spent_then_wait_is_the_rest_of_the_minute_and_acquire_gives_up(
    redis_server: EmbeddedRedis,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    limiter = OrderRateLimiter(client, "zerodha", per_second=100, per_minute=3, max_wait_s=0.5)
    for _ in range(3):
        limiter.acquire()

    wait = limiter.try_acquire()

    assert 59 < wait <= 60
    with pytest.raises(KiteThrottled):
        limiter.acquire()
    assert OrderRateLimiter(client, "zerodha-b", per_second=100, per_minute=3).try_acquire() == 0


def _admissions(redis_server: EmbeddedRedis, app: str) -> list[float]:
    """The limiter's own record of the app's admissions in its minute window, in Redis time (ms).

    What the rate is asserted on, not the callers' clocks: a thread the loaded machine holds up
    between its admission and noting the time (or making its HTTP call) would bunch those
    without any admission breaking the rate.
    """
    client = redis.Redis.from_url(redis_server.url)
    return sorted(score for _, score in client.zrange(keys.order_rate(app, "minute"), 0, -1, withscores=True))


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    # Kite's own limit in the sandbox is twice the deployment's. Not less: a full second's burst
    # admitted at the end of one window and the next at the start of the following one may
    # arrive at Kite within one second of each other once the network jitters.
    return SandboxConfig(tick_interval=None, order_latency=0.005, order_rate_per_second=6)


class _RecordingKite(KiteConnect):  # type: ignore[misc]
    """The official client, noting when each accepted placement started and any 429 from Kite."""

    calls: ClassVar[list[float]] = []
    throttled: ClassVar[list[str]] = []
    lock = threading.Lock()

    def place_order(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            order_id = super().place_order(*args, **kwargs)
        except Exception as exc:
            # A dropped connection is retried by the trader (after a lookup); only 429s matter here.
            if "429" in str(exc) or "Too many" in str(exc):
                with self.lock:
                    self.throttled.append(str(exc))
            raise
        with self.lock:
            self.calls.append(started)
        return order_id


def test_handle_when_three_traders_place_at_once_then_the_deployment_rate_holds_and_kite_never_throttles(
    sandbox: KiteSandbox, kite_settings: KiteSettings, access_token: str, redis_server: EmbeddedRedis
) -> None:
    settings = kite_settings.model_copy(update={"orders_per_second": 3, "orders_per_minute": 200})
    _RecordingKite.calls, _RecordingKite.throttled = [], []

    def client(token: str) -> Any:
        return _RecordingKite(API_KEY, access_token=token, root=sandbox.root, disable_ssl=True)

    traders = [
        ZerodhaTrader(frozenset({BROKER}), settings, clients=client, throttle_backoff_s=0.02)
        for _ in range(3)
    ]
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def place(n: int, trader: ZerodhaTrader) -> None:
        # Each trader with its own Redis connection, as three pods would have.
        store = RedisStateStore(redis.Redis.from_url(redis_server.url), 3600)
        start.wait()
        for i in range(3):
            try:
                trader.handle(validated(f"rate-{n}-{i}"), store)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=place, args=(n, t)) for n, t in enumerate(traders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert failures == []
    assert len(sandbox.orders()) == 9 and len(_RecordingKite.calls) == 9
    assert _RecordingKite.throttled == []
    # Any 4 admissions span at least a second.
    admitted = _admissions(redis_server, keys.kite_app(API_KEY))
    assert len(admitted) == 9
    assert min(admitted[i + 3] - admitted[i] for i in range(len(admitted) - 3)) >= 1000


def test_handle_when_two_zerodha_brokers_place_through_one_kite_app_then_they_share_its_order_rate(
    sandbox: KiteSandbox, kite_settings: KiteSettings, access_token: str, redis_server: EmbeddedRedis
) -> None:
    # facts.md line 160 ("strict 10 orders/s") and line 166 ("order placement 10 r/s, ... 200
    # orders/min"): Kite counts per app (api_key). Every zerodha-kind broker of a deployment
    # places through the one configured app (settings.kite), so they draw from one window.
    other = "zerodha-b"
    complete_login(
        sandbox.issue_request_token(), kite_settings, redis.Redis.from_url(redis_server.url), other
    )
    settings = kite_settings.model_copy(update={"orders_per_second": 3, "orders_per_minute": 200})
    _RecordingKite.calls, _RecordingKite.throttled = [], []

    def client(token: str) -> Any:
        return _RecordingKite(API_KEY, access_token=token, root=sandbox.root, disable_ssl=True)

    trader = ZerodhaTrader(frozenset({BROKER, other}), settings, clients=client, throttle_backoff_s=0.02)
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def place(broker: str) -> None:
        store = RedisStateStore(redis.Redis.from_url(redis_server.url), 3600)
        start.wait()
        for i in range(3):
            try:
                trader.handle(validated(f"app-{broker}-{i}", broker=broker), store)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=place, args=(b,)) for b in (BROKER, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert failures == []
    assert len(sandbox.orders()) == 6 and len(_RecordingKite.calls) == 6
    # Any 4 admissions to the app span at least a second, whichever broker placed them.
    admitted = _admissions(redis_server, keys.kite_app(API_KEY))
    assert len(admitted) == 6
    assert min(admitted[i + 3] - admitted[i] for i in range(len(admitted) - 3)) >= 1000


def test_acquire_when_daily_cap_configured_then_refused_once_spent_and_until_the_day_is_over(
    redis_server: EmbeddedRedis,
) -> None:
    # facts.md line 166: "Daily order cap unverified (third-party says 5000/day)": configurable.
    client = redis.Redis.from_url(redis_server.url)
    limiter = OrderRateLimiter(client, "daily-app", per_second=100, per_minute=100, per_day=2, max_wait_s=0.2)
    limiter.acquire()
    limiter.acquire()

    wait = limiter.try_acquire()

    assert 86_000 < wait <= 86_400
    with pytest.raises(KiteThrottled):
        limiter.acquire()
    # Without a daily cap (the default) only the second and minute windows apply.
    assert OrderRateLimiter(client, "daily-app-2", per_second=100, per_minute=100).try_acquire() == 0


def test_handle_when_the_apps_order_rate_stays_full_then_the_order_fails_and_gives_back_its_risk(
    sandbox: KiteSandbox, kite_settings: KiteSettings, access_token: str, redis_server: EmbeddedRedis
) -> None:
    # Before: KiteThrottled, retried by the delivery layer until the validated signal was
    # dead-lettered, with its risk still reserved and its order still counted as open.
    settings = kite_settings.model_copy(update={"orders_per_second": 10, "orders_per_minute": 2})
    client = redis.Redis.from_url(redis_server.url)
    store = RedisStateStore(client, 3600)
    trader = ZerodhaTrader(frozenset({BROKER}), settings, rate_wait_max_s=0.2)
    for i in range(2):
        (submitted,) = trader.handle(validated(f"full-{i}"), store)
        assert isinstance(submitted.data, OrderSubmitted)
    # What the risk manager reserved for the third signal (3 shares, one open order).
    client.set(core_keys.risk_position(BROKER, SBIN), "3")
    client.set(core_keys.risk_open_orders(BROKER), "1")

    started = time.monotonic()
    (failed,) = trader.handle(validated("full-2"), store)

    assert time.monotonic() - started < 5  # it waited its 0.2 s, not the rest of the minute
    assert isinstance(failed.data, OrderFailed)
    assert failed.data.reason.startswith(
        "not placed: the Kite app's order-rate limit is full for the next "
    ), failed.data.reason
    assert "an order waits at most 0.2s for it" in failed.data.reason
    assert failed.topic == "zerodha.orders.failed"
    assert len(sandbox.orders()) == 2
    assert client.get(core_keys.risk_position(BROKER, SBIN)) == b"0"
    assert client.get(core_keys.risk_open_orders(BROKER)) == b"0"
    # The same event again (a redelivery): the same failure, nothing placed or given back twice.
    (again,) = trader.handle(validated("full-2"), store)
    assert again.id == failed.id
    assert len(sandbox.orders()) == 2
    assert client.get(core_keys.risk_open_orders(BROKER)) == b"0"
