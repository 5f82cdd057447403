"""Reconciliation: do the portfolio's books agree with the positions Kite holds?

Our books (`{broker}:book:{strategy}`) are built from the fills the order updates delivered;
Kite's net positions are the truth about the account. A difference means a lost or doubled
update, an order placed outside Alpha Panda, or a fill that never reached the portfolio. It
is reported as an `Alert` on `{broker}.alerts` and returned, never corrected automatically.

Delivery (CNC) is compared on its own. Kite moves a CNC position into the account's holdings
once it is carried past its day, and a CNC sell of holdings shows as a negative day position
beside the unchanged holding (as the sandbox models it; the Kite docs list the fields, not the
rule, so this is inferred). So what the account holds for delivery is its CNC positions plus
its holdings (settled and T1). The account may also hold shares bought outside Alpha Panda,
so for delivery only holding *fewer* than the books is a break.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alphapanda.config import KiteSettings
from alphapanda.domain.portfolio import Book
from alphapanda.events import Alert, Event, EventType, Product, Severity, derive_id, now, source_of
from alphapanda.state import keys as core_keys
from alphapanda.state.store import StateStore

log = logging.getLogger(__name__)

SOURCE_FUNCTION = "reconcile"


@dataclass(frozen=True, slots=True)
class PositionBreak:
    instrument_token: int
    tradingsymbol: str
    exchange: str
    expected: int
    """Net quantity in Alpha Panda's books (all strategies)."""
    actual: int
    """Net quantity Kite reports (for delivery: CNC positions plus holdings)."""
    delivery: bool = False
    """A CNC difference: the books hold more for delivery than the account does."""

    @property
    def label(self) -> str:
        name = f"{self.exchange}:{self.tradingsymbol}" if self.tradingsymbol else str(self.instrument_token)
        return f"{name} {Product.CNC.value}" if self.delivery else name


def book_positions(books: Mapping[str, Book], *, delivery: bool = False) -> dict[int, int]:
    """Net quantity per instrument over every strategy's book: of its intraday and F&O positions,
    or with `delivery` of its CNC ones."""
    out: dict[int, int] = {}
    for book in books.values():
        for token, position in book.positions:
            if (position.product == Product.CNC) is delivery:
                out[token] = out.get(token, 0) + position.net_quantity
    return out


def kite_positions(
    positions: Mapping[str, Any], *, delivery: bool = False
) -> dict[int, tuple[int, str, str]]:
    """Net quantity, symbol and exchange per instrument from `KiteConnect.positions()`: of every
    product but CNC, or with `delivery` of CNC only."""
    out: dict[int, tuple[int, str, str]] = {}
    for row in positions.get("net") or ():
        if (row.get("product") == Product.CNC) is delivery:
            _add(out, row, int(row.get("quantity") or 0))
    return out


def kite_delivery(
    positions: Mapping[str, Any], holdings: Iterable[Mapping[str, Any]]
) -> dict[int, tuple[int, str, str]]:
    """What the account holds for delivery, per instrument: its CNC positions (the day's buys and
    sells) plus `KiteConnect.holdings()` (settled `quantity` and unsettled `t1_quantity`)."""
    out = kite_positions(positions, delivery=True)
    for row in holdings or ():
        _add(out, row, int(row.get("quantity") or 0) + int(row.get("t1_quantity") or 0))
    return out


def _add(out: dict[int, tuple[int, str, str]], row: Mapping[str, Any], quantity: int) -> None:
    token = int(row["instrument_token"])
    out[token] = (
        out.get(token, (0, "", ""))[0] + quantity,
        str(row.get("tradingsymbol") or ""),
        str(row.get("exchange") or ""),
    )


def diff_positions(
    books: Mapping[int, int],
    kite: Mapping[int, tuple[int, str, str]],
    names: Callable[[int], tuple[str, str]] = lambda _t: ("", ""),
    *,
    delivery: bool = False,
) -> list[PositionBreak]:
    """Every instrument whose net quantity differs, by token; with `delivery`, every one of which
    the account holds less than the books (it may hold shares bought outside Alpha Panda)."""
    breaks = []
    for token in sorted(set(books) | set(kite)):
        expected = books.get(token, 0)
        actual, symbol, exchange = kite.get(token, (0, "", ""))
        if expected == actual or (delivery and actual >= expected):
            continue
        if not symbol:
            symbol, exchange = names(token)
        breaks.append(PositionBreak(token, symbol, exchange, expected, actual, delivery))
    return breaks


def load_books(store: StateStore, broker: str) -> dict[str, Book]:
    out = {}
    for strategy in sorted(store.members(core_keys.books_index(broker))):
        raw = store.get(core_keys.book(broker, strategy))
        if raw:
            out[strategy] = Book.from_json(json.loads(raw))
    return out


