"""Sign-up: plain ``send_mail``; the project's EMAIL_BACKEND sends it through QStash."""

from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from celery_qstash import EmailValidationError


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("POST email=... name=... to /signup/\n", content_type="text/plain")


@csrf_exempt  # an API endpoint for curl; a real form would carry Django's CSRF token
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    address = request.POST.get("email", "")
    name = request.POST.get("name", "there")
    try:
        sent = send_mail(
            subject=f"Welcome to Acme, {name}!",
            message=f"Hi {name}, thanks for signing up.",
            from_email=None,  # DEFAULT_FROM_EMAIL
            recipient_list=[address],
            html_message=format_html("<h1>Welcome, {}!</h1><p>Thanks for signing up.</p>", name),
        )
    except EmailValidationError as exc:  # a bad address is the visitor's mistake: 400
        return JsonResponse({"errors": exc.errors}, status=400)
    return JsonResponse({"sent": sent}, status=202)
