"""The task classes and what a call does, in the caller's process.

``QStashTask``/``autosend_task`` (task.py), the many-at-once path (batch.py) and the
asyncio API (aio.py). A call goes down from here to :mod:`celery_qstash.publish`.
"""
