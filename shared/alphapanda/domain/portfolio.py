"""Position and cash accounting for fills. All money is Decimal."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Collection
from dataclasses import field
from decimal import Decimal
from operator import itemgetter
from typing import Any

from alphapanda.events import Side
from alphapanda.immutable import immutable

ZERO = Decimal(0)
_PARSED: dict[str, Decimal] = {}


def sum_decimals(texts: Collection[str]) -> Decimal:
    """The sum of amounts stored as text, in order, from ZERO (as `sum(Decimal(t) ...)` gives).

    Books, accounts and ledgers store per-position amounts as text and every order sums all of
    them; the same texts recur from order to order, so each is parsed once (Decimal is
    immutable, so sharing the parsed value is safe) and the sum runs in C.
    """
    parsed = _PARSED
    try:
        return sum(map(parsed.__getitem__, texts), ZERO)
    except KeyError:
        if len(parsed) > 200_000:
            parsed.clear()
        for text in texts:
            if text not in parsed:
                parsed[text] = Decimal(text)
        return sum(map(parsed.__getitem__, texts), ZERO)


_KEPT_QUANTUM = Decimal("1e-12")
_KEPT_MAX_ADJUSTED = 11
_KEPT_TOTAL_MAX_ADJUSTED = 15


def _keepable(amount: Decimal) -> bool:
    """Whether `amount` can enter a kept total: below 10^12 rupees with at most 12 decimals.

    Then a total below 10^16 has at most 28 digits, so it is exact in the default context, as
    is every partial sum of a fresh `sum_decimals` over such amounts: both are the exact sum.
    """
    # The magnitude first: below 10^12 the quantize needs at most 24 digits and cannot fail;
    # equal after it means no digit past the 12th decimal (cheaper than reading `as_tuple()`).
    return amount.adjusted() <= _KEPT_MAX_ADJUSTED and amount.quantize(_KEPT_QUANTUM) == amount


def kept_total(total: Decimal | None, old: Decimal, new: Decimal) -> Decimal | None:
    """`total` after one of its amounts changes from `old` to `new`; None (sum afresh) if not known
    or if the result could differ from a fresh sum (an amount too long to add exactly)."""
    if total is None or not (_keepable(old) and _keepable(new)):
        return None
    result = total - old + new
    return result if result.adjusted() <= _KEPT_TOTAL_MAX_ADJUSTED else None


def keepable_sum(texts: Collection[str]) -> Decimal | None:
    """`sum_decimals(texts)` if every amount can enter a kept total, else None."""
    total = sum_decimals(texts)
    parsed = _PARSED
    if total.adjusted() <= _KEPT_TOTAL_MAX_ADJUSTED and all(
        _keepable(parsed[t]) if t in parsed else _keepable(Decimal(t)) for t in texts
    ):
        return total
    return None


@immutable(slots=True)
class Position:
    net_quantity: int = 0
    average_price: Decimal = ZERO
    realised_pnl: Decimal = ZERO
    product: str = "MIS"
    """The product of the fills that built the position (MIS is squared off intraday)."""
    cost: Decimal | None = field(default=None, compare=False)
    """What the open quantity cost, exactly, when `average_price` is not exact (a 28-digit
    quotient such as 302 / 3); None when the cost is exactly |net_quantity| x `average_price`.

    Realised PnL is taken from it, so a round trip realises exactly what it received less what
    it paid, however many fills built and closed it (see `apply_fill`). Not compared: two
    positions that differ only in it hold the same quantity at the same average."""

    @property
    def basis(self) -> Decimal:
        """What the open quantity cost (|net_quantity| x average price, exactly)."""
        return self.cost if self.cost is not None else self.average_price * abs(self.net_quantity)

    def unrealised_pnl(self, mark: Decimal) -> Decimal:
        q = self.net_quantity
        if self.cost is None:
            move = mark - self.average_price
            # Flat or unmoved is exactly 0 (a short times 0 would be Decimal's "-0").
            return move * q if move and q else ZERO
        # Marked against the exact cost: realised + unrealised is then exactly the cash the
        # fills moved plus the position's value at `mark`.
        pnl = mark * q - self.cost if q > 0 else mark * q + self.cost
        return pnl if pnl else ZERO

    def to_json(self) -> dict[str, Any]:
        raw = {
            "q": self.net_quantity,
            "avg": str(self.average_price),
            "rpnl": str(self.realised_pnl),
            "p": self.product,
        }
        if self.cost is not None:
            raw["cost"] = str(self.cost)
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Position:
        cost = raw.get("cost")
        return cls(
            raw["q"],
            Decimal(raw["avg"]),
            Decimal(raw["rpnl"]),
            raw.get("p", "MIS"),
            Decimal(cost) if cost is not None else None,
        )


def _cost_kept(cost: Decimal, average: Decimal, quantity: int) -> Decimal | None:
    """`cost` as `Position.cost` keeps it: None when the average prices it exactly."""
    # One rounding, of average x quantity - cost: 0 only if the product is exactly the cost
    # (a product rounded to 28 digits could equal it for an inexact average).
    return None if not average.fma(abs(quantity), -cost) else cost


def _share(cost: Decimal, closed: int, held: int) -> Decimal:
    """The part of `cost` (of `held` units) that `closed` of them carry away, to 10^-12 rupee.

    Rounded to a fixed quantum so that what stays (`cost` less the share) is exact: the shares
    of a position closed in parts then add up to exactly what it cost."""
    share = cost * closed / held
    return share.quantize(_KEPT_QUANTUM) if share.adjusted() <= _KEPT_TOTAL_MAX_ADJUSTED else share


_ONE = Decimal(1)


def _tidy(amount: Decimal) -> Decimal:
    """`amount` without the trailing zeros a share's 12 decimals leave (0E-12 -> 0, 1.500000 -> 1.5)."""
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or exponent >= -2:
        return amount
    tidy = amount.normalize()
    return tidy.quantize(_ONE) if tidy == tidy.to_integral_value() else tidy


