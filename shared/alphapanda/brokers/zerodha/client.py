"""The official `kiteconnect` client, built one way everywhere.

`debug` stays off: with it on, the client logs every request including the
`Authorization: token api_key:access_token` header.
"""

from __future__ import annotations

from typing import Any

from kiteconnect import KiteConnect

from alphapanda.config import KiteSettings

DEFAULT_ROOT = "https://api.kite.trade"


def kite_client(settings: KiteSettings, access_token: str | None = None) -> Any:
    """A `KiteConnect` for `settings.root`, with the configured timeout and debug logging off."""
    if not settings.api_key:
        raise ValueError("ALPHAPANDA_KITE__API_KEY is not set")
    return KiteConnect(
        settings.api_key,
        access_token=access_token,
        root=settings.root,
        debug=False,
        timeout=settings.request_timeout_s,
    )


def login_url(settings: KiteSettings) -> str:
    """Where the user logs in. `KiteConnect.login_url` ignores `root`, so a sandbox root gets the
    sandbox's own login page instead of kite.zerodha.com."""
    if settings.root.rstrip("/") == DEFAULT_ROOT:
        url: str = kite_client(settings).login_url()
        return url
    return f"{settings.root.rstrip('/')}/connect/login?v=3&api_key={settings.api_key}"
