"""From a call to a published message: the option table and the transports.

options.py turns Celery's options and the task's attributes into one
:class:`~celery_qstash.publish.options.PublishRequest` (the one table, shared by every
kind of task); transports/ sends it (the official SDK, ``/v2/batch``, asyncio, or the
eager outbox).
"""
