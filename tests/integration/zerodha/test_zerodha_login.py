"""`alphapanda login` and the login callback against the sandbox's session API; token in redis-server."""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlparse

import pytest
import redis
import requests
from kiteconnect import KiteConnect
from zerodha_env import API_KEY, API_SECRET, BROKER

from alphapanda import cli_zerodha
from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.session import (
    KiteSession,
    SessionExpired,
    SessionStore,
    halt_for_token,
    login_callback,
)
from alphapanda.config import KiteSettings
from alphapanda.events import IST
from alphapanda.kite_sandbox import KiteSandbox, SandboxConfig
from alphapanda.runtime.embedded import EmbeddedRedis
from alphapanda.state import keys as core_keys


def _cli(*argv: str) -> int | None:
    parser = argparse.ArgumentParser(prog="alphapanda")
    cli_zerodha.register(parser.add_subparsers(dest="command", required=True))
    return cli_zerodha.run(parser.parse_args(list(argv)))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sandbox: KiteSandbox, redis_server: EmbeddedRedis) -> None:
    for name, value in {
        "ALPHAPANDA_REDIS__URL": redis_server.url,
        "ALPHAPANDA_KITE__API_KEY": API_KEY,
        "ALPHAPANDA_KITE__API_SECRET": API_SECRET,
        "ALPHAPANDA_KITE__ROOT": sandbox.root,
        "ALPHAPANDA_KITE__WS_ROOT": sandbox.ws_root,
    }.items():
        monkeypatch.setenv(name, value)


