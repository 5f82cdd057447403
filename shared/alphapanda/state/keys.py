"""Redis key layout. Broker-scoped keys start with `{broker}:`, so brokers never share state."""

from __future__ import annotations


def quote(token: int) -> str:
    """The latest tick of an instrument (market data is broker-independent)."""
    return f"market:quote:{token}"


def indicator(strategy: str, token: int) -> str:
    return f"strategy:{strategy}:{token}"


def claim(owner: str, function: str, event_id: str) -> str:
    """Marks an input event as processed by `function` for `owner` (a broker, or `shared`)."""
    return f"{owner}:claim:{function}:{event_id}"


def risk_position(broker: str, token: int) -> str:
    """Net quantity reserved by the risk manager (validated signals) for an instrument."""
    return f"{broker}:risk:position:{token}"


def order(broker: str, order_id: str) -> str:
    return f"{broker}:order:{order_id}"


def book(broker: str, strategy: str) -> str:
    return f"{broker}:book:{strategy}"


def books_index(broker: str) -> str:
    """The set of strategies with a book on the broker, so readers need no SCAN."""
    return f"{broker}:books"


def account(broker: str) -> str:
    return f"{broker}:account"
