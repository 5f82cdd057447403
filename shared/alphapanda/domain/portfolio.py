"""Position and cash accounting for fills. All money is Decimal."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from alphapanda.events import Side

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Position:
    net_quantity: int = 0
    average_price: Decimal = ZERO
    realised_pnl: Decimal = ZERO
    product: str = "MIS"
    """The product of the fills that built the position (MIS is squared off intraday)."""

    def unrealised_pnl(self, mark: Decimal) -> Decimal:
        move = mark - self.average_price
        # Flat or unmoved is exactly 0 (a short times 0 would be Decimal's "-0").
        return move * self.net_quantity if move and self.net_quantity else ZERO

    def to_json(self) -> dict[str, Any]:
        return {
            "q": self.net_quantity,
            "avg": str(self.average_price),
            "rpnl": str(self.realised_pnl),
            "p": self.product,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Position:
        return cls(raw["q"], Decimal(raw["avg"]), Decimal(raw["rpnl"]), raw.get("p", "MIS"))


def apply_fill(position: Position, side: Side, quantity: int, price: Decimal) -> Position:
    """Return the position after a fill: weighted average on adds, realised PnL on reductions.

    A fill that crosses through flat closes the old position at `price` and opens the rest on
    the other side at `price`.
    """
    signed = side.sign * quantity
    q = position.net_quantity
    if q == 0 or (q > 0) == (signed > 0):
        new_q = q + signed
        avg = (position.average_price * abs(q) + price * quantity) / abs(new_q)
        return Position(new_q, avg, position.realised_pnl, position.product)
    closed = min(abs(q), quantity)
    direction = 1 if q > 0 else -1
    realised = position.realised_pnl + (price - position.average_price) * closed * direction
    new_q = q + signed
    if new_q == 0:
        return Position(0, ZERO, realised, position.product)
    if (new_q > 0) == (q > 0):
        return Position(new_q, position.average_price, realised, position.product)
    return Position(new_q, price, realised, position.product)


@dataclass(frozen=True, slots=True)
class Book:
    """One strategy's account on one broker: cash, charges, trade count and its positions."""

    cash: Decimal
    charges_paid: Decimal = ZERO
    trade_count: int = 0
    positions: tuple[tuple[int, Position], ...] = ()

    def position(self, token: int) -> Position:
        for t, pos in self.positions:
            if t == token:
                return pos
        return Position()

    def with_fill(
        self,
        token: int,
        side: Side,
        quantity: int,
        price: Decimal,
        charges: Decimal = ZERO,
        product: str | None = None,
    ) -> Book:
        """Apply one fill: cash moves by the traded value and the charges, the position updates."""
        new_pos = apply_fill(self.position(token), side, quantity, price)
        if product is not None:
            new_pos = replace(new_pos, product=product)
        others = tuple((t, p) for t, p in self.positions if t != token)
        cash = self.cash - side.sign * price * quantity - charges
        return Book(
            cash=cash,
            charges_paid=self.charges_paid + charges,
            trade_count=self.trade_count + 1,
            positions=tuple(sorted((*others, (token, new_pos)))),
        )

    @property
    def realised_pnl(self) -> Decimal:
        return sum((p.realised_pnl for _, p in self.positions), ZERO)

    def to_json(self) -> dict[str, Any]:
        return {
            "cash": str(self.cash),
            "charges": str(self.charges_paid),
            "trades": self.trade_count,
            "positions": {str(t): p.to_json() for t, p in self.positions},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Book:
        return cls(
            cash=Decimal(raw["cash"]),
            charges_paid=Decimal(raw["charges"]),
            trade_count=int(raw["trades"]),
            positions=tuple(sorted((int(t), Position.from_json(p)) for t, p in raw["positions"].items())),
        )
