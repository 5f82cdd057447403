"""The risk ledger: what the risk manager has reserved, and how it is given back.

A validated signal reserves its quantity at once (before it fills), so N risk instances
racing on one limit see each other's reservations; an order that fails, is cancelled or
leaves an unfilled remainder gives its share back. These functions are pure: they turn the
ledger's current values into the writes a stage commits in its own transaction.

Per broker the ledger holds, for each instrument, the reserved net quantity and its notional
(|quantity| x price at the last change), their sum (gross exposure), each strategy's reserved
quantity and notional per instrument (against its capital allocation), and the number of open
orders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field
from decimal import Decimal

from alphapanda.domain.portfolio import keepable_sum, kept_total, sum_decimals
from alphapanda.immutable import immutable
from alphapanda.state import keys

ZERO = Decimal(0)
_NO_ENTRY = ("0", "0")
"""A strategy's [quantity, notional] for an instrument it holds nothing of."""


def ledger_reads(broker: str, token: int, strategy: str) -> list[str]:
    """The keys `reserve`/`release` need, to add to a stage's reads."""
    return [
        keys.risk_position(broker, token),
        keys.risk_notional(broker, token),
        keys.risk_gross(broker),
        keys.risk_strategy_notional(broker, strategy),
        keys.risk_open_orders(broker),
    ]


@immutable(slots=True)
class LedgerView:
    """The ledger values one signal touches, decoded."""

    position: int
    notional: Decimal
    gross: Decimal
    strategy_positions: dict[str, list[str]]
    """token -> [reserved quantity, notional] for the signal's strategy."""
    open_orders: int
    strategy_total: Decimal | None = field(default=None, compare=False)
    """The sum of the strategy's notionals, when known: kept up to date by `changed`, so a ledger
    held decoded across orders (the backtest) never re-sums every instrument per order. Only
    compared and formatted, never stored, so its exponent may differ from a fresh sum's."""

    @classmethod
    def read(cls, values: Mapping[str, str | None], broker: str, token: int, strategy: str) -> LedgerView:
        pos_key, notional_key, gross_key, strategy_key, open_key = ledger_reads(broker, token, strategy)
        raw_strategy = values.get(strategy_key)
        return cls(
            position=int(values.get(pos_key) or 0),
            notional=Decimal(values.get(notional_key) or 0),
            gross=Decimal(values.get(gross_key) or 0),
            strategy_positions=json.loads(raw_strategy) if raw_strategy else {},
            open_orders=int(values.get(open_key) or 0),
        )

    def strategy_exposure(self) -> Decimal:
        if self.strategy_total is not None:
            return self.strategy_total
        return sum_decimals([n for _q, n in self.strategy_positions.values()])

    def strategy_quantity(self, token: int) -> int:
        return int(self.strategy_positions.get(str(token), ["0", "0"])[0])

    def after(self, token: int, signed_quantity: int, price: Decimal) -> tuple[Decimal, Decimal]:
        """Gross exposure and the strategy's exposure if `signed_quantity` more were reserved at `price`."""
        new_notional = abs(self.position + signed_quantity) * price
        gross = self.gross - self.notional + new_notional
        # The strategy's entry for the instrument, looked up once: [quantity, notional] as text.
        entry = self.strategy_positions.get(str(token), _NO_ENTRY)
        old_strategy = Decimal(entry[1])
        new_strategy = abs(int(entry[0]) + signed_quantity) * price
        return gross, self.strategy_exposure() - old_strategy + new_strategy

    def reserved(self, token: int, signed_quantity: int, price: Decimal) -> LedgerView:
        """The ledger after reserving `signed_quantity` at `price`, with one more open order."""
        return self.changed(token, signed_quantity, price, +1)

    def released(self, token: int, signed_quantity: int, price: Decimal, *, order_done: bool) -> LedgerView:
        """The ledger after giving back `signed_quantity` (side sign x unfilled quantity); see `release`."""
        return self.changed(token, -signed_quantity, price, -1 if order_done else 0)

    def changed(self, token: int, signed_quantity: int, price: Decimal, open_orders_delta: int) -> LedgerView:
        """The ledger after `signed_quantity` more is reserved at `price` (negative: given back)."""
        position = self.position + signed_quantity
        notional = abs(position) * price
        key = str(token)
        strategy_positions = dict(self.strategy_positions)
        entry = strategy_positions.get(key, _NO_ENTRY)
        strategy_qty = int(entry[0]) + signed_quantity
        if strategy_qty == 0:
            strategy_positions.pop(key, None)
            new_entry_notional = ZERO
        else:
            new_entry_notional = abs(strategy_qty) * price
            strategy_positions[key] = [str(strategy_qty), str(new_entry_notional)]
        total = kept_total(self.strategy_total, Decimal(entry[1]), new_entry_notional)
        return LedgerView(
            position=position,
            notional=notional,
            gross=max(self.gross - self.notional + notional, ZERO),
            strategy_positions=strategy_positions,
            open_orders=max(self.open_orders + open_orders_delta, 0),
            strategy_total=total,
        )

    def with_total(self) -> LedgerView:
        """This ledger with `strategy_total` known if it can be kept (see `kept_total`): summed once, here."""
        if self.strategy_total is not None:
            return self
        return LedgerView(
            self.position,
            self.notional,
            self.gross,
            self.strategy_positions,
            self.open_orders,
            keepable_sum([n for _q, n in self.strategy_positions.values()]),
        )

    def writes(self, broker: str, token: int, strategy: str) -> dict[str, str]:
        """This ledger as the stored values of its keys (`ledger_reads`)."""
        pos_key, notional_key, gross_key, strategy_key, open_key = ledger_reads(broker, token, strategy)
        return {
            pos_key: str(self.position),
            notional_key: str(self.notional),
            gross_key: str(self.gross),
            strategy_key: json.dumps(self.strategy_positions, sort_keys=True),
            open_key: str(self.open_orders),
        }


def _change(
    values: Mapping[str, str | None],
    broker: str,
    token: int,
    strategy: str,
    signed_quantity: int,
    price: Decimal,
    open_orders_delta: int,
) -> dict[str, str]:
    # The typed path (LedgerView.reserved/released, which the backtest keeps in memory) and this
    # stored-string path are one computation: `changed`.
    view = LedgerView.read(values, broker, token, strategy)
    return view.changed(token, signed_quantity, price, open_orders_delta).writes(broker, token, strategy)


def reserve(
    values: Mapping[str, str | None],
    broker: str,
    token: int,
    strategy: str,
    signed_quantity: int,
    price: Decimal,
) -> dict[str, str]:
    """Writes that reserve `signed_quantity` at `price` and count one more open order."""
    return _change(values, broker, token, strategy, signed_quantity, price, +1)


def release(
    values: Mapping[str, str | None],
    broker: str,
    token: int,
    strategy: str,
    signed_quantity: int,
    price: Decimal,
    *,
    order_done: bool,
) -> dict[str, str]:
    """Writes that give back `signed_quantity` (side sign x unfilled quantity) of a reservation.

    With `order_done` the order also stops counting as open. Filled quantity is never released:
    it became a position, which the reservation goes on covering.
    """
    return _change(values, broker, token, strategy, -signed_quantity, price, -1 if order_done else 0)
