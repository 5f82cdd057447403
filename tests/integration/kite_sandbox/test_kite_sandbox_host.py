"""Where the sandbox listens: loopback by default, another address (a pod's 0.0.0.0) on request."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect

from alphapanda.kite_sandbox import KiteSandbox

API_SECRET = "sandbox_api_secret"


def _logs_in(root: str) -> bool:
    client: Any = KiteConnect("sandbox_api_key", root=root)
    try:
        token = requests.post(f"{root}/_sandbox/request_token", timeout=5).json()["request_token"]
    except requests.ConnectionError:
        return False
    return bool(client.generate_session(token, api_secret=API_SECRET)["access_token"])


def _at(root: str, address: str) -> str:
    scheme, rest = root.split("://")
    return f"{scheme}://{address}:{rest.rsplit(':', 1)[1]}"


@pytest.mark.parametrize(
    ("host", "root_host", "reachable", "unreachable"),
    [
        (None, "127.0.0.1", "127.0.0.1", "127.0.0.2"),
        ("127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1", "127.0.0.2", None),
    ],
    ids=["default_loopback_only", "one_address", "every_interface"],
)
def test_sandbox_when_host_given_then_it_answers_there_only_and_its_roots_name_a_reachable_address(
    host: str | None, root_host: str, reachable: str, unreachable: str | None
) -> None:
    with KiteSandbox() if host is None else KiteSandbox(host=host) as sandbox:
        assert sandbox.root.startswith(f"http://{root_host}:") and sandbox.ws_root.startswith(
            f"ws://{root_host}:"
        )
        assert _logs_in(sandbox.root)
        assert _logs_in(_at(sandbox.root, reachable))
        if unreachable is not None:
            assert not _logs_in(_at(sandbox.root, unreachable))
