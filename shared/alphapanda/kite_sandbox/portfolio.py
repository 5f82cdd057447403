"""Positions, holdings and margins derived from the sandbox's fills (all Decimal)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .instruments import Instrument


@dataclass(frozen=True, slots=True)
class Holding:
    """A delivery holding the account starts the day with (CNC sells draw on it)."""

    instrument: Instrument
    quantity: int
    average_price: Decimal
    isin: str = ""


@dataclass(slots=True)
class Position:
    instrument: Instrument
    product: str
    buy_quantity: int = 0
    buy_value: Decimal = Decimal(0)
    sell_quantity: int = 0
    sell_value: Decimal = Decimal(0)

    @property
    def quantity(self) -> int:
        return self.buy_quantity - self.sell_quantity

    @property
    def buy_price(self) -> Decimal:
        return _ratio(self.buy_value, self.buy_quantity)

    @property
    def sell_price(self) -> Decimal:
        return _ratio(self.sell_value, self.sell_quantity)

    @property
    def average_price(self) -> Decimal:
        if self.quantity > 0:
            return self.buy_price
        if self.quantity < 0:
            return self.sell_price
        return Decimal(0)

    def pnl(self, last_price: Decimal) -> Decimal:
        return (self.sell_value - self.buy_value) + self.quantity * last_price

    def unrealised(self, last_price: Decimal) -> Decimal:
        return self.quantity * (last_price - self.average_price)

    def render(self, last_price: Decimal, close_price: Decimal) -> dict[str, Any]:
        item = self.instrument
        pnl = self.pnl(last_price)
        unrealised = _money(self.unrealised(last_price))
        return {
            "tradingsymbol": item.tradingsymbol,
            "exchange": item.exchange,
            "instrument_token": item.instrument_token,
            "product": self.product,
            "quantity": self.quantity,
            "overnight_quantity": 0,
            "multiplier": 1,
            "average_price": self.average_price,
            "close_price": close_price,
            "last_price": last_price,
            "value": _money(self.sell_value - self.buy_value),
            "pnl": _money(pnl),
            "m2m": _money(pnl),
            "unrealised": unrealised,
            "realised": _money(pnl) - unrealised,
            "buy_quantity": self.buy_quantity,
            "buy_price": self.buy_price,
            "buy_value": _money(self.buy_value),
            "buy_m2m": _money(self.buy_value),
            "sell_quantity": self.sell_quantity,
            "sell_price": self.sell_price,
            "sell_value": _money(self.sell_value),
            "sell_m2m": _money(self.sell_value),
            "day_buy_quantity": self.buy_quantity,
            "day_buy_price": self.buy_price,
            "day_buy_value": _money(self.buy_value),
            "day_sell_quantity": self.sell_quantity,
            "day_sell_price": self.sell_price,
            "day_sell_value": _money(self.sell_value),
        }


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    order_id: str
    exchange_order_id: str
    instrument: Instrument
    product: str
    transaction_type: str
    quantity: int
    price: Decimal
    fill_timestamp: datetime
    order_timestamp: datetime

    def render(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "order_id": self.order_id,
            "exchange": self.instrument.exchange,
            "tradingsymbol": self.instrument.tradingsymbol,
            "instrument_token": self.instrument.instrument_token,
            "product": self.product,
            "average_price": self.price,
            "quantity": self.quantity,
            "exchange_order_id": self.exchange_order_id,
            "transaction_type": self.transaction_type,
            "fill_timestamp": self.fill_timestamp,
            "order_timestamp": self.order_timestamp,
            "exchange_timestamp": self.fill_timestamp,
        }


def _ratio(value: Decimal, quantity: int) -> Decimal:
    if not quantity:
        return Decimal(0)
    return (value / quantity).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class Portfolio:
    def __init__(
        self, holdings: Iterable[Holding], opening_cash: Decimal, margin_rates: Mapping[str, Decimal]
    ):
        self._holdings = {h.instrument.instrument_token: h for h in holdings}
        self._positions: dict[tuple[int, str], Position] = {}
        self._opening_cash = opening_cash
        self._margin_rates = margin_rates

    def apply_fill(
        self, instrument: Instrument, product: str, is_buy: bool, quantity: int, price: Decimal
    ) -> None:
        key = (instrument.instrument_token, product)
        position = self._positions.get(key)
        if position is None:
            position = self._positions[key] = Position(instrument, product)
        if is_buy:
            position.buy_quantity += quantity
            position.buy_value += price * quantity
        else:
            position.sell_quantity += quantity
            position.sell_value += price * quantity

    def position_quantity(self, instrument: Instrument, product: str) -> int:
        position = self._positions.get((instrument.instrument_token, product))
        return position.quantity if position else 0

    def holding_quantity(self, instrument: Instrument) -> int:
        holding = self._holdings.get(instrument.instrument_token)
        return holding.quantity if holding else 0

    def margin_rate(self, product: str) -> Decimal:
        return self._margin_rates.get(product, Decimal(1))

    def positions(
        self, prices: Callable[[Instrument], tuple[Decimal, Decimal]]
    ) -> dict[str, list[dict[str, Any]]]:
        rendered = [p.render(*prices(p.instrument)) for p in self._positions.values()]
        # No overnight carry in the sandbox, so every position is also a day position.
        return {"net": rendered, "day": [dict(row) for row in rendered]}

    def holdings(self, prices: Callable[[Instrument], tuple[Decimal, Decimal]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for holding in self._holdings.values():
            last_price, close_price = prices(holding.instrument)
            sold_today = -min(0, self.position_quantity(holding.instrument, "CNC"))
            day_change = last_price - close_price
            rows.append(
                {
                    "tradingsymbol": holding.instrument.tradingsymbol,
                    "exchange": holding.instrument.exchange,
                    "instrument_token": holding.instrument.instrument_token,
                    "isin": holding.isin,
                    "product": "CNC",
                    "price": 0,
                    "quantity": holding.quantity,
                    "used_quantity": min(sold_today, holding.quantity),
                    "t1_quantity": 0,
                    "realised_quantity": holding.quantity,
                    "authorised_quantity": 0,
                    "authorised_date": None,
                    "opening_quantity": holding.quantity,
                    "collateral_quantity": 0,
                    "collateral_type": "",
                    "discrepancy": False,
                    "average_price": holding.average_price,
                    "last_price": last_price,
                    "close_price": close_price,
                    "pnl": _money((last_price - holding.average_price) * holding.quantity),
                    "day_change": day_change,
                    "day_change_percentage": _money(day_change * 100 / close_price) if close_price else 0,
                }
            )
        return rows

    def realised(self, prices: Callable[[Instrument], tuple[Decimal, Decimal]]) -> tuple[Decimal, Decimal]:
        realised = Decimal(0)
        unrealised = Decimal(0)
        for position in self._positions.values():
            last_price, _ = prices(position.instrument)
            u = position.unrealised(last_price)
            unrealised += u
            realised += position.pnl(last_price) - u
        return realised, unrealised

    def position_margin(self) -> Decimal:
        return sum(
            (
                abs(p.quantity) * p.average_price * self.margin_rate(p.product)
                for p in self._positions.values()
            ),
            Decimal(0),
        )

    def margins(
        self,
        prices: Callable[[Instrument], tuple[Decimal, Decimal]],
        order_margin: Decimal,
    ) -> dict[str, Any]:
        realised, unrealised = self.realised(prices)
        debits = _money(self.position_margin() + order_margin)
        net = _money(self._opening_cash - debits + realised)
        available: dict[str, Any] = {
            "adhoc_margin": 0,
            "cash": self._opening_cash,
            "opening_balance": self._opening_cash,
            "live_balance": net,
            "collateral": 0,
            "intraday_payin": 0,
        }
        utilised: dict[str, Any] = {
            "debits": debits,
            "exposure": 0,
            "m2m_realised": _money(realised),
            "m2m_unrealised": _money(unrealised),
            "option_premium": 0,
            "payout": 0,
            "span": 0,
            "holding_sales": 0,
            "turnover": 0,
            "liquid_collateral": 0,
            "stock_collateral": 0,
            "delivery": 0,
        }
        equity = {"enabled": True, "net": net, "available": available, "utilised": utilised}
        commodity = {
            "enabled": False,
            "net": 0,
            "available": dict.fromkeys(available, 0),
            "utilised": dict.fromkeys(utilised, 0),
        }
        return {"equity": equity, "commodity": commodity}

    def available_margin(
        self, prices: Callable[[Instrument], tuple[Decimal, Decimal]], order_margin: Decimal
    ) -> Decimal:
        realised, _ = self.realised(prices)
        return self._opening_cash - self.position_margin() - order_margin + realised
