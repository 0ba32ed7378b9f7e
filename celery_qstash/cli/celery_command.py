"""``celery -A proj qstash ...``: the ``celery-qstash`` commands under Celery's own CLI.

Registered through Celery's ``celery.commands`` entry point. The subcommands are
the same objects as ``celery-qstash``'s; under ``celery`` they read the conf of the
app ``-A`` loaded (Celery keeps it on the root click context), so a project that
configures ``qstash_token`` & co. on its app needs nothing else.
"""

from __future__ import annotations

import click

from .beat import beat_group
from .output import WholeHelpGroup
from .serve import serve
from .servers import dev
from .status import (
    dashboard_cmd,
    dlq_group,
    inspect_cmd,
    queues_cmd,
    revoke_cmd,
    schedules_cmd,
    status_cmd,
)

__all__ = ["qstash"]


@click.group("qstash", cls=WholeHelpGroup,
             context_settings={"help_option_names": ["-h", "--help"]})
def qstash() -> None:
    """Celery tasks on QStash: status, inspect, revoke, queues, schedules, dlq, dashboard, dev,
    serve, beat sync."""


for _command in (status_cmd, inspect_cmd, revoke_cmd, queues_cmd, schedules_cmd, dlq_group,
                 dashboard_cmd, dev, serve, beat_group):
    qstash.add_command(_command)
