"""NSE trading sessions, judged by the time of the event rather than the clock on the wall.

Every question takes the instant it is about, so a replay of a past day sees that day's
sessions. Instants must be timezone-aware and are read in IST; a naive datetime is refused,
because guessing its zone is how a UTC timestamp silently turns into a 5.5-hour error.

Holidays and special sessions are data (`alphapanda/data/nse_holidays.csv`). A calendar knows
only the years its data covers and raises `CalendarCoverageError` outside them, since an
unlisted year would otherwise look like a year without holidays.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Final, NamedTuple

from alphapanda.events import IST

NORMAL_OPEN: Final = time(9, 15)
NORMAL_CLOSE: Final = time(15, 30)
# Brokers move their intraday auto square-off from time to time, so this is only the default.
DEFAULT_SQUARE_OFF: Final = time(15, 20)

_COLUMNS: Final = ("date", "description", "open", "close")
_SATURDAY: Final = 5


class CalendarFileError(ValueError):
    """The holiday file is unreadable or invalid; the message names the file and line."""


class CalendarCoverageError(LookupError):
    """The calendar was asked about a year its holiday data does not cover."""


@dataclass(frozen=True, slots=True)
class SessionHours:
    """Normal-market hours in IST: open <= t < close, and when intraday positions are squared off."""

    open: time = NORMAL_OPEN
    close: time = NORMAL_CLOSE
    square_off: time = DEFAULT_SQUARE_OFF

    def __post_init__(self) -> None:
        if any(t.tzinfo is not None for t in (self.open, self.close, self.square_off)):
            raise ValueError("session hours are IST wall-clock times; give them without tzinfo")
        if not self.open < self.close:
            raise ValueError(f"session open {self.open} must be before close {self.close}")
        if not self.open < self.square_off <= self.close:
            raise ValueError(f"square-off {self.square_off} must be after open and no later than close")


@dataclass(frozen=True, slots=True)
class CalendarDay:
    """One row of the holiday file: a closed day, or a day whose session differs from the normal one."""

    day: date
    description: str
    session_open: time | None = None
    session_close: time | None = None

    def __post_init__(self) -> None:
        if (self.session_open is None) != (self.session_close is None):
            raise ValueError(f"{self.day}: give both session open and close, or neither")
        if self.session_open and self.session_close and not self.session_open < self.session_close:
            raise ValueError(f"{self.day}: session open {self.session_open} must be before close")

    @property
    def is_closed(self) -> bool:
        """Return whether the exchange holds no session at all on this day."""
        return self.session_open is None


class SessionBounds(NamedTuple):
    """A session's open (inclusive) and close (exclusive), both aware datetimes in IST."""

    open: datetime
    close: datetime


