"""``celery-qstash``: the command line.

Server commands (``dev``, ``emulator``, ``sandbox``, ``dashboard``) need the
``local`` extra, and ``serve`` (the app's receiver) the ``serve`` extra; status commands
(``status``, ``inspect``, ``revoke``, ``dlq``) use the same settings as the shim, so they
work against QStash or the emulator.
"""

from __future__ import annotations

import click

from .beat import beat_group
from .output import WholeHelpGroup
from .serve import serve
from .servers import dev, emulator, sandbox
from .status import register as _register_status

__all__ = ["main"]


@click.group(cls=WholeHelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="celery-qstash")
def main() -> None:
    """Celery email tasks on QStash and AutoSend."""


main.add_command(dev)
main.add_command(emulator)
main.add_command(sandbox)
main.add_command(serve)
main.add_command(beat_group)
_register_status(main)
