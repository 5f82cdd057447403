"""NSE trading calendar: weekends, holidays, session edges, time zones and the holiday file."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from alphapanda.domain.calendar import (
    CalendarCoverageError,
    CalendarDay,
    CalendarFileError,
    SessionHours,
    TradingCalendar,
    ist_date,
    load_trading_calendar,
    to_ist,
)
from alphapanda.events import IST

# Wednesday 25 November 2026, an ordinary trading day; the day before is Guru Nanak Jayanti.
WEDNESDAY = date(2026, 11, 25)
HOLIDAY = date(2026, 11, 24)


@pytest.fixture(scope="module")
def nse() -> TradingCalendar:
    return load_trading_calendar()


def ist(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=IST)


# --- trading days ---------------------------------------------------------------------------------


@pytest.mark.parametrize("day", [date(2026, 11, 28), date(2026, 11, 29), date(2025, 6, 7)])
def test_check_day_when_saturday_or_sunday_then_not_a_trading_day(nse: TradingCalendar, day: date) -> None:
    assert not nse.is_trading_day(day)
    assert not nse.is_open(ist(day, 11))


@pytest.mark.parametrize(
    "day",
    [
        HOLIDAY,  # Prakash Gurpurb Sri Guru Nanak Dev
        date(2025, 3, 14),  # Holi
        date(2025, 10, 22),  # Diwali Balipratipada
        date(2026, 1, 15),  # added mid-year: Maharashtra municipal elections
    ],
)
def test_check_day_when_nse_holiday_then_not_a_trading_day(nse: TradingCalendar, day: date) -> None:
    assert not nse.is_trading_day(day)
    assert not nse.is_open(ist(day, 11))


def test_check_day_when_ordinary_weekday_then_trading_day(nse: TradingCalendar) -> None:
    assert nse.is_trading_day(WEDNESDAY)


def test_check_day_when_budget_falls_on_a_weekend_then_the_special_session_is_a_trading_day(
    nse: TradingCalendar,
) -> None:
    saturday, sunday = date(2025, 2, 1), date(2026, 2, 1)

    assert nse.is_trading_day(saturday) and nse.is_trading_day(sunday)
    assert nse.session_bounds(sunday) == (ist(sunday, 9, 15), ist(sunday, 15, 30))


def test_check_open_when_muhurat_session_then_open_only_in_that_hour(nse: TradingCalendar) -> None:
    diwali = date(2025, 10, 21)

    assert not nse.is_open(ist(diwali, 10))
    assert nse.is_open(ist(diwali, 13, 45))
    assert not nse.is_open(ist(diwali, 14, 45))
    assert nse.square_off_time(diwali) == ist(diwali, 14, 35)


# --- session edges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "second", "is_open"),
    [
        (9, 14, 59, False),
        (9, 15, 0, True),
        (15, 29, 59, True),
        (15, 30, 0, False),
    ],
)
def test_check_open_when_at_session_boundary_then_open_is_inclusive_and_close_exclusive(
    nse: TradingCalendar, hour: int, minute: int, second: int, is_open: bool
) -> None:
    assert nse.is_open(ist(WEDNESDAY, hour, minute, second)) is is_open


def test_check_open_when_just_before_close_then_open_to_the_microsecond(nse: TradingCalendar) -> None:
    assert nse.is_open(ist(WEDNESDAY, 15, 30) - timedelta(microseconds=1))


def test_session_bounds_when_normal_day_then_0915_to_1530_ist(nse: TradingCalendar) -> None:
    bounds = nse.session_bounds(WEDNESDAY)

    assert (bounds.open, bounds.close) == (ist(WEDNESDAY, 9, 15), ist(WEDNESDAY, 15, 30))
    assert bounds.open.utcoffset() == timedelta(hours=5, minutes=30)


def test_session_bounds_when_holiday_then_value_error_naming_it(nse: TradingCalendar) -> None:
    with pytest.raises(ValueError, match="Guru Nanak"):
        nse.session_bounds(HOLIDAY)


def test_check_open_when_hours_are_configured_then_the_configured_hours_apply() -> None:
    calendar = load_trading_calendar(
        hours=SessionHours(open=time(10, 0), close=time(14, 0), square_off=time(13, 0))
    )

    assert not calendar.is_open(ist(WEDNESDAY, 9, 30))
    assert calendar.is_open(ist(WEDNESDAY, 10, 0))
    assert not calendar.is_open(ist(WEDNESDAY, 14, 0))
    assert calendar.square_off_time(WEDNESDAY) == ist(WEDNESDAY, 13, 0)


def test_square_off_time_when_normal_day_then_1520_ist(nse: TradingCalendar) -> None:
    assert nse.square_off_time(WEDNESDAY) == ist(WEDNESDAY, 15, 20)


@pytest.mark.parametrize(
    "hours",
    [
        {"open": time(15, 30), "close": time(9, 15)},
        {"square_off": time(15, 45)},
        {"open": time(9, 15, tzinfo=UTC)},
    ],
)
def test_configure_hours_when_inconsistent_then_value_error(hours: dict[str, time]) -> None:
    with pytest.raises(ValueError):
        SessionHours(**hours)


# --- time zones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "is_open"),
    [
        (datetime(2026, 11, 25, 3, 44, 59, tzinfo=UTC), False),  # 09:14:59 IST
        (datetime(2026, 11, 25, 3, 45, tzinfo=UTC), True),  # 09:15 IST
        (datetime(2026, 11, 25, 9, 59, 59, tzinfo=UTC), True),  # 15:29:59 IST
        (datetime(2026, 11, 25, 10, 0, tzinfo=UTC), False),  # 15:30 IST
    ],
)
def test_check_open_when_given_utc_instant_then_it_is_judged_in_ist(
    nse: TradingCalendar, utc: datetime, is_open: bool
) -> None:
    assert nse.is_open(utc) is is_open


def test_check_day_when_utc_date_differs_from_ist_date_then_the_ist_date_decides(
    nse: TradingCalendar,
) -> None:
    # 2026-11-23 19:00 UTC is 2026-11-24 00:30 IST: Monday in UTC, but the Tuesday holiday in India.
    instant = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)

    assert not nse.is_trading_day(instant)
    assert to_ist(instant).date() == HOLIDAY


def test_check_open_when_given_another_offset_then_converted(nse: TradingCalendar) -> None:
    new_york_winter = timezone(timedelta(hours=-5))

    # 2026-11-24 23:00 at UTC-5 is 2026-11-25 09:30 IST.
    assert nse.is_open(datetime(2026, 11, 24, 23, 0, tzinfo=new_york_winter))


@pytest.mark.parametrize(
    "ask",
    [
        lambda c, t: c.is_open(t),
        lambda c, t: c.is_trading_day(t),
        lambda c, t: c.session_bounds(t),
        lambda c, t: c.next_open(t),
    ],
    ids=["is_open", "is_trading_day", "session_bounds", "next_open"],
)
def test_ask_calendar_when_datetime_is_naive_then_value_error(
    nse: TradingCalendar, ask: Callable[[TradingCalendar, datetime], object]
) -> None:
    naive = datetime(2026, 11, 25, 10, 0)

    with pytest.raises(ValueError, match="naive datetime"):
        ask(nse, naive)


# --- next open ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # Before the open on a trading day: that morning.
        (ist(WEDNESDAY, 8, 0), ist(WEDNESDAY, 9, 15)),
        # Exactly at the open: that open.
        (ist(WEDNESDAY, 9, 15), ist(WEDNESDAY, 9, 15)),
        # During the session: the next day's open.
        (ist(WEDNESDAY, 11, 0), ist(date(2026, 11, 26), 9, 15)),
        # Friday evening: Monday.
        (ist(date(2026, 11, 27), 16, 0), ist(date(2026, 11, 30), 9, 15)),
        # Monday evening before a Tuesday holiday: Wednesday.
        (ist(date(2026, 11, 23), 16, 0), ist(WEDNESDAY, 9, 15)),
        # Thursday evening before Good Friday 2026-04-03: Monday 2026-04-06.
        (ist(date(2026, 4, 2), 15, 45), ist(date(2026, 4, 6), 9, 15)),
    ],
)
def test_find_next_open_when_asked_at_various_instants_then_first_open_at_or_after(
    nse: TradingCalendar, at: datetime, expected: datetime
) -> None:
    assert nse.next_open(at) == expected


def test_find_next_open_when_given_utc_then_answer_is_in_ist(nse: TradingCalendar) -> None:
    opened = nse.next_open(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))  # 17:30 IST

    assert opened == ist(date(2026, 11, 26), 9, 15)
    assert opened.tzinfo == IST


# --- coverage and the holiday file ----------------------------------------------------------------


def test_check_day_when_year_is_not_in_the_holiday_file_then_coverage_error(nse: TradingCalendar) -> None:
    with pytest.raises(CalendarCoverageError, match="2027"):
        nse.is_trading_day(date(2027, 1, 4))


def test_find_next_open_when_it_would_fall_past_the_data_then_coverage_error(nse: TradingCalendar) -> None:
    with pytest.raises(CalendarCoverageError, match="2027"):
        nse.next_open(ist(date(2026, 12, 31), 16, 0))


def test_build_calendar_when_no_days_given_then_weekends_only_for_any_year() -> None:
    calendar = TradingCalendar()

    assert calendar.is_trading_day(date(2030, 1, 2))
    assert not calendar.is_trading_day(date(2030, 1, 5))


def test_build_calendar_when_rows_given_then_they_close_or_reshape_days() -> None:
    calendar = TradingCalendar.from_days(
        [
            CalendarDay(date(2030, 1, 2), "closed"),
            CalendarDay(date(2030, 1, 5), "special Saturday", time(10, 0), time(12, 0)),
        ]
    )

    assert not calendar.is_trading_day(date(2030, 1, 2))
    assert calendar.session_bounds(date(2030, 1, 5)) == (ist(date(2030, 1, 5), 10), ist(date(2030, 1, 5), 12))
    assert calendar.covered_years == frozenset({2030})


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "holidays.csv"
    path.write_text("# a comment\ndate,description,open,close\n" + body)
    return path


def test_load_calendar_when_given_a_path_then_its_holidays_apply(tmp_path: Path) -> None:
    calendar = load_trading_calendar(_write(tmp_path, "2030-01-02,Test holiday,,\n"))

    assert not calendar.is_trading_day(date(2030, 1, 2))
    assert calendar.is_trading_day(date(2030, 1, 3))


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("2030-02-30,Bad date,,\n", "line 3: day is out of range"),
        ("2030-01-02,,,\n", "line 3: description is empty"),
        ("2030-01-02,Half a session,10:00,\n", "line 3: .*both session open and close"),
        ("2030-01-02,Backwards,12:00,10:00\n", "line 3: .*must be before close"),
        ("2030-01-02,One,,\n2030-01-02,Two,,\n", "line 4: 2030-01-02 already listed on line 3"),
        ("2030-01-02,Too few\n", "line 3: expected 4 columns"),
    ],
)
def test_load_calendar_when_a_row_is_bad_then_error_names_the_line(
    tmp_path: Path, body: str, complaint: str
) -> None:
    with pytest.raises(CalendarFileError, match=complaint):
        load_trading_calendar(_write(tmp_path, body))


def test_load_calendar_when_header_is_wrong_then_error(tmp_path: Path) -> None:
    path = tmp_path / "holidays.csv"
    path.write_text("day,name\n2030-01-02,x\n")

    with pytest.raises(CalendarFileError, match="header must be date,description,open,close"):
        load_trading_calendar(path)


@pytest.mark.parametrize(
    ("year", "closed_weekdays"),
    [
        # NSE/CMTR/65587 lists 14 weekday holidays for 2025; one of them (Diwali Laxmi Pujan)
        # hosts the Muhurat session, so it is listed with a session rather than closed.
        (2025, 13),
        # NSE/CMTR/71775 lists 15 weekday holidays for 2026; NSE/CMTR/72260 added 2026-01-15.
        (2026, 16),
    ],
)
def test_load_shipped_calendar_when_read_then_each_year_has_the_circulars_weekday_holidays(
    nse: TradingCalendar, year: int, closed_weekdays: int
) -> None:
    closed = [d for d, row in nse.days.items() if row.is_closed and d.weekday() < 5 and d.year == year]

    assert nse.covered_years == frozenset({2025, 2026})
    assert len(closed) == closed_weekdays


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 5, 18, 29, 59, tzinfo=UTC),  # 23:59:59 IST
        datetime(2026, 1, 5, 18, 30, tzinfo=UTC),  # midnight IST: the next day
        datetime(2026, 1, 5, 0, 0, tzinfo=IST),
        datetime(2026, 1, 5, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_ist_date_when_asked_then_it_is_the_ist_date_even_right_after_another_instant(at: datetime) -> None:
    # The last answer is kept by the instant's identity: an equal-looking wall clock in another
    # zone, or the next instant, must never get the previous answer.
    before = datetime(2026, 1, 5, 12, 0, tzinfo=IST)
    assert ist_date(before) == date(2026, 1, 5)
    assert ist_date(at) == to_ist(at).date()
    assert ist_date(at) == to_ist(at).date()  # asked again: the kept answer
    assert ist_date(before) == date(2026, 1, 5)


def test_ist_date_when_naive_then_value_error_as_to_ist() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        ist_date(datetime(2026, 1, 5, 12, 0))