def reconciliation_alert(broker: str, breaks: list[PositionBreak], at: datetime) -> Event:
    alert_id = derive_id(SOURCE_FUNCTION, broker, at.isoformat())
    alert = Alert(
        kind="position_mismatch",
        severity=Severity.CRITICAL,
        message=f"{len(breaks)} position(s) differ between Alpha Panda's books and Kite for {broker}",
        details={b.label: f"books {b.expected}, kite {b.actual}" for b in breaks},
        raised_at=at,
    )
    return Event(
        id=alert_id,
        type=EventType.ALERT,
        source=source_of(SOURCE_FUNCTION, broker),
        data=alert,
        partitionkey=broker,
        correlationid=alert_id,
        causationid=alert_id,
        broker=broker,
        time=at,
    )


@dataclass(frozen=True)
class Reconciliation:
    breaks: list[PositionBreak]
    alert: Event | None


def reconcile(
    store: StateStore,
    kite: Any,
    broker: str,
    *,
    names: Callable[[int], tuple[str, str]] = lambda _t: ("", ""),
    clock: Callable[[], datetime] = now,
) -> Reconciliation:
    """Compare the broker's books with `kite.positions()` (and for delivery `kite.holdings()`); an
    alert event if they differ."""
    books = load_books(store, broker)
    positions = kite.positions()
    breaks = diff_positions(book_positions(books), kite_positions(positions), names)
    held = book_positions(books, delivery=True)
    if any(held.values()):  # holdings are asked for only when the books hold delivery
        breaks += diff_positions(held, kite_delivery(positions, kite.holdings()), names, delivery=True)
    return Reconciliation(breaks, reconciliation_alert(broker, breaks, clock()) if breaks else None)


class PeriodicReconciler:
    """`reconcile` for one broker at start and then every `interval_s`, for a long-running process.

    A fill Kite has made but the portfolio has not applied yet looks like a difference for a
    moment, so a difference is checked again after `settle_s` and only a lasting one is
    alerted. A failing check (no session yet, Kite unreachable) is logged and tried again at
    the next interval: reconciliation must never stop trading.
    """

    def __init__(
        self,
        store: StateStore,
        kite: Callable[[], Any],
        broker: str,
        publish: Callable[[list[Event]], Any],
        *,
        interval_s: float,
        names: Callable[[int], tuple[str, str]] = lambda _t: ("", ""),
        report: Callable[[str], Any] = log.info,
        settle_s: float = 1.0,
    ) -> None:
        self._store = store
        self._kite = kite
        self.broker = broker
        self._publish = publish
        self.interval_s = interval_s
        self._names = names
        self._report = report
        self._settle_s = settle_s
        self._last: float | None = None
        self.checks = 0
        self.alerts = 0

    def maybe_run(self, at: float) -> Reconciliation | None:
        """Reconcile if it is due at monotonic time `at` (always on the first call)."""
        if self._last is not None and at - self._last < self.interval_s:
            return None
        self._last = at
        try:
            return self.run()
        except Exception as exc:
            log.warning("reconciliation of %s with Kite failed, retrying next round: %s", self.broker, exc)
            return None

    def run(self) -> Reconciliation:
        result = reconcile(self._store, self._kite(), self.broker, names=self._names)
        if result.breaks and self._settle_s > 0:
            time.sleep(self._settle_s)
            result = reconcile(self._store, self._kite(), self.broker, names=self._names)
        self.checks += 1
        if result.alert is not None:
            self._publish([result.alert])
            self.alerts += 1
            details = ", ".join(f"{b.label} books {b.expected} kite {b.actual}" for b in result.breaks)
            self._report(
                f"reconcile {self.broker}: {len(result.breaks)} position(s) differ from Kite's ({details}); "
                f"alert sent to {result.alert.topic}"
            )
        return result


def live_reconcilers(
    brokers: Iterable[str],
    kite_settings: KiteSettings,
    redis_url: str,
    claim_ttl_s: int,
    publish: Callable[[list[Event]], Any],
    *,
    names: Callable[[int], tuple[str, str]] = lambda _t: ("", ""),
    report: Callable[[str], Any] = log.info,
) -> list[PeriodicReconciler]:
    """One `PeriodicReconciler` per zerodha-kind broker in `brokers`, each with its own session."""
    import redis

    from alphapanda.brokers.zerodha.client import kite_client
    from alphapanda.brokers.zerodha.session import SessionStore
    from alphapanda.state.store import RedisStateStore
    from alphapanda.topics import broker_kind

    zerodha = [b for b in brokers if broker_kind(b) == "zerodha"]
    if not zerodha:
        return []
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, claim_ttl_s)

    def kite_for(broker: str) -> Callable[[], Any]:
        # The token is read on every check: a login during the run replaces it.
        return lambda: kite_client(kite_settings, SessionStore(client, broker).access_token())

    return [
        PeriodicReconciler(
            store,
            kite_for(broker),
            broker,
            publish,
            interval_s=kite_settings.reconcile_interval_s,
            names=names,
            report=report,
        )
        for broker in zerodha
    ]
