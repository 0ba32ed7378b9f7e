"""The pytest plugin in a fresh project: nothing but the package installed (its
``pytest11`` entry point), no conftest, the fixtures used as a user would."""

from __future__ import annotations

import sys

import pytest

TASKS = '''
from celery import Celery
from celery_qstash import Email, QStashTask

app = Celery("proj")  # no conf at all: the fixtures supply what is needed

@app.task(base=QStashTask, name="proj.welcome")
def welcome(to):
    return Email(to=to, from_="hi@acme.example", subject="Welcome", text="Hi")
'''

EAGER_TESTS = '''
import sys
import pytest
from celery_qstash import EmailValidationError
from tasks import welcome

def test_loaded_from_the_entry_point(pytestconfig):
    names = {dist.project_name for _, dist in pytestconfig.pluginmanager.list_plugin_distinfo()}
    assert "celery-qstash" in names

def test_sent(autosend_outbox):
    welcome.delay("jane@example.com")
    autosend_outbox.assert_sent(to="jane@example.com", subject="Welcome")
    assert autosend_outbox.last.to == ["jane@example.com"]
    assert len(autosend_outbox) == 1

def test_emptied_between_tests(autosend_outbox):
    assert len(autosend_outbox) == 0

def test_assert_sent_says_what_was_sent(autosend_outbox):
    welcome.delay("omar@example.com")
    with pytest.raises(AssertionError, match="omar@example.com"):
        autosend_outbox.assert_sent(to="jane@example.com")
    with pytest.raises(AssertionError, match="expected 2"):
        autosend_outbox.assert_sent(count=2)

def test_a_bad_email_raises_as_in_production(autosend_outbox):
    with pytest.raises(EmailValidationError):
        welcome.delay("not-an-address")
    assert len(autosend_outbox) == 0

def test_eager_is_off_again_after_the_fixture():
    from celery_qstash.publish.transports.eager import eager_forced
    assert not eager_forced()

def test_nothing_server_side_was_imported():
    loaded = {"uvicorn", "starlette", "celery_qstash.local.emulator", "celery_qstash.local.sandbox"} & set(sys.modules)
    assert not loaded
'''


def test_autosend_outbox_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tasks=TASKS, test_eager=EAGER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)


DEV_TESTS = '''
import pytest
from tasks import app, welcome

def test_end_to_end(qstash_dev):
    assert welcome.delay("jane@example.com").get(timeout=15)["status"] == "queued"
    [email] = qstash_dev.assert_sent(to="jane@example.com", subject="Welcome")
    assert email["text"] == "Hi"
    assert app.conf.qstash_url == qstash_dev.qstash_url.rstrip("/")

def test_reset_between_tests(qstash_dev):
    assert len(qstash_dev) == 0
    assert qstash_dev.qstash_url.startswith("http://127.0.0.1:")

@pytest.mark.autosend("dev")
def test_marker_picks_end_to_end(autosend):
    assert autosend.mode == "dev"
    welcome.delay("li@example.com")
    autosend.assert_sent(to="li@example.com", count=1)

def test_default_mode(autosend, pytestconfig):
    assert autosend.mode == (pytestconfig.getoption("--autosend-mode") or "eager")
    welcome.delay("ada@example.com")
    autosend.assert_sent(to="ada@example.com")
'''


@pytest.mark.slow
def test_qstash_dev_and_the_mode_switch_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tasks=TASKS, test_dev=DEV_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--autosend-mode=dev",
                                           "-k", "default_mode")
    result.assert_outcomes(passed=1, deselected=3)


BOTH_TESTS = '''
import pytest
from tasks import welcome

def test_both_fixtures(autosend_outbox, qstash_dev):
    welcome.delay("jane@example.com")

@pytest.mark.autosend("dev")
def test_outbox_and_the_dev_autosend(autosend_outbox, autosend):
    welcome.delay("jane@example.com")
'''


@pytest.mark.slow
def test_the_outbox_and_the_emulator_together_are_refused(pytester: pytest.Pytester) -> None:
    # Eager mode would win and the inbox would stay empty: the test is told, not misled.
    pytester.makepyfile(tasks=TASKS, test_both=BOTH_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*test_both_fixtures*autosend_outbox*qstash_dev*cannot be used*"])


BLOCKED = '''
import sys

class NoLocalExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("starlette", "uvicorn"):
            raise ImportError(f"{name} is not installed")

sys.meta_path.insert(0, NoLocalExtra())
import pytest
sys.exit(pytest.main(["-p", "no:cacheprovider", "-q"]))
'''

NO_EXTRA_TESTS = '''
from tasks import welcome

def test_outbox_needs_no_local_extra(autosend_outbox):
    welcome.delay("jane@example.com")
    autosend_outbox.assert_sent(to="jane@example.com")

def test_qstash_dev_says_what_to_install(qstash_dev):
    pass
'''


@pytest.mark.slow
def test_without_the_local_extra_only_qstash_dev_asks_for_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tasks=TASKS, test_extra=NO_EXTRA_TESTS)
    script = pytester.makepyfile(run_blocked=BLOCKED)
    result = pytester.run(sys.executable, str(script))
    result.stdout.fnmatch_lines(["*qstash_dev needs the local extra*celery-qstash[[]local[]]*"])
    result.stdout.fnmatch_lines(["*1 passed, 1 error*"])
