"""Working calendar for case deadlines (Foshan, Asia/Shanghai), free of the database and of Flask.

A case's time limit is counted in *working hours*: the clock runs only inside the working
periods of working days (by default 08:30–12:00 and 13:30–17:30, 7.5 h a day) and stops while
the case is paused (parked 挂账, or an extension period).

Which days are working days
---------------------------
1. The base is the maintained ``holidays`` package (``holidays.country_holidays("CN")``,
   public category). It knows the statutory holidays of every year from 1950 to 2100 by rule,
   and for the years whose State Council notice it carries (2001–2026 in holidays 0.85+) also
   the notice's extra days off and its make-up working days (调休上班, exposed as
   ``weekend_workdays``). For later years it only *estimates*: statutory days plus its own
   "observed" rule (a holiday on a weekend moves to the next workday), with no make-up days.
2. An admin-edited override table wins over the package: ``(date, kind)`` where kind is
   ``"off"`` (a day off, e.g. from the year's notice) or ``"work"`` (a working day: normally a
   weekend make-up day, but it also corrects a weekday the package guessed wrongly as a day off).
3. A year counts as *confirmed* once an admin has checked it against the State Council notice
   (published around November for the next year). ``warnings()`` reports the current year,
   and from October on the coming one, while they are unconfirmed; ``warnings(span=...)`` also
   reports any unconfirmed year a given computation touched, so the UI can mark a deadline as
   provisional. Nothing ever raises because a year is unknown: outside the package's range the
   calendar falls back to Monday–Friday.

Time conventions
----------------
All datetimes must be timezone-aware (naive ones raise ``ValueError``, since guessing their zone
silently shifts deadlines by hours); they are converted to Asia/Shanghai, which has had no DST
since 1991, so wall-clock arithmetic is exact. Hours are rounded to the nearest second.
Working periods are treated as closed intervals for *landing*: a deadline that uses up the last
minute of the day is 17:30 that day ("due by close of business"), not 08:30 the next working day.
A start outside working time rolls forward to the next working moment.

Suggested tables (the migration is someone else's; ``WorkCalendar.from_rows`` reads them)::

    CREATE TABLE work_calendar_override (
        day         date PRIMARY KEY,
        kind        text NOT NULL CHECK (kind IN ('off', 'work')),
        note        text NOT NULL DEFAULT '',      -- e.g. '国庆节调休上班'
        updated_by  integer REFERENCES users (id),
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE work_calendar_year (
        year          integer PRIMARY KEY CHECK (year BETWEEN 2000 AND 2100),
        source        text NOT NULL,               -- e.g. '国办发明电〔2025〕7号'
        confirmed_by  integer REFERENCES users (id),
        confirmed_at  timestamptz NOT NULL DEFAULT now()
    );

    cal = WorkCalendar.from_rows(
        session.execute(select(Override.day, Override.kind, Override.note)).all(),
        confirmed_years=session.scalars(select(CalendarYear.year)).all(),
    )
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays

TZ = ZoneInfo("Asia/Shanghai")
KINDS = frozenset({"off", "work"})
# Deadlines are never computed this far out; reaching it means the calendar has no working day
# at all (e.g. a broken override table), which must fail loudly rather than loop forever.
_MAX_YEAR = 2200

Pause = tuple[datetime, datetime | None]


@dataclass(frozen=True)
class _PackageYear:
    off: frozenset[date]  # days the package calls holidays (statutory, observed, notice)
    work: frozenset[date]  # weekend days the package knows as make-up working days
    from_notice: bool  # the package carries this year's State Council arrangement


@functools.lru_cache(maxsize=256)
def _package_year(year: int) -> _PackageYear:
    """What ``holidays`` says about one year, cached because it never changes in a process."""
    cls = holidays.China
    if not cls.start_year <= year <= getattr(cls, "end_year", 2100):
        return _PackageYear(frozenset(), frozenset(), False)
    # Ask for the next year too: a notice may make a late-December weekend a working day
    # for the next New Year's holiday (e.g. 2001-12-29 for 2002).
    known = holidays.country_holidays("CN", years=(year, year + 1), categories=("public",))
    off = frozenset(d for d in known if d.year == year)
    work = frozenset(d for d in getattr(known, "weekend_workdays", ()) if d.year == year)
    return _PackageYear(off, work, year in _notice_years())


@functools.cache
def _notice_years() -> frozenset[int]:
    """Years whose State Council arrangement the package carries (its static substitutions).

    Read from package internals, so guarded: if a future layout moves them, we only lose the
    hint in the warning text, never a deadline.
    """
    try:
        from holidays.countries.china import ChinaStaticHolidays
    except ImportError:
        return frozenset()
    return frozenset(getattr(ChinaStaticHolidays, "special_public_holidays", {}))


def package_has_notice(year: int) -> bool:
    """True if the installed ``holidays`` carries the State Council arrangement for ``year``."""
    return _package_year(year).from_notice


def local_today() -> date:
    """Today in the city's time zone (duty rosters and absences are local days)."""
    return datetime.now(TZ).date()