def test_login_when_request_token_given_then_session_in_redis_until_six_ist_and_usable(
    env: None, sandbox: KiteSandbox, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _cli("login", sandbox.issue_request_token())

    out = capsys.readouterr()
    session = SessionStore(redis_client, BROKER).load()
    expires = session.expires_at.astimezone(IST)
    assert code == 0
    assert f"{sandbox.root}/connect/login?v=3&api_key={API_KEY}" in out.out
    assert (expires.hour, expires.minute) == (6, 0)
    assert timedelta(0) < expires - datetime.now(IST) <= timedelta(days=1)
    assert 0 < redis_client.ttl(keys.session(BROKER)) <= 24 * 3600
    kite = KiteConnect(API_KEY, access_token=session.access_token, root=sandbox.root)
    assert kite.profile()["user_id"] == session.user_id == "AB1234"
    assert session.access_token not in out.out + out.err and API_SECRET not in out.out + out.err


def test_login_when_redirect_url_pasted_at_the_prompt_then_its_request_token_is_used(
    env: None,
    sandbox: KiteSandbox,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = sandbox.issue_request_token()
    monkeypatch.setattr(
        "sys.stdin", io.StringIO(f"https://example.invalid/cb?status=success&request_token={token}\n")
    )

    assert _cli("login") == 0
    assert SessionStore(redis_client, BROKER).load().user_id == "AB1234"


def test_login_when_request_token_already_used_then_one_line_and_exit_1(
    env: None, sandbox: KiteSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    token = sandbox.issue_request_token()
    assert _cli("login", token) == 0
    capsys.readouterr()

    code = _cli("login", token)

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(
        "alphapanda: Kite refused the login (TokenException: Token is invalid or has expired.)"
    )
    assert err.count("\n") == 1


def test_login_when_redis_url_missing_then_exit_2_naming_the_setting(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ALPHAPANDA_REDIS__URL")

    assert _cli("login", "abc") == 2
    assert "ALPHAPANDA_REDIS__URL" in capsys.readouterr().err


def test_login_when_token_had_halted_the_broker_then_login_resumes_it_but_an_operator_halt_stays(
    env: None, sandbox: KiteSandbox, redis_client: redis.Redis
) -> None:
    halt_for_token(redis_client, BROKER, "TokenException")
    assert _cli("login", sandbox.issue_request_token()) == 0
    assert redis_client.get(core_keys.control(BROKER)) == b"ACTIVE"

    redis_client.set(core_keys.control(BROKER), "HALTED")
    assert _cli("login", sandbox.issue_request_token()) == 0
    assert redis_client.get(core_keys.control(BROKER)) == b"HALTED"


def test_login_callback_when_browser_is_redirected_with_a_request_token_then_session_stored(
    sandbox_config: SandboxConfig, redis_client: redis.Redis
) -> None:
    with KiteSandbox(
        API_KEY, API_SECRET, config=sandbox_config, redirect_url="https://ap.invalid/kite/callback"
    ) as sb:
        settings = KiteSettings(api_key=API_KEY, api_secret=API_SECRET, root=sb.root)  # type: ignore[arg-type]
        redirect = requests.get(sb.login_url, allow_redirects=False, timeout=5)
        query = dict(parse_qsl(urlparse(redirect.headers["location"]).query))

        answer = login_callback(query, settings, redis_client, BROKER)
        again = login_callback(query, settings, redis_client, BROKER)

    session = SessionStore(redis_client, BROKER).load()
    assert (redirect.status_code, answer.status) == (302, 200)
    assert answer.body.startswith("logged in as AB1234 for zerodha until ")
    assert session.access_token not in answer.body
    assert again.status == 403


@pytest.mark.parametrize(
    "query", [{"status": "cancelled", "request_token": "abc"}, {"status": "success"}, {"action": "login"}]
)
def test_login_callback_when_redirect_is_not_a_successful_login_then_400_and_nothing_stored(
    query: dict[str, str], redis_client: redis.Redis
) -> None:
    settings = KiteSettings(api_key=API_KEY, api_secret=API_SECRET)  # type: ignore[arg-type]

    assert login_callback(query, settings, redis_client, BROKER).status == 400
    assert redis_client.get(keys.session(BROKER)) is None


def test_load_when_session_is_past_its_expiry_then_error_names_alphapanda_login(
    redis_client: redis.Redis,
) -> None:
    at = datetime(2026, 1, 5, 9, 0, tzinfo=IST)
    session = KiteSession("token", "AB1234", at, datetime(2099, 1, 6, 6, 0, tzinfo=IST))
    redis_client.set(
        keys.session(BROKER), json.dumps({**json.loads(session.to_json()), "expires_at": at.isoformat()})
    )

    with pytest.raises(SessionExpired, match=r"expired at 2026-01-05 09:00 IST: run `alphapanda login`"):
        SessionStore(redis_client, BROKER).load()


def test_login_when_sandbox_flag_then_the_request_token_comes_from_the_sandbox_and_no_browser_is_needed(
    env: None, sandbox: KiteSandbox, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("login", "--sandbox") == 0

    out = capsys.readouterr().out
    session = SessionStore(redis_client, BROKER).load()
    assert KiteConnect(API_KEY, access_token=session.access_token, root=sandbox.root).profile()["user_id"]
    assert "/connect/login" not in out  # no login URL to visit
    assert f"logged in as {session.user_id} for {BROKER}" in out


@pytest.mark.parametrize(
    ("root", "request_token", "says"),
    [
        (
            "https://api.kite.trade",
            None,
            "--sandbox takes the request token from a Kite sandbox: set ALPHAPANDA_KITE__ROOT",
        ),
        ("{sandbox}", "abc", "give a request_token or --sandbox, not both"),
        ("http://127.0.0.1:{closed}", None, "no request token from the Kite sandbox at http://127.0.0.1:"),
    ],
    ids=["kite_own_root", "token_given_too", "nothing_listening"],
)
def test_login_when_sandbox_flag_cannot_work_then_one_line_and_no_session(
    env: None,
    sandbox: KiteSandbox,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    root: str,
    request_token: str | None,
    says: str,
) -> None:
    from alphapanda.runtime.embedded import free_port

    monkeypatch.setenv("ALPHAPANDA_KITE__ROOT", root.format(sandbox=sandbox.root, closed=free_port()))
    code = _cli("login", *([request_token] if request_token else []), "--sandbox")

    err = capsys.readouterr().err
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and says in err
    assert redis_client.get(keys.session(BROKER)) is None
