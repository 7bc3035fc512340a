"""API: the outbox (list, send a text to a member), outbound webhook subscriptions and their
deliveries (list, replay), inbound webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from shequn.core.tenancy import get_scoped
from shequn.outbound import queries, services
from shequn.outbound.models import (
    DeliveryAttempt,
    OutboundMessage,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSubscription,
)

from .auth import MANAGERS, READERS, allow, context
from .schemas import DEFAULT_PAGE, MAX_PAGE, Input, keyset_page, with_errors

outbox_router = Router(tags=["outbound"])
hooks_router = Router(tags=["webhooks"])
routers: list[Router] = [outbox_router, hooks_router]

PAGE_HELP = "Cursor: the `next` of the previous page"


# ---------------------------------------------------------------------------------------------
# outbox


class MessageOut(Schema):
    id: int
    member_id: int
    channel: str
    recipient: str
    kind: str
    purpose: str
    payload: dict[str, Any]
    status: str = Field(description="queued, sending, sent, failed or undeliverable")
    attempts: int
    last_error: str
    key: str | None
    actor: str
    interaction_id: int | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None


class MessagePage(Schema):
    items: list[MessageOut]
    next: int | None = Field(description="Cursor for the next page (pass as ?after=), null on the last page")


class SendTextIn(Input):
    member_id: int
    text: str = Field(max_length=services.MAX_TEXT)
    purpose: str = Field("operator", description="Why the message is sent, e.g. inbox_reply, welcome")
    channel: str | None = Field(None, description="wechat or email; default: the member's best channel")
    key: str | None = Field(None, description="Idempotency key: the same key returns the message sent first")


@outbox_router.get("/outbox", response=with_errors({200: MessagePage}), operation_id="outbox_list",
                   summary="List outbound messages")
@allow(*READERS)
def list_outbox(request: HttpRequest, status: str = "", purpose: str = "", channel: str = "",
                member_id: int | None = None,
                after: int | None = Query(None, description=PAGE_HELP),  # noqa: B008
                limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # noqa: B008
    """Newest first. Filters combine with AND."""
    ctx = context(request)
    qs = queries.outbox(ctx.workspace, queries.OutboxFilter(status=status, purpose=purpose, channel=channel,
                                                            member_id=member_id))
    rows, nxt = keyset_page(qs, after=after, limit=limit)
    return {"items": rows, "next": nxt}


@outbox_router.get("/outbox/{int:message_id}", response=with_errors({200: MessageOut}), operation_id="outbox_get",
                   summary="One outbound message")
@allow(*READERS)
def get_message(request: HttpRequest, message_id: int) -> OutboundMessage:
    return get_scoped(OutboundMessage, context(request).workspace, message_id)


@outbox_router.post("/outbox/text", response=with_errors({201: MessageOut}), operation_id="outbox_send_text",
                    summary="Send a text to a member")
@allow(*READERS)
def send_text(request: HttpRequest, body: SendTextIn) -> Status[OutboundMessage]:
    """Queued and delivered in the background (WeChat customer-service message, else email). A member
    without a channel gets an ``undeliverable`` row."""
    ctx = context(request)
    msg = services.send_text(ctx.workspace, body.member_id, body.text, purpose=body.purpose, actor=ctx.actor,
                             channel=body.channel, key=body.key)
    return Status(201, msg)


@outbox_router.post("/outbox/{int:message_id}/retry", response=with_errors({200: MessageOut}),
                    operation_id="outbox_retry", summary="Queue a failed message again")
@allow(*MANAGERS)
def retry_message(request: HttpRequest, message_id: int) -> OutboundMessage:
    ctx = context(request)
    return services.retry_message(ctx.workspace, message_id, actor=ctx.actor)


# ---------------------------------------------------------------------------------------------
# outbound webhooks


class SubscriptionOut(Schema):
    id: int
    name: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime


class SubscriptionWithSecret(SubscriptionOut):
    secret: str = Field(description="Signing secret: shown when created or rotated")


class SubscriptionList(Schema):
    items: list[SubscriptionOut]


class SubscriptionIn(Input):
    name: str
    url: str
    events: list[str] = Field(description="Event names, e.g. interaction.created, message.sent; * for all")


class SubscriptionPatch(Input):
    name: str | None = None
    url: str | None = None
    events: list[str] | None = None
    active: bool | None = None
    rotate_secret: bool = False


class AttemptOut(Schema):
    at: datetime
    ok: bool
    status_code: int | None
    response_excerpt: str
    error: str
    duration_ms: int
    replay: bool
    actor: str


class DeliveryOut(Schema):
    id: int
    subscription_id: int
    event: str
    event_id: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    last_status_code: int | None
    last_error: str
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None


class DeliveryDetail(DeliveryOut):
    payload: dict[str, Any]
    attempt_log: list[AttemptOut]

    @staticmethod
    def resolve_attempt_log(obj: WebhookDelivery) -> list[DeliveryAttempt]:
        return queries.delivery_attempts(obj)


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    next: int | None


@hooks_router.get("/webhooks/subscriptions", response=with_errors({200: SubscriptionList}),
                  operation_id="webhook_subscriptions_list", summary="List webhook subscriptions")
@allow(*MANAGERS)
def list_subscriptions(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.subscriptions(context(request).workspace)}


@hooks_router.post("/webhooks/subscriptions", response=with_errors({201: SubscriptionWithSecret}),
                   operation_id="webhook_subscriptions_create", summary="Subscribe a URL to events")
@allow(*MANAGERS)
def create_subscription(request: HttpRequest, body: SubscriptionIn) -> Status[WebhookSubscription]:
    ctx = context(request)
    return Status(201, services.create_subscription(ctx.workspace, body.name, body.url, body.events, actor=ctx.actor))


@hooks_router.get("/webhooks/subscriptions/{int:subscription_id}", response=with_errors({200: SubscriptionOut}),
                  operation_id="webhook_subscriptions_get", summary="One webhook subscription")
@allow(*MANAGERS)
def get_subscription(request: HttpRequest, subscription_id: int) -> WebhookSubscription:
    return get_scoped(WebhookSubscription, context(request).workspace, subscription_id)


@hooks_router.patch("/webhooks/subscriptions/{int:subscription_id}",
                    response=with_errors({200: SubscriptionWithSecret}),
                    operation_id="webhook_subscriptions_update", summary="Change a webhook subscription")
@allow(*MANAGERS)
def update_subscription(request: HttpRequest, subscription_id: int, body: SubscriptionPatch) -> WebhookSubscription:
    ctx = context(request)
    return services.update_subscription(ctx.workspace, subscription_id, actor=ctx.actor, name=body.name, url=body.url,
                                        events=body.events, active=body.active, rotate_secret=body.rotate_secret)


@hooks_router.delete("/webhooks/subscriptions/{int:subscription_id}", response=with_errors({204: None}),
                     operation_id="webhook_subscriptions_delete", summary="Delete a webhook subscription")
@allow(*MANAGERS)
def delete_subscription(request: HttpRequest, subscription_id: int) -> Status[None]:
    ctx = context(request)
    services.delete_subscription(ctx.workspace, subscription_id, actor=ctx.actor)
    return Status(204, None)


@hooks_router.post("/webhooks/subscriptions/{int:subscription_id}/test", response=with_errors({201: DeliveryOut}),
                   operation_id="webhook_subscriptions_test", summary="Send a webhook.test event")
@allow(*MANAGERS)
def test_subscription(request: HttpRequest, subscription_id: int) -> Status[WebhookDelivery]:
    ctx = context(request)
    return Status(201, services.send_test_event(ctx.workspace, subscription_id, actor=ctx.actor))


@hooks_router.get("/webhooks/deliveries", response=with_errors({200: DeliveryPage}),
                  operation_id="webhook_deliveries_list", summary="The delivery log")
@allow(*MANAGERS)
def list_deliveries(request: HttpRequest, status: str = "", subscription_id: int | None = None,
                    after: int | None = Query(None, description=PAGE_HELP),  # noqa: B008
                    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # noqa: B008
    ctx = context(request)
    rows, nxt = keyset_page(queries.deliveries(ctx.workspace, status=status, subscription_id=subscription_id),
                            after=after, limit=limit)
    return {"items": rows, "next": nxt}


@hooks_router.get("/webhooks/deliveries/{int:delivery_id}", response=with_errors({200: DeliveryDetail}),
                  operation_id="webhook_deliveries_get", summary="One delivery with its attempts")
@allow(*MANAGERS)
def get_delivery(request: HttpRequest, delivery_id: int) -> WebhookDelivery:
    return get_scoped(WebhookDelivery, context(request).workspace, delivery_id)


@hooks_router.post("/webhooks/deliveries/{int:delivery_id}/replay", response=with_errors({200: DeliveryOut}),
                   operation_id="webhook_deliveries_replay", summary="Send a delivery again")
@allow(*MANAGERS)
def replay_delivery(request: HttpRequest, delivery_id: int) -> WebhookDelivery:
    ctx = context(request)
    return services.replay_delivery(ctx.workspace, delivery_id, actor=ctx.actor)


# ---------------------------------------------------------------------------------------------
# inbound webhook endpoints


class EndpointOut(Schema):
    id: int
    name: str
    path: str = Field(description="POST signed events here")
    source: str
    tolerance: int
    active: bool
    received_count: int
    last_received_at: datetime | None

    @staticmethod
    def resolve_path(obj: WebhookEndpoint) -> str:
        return f"/hooks/in/{obj.key}/"


class EndpointWithSecret(EndpointOut):
    secret: str


class EndpointList(Schema):
    items: list[EndpointOut]


class EndpointIn(Input):
    name: str
    source: str = Field("", description="Interaction source of what it receives; default webhook:<name>")
    tolerance: int = Field(300, description="Seconds a signature's timestamp may be off")


@hooks_router.get("/webhooks/endpoints", response=with_errors({200: EndpointList}),
                  operation_id="webhook_endpoints_list", summary="List inbound webhook endpoints")
@allow(*MANAGERS)
def list_endpoints(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.endpoints(context(request).workspace)}


@hooks_router.post("/webhooks/endpoints", response=with_errors({201: EndpointWithSecret}),
                   operation_id="webhook_endpoints_create", summary="Create an inbound webhook endpoint")
@allow(*MANAGERS)
def create_endpoint(request: HttpRequest, body: EndpointIn) -> Status[WebhookEndpoint]:
    ctx = context(request)
    return Status(201, services.create_endpoint(ctx.workspace, body.name, source=body.source,
                                                tolerance=body.tolerance, actor=ctx.actor))


@hooks_router.delete("/webhooks/endpoints/{int:endpoint_id}", response=with_errors({204: None}),
                     operation_id="webhook_endpoints_delete", summary="Delete an inbound webhook endpoint")
@allow(*MANAGERS)
def delete_endpoint(request: HttpRequest, endpoint_id: int) -> Status[None]:
    ctx = context(request)
    services.delete_endpoint(ctx.workspace, endpoint_id, actor=ctx.actor)
    return Status(204, None)