def _aware(dt: datetime, name: str = "datetime") -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (Asia/Shanghai), got naive {dt!r}")
    return dt.astimezone(TZ)


def _duration(hours: float) -> timedelta:
    if not math.isfinite(hours):
        raise ValueError(f"hours must be a finite number, got {hours!r}")
    if hours < 0:
        raise ValueError(f"hours must not be negative, got {hours!r}")
    return timedelta(seconds=round(hours * 3600))


def _hours(td: timedelta) -> float:
    return td.total_seconds() / 3600


@dataclass(frozen=True)
class WorkCalendar:
    """Working days and hours; see the module docstring for the rules."""

    overrides: Mapping[date, str] = field(default_factory=dict)
    confirmed_years: Iterable[int] = ()
    hours: tuple[time, time] = (time(8, 30), time(17, 30))
    lunch: tuple[time, time] | None = (time(12, 0), time(13, 30))
    notes: Mapping[date, str] = field(default_factory=dict, compare=False)
    _confirmed: frozenset[int] = field(init=False, repr=False, compare=False)
    _periods: tuple[tuple[time, time], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        overrides: dict[date, str] = {}
        for day, kind in dict(self.overrides).items():
            if not isinstance(day, date) or isinstance(day, datetime):
                raise ValueError(f"override key must be a date, got {day!r}")
            if kind not in KINDS:
                raise ValueError(f"override kind for {day} must be 'off' or 'work', got {kind!r}")
            overrides[day] = kind
        # Frozen dataclass: normalise once here so later mutation of the caller's objects
        # cannot change deadlines behind our back.
        object.__setattr__(self, "overrides", overrides)
        confirmed = frozenset(int(y) for y in self.confirmed_years)
        object.__setattr__(self, "confirmed_years", confirmed)
        object.__setattr__(self, "_confirmed", confirmed)
        object.__setattr__(self, "notes", dict(self.notes))
        object.__setattr__(self, "_periods", self._check_periods())

    def _check_periods(self) -> tuple[tuple[time, time], ...]:
        start, end = self.hours
        for t in (start, end, *(self.lunch or ())):
            if t.tzinfo is not None:
                raise ValueError("working hours are wall-clock times in Asia/Shanghai: no tzinfo")
        if not start < end:
            raise ValueError(f"working hours must start before they end, got {start}–{end}")
        if self.lunch is None:
            return ((start, end),)
        l_start, l_end = self.lunch
        if not start < l_start < l_end < end:
            raise ValueError(
                f"lunch {l_start}–{l_end} must lie strictly inside working hours {start}–{end}"
            )
        return ((start, l_start), (l_end, end))

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Sequence[object]],
        confirmed_years: Iterable[int] = (),
        *,
        hours: tuple[time, time] = (time(8, 30), time(17, 30)),
        lunch: tuple[time, time] | None = (time(12, 0), time(13, 30)),
    ) -> WorkCalendar:
        """Build from override rows ``(day, kind, note)`` and the confirmed years.

        ``rows`` are sequences (tuples or SQLAlchemy ``Row``s) of ``(date, "off" | "work",
        note)``; the note is optional. ``confirmed_years`` are the years of
        ``work_calendar_year``; ``hours`` and ``lunch`` are as for the constructor.
        A day listed twice with different kinds raises ``ValueError``: the admin table has
        one row per day, so a conflict means bad input, not something to pick a winner for.
        """
        overrides: dict[date, str] = {}
        notes: dict[date, str] = {}
        for row in rows:
            if len(row) not in (2, 3):
                raise ValueError(f"override row must be (day, kind[, note]), got {row!r}")
            day, kind = row[0], row[1]
            note = row[2] if len(row) == 3 else ""
            if isinstance(day, datetime) or not isinstance(day, date):
                raise ValueError(f"override day must be a date, got {day!r}")
            if not isinstance(kind, str):
                raise ValueError(f"override kind must be 'off' or 'work', got {kind!r}")
            if overrides.get(day, kind) != kind:
                raise ValueError(f"conflicting overrides for {day}: {overrides[day]!r}/{kind!r}")
            overrides[day] = kind
            if note:
                notes[day] = str(note)
        return cls(
            overrides=overrides,
            confirmed_years=confirmed_years,
            hours=hours,
            lunch=lunch,
            notes=notes,
        )

    # ---- days ---------------------------------------------------------------------------

    def is_working_day(self, d: date) -> bool:
        """Mon–Fri and not a holiday, or an override "work" day; overrides win."""
        if isinstance(d, datetime):
            d = _aware(d).date()
        kind = self.overrides.get(d)
        if kind is not None:
            return kind == "work"
        known = _package_year(d.year)
        if d.weekday() >= 5:
            return d in known.work
        return d not in known.off

    def day_source(self, d: date) -> str:
        """Why ``d`` is what it is: "override", "package-notice", "package-rule" or "weekdays".

        "weekdays": no source says anything about the day, so plain Monday–Friday applies.
        """
        if d in self.overrides:
            return "override"
        known = _package_year(d.year)
        if d in known.off or d in known.work:
            return "package-notice" if known.from_notice else "package-rule"
        return "weekdays"

    def _day_periods(self, d: date) -> list[tuple[datetime, datetime]]:
        if not self.is_working_day(d):
            return []
        return [
            (datetime.combine(d, s, tzinfo=TZ), datetime.combine(d, e, tzinfo=TZ))
            for s, e in self._periods
        ]

    @property
    def hours_per_day(self) -> float:
        day = date(2000, 1, 3)
        return sum(
            _hours(datetime.combine(day, e) - datetime.combine(day, s)) for s, e in self._periods
        )

    # ---- moments ------------------------------------------------------------------------

    def is_working_time(self, dt: datetime) -> bool:
        """True while the clock runs at ``dt`` (half-open periods: 17:30 itself is not)."""
        t = _aware(dt)
        return any(s <= t < e for s, e in self._day_periods(t.date()))

    def next_working_moment(self, dt: datetime) -> datetime:
        """``dt`` itself if it lies in a (closed) working period, else the next period start."""
        return self._add(_aware(dt), timedelta(0))

    def _add(self, start: datetime, need: timedelta) -> datetime:
        # Walk day by day: at most a few hundred iterations even for the longest time limits,
        # and it keeps overrides and per-year package data trivially correct.
        t = start
        day = t.date()
        while day.year <= _MAX_YEAR:
            for p_start, p_end in self._day_periods(day):
                if t > p_end:
                    continue
                s = max(t, p_start)
                avail = p_end - s
                if need <= avail:
                    return s + need
                need -= avail
            day += timedelta(days=1)
        raise ValueError(f"no working time found between {start} and year {_MAX_YEAR}")

    def _between(self, a: datetime, b: datetime) -> timedelta:
        if b < a:
            return -self._between(b, a)
        total = timedelta(0)
        day = a.date()
        while day <= b.date():
            for p_start, p_end in self._day_periods(day):
                overlap = min(p_end, b) - max(p_start, a)
                if overlap > timedelta(0):
                    total += overlap
            day += timedelta(days=1)
        return total

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The earliest moment at which ``hours`` working hours have passed since ``start``."""
        return self._add(_aware(start, "start"), _duration(hours))

    def working_hours_between(self, a: datetime, b: datetime) -> float:
        """Working hours in [a, b]; negative when ``b`` is before ``a``."""
        return _hours(self._between(_aware(a, "a"), _aware(b, "b")))

    # ---- deadlines with pauses ---------------------------------------------------------

    @staticmethod
    def _merge_pauses(pauses: Iterable[Pause], start: datetime) -> list[Pause]:
        """Clip pauses to ``start``, sort and merge overlaps; an open pause swallows the rest."""
        clipped: list[Pause] = []
        for p_start, p_end in pauses:
            ps = _aware(p_start, "pause start")
            pe = None if p_end is None else _aware(p_end, "pause end")
            if pe is not None and pe < ps:
                raise ValueError(f"pause ends before it starts: {ps} > {pe}")
            if pe is not None and pe <= start:
                continue
            clipped.append((max(ps, start), pe))
        clipped.sort(key=lambda p: p[0])
        merged: list[Pause] = []
        for ps, pe in clipped:
            if merged:
                last_start, last_end = merged[-1]
                if last_end is None:
                    break
                if ps <= last_end:
                    end = None if pe is None else max(last_end, pe)
                    merged[-1] = (last_start, end)
                    continue
            merged.append((ps, pe))
        return merged

    def deadline(
        self, start: datetime, hours: float, pauses: Iterable[Pause] = ()
    ) -> datetime | None:
        """When ``hours`` working hours have run since ``start``, the clock stopping in pauses.

        ``pauses`` are ``(from, to)`` intervals (parked, approved extension periods) in any
        order, possibly overlapping. A pause still open (``to`` is ``None``) freezes the
        deadline: the result is ``None`` unless the deadline fell before that pause began
        (then it is that earlier moment, and the case was already overdue when parked). Use
        ``time_left`` for what remains while frozen.
        """
        t = _aware(start, "start")
        need = _duration(hours)
        for p_start, p_end in self._merge_pauses(pauses, t):
            candidate = self._add(t, need)
            if candidate <= p_start:
                return candidate
            need -= self._between(t, p_start)
            if p_end is None:
                return None
            t = p_end
        return self._add(t, need)

    def time_left(
        self,
        start: datetime,
        hours: float,
        now: datetime,
        pauses: Iterable[Pause] = (),
    ) -> float:
        """Working hours left at ``now``: negative when overdue, frozen while paused.

        It is ``hours`` minus the working hours that ran, outside pauses, from ``start`` to
        ``now``; an open pause counts as lasting until ``now``.
        """
        t0 = _aware(start, "start")
        t1 = _aware(now, "now")
        need = _duration(hours)
        if t1 <= t0:
            return _hours(need)
        used = self._between(t0, t1)
        for p_start, p_end in self._merge_pauses(pauses, t0):
            if p_start >= t1:
                break
            used -= self._between(p_start, t1 if p_end is None else min(p_end, t1))
        return _hours(need - used)

    # ---- confirmation ------------------------------------------------------------------

    def unconfirmed_years(self, today: date | None = None) -> list[int]:
        """The current year, and from October on the coming one, if not yet confirmed.

        October because the State Council publishes next year's arrangement around November
        and deadlines running into January are computed from then on.
        """
        today = today or datetime.now(TZ).date()
        years = [today.year] + ([today.year + 1] if today.month >= 10 else [])
        return [y for y in years if y not in self._confirmed]

    def _year_warning(self, year: int) -> str:
        if package_has_notice(year):
            hint = (
                "the holidays package carries that year's State Council notice; check it "
                "and mark the year confirmed"
            )
        else:
            hint = (
                "only statutory holidays are known by rule, without make-up working days "
                "(调休); enter the State Council notice's days off and make-up days and mark "
                "the year confirmed"
            )
        return f"Working calendar {year} is not confirmed: {hint}."

    def warnings(
        self, today: date | None = None, span: tuple[datetime, datetime] | None = None
    ) -> list[str]:
        """Messages for an admin: unconfirmed current/coming years, and any year in ``span``.

        ``span`` is typically ``(start, deadline)`` of one computation: a deadline that runs
        through an unconfirmed year is provisional and the UI should say so.
        """
        years = set(self.unconfirmed_years(today))
        if span is not None:
            a, b = sorted((_aware(span[0], "span start"), _aware(span[1], "span end")))
            years |= {y for y in range(a.year, b.year + 1) if y not in self._confirmed}
        return [self._year_warning(y) for y in sorted(years)]
