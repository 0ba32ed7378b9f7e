"""What the README's snippets take for granted, made real: an app, its ``send_welcome``
task, a user table, a few users, a URL, an exception class. ``tests/test_docs_snippets.py``
runs each snippet after ``from snippet_world import *`` (its marker says so), in eager mode
or against the servers the snippet starts itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from celery_qstash import Email, autosend_task

__all__ = ["CdnBusy", "Email", "User", "app", "celery_app", "new_users", "send_welcome",
           "unread", "url", "user", "user_ids"]

app = Celery("readme")  # the current app, as a project's own is
app.conf.update(autosend_api_key="AS_readme", qstash_receiver_url="https://app.example/qstash")
celery_app = app


@dataclass(frozen=True)
class User:
    id: int
    email: str

    class objects:  # Django's manager, as the snippets call it
        rows: dict[int, User] = {}

        @classmethod
        def get(cls, pk: int) -> User:
            return cls.rows[pk]


User.objects.rows.update({u.id: u for u in (User(42, "jane@example.com"),
                                            User(7, "ada@example.com"),
                                            User(8, "grace@example.com"))})
new_users = [User.objects.get(pk=7), User.objects.get(pk=8)]
user_ids = [u.id for u in new_users]
user = new_users[0]
url = "https://cdn.example/cat.png"


class CdnBusy(Exception):
    """The CDN asked us to come back later."""


def unread(user_id: int) -> list[str]:
    return []  # read meanwhile: the digest has nothing to say


@autosend_task(max_retries=5)
def send_welcome(user_id: int) -> Email:
    user = User.objects.get(pk=user_id)
    return Email(to=user.email, from_="hi@acme.example", subject="Welcome!",
                 html="<h1>Welcome!</h1>")
