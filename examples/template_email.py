"""An email from an AutoSend template: ``templateId`` plus ``dynamicData``, no inline HTML.

From AutoSend's guide "Send Emails with QStash" (on docs.autosend.com): "Send Using a
Template", ``templateId: "your-template-id"`` and ``dynamicData: {firstName,
orderNumber, trackingUrl}``.

Run it offline: ``python -m examples.template_email``
"""

from __future__ import annotations

from celery import Celery

from celery_qstash import Email, QStashTask

app = Celery("orders")


@app.task(base=QStashTask, name="examples.template_email.send_shipping_update")
def send_shipping_update(email: str, first_name: str, order_number: str) -> Email:
    return Email(
        to=f"{first_name} <{email}>",
        from_="Your Company <hello@yourdomain.example>",
        template_id="your-template-id",
        dynamic_data={
            "firstName": first_name,
            "orderNumber": order_number,
            "trackingUrl": f"https://track.example.com/{order_number}",
        },
    )


def main() -> None:
    from celery_qstash.testing import DevServers

    with DevServers() as servers:
        servers.configure(app)
        result = send_shipping_update.delay("john@example.com", "John", "ORD-12345")
        print(f"delivered: {result.get(timeout=10)}")
        [email] = servers.wait_for_emails(1)
        print(f"inbox: template {email['templateId']} with {email['dynamicData']}")


if __name__ == "__main__":
    main()
