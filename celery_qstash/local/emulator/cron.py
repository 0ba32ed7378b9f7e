"""QStash schedule times: 5-field cron expressions, evaluated by ``croniter``.

QStash's rules on top of plain cron (docs ``features/schedules`` and the OAS
``Upstash-Cron`` header): expressions are evaluated in UTC unless prefixed with
``CRON_TZ=<IANA zone>`` (``CRON_TZ=America/New_York 0 4 * * *``), and the finest
resolution is one minute, so exactly five fields (no seconds field). An expression
that never fires (``0 0 30 2 *``) is an error, as it is at QStash.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

__all__ = ["CronError", "next_after"]

#: How far croniter looks for a match before calling an expression one that never fires
#: (29 February needs up to eight years).
_MAX_YEARS = 9


class CronError(ValueError):
    """The cron expression is invalid (reported as 400)."""


def _split(expr: str) -> tuple[str, dt.tzinfo]:
    """(the five fields, the zone they are read in) of ``[CRON_TZ=Zone ]m h dom mon dow``."""
    fields = expr.split()
    tz: dt.tzinfo = dt.timezone.utc
    if fields and fields[0].upper().startswith(("CRON_TZ=", "TZ=")):
        zone = fields.pop(0).split("=", 1)[1]
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone {zone!r}") from None
    if len(fields) != 5:
        raise CronError("cron expression must have 5 fields (QStash's resolution is 1 minute)")
    return " ".join(fields), tz


def next_after(expr: str, t: float) -> float:
    """The first time (epoch seconds) strictly after ``t`` at which ``expr`` fires."""
    fields, tz = _split(expr)
    start = dt.datetime.fromtimestamp(t, tz)
    try:
        runs = croniter(fields, start, max_years_between_matches=_MAX_YEARS)
        nxt: dt.datetime = runs.get_next(dt.datetime)
    except CroniterBadDateError:
        raise CronError("cron expression never fires") from None
    # Every croniter error is a ValueError (croniter before 6.0 exports no CroniterError).
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise CronError(f"invalid cron expression: {exc}") from None
    return nxt.timestamp()
