"""One order-rate limit per Kite app, shared by every instance and broker through Redis.

Kite (and, from April 2026, SEBI's retail-algo rules) allow 10 orders/s and 200 orders/min per
app (Kite Connect docs; `KiteSettings` refuses higher limits); a daily cap is unverified, so
it is optional (`ALPHAPANDA_KITE__ORDERS_PER_DAY`). Every trading-engine
instance, and every zerodha-kind broker placing through the same app, draws from the same
sliding windows, kept as sorted sets of admission times and changed by one Lua script, so two
instances can never both take the last slot. Time comes from Redis (`TIME`), not from the
instances, so their clock skew does not matter.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.errors import KiteThrottled

# KEYS: one sorted set per window. ARGV: limit and window (ms) per key, then a unique member.
# Returns 0 when admitted (recorded in every window), else the milliseconds until a slot frees.
_ADMIT = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local until_free = tonumber(oldest[2]) + window - now
    if until_free > wait then wait = until_free end
  end
end
if wait > 0 then return wait end
local member = now .. ':' .. ARGV[#ARGV]
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i]))
end
return 0
"""


class OrderRateLimiter:
    """`acquire()` before every order placement; it waits for a free slot, up to `max_wait_s`.

    `app` names the Kite app (`keys.kite_app(api_key)`); `per_day`, if given, adds a sliding
    24-hour window, which never admits more than `per_day` orders in any calendar day either.
    """

    def __init__(
        self,
        client: redis.Redis,
        app: str,
        per_second: int,
        per_minute: int,
        *,
        per_day: int | None = None,
        max_wait_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0 or per_minute <= 0 or (per_day is not None and per_day <= 0):
            raise ValueError("order rate limits must be positive")
        self._redis = client
        self._keys = [keys.order_rate(app, "second"), keys.order_rate(app, "minute")]
        self._limits = [per_second, 1000, per_minute, 60_000]
        if per_day is not None:
            self._keys.append(keys.order_rate(app, "day"))
            self._limits += [per_day, 86_400_000]
        self._max_wait_s = max_wait_s
        self._sleep = sleep
        self._script = client.register_script(_ADMIT)

    def try_acquire(self) -> float:
        """Take a slot if one is free and return 0, else return the seconds until one frees."""
        wait_ms = int(self._script(keys=self._keys, args=[*self._limits, uuid.uuid4().hex]))
        return wait_ms / 1000

    def acquire(self) -> None:
        """Take a slot, waiting as needed; raise `KiteThrottled` if that would take too long."""
        waited = 0.0
        while True:
            wait = self.try_acquire()
            if wait == 0:
                return
            if waited + wait > self._max_wait_s:
                raise KiteThrottled(f"the Kite app's order-rate limit is full for the next {wait:.1f}s")
            self._sleep(wait)
            waited += wait
