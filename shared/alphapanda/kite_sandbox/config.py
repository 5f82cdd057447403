"""Tunable behaviour of the sandbox. Defaults follow Kite's documented limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal


def _default_margin_rates() -> Mapping[str, Decimal]:
    # Illustrative: delivery is fully paid, intraday and F&O block a fraction of the order value.
    return {"CNC": Decimal(1), "MTF": Decimal("0.5"), "MIS": Decimal("0.2"), "NRML": Decimal("0.15")}


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything about the sandbox that a test may want to change.

    Rate limits are per api_key; `None` switches a limit off. The defaults are Kite's documented
    ones (Kite Connect docs): quote 1 r/s, order placement 10 r/s and 200/min, every other
    endpoint 10 r/s. Kite's daily order cap is unverified (a third party says 5000/day), so
    `order_rate_per_day` is off unless set. `tick_interval=None` stops the background market
    clock (prices then move only through `step_market` / `set_price`).
    """

    user_id: str = "AB1234"
    user_name: str = "Sandbox User"
    user_shortname: str = "Sandbox"
    email: str = "sandbox@example.invalid"
    app_id: int = 1

    order_rate_per_second: int | None = 10
    order_rate_per_minute: int | None = 200
    order_rate_per_day: int | None = None
    quote_rate_per_second: int | None = 1
    other_rate_per_second: int | None = 10

    tick_interval: float | None = 0.25
    heartbeat_interval: float = 1.0
    random_walk: bool = True
    volatility: Decimal = Decimal("0.0005")

    order_latency: float = 0.02
    fill_quantity_cap: int | None = None
    opening_cash: Decimal = Decimal(1_000_000)
    margin_rates: Mapping[str, Decimal] = field(default_factory=_default_margin_rates)

    tag_max_length: int = 20
    max_modifications: int = 25

    max_ws_connections: int = 3
    max_ws_instruments: int = 3000

    request_token_ttl: float = 300.0
    token_expiry_hour: int | None = 6

    postback_transient_statuses: bool = False
    postback_timeout: float = 5.0
