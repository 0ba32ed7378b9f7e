"""A FastAPI app that sends a welcome email on sign-up and reports its status.

    celery-qstash dev                                   # in another terminal
    QSTASH_DEV=true uvicorn examples.fastapi_app:api --port 8000
    curl -X POST localhost:8000/signup -H 'content-type: application/json' \\
         -d '{"email": "jane@example.com", "first_name": "Jane"}'

The sign-up endpoint is ``async``: ``send_welcome.adelay(...)`` publishes over the
official SDK's ``AsyncQStash`` (one client per event loop), with the same options,
validation and errors as ``.delay()``; only the HTTP round trip is awaited. The status
endpoint reads QStash's logs with the synchronous ``AsyncResult``, so it is a plain
``def`` that FastAPI runs in its threadpool (``await result.aget(timeout=...)`` waits for
the result without blocking, when waiting is what you want).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from celery_qstash import Email, EmailValidationError, QStashTask

app = Celery("fastapi_example")  # settings from the environment (QSTASH_DEV, QSTASH_TOKEN...)
api = FastAPI(title="celery-qstash FastAPI example")


@app.task(base=QStashTask, name="fastapi_example.send_welcome")
def send_welcome(email: str, first_name: str) -> Email:
    return Email(
        to=f"{first_name} <{email}>",
        from_="Acme <hello@acme.example>",
        subject=f"Welcome to Acme, {first_name}!",
        html="<p>Welcome, {{first_name}}!</p>",
        dynamic_data={"first_name": first_name},
    )


class SignUp(BaseModel):
    email: str
    first_name: str


@api.post("/signup", status_code=202)
async def signup(body: SignUp) -> dict[str, Any]:
    try:
        result = await send_welcome.adelay(body.email, body.first_name)
    except EmailValidationError as exc:  # a bad address is the client's mistake: 422, not 500
        raise HTTPException(status_code=422, detail=exc.errors) from None
    return {"task_id": result.id}


@api.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, Any]:
    result = send_welcome.AsyncResult(task_id)
    state = result.state  # one request to QStash's logs API
    return {"task_id": task_id, "state": state,
            "result": result.result if state == "SUCCESS" else None}
