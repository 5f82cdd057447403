"""`TraderFactory`: the trader for a broker name (`paper`, `paper-replay` -> PaperTrader, ...)."""

from __future__ import annotations

from collections.abc import Mapping

from alphapanda.brokers.base import Trader
from alphapanda.brokers.paper import PaperTrader
from alphapanda.config import Settings
from alphapanda.domain.calendar import TradingCalendar, load_trading_calendar
from alphapanda.domain.charges import ChargeSchedule, load_charge_schedule
from alphapanda.domain.instruments import Instrument
from alphapanda.topics import broker_kind


class TraderUnavailable(RuntimeError):
    pass


class TraderFactory:
    def __init__(
        self,
        settings: Settings,
        instruments: Mapping[int, Instrument],
        *,
        charges: ChargeSchedule | None = None,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self._settings = settings
        self._instruments = instruments
        self._charges = charges
        self._calendar = calendar
        self._traders: dict[str, Trader] = {}

    def for_broker(self, broker: str) -> Trader:
        trader = self._traders.get(broker)
        if trader is None:
            trader = self._traders[broker] = self._build(broker)
        return trader

    def paper(self, broker: str) -> PaperTrader:
        """The paper trader of `broker`; raise `TraderUnavailable` if it is not a paper broker."""
        trader = self.for_broker(broker)
        if not isinstance(trader, PaperTrader):
            raise TraderUnavailable(f"broker {broker!r} is not a paper broker")
        return trader

    def _build(self, broker: str) -> Trader:
        kind = broker_kind(broker)
        if kind == "paper":
            # The charge table and the holiday list are read once and shared by every paper broker.
            if self._charges is None:
                self._charges = load_charge_schedule()
            if self._calendar is None:
                self._calendar = load_trading_calendar()
            config = self._settings.for_broker(broker)
            return PaperTrader(
                self._instruments,
                fills=config.fills,
                starting_cash=config.starting_cash,
                charges=self._charges,
                calendar=self._calendar,
            )
        if kind == "zerodha":
            # Live orders are placed by the ZerodhaTrader stage (Core.kind_stages), which claims
            # the signal before it calls Kite; this seam must never place them.
            from alphapanda.brokers.zerodha.trader import ZerodhaStageOnly

            return ZerodhaStageOnly(broker)
        raise TraderUnavailable(
            f"broker {broker!r}: live {kind} trading is not available yet; run with --brokers paper"
        )