@dataclass(frozen=True, eq=False)
class TradingCalendar:
    """Trading days and sessions of the NSE equity segment.

    `covered_years` bounds what the calendar will answer; by default it is the years that appear
    in `days`, and a calendar built with no days at all covers every year (weekends only).
    """

    days: Mapping[date, CalendarDay] = field(default_factory=dict)
    hours: SessionHours = field(default_factory=SessionHours)
    covered_years: frozenset[int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", MappingProxyType(dict(self.days)))
        if self.covered_years is None and self.days:
            object.__setattr__(self, "covered_years", frozenset(d.year for d in self.days))

    @classmethod
    def from_days(
        cls,
        days: Iterable[CalendarDay],
        *,
        hours: SessionHours | None = None,
        covered_years: Iterable[int] | None = None,
    ) -> TradingCalendar:
        """Build a calendar from rows; a date given twice is an error."""
        by_date: dict[date, CalendarDay] = {}
        for row in days:
            if row.day in by_date:
                raise ValueError(f"{row.day} is listed twice")
            by_date[row.day] = row
        return cls(
            days=by_date,
            hours=hours or SessionHours(),
            covered_years=None if covered_years is None else frozenset(covered_years),
        )

    def is_trading_day(self, day: date) -> bool:
        """Return whether the exchange holds any session on `day` (a date, or an aware datetime)."""
        return self._bounds(_ist_date(day)) is not None

    def is_open(self, at: datetime) -> bool:
        """Return whether the normal market (or the day's special session) is open at instant `at`."""
        moment = to_ist(at)
        bounds = self._bounds(moment.date())
        return bounds is not None and bounds.open <= moment < bounds.close

    def session_bounds(self, day: date) -> SessionBounds:
        """Return when the session on `day` opens and closes; raise ValueError if `day` has none."""
        the_day = _ist_date(day)
        bounds = self._bounds(the_day)
        if bounds is None:
            raise ValueError(f"{the_day} is not a trading day ({self._why_closed(the_day)})")
        return bounds

    def next_open(self, at: datetime) -> datetime:
        """Return the first session open at or after instant `at`, in IST.

        While a session is running, that is the next day's open, not the one already passed.
        """
        moment = to_ist(at)
        day = moment.date()
        while True:  # ends: weekdays recur, and _bounds raises past the years the data covers
            bounds = self._bounds(day)
            if bounds is not None and bounds.open >= moment:
                return bounds.open
            day += timedelta(days=1)

    def square_off_time(self, day: date) -> datetime:
        """Return when intraday positions are squared off on `day`, in IST.

        On a special session it keeps the normal lead time before the close (10 minutes by default).
        """
        bounds = self.session_bounds(day)
        lead = _since_midnight(self.hours.close) - _since_midnight(self.hours.square_off)
        return max(bounds.close - lead, bounds.open)

    def _bounds(self, day: date) -> SessionBounds | None:
        self._require_covered(day)
        row = self.days.get(day)
        if row is not None:
            if row.session_open is None or row.session_close is None:
                return None
            return SessionBounds(_at(day, row.session_open), _at(day, row.session_close))
        if day.weekday() >= _SATURDAY:
            return None
        return SessionBounds(_at(day, self.hours.open), _at(day, self.hours.close))

    def _why_closed(self, day: date) -> str:
        row = self.days.get(day)
        return row.description if row is not None else day.strftime("%A")

    def _require_covered(self, day: date) -> None:
        if self.covered_years is not None and day.year not in self.covered_years:
            years = ", ".join(str(y) for y in sorted(self.covered_years)) or "none"
            raise CalendarCoverageError(
                f"the trading calendar has no holiday data for {day.year} (covers: {years}); "
                "add that year's NSE holiday list"
            )


_LAST_IST_DATE: tuple[datetime | None, date | None] = (None, None)


def ist_date(at: datetime) -> date:
    """`to_ist(at).date()`: the IST trading date of instant `at` (ValueError if it is naive).

    One order asks it of the same instant (its signal's tick time) four or five times (risk
    day, charge rates twice, session end, portfolio day), so the last answer is kept by the
    identity of the instant: a datetime is immutable, so the same object has the same date.
    The pair is replaced as a whole, so concurrent callers can never see a mismatched one.
    """
    global _LAST_IST_DATE
    last_at, last_date = _LAST_IST_DATE
    if at is last_at and last_date is not None:
        return last_date
    day = to_ist(at).date()
    _LAST_IST_DATE = (at, day)
    return day


def to_ist(at: datetime) -> datetime:
    """Return instant `at` in IST; raise ValueError if it is naive."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(
            f"naive datetime {at.isoformat()} has no timezone; pass an aware datetime "
            "(e.g. tzinfo=ZoneInfo('Asia/Kolkata') or UTC)"
        )
    return at.astimezone(IST)


def parse_trading_calendar(
    text: str, origin: str = "nse_holidays.csv", *, hours: SessionHours | None = None
) -> TradingCalendar:
    """Parse holiday CSV text (date,description[,open,close]; '#' lines are comments) into a calendar."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if _is_data(line)]
    if not lines:
        raise CalendarFileError(f"{origin}: no header row")
    header_no, header_line = lines[0]
    header = [name.strip() for name in next(csv.reader([header_line]))]
    if header[:2] != list(_COLUMNS[:2]) or header[2:] not in ([], list(_COLUMNS[2:])):
        raise CalendarFileError(f"{origin} line {header_no}: header must be {','.join(_COLUMNS)}")

    rows: list[CalendarDay] = []
    seen: dict[date, int] = {}
    for number, line in lines[1:]:
        row = _parse_row(next(csv.reader([line])), len(header), f"{origin} line {number}")
        if row.day in seen:
            raise CalendarFileError(
                f"{origin} line {number}: {row.day} already listed on line {seen[row.day]}"
            )
        seen[row.day] = number
        rows.append(row)
    if not rows:
        raise CalendarFileError(f"{origin}: no days listed")
    return TradingCalendar.from_days(rows, hours=hours)


def load_trading_calendar(
    path: str | os.PathLike[str] | None = None, *, hours: SessionHours | None = None
) -> TradingCalendar:
    """Load the holiday CSV at `path`, or the NSE list shipped with alphapanda when `path` is None."""
    if path is None:
        text = resources.files("alphapanda.data").joinpath("nse_holidays.csv").read_text(encoding="utf-8")
        return parse_trading_calendar(text, "shipped nse_holidays.csv", hours=hours)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarFileError(f"{path}: cannot read holiday file: {exc.strerror}") from None
    return parse_trading_calendar(text, str(path), hours=hours)


def _is_data(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _parse_row(cells: list[str], width: int, where: str) -> CalendarDay:
    if len(cells) != width:
        raise CalendarFileError(f"{where}: expected {width} columns, found {len(cells)}")
    cells = [cell.strip() for cell in cells] + ["", ""][: 4 - width]
    raw_date, description, raw_open, raw_close = cells
    if not description:
        raise CalendarFileError(f"{where}: description is empty")
    try:
        return CalendarDay(
            day=date.fromisoformat(raw_date),
            description=description,
            session_open=time.fromisoformat(raw_open) if raw_open else None,
            session_close=time.fromisoformat(raw_close) if raw_close else None,
        )
    except ValueError as exc:
        raise CalendarFileError(f"{where}: {exc}") from None


def _ist_date(day: date) -> date:
    # A datetime is also a date; read it as an instant rather than trusting its wall-clock date.
    return to_ist(day).date() if isinstance(day, datetime) else day


def _at(day: date, t: time) -> datetime:
    return datetime.combine(day, t, IST)


def _since_midnight(t: time) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)