def apply_fill(position: Position, side: Side, quantity: int, price: Decimal) -> Position:
    """Return the position after a fill: weighted average on adds, realised PnL on reductions.

    A fill that crosses through flat closes the old position at `price` and opens the rest on
    the other side at `price`. A reduction realises the fill's value less the cost of the part
    closed, so a position closed (in one fill or many) realises exactly what it received less
    what it paid, even when its average price is a rounded quotient.
    """
    signed = side.sign * quantity
    q = position.net_quantity
    if q == 0 or (q > 0) == (signed > 0):
        new_q = q + signed
        cost = position.basis + price * quantity
        avg = cost / abs(new_q)
        return Position(new_q, avg, position.realised_pnl, position.product, _cost_kept(cost, avg, new_q))
    closed = min(abs(q), quantity)
    direction = 1 if q > 0 else -1
    new_q = q + signed
    remaining: Decimal | None = None
    if position.cost is None:
        # The average is exact: so is (price - average) x closed.
        realised = position.realised_pnl + (price - position.average_price) * closed * direction
    else:
        share = position.cost if closed == abs(q) else _share(position.cost, closed, abs(q))
        remaining = position.cost - share
        realised = _tidy(position.realised_pnl + (price * closed - share) * direction)
    if new_q == 0:
        return Position(0, ZERO, realised, position.product)
    if (new_q > 0) == (q > 0):
        kept = None if remaining is None else _cost_kept(remaining, position.average_price, new_q)
        return Position(new_q, position.average_price, realised, position.product, kept)
    return Position(new_q, price, realised, position.product)


_token: Callable[[tuple[int, Position]], int] = itemgetter(0)
"""The token of a (token, position) slot: the key `bisect_left` searches by. A C-level getter,
since a bisect calls it at every step and a book is searched several times per fill."""


@immutable(slots=True)
class Book:
    """One strategy's account on one broker: cash, charges, trade count and its positions."""

    cash: Decimal
    charges_paid: Decimal = ZERO
    trade_count: int = 0
    positions: tuple[tuple[int, Position], ...] = ()
    """(token, position), sorted by token."""

    def position(self, token: int) -> Position:
        positions = self.positions
        # `positions` is sorted by token (see `with_fill`): a binary search, not a scan.
        i = bisect_left(positions, token, key=_token)
        if i < len(positions) and positions[i][0] == token:
            return positions[i][1]
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
        if product is not None and product != new_pos.product:
            # Built directly (not `dataclasses.replace`, slow on this per-fill path).
            new_pos = Position(
                new_pos.net_quantity, new_pos.average_price, new_pos.realised_pnl, product, new_pos.cost
            )
        positions = self.positions
        i = bisect_left(positions, token, key=_token)
        # Kept sorted by token: the slot of `token` is replaced, or a new one inserted in order.
        after = i + 1 if i < len(positions) and positions[i][0] == token else i
        cash = self.cash - side.sign * price * quantity - charges
        return Book(
            cash=cash,
            charges_paid=self.charges_paid + charges,
            trade_count=self.trade_count + 1,
            positions=(*positions[:i], (token, new_pos), *positions[after:]),
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
