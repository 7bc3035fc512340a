"""Console pages of outbound messaging: the outbox (with retry and a send-a-text form), the SMTP
server, and webhooks (inbound endpoints, outbound subscriptions, the delivery log with replay)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from shequn.console.access import actor, console_view, has_role
from shequn.console.errors import error_field, error_text
from shequn.console.forms import ConsoleForm
from shequn.core.errors import ShequnError
from shequn.core.models import Role
from shequn.core.tenancy import get_scoped
from shequn.outbound import queries, services
from shequn.outbound.models import (
    Channel,
    DeliveryStatus,
    MessageStatus,
    OutboundMessage,
    SmtpSecurity,
    WebhookDelivery,
)

PAGE = 50


class SendTextForm(ConsoleForm):
    member_id = forms.IntegerField(min_value=1, label=gettext_lazy("Member id"))
    text = forms.CharField(max_length=services.MAX_TEXT, widget=forms.Textarea(attrs={"rows": 3}),
                           label=gettext_lazy("Text"))
    channel = forms.ChoiceField(required=False, label=gettext_lazy("Channel"),
                                choices=[("", gettext_lazy("Best available")), (Channel.WECHAT, gettext_lazy("WeChat")),
                                         (Channel.EMAIL, gettext_lazy("Email"))])


class SmtpForm(ConsoleForm):
    host = forms.CharField(max_length=255, label=gettext_lazy("SMTP host"))
    port = forms.IntegerField(min_value=1, max_value=65535, initial=587, label=gettext_lazy("Port"))
    security = forms.ChoiceField(choices=SmtpSecurity.choices, initial=SmtpSecurity.STARTTLS,
                                 label=gettext_lazy("Security"))
    username = forms.CharField(max_length=255, required=False, label=gettext_lazy("User name"))
    password = forms.CharField(max_length=255, required=False, label=gettext_lazy("Password"),
                               widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                               help_text=gettext_lazy("Leave empty to keep the current value."))
    from_address = forms.EmailField(label=gettext_lazy("Sender address"))
    from_name = forms.CharField(max_length=100, required=False, label=gettext_lazy("Sender name"))
    timeout = forms.IntegerField(min_value=1, max_value=120, initial=15, label=gettext_lazy("Timeout (seconds)"))


class EndpointForm(ConsoleForm):
    name = forms.CharField(max_length=100, label=gettext_lazy("Name"),
                           help_text=gettext_lazy("The system that calls it, e.g. “POS 收银系统”."))
    source = forms.CharField(max_length=64, required=False, label=gettext_lazy("Interaction source"),
                             help_text=gettext_lazy("Empty: “webhook:” followed by the name."))


class SubscriptionForm(ConsoleForm):
    name = forms.CharField(max_length=100, label=gettext_lazy("Name"))
    url = forms.URLField(max_length=500, label=gettext_lazy("URL"), assume_scheme="https")
    events = forms.CharField(max_length=1000, label=gettext_lazy("Events"), initial="interaction.created",
                             help_text=gettext_lazy("Separate with commas: interaction.created, message.sent, "
                                                    "message.failed, or * for all."))

    def clean_events(self) -> list[str]:
        return [e.strip() for e in self.cleaned_data["events"].replace("，", ",").split(",") if e.strip()]


def _form_error(form: forms.Form, exc: ShequnError) -> None:
    field = error_field(exc)
    form.add_error(field if field in form.fields else None, error_text(exc))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# the outbox


@console_view(read=Role.AGENT)
def outbox(request: HttpRequest) -> HttpResponse:
    """Newest first, filtered by status, purpose and channel; agents and above may send a text."""
    ws = request.workspace  # type: ignore[attr-defined]
    status = request.GET.get("status", "")
    status = status if status in MessageStatus.values else ""
    purpose = request.GET.get("purpose", "")[:32]
    channel = request.GET.get("channel", "")
    channel = channel if channel in Channel.values else ""
    member_id = _int(request.GET.get("member"))
    form = SendTextForm(request.POST or None, initial={"member_id": member_id})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            msg = services.send_text(ws, data["member_id"], data["text"], purpose="operator", actor=actor(request),
                                     channel=data["channel"] or None)
        except ShequnError as exc:
            _form_error(form, exc)
        else:
            if msg.status == MessageStatus.UNDELIVERABLE:
                messages.warning(request, _("Recorded, but it cannot be delivered: %(reason)s") % {"reason": msg.last_error})
            else:
                messages.success(request, _("Message queued."))
            return redirect("console:outbound_outbox", slug=ws.slug)
    rows, nxt = queries.page(queries.outbox(ws, queries.OutboxFilter(status=status, purpose=purpose, channel=channel,
                                                                     member_id=member_id)),
                             before=_int(request.GET.get("before")), limit=PAGE)
    return render(request, "console/outbound/outbox.html", {
        "rows": rows, "next": nxt, "form": form, "statuses": MessageStatus.choices, "channels": Channel.choices,
        "purposes": queries.purposes(ws), "status": status, "purpose": purpose, "channel": channel,
        "member_id": member_id or "",
    })


@console_view(read=Role.AGENT)
def message_detail(request: HttpRequest, message_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    message = get_scoped(OutboundMessage, ws, message_id)
    return render(request, "console/outbound/message.html", {
        "m": message, "attempts": queries.message_attempts(message), "member": message.member,
        "can_retry": message.status == MessageStatus.FAILED and has_role(request.role, Role.OPERATOR),  # type: ignore[attr-defined]
    })


@require_POST
@console_view(read=Role.OPERATOR)
def message_retry(request: HttpRequest, message_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    try:
        services.retry_message(ws, message_id, actor=actor(request))
    except ShequnError as exc:
        if exc.status == 404:
            raise
        messages.error(request, error_text(exc))
    else:
        messages.success(request, _("Message queued again."))
    return redirect("console:outbound_message", slug=ws.slug, message_id=message_id)


# ---------------------------------------------------------------------------------------------
# SMTP


@console_view(read=Role.OPERATOR, write=Role.OWNER)
def smtp_settings(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    current = queries.smtp_settings(ws)
    initial: dict[str, Any] = {}
    if current is not None:
        initial = {f: getattr(current, f) for f in ("host", "port", "security", "username", "from_address",
                                                     "from_name", "timeout")}
    form = SmtpForm(request.POST or None, initial=initial)
    if request.method == "POST" and request.POST.get("action") == "delete":
        services.delete_smtp_settings(ws, actor=actor(request))
        messages.success(request, _("SMTP settings removed: email is no longer sent."))
        return redirect("console:outbound_smtp", slug=ws.slug)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.save_smtp_settings(ws, host=data["host"], port=data["port"], security=data["security"],
                                        username=data["username"], password=data["password"] or None,
                                        from_address=data["from_address"], from_name=data["from_name"],
                                        timeout=data["timeout"], actor=actor(request))
        except ShequnError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("SMTP settings saved."))
            return redirect("console:outbound_smtp", slug=ws.slug)
    return render(request, "console/outbound/smtp.html", {
        "form": form, "current": current,
        "can_edit": has_role(request.role, Role.OWNER),  # type: ignore[attr-defined]
    })


# ---------------------------------------------------------------------------------------------
# webhooks


@console_view(read=Role.OPERATOR)
def webhooks(request: HttpRequest) -> HttpResponse:
    """Inbound endpoints and outbound subscriptions; a secret is shown once, when created or rotated."""
    ws = request.workspace  # type: ignore[attr-defined]
    endpoint_form = EndpointForm(request.POST if request.POST.get("form") == "endpoint" else None, prefix="ep")
    sub_form = SubscriptionForm(request.POST if request.POST.get("form") == "subscription" else None, prefix="sub")
    revealed: dict[str, str] | None = None
    if request.method == "POST":
        try:
            revealed = _webhook_action(request, endpoint_form, sub_form)
        except ShequnError as exc:
            if exc.status == 404:
                raise
            messages.error(request, error_text(exc))
        if revealed is None and not endpoint_form.errors and not sub_form.errors:
            return redirect("console:outbound_webhooks", slug=ws.slug)
        if revealed is not None:  # created: show the secret once, with empty forms
            endpoint_form, sub_form = EndpointForm(prefix="ep"), SubscriptionForm(prefix="sub")
    return render(request, "console/outbound/webhooks.html", {
        "endpoints": queries.endpoints(ws), "subscriptions": queries.subscriptions(ws),
        "deliveries": list(queries.deliveries(ws)[:20]), "endpoint_form": endpoint_form, "sub_form": sub_form,
        "revealed": revealed, "hook_base": request.build_absolute_uri("/hooks/in/"),
    })


def _webhook_action(request: HttpRequest, endpoint_form: EndpointForm,
                    sub_form: SubscriptionForm) -> dict[str, str] | None:
    ws = request.workspace  # type: ignore[attr-defined]
    who = actor(request)
    form, action, target = request.POST.get("form"), request.POST.get("action", ""), _int(request.POST.get("id"))
    if form == "endpoint" and endpoint_form.is_valid():
        try:
            ep = services.create_endpoint(ws, endpoint_form.cleaned_data["name"],
                                          source=endpoint_form.cleaned_data["source"], actor=who)
        except ShequnError as exc:
            _form_error(endpoint_form, exc)
            return None
        return {"name": ep.name, "secret": ep.secret, "url": request.build_absolute_uri(f"/hooks/in/{ep.key}/")}
    if form == "subscription" and sub_form.is_valid():
        data = sub_form.cleaned_data
        try:
            sub = services.create_subscription(ws, data["name"], data["url"], data["events"], actor=who)
        except ShequnError as exc:
            _form_error(sub_form, exc)
            return None
        return {"name": sub.name, "secret": sub.secret, "url": sub.url}
    if target is None:
        return None
    if action == "endpoint-rotate":
        ep = services.rotate_endpoint_secret(ws, target, actor=who)
        return {"name": ep.name, "secret": ep.secret, "url": request.build_absolute_uri(f"/hooks/in/{ep.key}/")}
    if action in ("endpoint-enable", "endpoint-disable"):
        services.set_endpoint_active(ws, target, action == "endpoint-enable", actor=who)
    elif action == "endpoint-delete":
        services.delete_endpoint(ws, target, actor=who)
    elif action == "sub-rotate":
        sub = services.update_subscription(ws, target, rotate_secret=True, actor=who)
        return {"name": sub.name, "secret": sub.secret, "url": sub.url}
    elif action in ("sub-enable", "sub-disable"):
        services.update_subscription(ws, target, active=action == "sub-enable", actor=who)
    elif action == "sub-delete":
        services.delete_subscription(ws, target, actor=who)
    elif action == "sub-test":
        services.send_test_event(ws, target, actor=who)
        messages.success(request, _("Test event queued."))
    return None


@console_view(read=Role.OPERATOR)
def deliveries(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    status = request.GET.get("status", "")
    status = status if status in DeliveryStatus.values else ""
    rows, nxt = queries.page(queries.deliveries(ws, status=status), before=_int(request.GET.get("before")), limit=PAGE)
    return render(request, "console/outbound/deliveries.html", {
        "rows": rows, "next": nxt, "status": status, "statuses": DeliveryStatus.choices})


@console_view(read=Role.OPERATOR)
def delivery_detail(request: HttpRequest, delivery_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    delivery = get_scoped(WebhookDelivery, ws, delivery_id)
    if request.method == "POST":
        services.replay_delivery(ws, delivery.pk, actor=actor(request))
        messages.success(request, _("Delivery queued again."))
        return redirect("console:outbound_delivery", slug=ws.slug, delivery_id=delivery.pk)
    return render(request, "console/outbound/delivery.html", {
        "d": delivery, "attempts": queries.delivery_attempts(delivery),
        "body": services.body_of(delivery).decode("utf-8"),
    })


urlpatterns: list[URLPattern] = [
    path("outbound/outbox/", outbox, name="outbound_outbox"),
    path("outbound/outbox/<int:message_id>/", message_detail, name="outbound_message"),
    path("outbound/outbox/<int:message_id>/retry/", message_retry, name="outbound_message_retry"),
    path("outbound/smtp/", smtp_settings, name="outbound_smtp"),
    path("outbound/webhooks/", webhooks, name="outbound_webhooks"),
    path("outbound/webhooks/deliveries/", deliveries, name="outbound_deliveries"),
    path("outbound/webhooks/deliveries/<int:delivery_id>/", delivery_detail, name="outbound_delivery"),
]
