"""Celery beat timetables -> QStash cron (``celery_qstash.schedules.beat``), checked with croniter."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import Celery
from celery.schedules import BaseSchedule, crontab, schedule
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_qstash import ConfigurationError
from celery_qstash.schedules.beat import cron_for, schedule_id_for


@pytest.mark.parametrize(
    ("sched", "cron"),
    [
        (crontab(), "* * * * *"),
        (crontab(minute=0, hour=7), "0 7 * * *"),
        (crontab(minute="*/15"), "*/15 * * * *"),
        (crontab(minute=30, hour="9-17", day_of_week="mon-fri"), "30 9-17 * * 1,2,3,4,5"),
        (crontab(minute=0, hour=0, day_of_week="sun"), "0 0 * * 0"),
        (crontab(minute=0, hour=8, day_of_month="1", month_of_year="*/3"), "0 8 1 */3 *"),
        (crontab(minute=[5, 35], hour=6), "5,35 6 * * *"),
        (timedelta(minutes=15), "*/15 * * * *"),
        (timedelta(minutes=1), "* * * * *"),
        (schedule(run_every=timedelta(hours=6)), "0 */6 * * *"),
        (3600, "0 * * * *"),
        (timedelta(days=1), "0 0 * * *"),
    ],
)
def test_timetables_become_cron_with_the_apps_timezone(app: Celery, sched: object, cron: str) -> None:
    app.conf.timezone = "Europe/Paris"
    assert cron_for(app, "entry", sched) == f"CRON_TZ=Europe/Paris {cron}"


def test_utc_when_the_app_has_no_timezone(app: Celery) -> None:
    assert cron_for(app, "e", crontab(minute=0, hour=7)) == "CRON_TZ=UTC 0 7 * * *"
    app.conf.enable_utc = False
    with pytest.raises(ConfigurationError, match="timezone"):
        cron_for(app, "e", crontab(minute=0, hour=7))


@pytest.mark.parametrize("seconds", [1, 30, 59.9])
def test_intervals_under_a_minute_are_refused(app: Celery, seconds: float) -> None:
    with pytest.raises(ConfigurationError, match="at most once a minute"):
        cron_for(app, "fast", timedelta(seconds=seconds))


@pytest.mark.parametrize("sched", [timedelta(minutes=7), timedelta(minutes=90), timedelta(seconds=61),
                                   timedelta(days=2)])
def test_intervals_cron_cannot_express_are_refused_with_the_way_out(app: Celery, sched: timedelta) -> None:
    with pytest.raises(ConfigurationError, match=r"crontab\(") as info:
        cron_for(app, "odd", sched)
    assert "'odd'" in str(info.value)


def test_day_of_month_and_day_of_week_together_are_refused(app: Celery) -> None:
    # Celery needs both to match; cron fires when either does.
    with pytest.raises(ConfigurationError, match="either"):
        cron_for(app, "e", crontab(minute=0, hour=0, day_of_month=13, day_of_week="fri"))


def test_other_timetables_have_no_equivalent(app: Celery) -> None:
    class Sunrise(BaseSchedule):  # type: ignore[misc]
        """Stands in for solar() (which needs ephem) and any custom timetable."""

    with pytest.raises(ConfigurationError, match="Sunrise timetables"):
        cron_for(app, "e", Sunrise())


def test_schedule_ids_are_stable_distinct_and_valid() -> None:
    a = schedule_id_for("daily digest")
    assert a == schedule_id_for("daily digest")
    assert a != schedule_id_for("daily-digest")
    assert a.startswith("celery-beat-daily-digest-")
    import re
    assert re.fullmatch(r"[A-Za-z0-9_.\-]{1,256}", schedule_id_for("ünï/côdé " * 40))


_field = st.one_of(
    st.just("*"),
    st.integers(0, 5).map(str),
    st.integers(1, 5).map(lambda n: f"*/{n}"),
    st.tuples(st.integers(0, 3), st.integers(3, 5)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True).map(lambda v: ",".join(map(str, v))),
)


@settings(max_examples=60, deadline=None)
@given(minute=_field, hour=_field, dow=_field)
def test_cron_fires_on_the_minutes_hours_and_days_the_crontab_does(
    minute: str, hour: str, dow: str
) -> None:
    app = Celery("prop", set_as_current=False)
    sched = crontab(minute=minute, hour=hour, day_of_week=dow)
    expr = cron_for(app, "p", sched).split(" ", 1)[1]
    fields, _ = croniter.expand(expr)
    as_sets = [set(range(n)) if f == ["*"] else set(f) for f, n in zip(fields[:2], (60, 24), strict=True)]
    assert as_sets == [set(sched.minute), set(sched.hour)]
    days = set(range(7)) if fields[4] == ["*"] else {int(d) % 7 for d in fields[4]}
    assert days == set(sched.day_of_week)
