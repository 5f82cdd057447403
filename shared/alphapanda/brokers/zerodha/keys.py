"""Redis keys of the Zerodha (Kite Connect) adapter.

Broker-scoped keys start with `{broker}:` like every other broker key (state/keys.py), so a
second Zerodha broker never shares a session or a claim with the first. The order-rate windows
are the Kite app's (per api_key), because that is what Kite limits. The instrument master is
market reference data, broker-independent like `market:quote:*`.
"""

from __future__ import annotations

import hashlib

from alphapanda.state import keys as core_keys

TRADING_ENGINE = "trading_engine"
ORDER_UPDATES = "order_updates"


def session(broker: str) -> str:
    """The Kite access token and its expiry (JSON); Redis drops it at expiry."""
    return f"{broker}:kite:session"


def token_halt(broker: str) -> str:
    """Present while the broker is HALTED because Kite refused its token: a login lifts that halt."""
    return f"{broker}:kite:token_halt"


def signal_claim(broker: str, signal_id: str) -> str:
    """The trading engine's claim on a signal: placing, outcome unknown, or done (with outputs)."""
    return core_keys.claim(broker, TRADING_ENGINE, signal_id)


def order_context(broker: str, tag: str) -> str:
    """What an order update needs to become our events (strategy, ids, correlation), by Kite tag."""
    return f"{broker}:kite:tag:{tag}"


def order_progress(broker: str, kite_order_id: str) -> str:
    """How much of a Kite order we have already turned into fills (quantity and value)."""
    return f"{broker}:kite:progress:{kite_order_id}"


def update_claim(broker: str, kite_order_id: str, filled_quantity: int, status: str) -> str:
    """One order update, processed once: Kite may send the same postback again."""
    part = f"{kite_order_id}:{filled_quantity}:{status.replace(' ', '_')}"
    return core_keys.claim(broker, ORDER_UPDATES, part)


def kite_app(api_key: str) -> str:
    """A short stable name for the Kite app behind `api_key` (the key itself stays out of Redis)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def order_rate(app: str, window: str) -> str:
    """Sliding window of order placements (sorted set of timestamps) of one Kite app.

    Kite and SEBI count orders per app (api_key), not per broker name: every zerodha-kind broker
    of a deployment places through the one configured app, so all of them, on every instance,
    draw from the same windows.
    """
    return f"kite:app:{app}:orders:{window}"


INSTRUMENTS = "market:instruments"
"""Hash: instrument token -> JSON record from Kite's instrument dump."""
INSTRUMENTS_BY_SYMBOL = "market:instruments:by_symbol"
"""Hash: `EXCHANGE:TRADINGSYMBOL` -> instrument token."""
INSTRUMENTS_SYNCED_AT = "market:instruments:synced_at"
