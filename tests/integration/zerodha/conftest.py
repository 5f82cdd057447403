"""Zerodha tests run the official kiteconnect client against the local Kite sandbox, with a real
redis-server (and the real Tansu broker where events must flow)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kiteconnect import KiteConnect
from zerodha_env import API_KEY, API_SECRET, BROKER

from alphapanda.brokers.zerodha.session import complete_login
from alphapanda.brokers.zerodha.trader import ZerodhaTrader
from alphapanda.config import KiteSettings
from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
from alphapanda.runtime.embedded import EmbeddedRedis
from alphapanda.state.store import RedisStateStore


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    # A fast lifecycle and market clock keep the suite well inside its time budget.
    return SandboxConfig(tick_interval=0.05, order_latency=0.005, heartbeat_interval=0.5)


@pytest.fixture
def sandbox(sandbox_config: SandboxConfig) -> Iterator[KiteSandbox]:
    with KiteSandbox(API_KEY, API_SECRET, seed=7, config=sandbox_config) as running:
        yield running


@pytest.fixture
def kite_settings(sandbox: KiteSandbox) -> KiteSettings:
    return KiteSettings(
        api_key=API_KEY,
        api_secret=API_SECRET,  # type: ignore[arg-type]
        root=sandbox.root,
        ws_root=sandbox.ws_root,
        request_timeout_s=2.0,
    )


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> RedisStateStore:
    return RedisStateStore(redis_client, 3600)


@pytest.fixture
def access_token(sandbox: KiteSandbox, kite_settings: KiteSettings, redis_client: redis.Redis) -> str:
    """Log in the way `alphapanda login` does: the token ends up in Redis."""
    result = complete_login(sandbox.issue_request_token(), kite_settings, redis_client, BROKER)
    return result.session.access_token


@pytest.fixture
def kite(sandbox: KiteSandbox, access_token: str) -> Any:
    """A client of our own, to look at the sandbox the way Kite's users would."""
    return KiteConnect(API_KEY, access_token=access_token, root=sandbox.root, disable_ssl=True)


@pytest.fixture
def trader(kite_settings: KiteSettings) -> ZerodhaTrader:
    return ZerodhaTrader(
        frozenset({BROKER}),
        kite_settings,
        claim_ttl_s=3600,
        throttle_backoff_s=0.02,
        lookup_backoff_s=0.02,
    )
