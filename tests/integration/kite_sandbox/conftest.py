from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kiteconnect import KiteConnect

from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig


@pytest.fixture
def fast_config() -> SandboxConfig:
    # Fast lifecycle and market clock keep the whole suite well under its time budget.
    return SandboxConfig(tick_interval=0.05, order_latency=0.005, heartbeat_interval=0.5)


@pytest.fixture
def sandbox(fast_config: SandboxConfig) -> Iterator[KiteSandbox]:
    with KiteSandbox("testkey", "testsecret", seed=7, config=fast_config) as running:
        yield running


@pytest.fixture
def kite(sandbox: KiteSandbox) -> Any:
    client = KiteConnect(sandbox.api_key, root=sandbox.root, disable_ssl=True)
    client.generate_session(sandbox.issue_request_token(), api_secret=sandbox.api_secret)
    return client
