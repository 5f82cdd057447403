"""The Kite login and the access token in Redis.

A person logs in once a trading day: the browser login hands a single-use `request_token`
to the redirect URL, `generate_session` swaps it for an access token, and the token is kept
in Redis until it lapses at 06:00 IST. Every Zerodha stage reads it from there, so one login
serves every instance. The token is never logged, printed or put in an event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import redis

from alphapanda.brokers.zerodha import keys
from alphapanda.brokers.zerodha.client import kite_client
from alphapanda.brokers.zerodha.errors import classify, describe
from alphapanda.config import KiteSettings
from alphapanda.events import IST, now
from alphapanda.state import keys as core_keys

log = logging.getLogger(__name__)

TOKEN_EXPIRY_HOUR = 6
"""Kite access tokens lapse at 06:00 IST the next morning (a regulatory requirement)."""

LOGIN_HINT = "run `alphapanda login`"


class SessionError(RuntimeError):
    """No usable Kite session; the message names the broker and how to fix it."""


class SessionMissing(SessionError):
    pass


class SessionExpired(SessionError):
    pass


class LoginFailed(RuntimeError):
    """Kite refused to exchange the request token (used, expired, or the wrong app)."""


def token_expiry(logged_in_at: datetime, hour: int = TOKEN_EXPIRY_HOUR) -> datetime:
    """The first `hour`:00 IST strictly after `logged_in_at`."""
    local = logged_in_at.astimezone(IST)
    cutoff = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    return cutoff if cutoff > local else cutoff + timedelta(days=1)


@dataclass(frozen=True)
class KiteSession:
    access_token: str = field(repr=False)
    user_id: str
    logged_in_at: datetime
    expires_at: datetime

    def to_json(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "user_id": self.user_id,
                "logged_in_at": self.logged_in_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> KiteSession:
        data = json.loads(raw)
        return cls(
            access_token=str(data["access_token"]),
            user_id=str(data["user_id"]),
            logged_in_at=datetime.fromisoformat(data["logged_in_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )


class SessionStore:
    """The broker's Kite session in Redis (`{broker}:kite:session`)."""

    def __init__(self, client: redis.Redis, broker: str, clock: Callable[[], datetime] = now) -> None:
        self._redis = client
        self.broker = broker
        self._clock = clock

    def save(self, session: KiteSession) -> None:
        # Redis forgets the token when Kite does, so a stale token cannot outlive its day.
        expires = int(session.expires_at.timestamp())
        self._redis.set(keys.session(self.broker), session.to_json(), exat=expires)

    def load(self) -> KiteSession:
        """The current session; raise `SessionError` naming `alphapanda login` if there is none."""
        raw = self._redis.get(keys.session(self.broker))
        if raw is None:
            raise SessionMissing(f"no Kite session for broker {self.broker}: {LOGIN_HINT}")
        session = KiteSession.from_json(raw)
        if self._clock() >= session.expires_at:
            raise SessionExpired(
                f"the Kite session for broker {self.broker} expired at "
                f"{session.expires_at.astimezone(IST):%Y-%m-%d %H:%M} IST: {LOGIN_HINT}"
            )
        return session

    def access_token(self) -> str:
        return self.load().access_token

    def clear(self) -> None:
        self._redis.delete(keys.session(self.broker))


def request_token_from(text: str) -> str:
    """Accept the bare request token, or the whole redirect URL the browser landed on."""
    text = text.strip()
    if "request_token=" in text:
        values = parse_qs(urlparse(text).query or text.split("?", 1)[-1]).get("request_token")
        if values and values[0]:
            return values[0].strip()
    if not text or not text.isalnum():
        raise LoginFailed("that is not a request token: paste the `request_token` value or the redirect URL")
    return text


# Lifts a halt only if the token caused it: a halt an operator set stays until they lift it.
_RESUME = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[2])
  if redis.call('GET', KEYS[1]) == 'HALTED' then
    redis.call('SET', KEYS[1], 'ACTIVE')
    return 1
  end
end
return 0
"""

_HALT = """
redis.call('SET', KEYS[1], 'HALTED')
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


def halt_for_token(client: redis.Redis, broker: str, reason: str) -> None:
    """Set the broker's kill switch to HALTED, remembering that the token was the cause."""
    client.eval(_HALT, 2, core_keys.control(broker), keys.token_halt(broker), reason)


def resume_after_login(client: redis.Redis, broker: str) -> bool:
    """Lift a halt that a refused token caused; return whether the broker was resumed."""
    return bool(client.eval(_RESUME, 2, core_keys.control(broker), keys.token_halt(broker)))


@dataclass(frozen=True)
class LoginResult:
    session: KiteSession
    resumed: bool


def complete_login(
    request_token: str,
    settings: KiteSettings,
    client: redis.Redis,
    broker: str,
    *,
    clock: Callable[[], datetime] = now,
    kite: Any = None,
) -> LoginResult:
    """Exchange `request_token` with Kite, store the session and lift a token halt."""
    secret = settings.api_secret.get_secret_value()
    if not settings.api_key or not secret:
        raise SessionError("ALPHAPANDA_KITE__API_KEY and ALPHAPANDA_KITE__API_SECRET must be set to log in")
    kite = kite if kite is not None else kite_client(settings)
    try:
        data = kite.generate_session(request_token_from(request_token), api_secret=secret)
    except Exception as exc:
        if classify(exc) is None:
            raise
        raise LoginFailed(f"Kite refused the login ({describe(exc)}); log in again for a new token") from None
    at = clock()
    session = KiteSession(
        access_token=str(data["access_token"]),
        user_id=str(data.get("user_id") or ""),
        logged_in_at=at,
        expires_at=token_expiry(at),
    )
    SessionStore(client, broker, clock).save(session)
    resumed = resume_after_login(client, broker)
    log.info("Kite session stored for %s (user %s) until %s", broker, session.user_id, session.expires_at)
    return LoginResult(session, resumed)


@dataclass(frozen=True)
class CallbackResponse:
    status: int
    body: str


def login_callback(
    query: Mapping[str, str],
    settings: KiteSettings,
    client: redis.Redis,
    broker: str,
    *,
    clock: Callable[[], datetime] = now,
) -> CallbackResponse:
    """Handle Kite's redirect after a browser login (`?status=success&request_token=...`).

    Meant for the API function's callback route: it answers with a status and a short text
    that never contains the token.
    """
    if query.get("status", "success") != "success":
        return CallbackResponse(400, f"Kite login did not succeed (status {query.get('status')!r})")
    token = query.get("request_token", "")
    if not token:
        return CallbackResponse(400, "the redirect carries no request_token")
    try:
        result = complete_login(token, settings, client, broker, clock=clock)
    except (LoginFailed, SessionError) as exc:
        return CallbackResponse(403, str(exc))
    until = result.session.expires_at.astimezone(IST)
    resumed = f"; {broker} resumed trading" if result.resumed else ""
    return CallbackResponse(
        200, f"logged in as {result.session.user_id} for {broker} until {until:%Y-%m-%d %H:%M} IST{resumed}"
    )
