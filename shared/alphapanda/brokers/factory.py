"""`TraderFactory`: the trader for a broker name (`paper`, `paper-replay` -> PaperTrader, ...)."""

from __future__ import annotations

from collections.abc import Mapping

from alphapanda.brokers.base import Trader
from alphapanda.brokers.paper import PaperTrader
from alphapanda.config import Settings
from alphapanda.domain.instruments import Instrument
from alphapanda.topics import broker_kind


class TraderUnavailable(RuntimeError):
    pass


class TraderFactory:
    def __init__(self, settings: Settings, instruments: Mapping[int, Instrument]) -> None:
        self._settings = settings
        self._instruments = instruments
        self._traders: dict[str, Trader] = {}

    def for_broker(self, broker: str) -> Trader:
        trader = self._traders.get(broker)
        if trader is None:
            trader = self._traders[broker] = self._build(broker)
        return trader

    def _build(self, broker: str) -> Trader:
        kind = broker_kind(broker)
        if kind == "paper":
            config = self._settings.for_broker(broker)
            return PaperTrader(config.slippage_bps, self._instruments, fill_quote=config.fill_quote)
        raise TraderUnavailable(
            f"broker {broker!r}: live {kind} trading is not available yet; run with --brokers paper"
        )
