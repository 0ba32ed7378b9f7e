"""Child processes the tests stop with Ctrl-C (SIGINT): ``Popen(..., **INTERRUPTIBLE)``.

Run as a background job (``scripts/test &``, or a CI runner without a terminal), the
shell starts the suite with SIGINT ignored, and a child inherits that: SIGINT would do
nothing, a Ctrl-C test would wait out its timeout, and the server would be left running.
Each child gets SIGINT's default action back before it starts (Python then turns it into
``KeyboardInterrupt``, as a terminal's Ctrl-C does).
"""

from __future__ import annotations

import signal
from typing import Any


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


INTERRUPTIBLE: dict[str, Any] = {"preexec_fn": _default_sigint}
