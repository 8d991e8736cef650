"""Working calendar: real 2026 dates, unknown future years, pauses and algebraic properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridops.incidents.workcal import TZ, WorkCalendar, package_has_notice


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=TZ)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# The State Council's 2026 arrangement (国务院办公厅关于2026年部分节假日安排的通知,
# 国办发明电〔2025〕7号), entered the way an admin would enter it: every day off and every
# make-up working day (调休上班). holidays 0.85+ carries the same arrangement, which
# test_package_knows_the_2026_notice checks; the fixture does not rely on it.
OFF_2026 = [
    *_days(date(2026, 1, 1), date(2026, 1, 3)),  # New Year
    *_days(date(2026, 2, 15), date(2026, 2, 23)),  # Spring Festival, 9 days
    *_days(date(2026, 4, 4), date(2026, 4, 6)),  # Qingming
    *_days(date(2026, 5, 1), date(2026, 5, 5)),  # Labour Day
    *_days(date(2026, 6, 19), date(2026, 6, 21)),  # Dragon Boat
    *_days(date(2026, 9, 25), date(2026, 9, 27)),  # Mid-Autumn
    *_days(date(2026, 10, 1), date(2026, 10, 7)),  # National Day Golden Week
]
WORK_2026 = [
    date(2026, 1, 4),  # Sun, for New Year
    date(2026, 2, 14),  # Sat, for Spring Festival
    date(2026, 2, 28),  # Sat, for Spring Festival
    date(2026, 5, 9),  # Sat, for Labour Day
    date(2026, 9, 20),  # Sun, for National Day
    date(2026, 10, 10),  # Sat, for National Day
]
NOTICE_2026 = {**dict.fromkeys(OFF_2026, "off"), **dict.fromkeys(WORK_2026, "work")}


@pytest.fixture
def cal() -> WorkCalendar:
    return WorkCalendar(overrides=NOTICE_2026, confirmed_years={2026})


# ---- what the holidays package knows -------------------------------------------------------


def test_package_knows_the_2026_notice():
    """Without any override the package alone gives exactly the notice for every 2026 day."""
    assert package_has_notice(2026)
    bare, entered = WorkCalendar(), WorkCalendar(overrides=NOTICE_2026)
    for d in _days(date(2026, 1, 1), date(2026, 12, 31)):
        assert bare.is_working_day(d) == entered.is_working_day(d), d
    for d in WORK_2026:
        assert d.weekday() >= 5 and bare.is_working_day(d)
        assert bare.day_source(d) == "package-notice"


def test_future_years_are_known_by_rule_only():
    bare = WorkCalendar()
    # Statutory days follow from the law (and the lunar calendar) for any year …
    assert not bare.is_working_day(date(2027, 10, 1))  # National Day, Fri
    assert not bare.is_working_day(date(2027, 2, 8))  # Spring Festival day 3, Mon
    assert not bare.is_working_day(date(2090, 10, 2))
    # … but a plain weekend stays a weekend: make-up days need the yearly notice.
    assert not bare.is_working_day(date(2027, 9, 26))
    assert bare.day_source(date(2027, 3, 1)) == "weekdays"


# ---- real deadlines in 2026 ----------------------------------------------------------------


def test_national_day_golden_week_2026(cal):
    filed = at(2026, 9, 30, 16, 0)  # Wed: 1.5 h left today, then Oct 1–7 off
    assert [cal.is_working_day(d) for d in _days(date(2026, 10, 1), date(2026, 10, 7))] == [
        False
    ] * 7
    assert cal.add_working_hours(filed, 1.5) == at(2026, 9, 30, 17, 30)
    assert cal.add_working_hours(filed, 2) == at(2026, 10, 8, 9, 0)
    # 1.5 (Sep 30) + 7.5 (Oct 8) + 7.5 (Oct 9) = 16.5; Sat Oct 10 is a make-up working day.
    assert cal.add_working_hours(filed, 16) == at(2026, 10, 9, 17, 0)
    assert cal.add_working_hours(filed, 22) == at(2026, 10, 10, 15, 30)
    assert cal.add_working_hours(filed, 24) == at(2026, 10, 10, 17, 30)
    assert cal.add_working_hours(filed, 25) == at(2026, 10, 12, 9, 30)  # Sun Oct 11 is off
    assert cal.working_hours_between(filed, at(2026, 10, 12, 9, 30)) == 25


def test_make_up_sunday_before_national_day_2026(cal):
    assert cal.is_working_day(date(2026, 9, 20))  # Sun
    assert not cal.is_working_day(date(2026, 9, 19))  # Sat
    assert cal.add_working_hours(at(2026, 9, 18, 17, 0), 1) == at(2026, 9, 20, 9, 0)


def test_spring_festival_2026(cal):
    filed = at(2026, 2, 13, 9, 0)  # Fri: 7 h today, Sat Feb 14 works, Feb 15–23 off
    assert cal.add_working_hours(filed, 14.5) == at(2026, 2, 14, 17, 30)
    assert cal.add_working_hours(filed, 15) == at(2026, 2, 24, 9, 0)
    assert cal.working_hours_between(at(2026, 2, 14, 17, 30), at(2026, 2, 24, 8, 30)) == 0


def test_across_a_weekend(cal):
    assert cal.add_working_hours(at(2026, 3, 6, 16, 30), 2) == at(2026, 3, 9, 9, 30)  # Fri→Mon
    assert cal.working_hours_between(at(2026, 3, 6, 16, 30), at(2026, 3, 9, 9, 30)) == 2


def test_across_lunch_and_outside_hours(cal):
    monday = (2026, 3, 9)
    assert cal.add_working_hours(at(*monday, 11, 0), 2) == at(*monday, 14, 30)
    assert cal.add_working_hours(at(*monday, 12, 15), 0.5) == at(*monday, 14, 0)
    assert cal.add_working_hours(at(*monday, 7, 0), 1) == at(*monday, 9, 30)
    assert cal.add_working_hours(at(*monday, 18, 0), 0) == at(2026, 3, 10, 8, 30)
    assert cal.add_working_hours(at(*monday, 11, 59), 1 / 60) == at(*monday, 12, 0)
    assert cal.add_working_hours(at(*monday, 11, 59), 2 / 60) == at(*monday, 13, 31)
    assert cal.working_hours_between(at(*monday, 11, 0), at(*monday, 14, 30)) == 2
    assert not cal.is_working_time(at(*monday, 12, 30))
    assert cal.is_working_time(at(*monday, 13, 30))


def test_a_full_day_is_due_at_close_of_business(cal):
    # Using up the last minute lands on 17:30 itself, not on 08:30 of the next working day.
    assert cal.add_working_hours(at(2026, 3, 9, 9, 0), 7) == at(2026, 3, 9, 17, 30)
    assert cal.hours_per_day == 7.5


def test_other_time_zones_are_converted():
    cal = WorkCalendar()
    start = datetime(2026, 3, 9, 1, 0, tzinfo=UTC)  # 09:00 in Foshan
    result = cal.add_working_hours(start, 1)
    assert result == at(2026, 3, 9, 10, 0) and result.tzinfo is TZ


def test_overrides_win_over_the_package():
    cal = WorkCalendar(
        overrides={
            date(2026, 3, 9): "off",  # a Monday, e.g. a typhoon day off
            date(2026, 3, 7): "work",  # a Saturday
            date(2026, 10, 5): "work",  # a package holiday, corrected
        }
    )
    assert not cal.is_working_day(date(2026, 3, 9))
    assert cal.is_working_day(date(2026, 3, 7))
    assert cal.is_working_day(date(2026, 10, 5))
    assert cal.day_source(date(2026, 3, 9)) == "override"
    assert cal.add_working_hours(at(2026, 3, 6, 17, 0), 1) == at(2026, 3, 7, 9, 0)


def test_custom_hours():
    cal = WorkCalendar(hours=(time(9, 0), time(18, 0)), lunch=(time(12, 0), time(13, 0)))
    assert cal.hours_per_day == 8
    assert cal.add_working_hours(at(2026, 3, 9, 11, 0), 2) == at(2026, 3, 9, 14, 0)
    no_lunch = WorkCalendar(lunch=None)
    assert no_lunch.hours_per_day == 9
    assert no_lunch.add_working_hours(at(2026, 3, 9, 11, 0), 2) == at(2026, 3, 9, 13, 0)


@pytest.mark.parametrize(
    ("hours", "lunch"),
    [
        ((time(17, 30), time(8, 30)), (time(12, 0), time(13, 30))),
        ((time(8, 30), time(17, 30)), (time(7, 0), time(9, 0))),
        ((time(8, 30), time(17, 30)), (time(13, 30), time(12, 0))),
    ],
)
def test_bad_hours_are_refused(hours, lunch):
    with pytest.raises(ValueError):
        WorkCalendar(hours=hours, lunch=lunch)


def test_bad_input_is_refused(cal):
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.add_working_hours(datetime(2026, 3, 9, 9, 0), 1)
    with pytest.raises(ValueError, match="negative"):
        cal.add_working_hours(at(2026, 3, 9, 9, 0), -1)
    with pytest.raises(ValueError, match="finite"):
        cal.add_working_hours(at(2026, 3, 9, 9, 0), float("nan"))
    with pytest.raises(ValueError, match="'off' or 'work'"):
        WorkCalendar(overrides={date(2026, 3, 9): "holiday"})
    with pytest.raises(ValueError, match="ends before it starts"):
        cal.deadline(at(2026, 3, 9, 9, 0), 1, [(at(2026, 3, 9, 11, 0), at(2026, 3, 9, 10, 0))])


# ---- unknown years -------------------------------------------------------------------------


def test_a_2027_deadline_works_and_warns_while_2027_is_unconfirmed(cal):
    start = at(2026, 12, 30, 9, 0)  # Wed; Jan 1 2027 (Fri) is New Year by statute
    due = cal.deadline(start, 24)
    # Dec 30: 7, Dec 31: 7.5, Jan 4: 7.5 → 22; Jan 5 08:30 + 2 h.
    assert due == at(2027, 1, 5, 10, 30)
    assert cal.add_working_hours(at(2027, 3, 1, 9, 0), 10) == at(2027, 3, 2, 11, 30)
    notes = cal.warnings(today=date(2026, 12, 30), span=(start, due))
    assert len(notes) == 1 and "2027" in notes[0] and "调休" in notes[0]
    assert cal.unconfirmed_years(date(2026, 12, 30)) == [2027]

    confirmed = WorkCalendar(overrides=NOTICE_2026, confirmed_years={2026, 2027})
    assert confirmed.warnings(today=date(2026, 12, 30), span=(start, due)) == []


def test_unconfirmed_years_look_ahead_from_october():
    cal = WorkCalendar(confirmed_years={2026})
    assert cal.unconfirmed_years(date(2026, 9, 30)) == []
    assert cal.unconfirmed_years(date(2026, 10, 1)) == [2027]
    assert WorkCalendar().unconfirmed_years(date(2026, 10, 1)) == [2026, 2027]
    assert WorkCalendar().unconfirmed_years(date(2027, 3, 1)) == [2027]
    notes = WorkCalendar().warnings(today=date(2026, 10, 1))
    assert "2026" in notes[0] and "carries" in notes[0]  # the package has 2026's notice
    assert "2027" in notes[1]


def test_no_year_from_2000_to_2100_crashes():
    cal = WorkCalendar()
    for year in range(2000, 2101):
        assert not cal.is_working_day(date(year, 1, 1)), year  # New Year's Day by statute
        assert not cal.is_working_day(date(year, 10, 1)), year
        due = cal.add_working_hours(at(year, 12, 28, 9, 0), 30)
        assert cal.next_working_moment(due) == due
    # Beyond the package's range the calendar still knows weekends.
    assert cal.is_working_day(date(2101, 1, 3))  # Monday
    assert not cal.is_working_day(date(2101, 1, 1))  # Saturday
    assert cal.add_working_hours(at(2101, 1, 1, 9, 0), 1) == at(2101, 1, 3, 9, 30)


# ---- pauses and time left ------------------------------------------------------------------


def test_pause_moves_the_deadline_by_the_paused_working_hours(cal):
    start = at(2026, 3, 2, 9, 0)  # Mon
    assert cal.deadline(start, 16) == at(2026, 3, 4, 10, 0)
    pause = (at(2026, 3, 3, 10, 0), at(2026, 3, 4, 15, 0))
    paused = cal.working_hours_between(*pause)
    assert paused == 11
    due = cal.deadline(start, 16, [pause])
    assert due == at(2026, 3, 5, 15, 0)
    assert due == cal.add_working_hours(start, 16 + paused)


def test_pauses_in_off_time_overlapping_or_after_change_nothing_twice(cal):
    start = at(2026, 3, 2, 9, 0)
    weekend = (at(2026, 3, 7, 0, 0), at(2026, 3, 9, 8, 30))
    assert cal.deadline(start, 40, [weekend]) == cal.deadline(start, 40)
    after = (at(2026, 3, 20, 9, 0), at(2026, 3, 21, 9, 0))
    assert cal.deadline(start, 16, [after]) == cal.deadline(start, 16)
    a = (at(2026, 3, 3, 10, 0), at(2026, 3, 3, 15, 0))
    b = (at(2026, 3, 3, 14, 0), at(2026, 3, 4, 15, 0))
    before_start = (at(2026, 2, 27, 9, 0), at(2026, 3, 2, 10, 0))  # clipped to start
    assert cal.deadline(start, 16, [b, a]) == at(2026, 3, 5, 15, 0)
    assert cal.deadline(start, 16, [before_start]) == cal.add_working_hours(start, 17)


def test_a_pause_across_golden_week_counts_only_working_hours(cal):
    start = at(2026, 9, 28, 8, 30)  # Mon
    pause = (at(2026, 9, 30, 8, 30), at(2026, 10, 9, 8, 30))  # Sep 30 + Oct 8 = 15 h
    assert cal.working_hours_between(*pause) == 15
    assert cal.deadline(start, 16, [pause]) == cal.add_working_hours(start, 31)
    assert cal.deadline(start, 16, [pause]) == at(2026, 10, 9, 9, 30)


def test_an_open_pause_freezes_the_deadline(cal):
    start = at(2026, 3, 2, 9, 0)
    parked = [(at(2026, 3, 3, 10, 0), None)]
    assert cal.deadline(start, 16, parked) is None
    left_then = cal.time_left(start, 16, at(2026, 3, 3, 11, 0), parked)
    left_later = cal.time_left(start, 16, at(2026, 3, 20, 11, 0), parked)
    assert left_then == left_later == 16 - 8.5
    # Parked only after the deadline had passed: that deadline stands.
    late = [(at(2026, 3, 5, 9, 0), None)]
    assert cal.deadline(start, 16, late) == at(2026, 3, 4, 10, 0)


def test_time_left_counts_down_and_goes_negative_when_overdue(cal):
    start = at(2026, 3, 9, 9, 0)
    due = cal.deadline(start, 7)
    assert due == at(2026, 3, 9, 17, 30)
    assert cal.time_left(start, 7, at(2026, 3, 9, 8, 0)) == 7
    assert cal.time_left(start, 7, at(2026, 3, 9, 14, 30)) == 3  # 09:00–12:00, 13:30–14:30
    assert cal.time_left(start, 7, due) == 0
    assert cal.time_left(start, 7, at(2026, 3, 10, 10, 0)) == -1.5
    pause = [(at(2026, 3, 9, 10, 0), at(2026, 3, 9, 11, 0))]
    assert cal.time_left(start, 7, at(2026, 3, 10, 10, 0), pause) == -0.5


# ---- rows from the admin table -------------------------------------------------------------


def test_from_rows():
    rows = [
        (date(2026, 3, 7), "work", "台风补班"),
        (date(2026, 3, 9), "off", "台风停工"),
        (date(2026, 3, 9), "off", "duplicate but consistent"),
        (date(2026, 3, 10), "off"),
    ]
    cal = WorkCalendar.from_rows(rows, confirmed_years=[2026], lunch=None)
    assert cal.overrides == {
        date(2026, 3, 7): "work",
        date(2026, 3, 9): "off",
        date(2026, 3, 10): "off",
    }
    assert cal.notes[date(2026, 3, 7)] == "台风补班"
    assert cal.confirmed_years == frozenset({2026})
    assert cal.hours_per_day == 9
    with pytest.raises(ValueError, match="conflicting"):
        WorkCalendar.from_rows([(date(2026, 3, 9), "off", ""), (date(2026, 3, 9), "work", "")])
    with pytest.raises(ValueError, match="'off' or 'work'"):
        WorkCalendar.from_rows([(date(2026, 3, 9), "班", "")])
    with pytest.raises(ValueError, match="must be a date"):
        WorkCalendar.from_rows([("2026-03-09", "off", "")])


# ---- properties ----------------------------------------------------------------------------

PROP_CAL = WorkCalendar(overrides={**NOTICE_2026, date(2027, 2, 11): "off"})
starts = st.builds(
    lambda day, minute: datetime.combine(day, time(minute // 60, minute % 60), tzinfo=TZ),
    st.dates(min_value=date(2025, 12, 1), max_value=date(2027, 12, 31)),
    st.integers(min_value=0, max_value=24 * 60 - 1),
)
minutes = st.integers(min_value=0, max_value=80 * 60)


def _in_working_time(cal: WorkCalendar, t: datetime) -> bool:
    """Inside a working period, its close (17:30 / 12:00) included."""
    in_morning = cal.hours[0] <= t.time() <= cal.lunch[0]
    in_afternoon = cal.lunch[1] <= t.time() <= cal.hours[1]
    return cal.is_working_day(t.date()) and (in_morning or in_afternoon)


@settings(deadline=None)
@given(starts, minutes, minutes)
def test_adding_is_associative(start, m1, m2):
    once = PROP_CAL.add_working_hours(start, (m1 + m2) / 60)
    twice = PROP_CAL.add_working_hours(PROP_CAL.add_working_hours(start, m1 / 60), m2 / 60)
    assert once == twice


@settings(deadline=None)
@given(starts, minutes)
def test_between_inverts_add_and_results_are_working_moments(start, m):
    end = PROP_CAL.add_working_hours(start, m / 60)
    assert end >= start
    assert round(PROP_CAL.working_hours_between(start, end) * 60) == m
    assert PROP_CAL.working_hours_between(end, start) == -PROP_CAL.working_hours_between(start, end)
    assert _in_working_time(PROP_CAL, end)
    assert PROP_CAL.next_working_moment(end) == end


@settings(deadline=None)
@given(starts, minutes, st.lists(st.tuples(starts, st.integers(0, 72 * 60)), max_size=3))
def test_time_left_is_zero_at_the_deadline(start, m, raw_pauses):
    pauses = [(p, p + timedelta(minutes=length)) for p, length in raw_pauses]
    due = PROP_CAL.deadline(start, m / 60, pauses)
    assert due is not None and _in_working_time(PROP_CAL, due)
    assert PROP_CAL.time_left(start, m / 60, due, pauses) == pytest.approx(0, abs=1e-9)
