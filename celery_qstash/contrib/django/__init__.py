"""Django integration: ``EMAIL_BACKEND = "celery_qstash.contrib.django.EmailBackend"``.

``send_mail``, ``send_mass_mail``, ``EmailMessage`` and ``EmailMultiAlternatives``
then go through QStash to AutoSend, one QStash message per message.
"""

from .backend import EmailBackend

__all__ = ["EmailBackend"]
