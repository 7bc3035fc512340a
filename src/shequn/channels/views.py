"""The WeChat server endpoint (服务器地址): HTTP in/out only.

WeChat calls ``/wechat/<endpoint_key>/`` with GET to verify the URL and with POST to push messages
and events. The view finds the account by its endpoint key (on PostgreSQL, from what
this process remembers of it, confirmed by the message's insert: ADR 0005), lets the protocol module
authenticate, decrypt and parse the request, hands the message to ``services.receive_message`` and renders the
passive reply (encrypted when the request was)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from shequn.core import cache as settings_cache
from shequn.core.clock import now
from shequn.core.errors import ShequnError

from . import queries, replies, services, wechat
from .models import InboundMessage

logger = logging.getLogger("shequn.channels.wechat")

SUCCESS = "success"


def _error(exc: ShequnError) -> HttpResponse:
    response = HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")
    response["X-Shequn-Error"] = exc.code
    return response


@csrf_exempt
@require_http_methods(["GET", "POST"])
def endpoint(request: HttpRequest, endpoint_key: str) -> HttpResponse:
    with settings_cache.scope():  # the workspace's settings versions are read once per request
        return _endpoint(request, endpoint_key)


def _endpoint(request: HttpRequest, endpoint_key: str) -> HttpResponse:
    if request.method == "POST":
        remembered = queries.remembered_account(endpoint_key)
        if remembered is not None:
            response = _answer_remembered(request, remembered)
            if response is not None:
                return response
            # Not confirmed (the account or its settings changed, the message was stored already, or
            # the request failed a check): answered again below from a fresh read, which also decides
            # any error. The next message reads the account afresh too.
            queries.forget_account(endpoint_key)
            settings_cache.forget(remembered.account.workspace_id)
    account = queries.account_for_message(endpoint_key)
    if account is None:
        return HttpResponse(_("unknown server URL"), status=404, content_type="text/plain; charset=utf-8")
    creds = account.credentials()
    params = {k: request.GET.get(k, "") for k in request.GET}
    stamp = int(now().timestamp())
    try:
        if request.method == "GET":
            return HttpResponse(wechat.verify_url(creds, params, now=stamp), content_type="text/plain; charset=utf-8")
        inbound = _open(request, creds, params, stamp)
        processed = services.receive_message(account, inbound.message, meanwhile=_reply_maker(inbound, creds, params))
    except ShequnError as exc:
        logger.warning("wechat %s: %s request refused (%s): %s", account.app_id, request.method, exc.code, exc.message)
        return _error(exc)
    return _answer(processed, inbound, creds, params)


def _answer_remembered(request: HttpRequest, remembered: queries.Remembered) -> HttpResponse | None:
    """The answer to a pushed message from the account as this process remembered it, stored only if
    that account is still current (ADR 0005: one round trip, the insert); None when it is not, or
    when anything went other than the common way."""
    creds = remembered.account.credentials()
    params = {k: request.GET.get(k, "") for k in request.GET}
    try:
        inbound = _open(request, creds, params, int(now().timestamp()))
        processed = services.receive_message(remembered.account, inbound.message, confirm=remembered.confirm,
                                             meanwhile=_reply_maker(inbound, creds, params))
    except (ShequnError, services.Unconfirmed):
        return None
    return _answer(processed, inbound, creds, params)


def _open(request: HttpRequest, creds: wechat.Credentials, params: dict[str, str], stamp: int) -> wechat.Inbound:
    length = request.META.get("CONTENT_LENGTH", "")
    if length.isdigit() and int(length) > wechat.MAX_BODY_BYTES:
        raise wechat.BodyTooLarge(_("the message is larger than %(n)s bytes") % {"n": wechat.MAX_BODY_BYTES})
    return wechat.open_message(creds, params, request.body, now=stamp)


def _reply_xml(reply: replies.Reply, record: InboundMessage, inbound: wechat.Inbound, creds: wechat.Credentials,
               params: dict[str, str]) -> str:
    """The passive reply's XML (encrypted when the request was)."""
    xml = replies.render(reply, message=inbound.message, create_time=int(record.received_at.timestamp()))
    if inbound.encrypted:
        xml = wechat.render_encrypted(creds, xml, timestamp=params.get("timestamp", ""), nonce=params.get("nonce", ""))
    return xml


def _reply_maker(inbound: wechat.Inbound, creds: wechat.Credentials,
                 params: dict[str, str]) -> Callable[[replies.Reply | None, InboundMessage], str | None]:
    """``receive_message``'s ``meanwhile``: the reply is rendered and encrypted while its record is
    being stored."""
    return lambda reply, record: None if reply is None else _reply_xml(reply, record, inbound, creds, params)


def _answer(processed: services.Processed, inbound: wechat.Inbound, creds: wechat.Credentials,
            params: dict[str, str]) -> HttpResponse:
    if processed.reply is None:
        return HttpResponse(SUCCESS, content_type="text/plain; charset=utf-8")
    xml = processed.made if processed.made is not None else _reply_xml(processed.reply, processed.record, inbound,
                                                                       creds, params)
    return HttpResponse(xml, content_type="application/xml; charset=utf-8")
