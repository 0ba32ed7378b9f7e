"""The contract tests reuse the emulator fixtures (servers, recording target)."""

from emulator.conftest import (  # noqa: F401 - fixtures are found by name
    fake,
    fake_server,
    live,
    live_server,
    sdk,
    sdk_server,
    target,
    target_server,
)
