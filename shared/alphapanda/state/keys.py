"""Redis key layout. Broker-scoped keys start with `{broker}:`, so brokers never share state."""

from __future__ import annotations


def _scoped(scope: str | None, key: str) -> str:
    return key if scope is None else f"{scope}:{key}"


def quote(token: int, scope: str | None = None) -> str:
    """The latest tick of an instrument. Live market data is broker-independent (scope None); a
    replay keeps its own under the replay broker's scope (`topics.market_scope`)."""
    return _scoped(scope, f"market:quote:{token}")


def symbol(token: int, scope: str | None = None) -> str:
    """`EXCHANGE:SYMBOL` of an instrument, as the last tick named it."""
    return _scoped(scope, f"market:symbol:{token}")


def indicator(strategy: str, token: int, scope: str | None = None) -> str:
    """A strategy's indicator state on an instrument, per market scope (live or one replay)."""
    return _scoped(scope, f"strategy:{strategy}:{token}")


def strategy_failures(strategy: str, token: int, scope: str | None = None) -> str:
    """How many ticks in a row a user's strategy has failed on an instrument (0 once it trades
    again): what spaces out its `strategy_error` alerts."""
    return _scoped(scope, f"strategy:{strategy}:{token}:failures")


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
    """The broker account as the portfolio manager last computed it: cash, margin used, funds available."""
    return f"{broker}:account"


def control(broker: str) -> str:
    """The kill switch: ACTIVE, REDUCING or HALTED (absent means ACTIVE)."""
    return f"{broker}:control:state"


def risk_open_orders(broker: str) -> str:
    """Orders validated by risk and not yet finished (filled, failed or cancelled)."""
    return f"{broker}:risk:open_orders"


def risk_gross(broker: str) -> str:
    """Reserved gross exposure of the broker, in rupees (sum of `risk_notional` over instruments)."""
    return f"{broker}:risk:gross"


def risk_notional(broker: str, token: int) -> str:
    """Reserved |position| x price of one instrument, as last reserved."""
    return f"{broker}:risk:notional:{token}"


def risk_strategy_notional(broker: str, strategy: str) -> str:
    """Reserved exposure of one strategy (JSON: token -> rupees), against its capital allocation."""
    return f"{broker}:risk:strategy:{strategy}"


def risk_trades(broker: str, strategy: str, day: str) -> str:
    """Orders a strategy sent on one trading day (YYYY-MM-DD, IST)."""
    return f"{broker}:risk:trades:{strategy}:{day}"


def risk_last_signal(broker: str, strategy: str, token: int) -> str:
    """The last validated signal of a strategy on an instrument, for duplicate suppression."""
    return f"{broker}:risk:last:{strategy}:{token}"


def day_pnl(broker: str, day: str) -> str:
    """Realised + unrealised PnL of the broker for one trading day, as last marked."""
    return f"{broker}:pnl:day:{day}"


def resting_orders(broker: str, token: int) -> str:
    """Paper orders resting on an instrument (LIMIT, SL, SL-M, unfilled DAY remainders)."""
    return f"{broker}:resting:{token}"


def margin_resting(broker: str) -> str:
    """Rupees of margin blocked by the paper broker's resting orders (not yet in the account)."""
    return f"{broker}:margin:resting"


def paper_market(broker: str, token: int) -> str:
    """The last tick the paper order matcher saw for an instrument, with its depth (JSON)."""
    return f"{broker}:paper:market:{token}"


def square_off_done(broker: str, token: int, day: str) -> str:
    """Set once the MIS positions in an instrument were squared off on a trading day (YYYY-MM-DD)."""
    return f"{broker}:squareoff:{day}:{token}"
