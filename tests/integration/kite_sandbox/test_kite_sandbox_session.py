from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from alphapanda.kite_sandbox import IST, KiteSandbox, SandboxConfig

API_KEY = "testkey"
API_SECRET = "testsecret"


class SteppingClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


def test_generate_session_when_checksum_matches_then_token_is_set_and_profile_loads(
    sandbox: KiteSandbox,
) -> None:
    client: Any = KiteConnect(API_KEY, root=sandbox.root, disable_ssl=True)

    session = client.generate_session(sandbox.issue_request_token(), api_secret=API_SECRET)

    assert client.access_token == session["access_token"]
    assert isinstance(session["login_time"], dt.datetime)
    assert session["user_id"] == client.profile()["user_id"] == "AB1234"
    assert client.margins()["equity"]["available"]["cash"] == 1_000_000


def test_generate_session_when_checksum_is_wrong_then_token_exception(sandbox: KiteSandbox) -> None:
    client: Any = KiteConnect(API_KEY, root=sandbox.root, disable_ssl=True)

    with pytest.raises(kex.TokenException) as raised:
        client.generate_session(sandbox.issue_request_token(), api_secret="not-the-secret")

    assert raised.value.code == 403
    assert "checksum" in str(raised.value)


def test_generate_session_when_request_token_is_reused_then_token_exception(sandbox: KiteSandbox) -> None:
    client: Any = KiteConnect(API_KEY, root=sandbox.root, disable_ssl=True)
    request_token = sandbox.issue_request_token()
    client.generate_session(request_token, api_secret=API_SECRET)

    with pytest.raises(kex.TokenException):
        client.generate_session(request_token, api_secret=API_SECRET)


def test_api_call_when_token_expired_on_demand_then_token_exception_and_expiry_hook_fires(
    sandbox: KiteSandbox, kite: Any
) -> None:
    hook_calls: list[bool] = []
    kite.set_session_expiry_hook(lambda: hook_calls.append(True))
    kite.orders()

    sandbox.expire_token()

    with pytest.raises(kex.TokenException) as raised:
        kite.orders()
    assert raised.value.code == 403
    assert hook_calls == [True]


def test_api_call_when_authorization_header_missing_then_token_exception(sandbox: KiteSandbox) -> None:
    client: Any = KiteConnect(API_KEY, root=sandbox.root, disable_ssl=True)

    with pytest.raises(kex.TokenException):
        client.positions()


def test_invalidate_access_token_when_logged_out_then_later_calls_fail(kite: Any) -> None:
    assert kite.invalidate_access_token() is True

    with pytest.raises(kex.TokenException):
        kite.profile()


@pytest.fixture
def clocked() -> Iterator[tuple[KiteSandbox, SteppingClock]]:
    clock = SteppingClock(dt.datetime(2026, 4, 6, 9, 30, tzinfo=IST))
    with KiteSandbox(API_KEY, API_SECRET, clock=clock, config=SandboxConfig(tick_interval=None)) as running:
        yield running, clock


def test_api_call_when_clock_passes_six_am_ist_next_day_then_token_exception(
    clocked: tuple[KiteSandbox, SteppingClock],
) -> None:
    sandbox, clock = clocked
    client: Any = KiteConnect(API_KEY, root=sandbox.root, disable_ssl=True)
    client.generate_session(sandbox.issue_request_token(), api_secret=API_SECRET)

    clock.now = dt.datetime(2026, 4, 7, 5, 59, 59, tzinfo=IST)
    client.profile()
    clock.now = dt.datetime(2026, 4, 7, 6, 0, tzinfo=IST)

    with pytest.raises(kex.TokenException):
        client.profile()


def test_login_url_when_opened_then_issues_a_request_token_that_generates_a_session(
    fast_config: SandboxConfig,
) -> None:
    # The real client's login_url() ignores `root`, so the sandbox exposes its own login endpoint.
    with KiteSandbox(
        API_KEY, API_SECRET, config=fast_config, redirect_url="http://127.0.0.1:9/callback"
    ) as sandbox:
        answer = requests.get(sandbox.login_url, allow_redirects=False, timeout=5)
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert location.startswith("http://127.0.0.1:9/callback?")
        request_token = dict(p.split("=", 1) for p in location.split("?", 1)[1].split("&"))["request_token"]

        client: Any = KiteConnect(API_KEY, root=sandbox.root, disable_ssl=True)
        assert client.generate_session(request_token, api_secret=API_SECRET)["access_token"]
