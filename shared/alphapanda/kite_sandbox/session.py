"""Login state: request tokens, access tokens, the checksum check and token expiry."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from ._common import IST, Clock, KiteError, token_error


def session_checksum(api_key: str, request_token: str, api_secret: str) -> str:
    return hashlib.sha256(f"{api_key}{request_token}{api_secret}".encode()).hexdigest()


@dataclass(slots=True)
class AccessToken:
    token: str
    issued_at: datetime
    expires_at: datetime | None
    revoked: bool = False


def next_expiry(issued_at: datetime, hour: int) -> datetime:
    """Kite access tokens lapse at `hour`:00 IST on the following morning (06:00 by regulation)."""
    local = issued_at.astimezone(IST)
    cutoff = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    return cutoff if cutoff > local else cutoff + timedelta(days=1)


class SessionStore:
    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        clock: Clock,
        request_token_ttl: float,
        expiry_hour: int | None,
    ) -> None:
        self.api_key = api_key
        self._api_secret = api_secret
        self._clock = clock
        self._request_token_ttl = request_token_ttl
        self._expiry_hour = expiry_hour
        self._lock = threading.Lock()
        self._request_tokens: dict[str, float] = {}
        self._access_tokens: dict[str, AccessToken] = {}

    def issue_request_token(self) -> str:
        token = secrets.token_hex(16)
        with self._lock:
            self._request_tokens[token] = time.monotonic() + self._request_token_ttl
        return token

    def issue_access_token(self) -> AccessToken:
        now = self._clock()
        expires = None if self._expiry_hour is None else next_expiry(now, self._expiry_hour)
        record = AccessToken(secrets.token_hex(16), now, expires)
        with self._lock:
            self._access_tokens[record.token] = record
        return record

    def exchange(self, api_key: str, request_token: str, checksum: str) -> AccessToken:
        """`POST /session/token`: swap a single-use request token for an access token."""
        if api_key != self.api_key:
            raise token_error("Invalid `api_key`.")
        with self._lock:
            deadline = self._request_tokens.get(request_token)
            if deadline is None or deadline < time.monotonic():
                raise token_error("Token is invalid or has expired.")
            if not secrets.compare_digest(
                checksum, session_checksum(api_key, request_token, self._api_secret)
            ):
                raise token_error("Invalid `checksum`.")
            del self._request_tokens[request_token]
        return self.issue_access_token()

    def authenticate(self, authorization: str | None) -> AccessToken:
        """Check `Authorization: token api_key:access_token`; raises 403 TokenException."""
        if not authorization or not authorization.startswith("token "):
            raise token_error()
        api_key, _, access_token = authorization[len("token ") :].partition(":")
        return self.check(api_key, access_token)

    def check(self, api_key: str | None, access_token: str | None) -> AccessToken:
        if api_key != self.api_key or not access_token:
            raise token_error()
        with self._lock:
            record = self._access_tokens.get(access_token)
        if record is None or record.revoked:
            raise token_error()
        if record.expires_at is not None and self._clock() >= record.expires_at:
            raise token_error()
        return record

    def is_valid(self, api_key: str | None, access_token: str | None) -> bool:
        try:
            self.check(api_key, access_token)
        except KiteError:
            return False
        return True

    def revoke(self, access_token: str | None = None) -> int:
        """Invalidate one access token, or all of them; returns how many were live."""
        with self._lock:
            targets = (
                list(self._access_tokens.values())
                if access_token is None
                else [t for t in (self._access_tokens.get(access_token),) if t is not None]
            )
            live = [t for t in targets if not t.revoked]
            for record in live:
                record.revoked = True
        return len(live)
