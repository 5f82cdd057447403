"""Charges on live Zerodha fills, estimated by the same charges engine the paper broker pays.

Kite reports fills without charges: Zerodha's contract note, at the end of the day, is the final
word. Until then a live fill carries the charges the shipped schedule gives for its order (the
same rates, rounding and per-order brokerage cap as a paper fill), so that a live broker's PnL
is net of charges like a paper broker's and the two can be compared side by side. Kite's virtual
contract note API would cost a rate-limited call per fill on the update path; the schedule is
the same table the paper broker is tested against.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from alphapanda.domain.charges import ChargeRates, ChargeSchedule, load_charge_schedule, segment_for
from alphapanda.domain.instruments import Instrument

log = logging.getLogger(__name__)

ZERODHA_CHARGES = "zerodha"
"""The schedule's broker name for Zerodha's own rates (`charges.yaml` entries)."""


class LiveChargeRates:
    """The rates in force for a live order, by its instrument, product and trading day."""

    def __init__(self, schedule: ChargeSchedule, instruments: Iterable[Instrument]) -> None:
        self._schedule = schedule
        self._types = {i.instrument_token: i.instrument_type for i in instruments}
        self._warned: set[tuple[int, str]] = set()

    @classmethod
    def shipped(cls, instruments: Iterable[Instrument]) -> LiveChargeRates:
        """On the shipped schedule (shared/alphapanda/data/charges.yaml)."""
        return cls(load_charge_schedule(), instruments)

    def for_order(
        self, instrument_token: int, exchange: str, product: str, at: datetime
    ) -> ChargeRates | None:
        """The rates for a fill at `at`, or None (logged once per instrument and product) when
        the instrument is not in the list or the schedule prices no such order: the fill then
        carries no charges rather than made-up ones."""
        instrument_type = self._types.get(instrument_token)
        try:
            if instrument_type is None:
                raise LookupError(f"instrument {instrument_token} is not in the instrument list")
            return self._schedule.rates_on(
                at, segment_for(product, instrument_type), exchange, broker=ZERODHA_CHARGES
            )
        except (LookupError, ValueError) as exc:
            if (instrument_token, product) not in self._warned:
                self._warned.add((instrument_token, product))
                log.warning(
                    "live fills of %s (%s) carry no charge estimate: %s", instrument_token, product, exc
                )
            return None
