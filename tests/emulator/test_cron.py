"""QStash schedule times (croniter with QStash's CRON_TZ and 5-field rules)."""

from __future__ import annotations

import datetime as dt

import pytest

from celery_qstash.local.emulator.cron import CronError, next_after


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("* * * * *", "2027-01-15 10:00:30", "2027-01-15 10:01:00"),
        ("* * * * *", "2027-01-15 10:00:00", "2027-01-15 10:01:00"),
        ("*/15 * * * *", "2027-01-15 10:16:00", "2027-01-15 10:30:00"),
        ("0 4 * * *", "2027-01-15 10:00:00", "2027-01-16 04:00:00"),
        ("30 9 1,15 * *", "2027-01-15 10:00:00", "2027-02-01 09:30:00"),
        ("0 0 * * mon", "2027-01-15 10:00:00", "2027-01-18 00:00:00"),  # a Friday
        ("0 0 * * 7", "2027-01-15 10:00:00", "2027-01-17 00:00:00"),  # Sunday as 7
        ("0 12 * feb-mar *", "2027-01-15 10:00:00", "2027-02-01 12:00:00"),
        ("0 0 29 2 *", "2027-01-15 10:00:00", "2028-02-29 00:00:00"),
        ("5-10/5 1 * * *", "2027-01-15 10:00:00", "2027-01-16 01:05:00"),
        # Day-of-month OR day-of-week when both are restricted (Vixie cron).
        ("0 0 20 * fri", "2027-01-15 10:00:00", "2027-01-20 00:00:00"),
    ],
)
def test_next_after(expr: str, after: str, expected: str) -> None:
    assert next_after(expr, ts(after)) == ts(expected)


def test_cron_tz_prefix_evaluates_in_that_zone() -> None:
    # 04:00 in New York in January is 09:00 UTC.
    assert next_after("CRON_TZ=America/New_York 0 4 * * *", ts("2027-01-15 10:00:00")) == ts(
        "2027-01-16 09:00:00"
    )


@pytest.mark.parametrize(
    "expr",
    ["* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "a b c d e", "CRON_TZ=Nope/Zone * * * * *",
     "0 0 30 2 *"],
)
def test_invalid_or_never_firing_expressions(expr: str) -> None:
    with pytest.raises(CronError):
        next_after(expr, ts("2027-01-15 10:00:00"))


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # OAS ``Upstash-Cron`` examples (upstash/docs qstash/openapi.yaml).
        ("*/5 * * * *", "2027-01-15 10:02:00", "2027-01-15 10:05:00"),
        ("CRON_TZ=America/New_York */5 * * * *", "2027-01-15 10:02:00", "2027-01-15 10:05:00"),
        # docs features/schedules, "Timezones": 04:00 in New York, in winter (EST) and in
        # summer (EDT): croniter follows the zone's daylight saving time.
        ("CRON_TZ=America/New_York 0 4 * * *", "2027-01-15 10:00:00", "2027-01-16 09:00:00"),
        ("CRON_TZ=America/New_York 0 4 * * *", "2027-07-15 10:00:00", "2027-07-16 08:00:00"),
        # "By default, we evaluate cron expressions in UTC."
        ("0 4 * * *", "2027-07-15 10:00:00", "2027-07-16 04:00:00"),
    ],
)
def test_next_runs_match_qstash_documented_examples(expr: str, after: str,
                                                    expected: str) -> None:
    assert next_after(expr, ts(after)) == ts(expected)


def test_a_seconds_field_is_refused_as_qstash_resolution_is_one_minute() -> None:
    # OAS Upstash-Cron: "The maximum schedule resolution is 1 minute."
    with pytest.raises(CronError, match="5 fields"):
        next_after("*/10 * * * * *", ts("2027-01-15 10:00:00"))
