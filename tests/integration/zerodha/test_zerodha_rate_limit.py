"""The shared order-rate limit: one Lua sliding window in a real redis-server for every instance."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from alphapanda.brokers.zerodha.errors import KiteThrottled
from alphapanda.brokers.zerodha.rate_limit import OrderRateLimiter
from alphapanda.runtime.embedded import EmbeddedRedis


def test_acquire_when_three_instances_share_redis_then_no_second_ever_holds_more_than_the_limit(
    redis_server: EmbeddedRedis,
) -> None:
    limiters = [
        OrderRateLimiter(redis.Redis.from_url(redis_server.url), "zerodha", per_second=5, per_minute=200)
        for _ in range(3)
    ]
    admitted: list[float] = []
    lock = threading.Lock()

    def place(limiter: OrderRateLimiter) -> None:
        for _ in range(5):
            limiter.acquire()
            with lock:
                admitted.append(time.monotonic())

    threads = [threading.Thread(target=place, args=(limiter,)) for limiter in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    admitted.sort()
    assert len(admitted) == 15
    # Any 6 admissions span at least a second (a little slack for the client's own timing).
    assert min(admitted[i + 5] - admitted[i] for i in range(len(admitted) - 5)) > 0.95
    assert admitted[-1] - admitted[0] > 1.9


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
