"""``python -m celery_qstash`` is ``celery-qstash``."""

from .cli import main

main()
