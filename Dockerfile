# celery-qstash with the `local` extra: the QStash emulator, the AutoSend sandbox, the
# dashboard, the CLI, and the examples (the Django project is docker-compose.yml's `app`).
#
#   docker build -t celery-qstash:local .
#   docker run --rm -p 127.0.0.1:8080:8080 -e CELERY_QSTASH_ALLOWED_HOSTS=localhost \
#       celery-qstash:local celery-qstash emulator --host 0.0.0.0 --data-dir /data/emulator
#
# (Bound to 0.0.0.0, a server checks Host only when CELERY_QSTASH_ALLOWED_HOSTS is set.)
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package first (its layer is reused while only the examples change).
COPY pyproject.toml README.md LICENSE ./
COPY celery_qstash ./celery_qstash
# Django is only for the example app; the servers need nothing but the local extra.
RUN pip install ".[local]" "django>=4.2"

COPY examples ./examples

# State (SQLite) lives under /data: docker-compose.yml mounts a named volume there.
RUN useradd --create-home --uid 1000 qstash \
    && mkdir -p /data \
    && chown qstash:qstash /data
USER qstash
VOLUME ["/data"]

# emulator, sandbox inbox, dashboard, example app
EXPOSE 8080 8625 8655 8000

CMD ["celery-qstash", "--help"]
