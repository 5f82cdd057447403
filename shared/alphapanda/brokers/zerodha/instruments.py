"""The instrument master: Kite's daily instrument dump, kept in Redis by token and by symbol.

Kite regenerates the dump once a day (F&O contracts come and go, tick and lot sizes change),
so it is synced, not shipped. A sync replaces the whole master in one transaction: readers see
yesterday's or today's, never a mixture, and expired contracts disappear.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import redis

from alphapanda.brokers.zerodha import keys
from alphapanda.events import now


@dataclass(frozen=True, slots=True)
class InstrumentRecord:
    instrument_token: int
    tradingsymbol: str
    name: str
    exchange: str
    segment: str
    instrument_type: str
    lot_size: int
    tick_size: Decimal
    expiry: date | None
    strike: Decimal

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def asset_class(self) -> str:
        return "fno" if self.instrument_type in ("FUT", "CE", "PE") else "equity"

    @classmethod
    def from_kite(cls, row: Mapping[str, Any]) -> InstrumentRecord:
        """One row of `KiteConnect.instruments()` (the client already parsed numbers and dates)."""
        expiry = row.get("expiry")
        return cls(
            instrument_token=int(row["instrument_token"]),
            tradingsymbol=str(row["tradingsymbol"]),
            name=str(row.get("name") or ""),
            exchange=str(row["exchange"]),
            segment=str(row.get("segment") or ""),
            instrument_type=str(row.get("instrument_type") or ""),
            lot_size=int(row.get("lot_size") or 1),
            # Floats from the CSV parser: str() restores the decimal text Kite wrote (0.05).
            tick_size=Decimal(str(row.get("tick_size") or 0)),
            expiry=expiry if isinstance(expiry, date) else None,
            strike=Decimal(str(row.get("strike") or 0)),
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["tick_size"] = str(self.tick_size)
        data["strike"] = str(self.strike)
        data["expiry"] = self.expiry.isoformat() if self.expiry else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> InstrumentRecord:
        data = json.loads(raw)
        data["tick_size"] = Decimal(data["tick_size"])
        data["strike"] = Decimal(data["strike"])
        data["expiry"] = date.fromisoformat(data["expiry"]) if data["expiry"] else None
        return cls(**data)


class InstrumentMaster:
    """Read and replace the master in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def replace(self, records: Iterable[InstrumentRecord], at: datetime | None = None) -> int:
        items = list(records)
        # dict[Any, Any]: redis-py's hset wants a Mapping invariant in a wide key union.
        by_token: dict[Any, Any] = {str(r.instrument_token): r.to_json() for r in items}
        by_symbol: dict[Any, Any] = {r.key: str(r.instrument_token) for r in items}
        staging = (keys.INSTRUMENTS + ":staging", keys.INSTRUMENTS_BY_SYMBOL + ":staging")
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*staging)
            if by_token:
                pipe.hset(staging[0], mapping=by_token)
                pipe.hset(staging[1], mapping=by_symbol)
                pipe.rename(staging[0], keys.INSTRUMENTS)
                pipe.rename(staging[1], keys.INSTRUMENTS_BY_SYMBOL)
            else:
                pipe.delete(keys.INSTRUMENTS, keys.INSTRUMENTS_BY_SYMBOL)
            pipe.set(keys.INSTRUMENTS_SYNCED_AT, (at or now()).isoformat())
            pipe.execute()
        return len(by_token)

    def get(self, token: int) -> InstrumentRecord | None:
        raw = self._redis.hget(keys.INSTRUMENTS, str(token))
        return None if raw is None else InstrumentRecord.from_json(raw)

    def by_symbol(self, exchange: str, tradingsymbol: str) -> InstrumentRecord | None:
        token = self._redis.hget(keys.INSTRUMENTS_BY_SYMBOL, f"{exchange}:{tradingsymbol}")
        return None if token is None else self.get(int(token))

    def count(self) -> int:
        return int(self._redis.hlen(keys.INSTRUMENTS))

    def synced_at(self) -> datetime | None:
        raw = self._redis.get(keys.INSTRUMENTS_SYNCED_AT)
        if raw is None:
            return None
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))


def sync_instruments(kite: Any, master: InstrumentMaster, exchanges: Sequence[str] = ()) -> int:
    """Download the dump (all exchanges, or only `exchanges`) through the client; replace the master."""
    rows: list[Mapping[str, Any]] = []
    if exchanges:
        for exchange in exchanges:
            rows.extend(kite.instruments(exchange))
    else:
        rows.extend(kite.instruments())
    return master.replace([InstrumentRecord.from_kite(row) for row in rows])
