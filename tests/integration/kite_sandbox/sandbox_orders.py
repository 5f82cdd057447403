"""Placing an order through the real kiteconnect client, as the sandbox tests do."""

from __future__ import annotations

from typing import Any


def place(kite: Any, **overrides: Any) -> str:
    """Place a regular MIS order (MARKET BUY 1 INFY with auto market protection unless overridden)."""
    params: dict[str, Any] = {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": 1,
        "product": "MIS",
        "order_type": "MARKET",
        "market_protection": -1,
    }
    params.update(overrides)
    order_id: str = kite.place_order(**params)
    return order_id
