"""Demo data for the service inbox, on top of the demo workspace (src/shequn/demo.py): the teams
客服组 and 门店组, canned replies, SLA minutes, conversations from the demo's complaint messages
(the last month's resolved, today's open and waiting), a few tickets (one escalated) and some
satisfaction answers. Everything goes through the inbox services."""

from __future__ import annotations

import datetime as dt
import random

from django.db import transaction

from shequn.core.clock import now as clock_now
from shequn.core.models import Role, StaffMembership, Workspace
from shequn.core.tenancy import scoped
from shequn.interactions import services as interactions
from shequn.interactions.models import Direction, Interaction, InteractionType

from . import services
from .models import Conversation, CsatSurvey, Status

ACTOR = "demo"
CANNED = (
    ("sorry", "致歉", "非常抱歉给您带来不便，我们马上为您处理。"),
    ("refund", "退款", "已为您办理退款，款项将在 1–3 个工作日原路退回，并补偿一张饮品券。"),
    ("resend", "补送", "已联系门店为您补送，预计 30 分钟内送达，请保持电话畅通。"),
    ("points", "积分补发", "已核实，积分已补发到您的会员账户，可在会员中心查看。"),
    ("hours", "营业时间", "门店营业时间为每天 10:00–22:00，欢迎光临！"),
)
NEW_COMPLAINTS = (
    "外卖超时一个小时了还没到，能退款吗？",
    "刚收到的杨枝甘露是洒的，袋子里全是",
    "少送了一杯芋泥波波奶茶",
    "积分一直没到账，昨天买了两杯",
    "门店店员态度不好，点单时很不耐烦",
    "想订30杯做公司下午茶，怎么联系门店？",
    "发票抬头开错了，麻烦帮我重开",
    "小程序付款成功但是没有出单",
)
HISTORY_DAYS = 28  # inside the report's 30 days
HISTORY_CONVERSATIONS = 40
OPEN_CONVERSATIONS = 14


def _agents(workspace: Workspace) -> list[int]:
    return list(StaffMembership.objects.filter(workspace=workspace, role__in=services.AGENT_ROLES)
                .order_by("role", "user__username").values_list("user_id", flat=True))


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    with transaction.atomic():
        _seed(workspace, rng, now)


def _seed(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    agents = _agents(workspace)
    agent_roles = dict(StaffMembership.objects.filter(workspace=workspace).values_list("user_id", "role"))
    service_team = services.save_team(workspace, "客服组", actor=ACTOR)
    store_team = services.save_team(workspace, "门店组", escalation_team_id=service_team.pk, actor=ACTOR)
    services.set_team_members(workspace, service_team.pk,
                              [u for u in agents if agent_roles.get(u) in (Role.AGENT, Role.OPERATOR)], actor=ACTOR)
    services.set_team_members(workspace, store_team.pk,
                              [u for u in agents if agent_roles.get(u) in (Role.OPERATOR, Role.OWNER)], actor=ACTOR)
    services.save_sla(workspace, service_team.pk, "urgent", 10, 120, actor=ACTOR)
    services.save_sla(workspace, service_team.pk, "high", 30, 240, actor=ACTOR)
    services.save_sla(workspace, store_team.pk, "normal", 120, 720, actor=ACTOR)
    for shortcut, title, text in CANNED:
        services.save_canned_reply(workspace, shortcut, title, text, actor=ACTOR)
    if not agents:
        return

    # The last month: the demo's inbound WeChat messages of complaints (and some questions) became
    # conversations that agents answered and resolved.
    since = now - dt.timedelta(days=HISTORY_DAYS)
    history = list(scoped(Interaction, workspace).filter(
        type=InteractionType.MESSAGE, direction=Direction.INBOUND, channel="wechat", occurred_at__gte=since,
        occurred_at__lt=now - services.MAX_MESSAGE_AGE).order_by("-occurred_at", "-pk")
        .values_list("pk", "properties")[:2000])
    complaints = [pk for pk, props in history if (props or {}).get("sentiment") == "negative"]
    others = [pk for pk, props in history if (props or {}).get("sentiment") != "negative"]
    picked = complaints[:HISTORY_CONVERSATIONS // 2]
    picked += rng.sample(others, min(len(others), HISTORY_CONVERSATIONS - len(picked)))
    services.route_messages(workspace, picked)
    old = list(scoped(Conversation, workspace).filter(status__in=[Status.OPEN, Status.PENDING])
               .order_by("opened_at", "pk"))
    for conv in old:
        agent = rng.choice(agents)
        services.claim(workspace, conv.pk, user=agent, actor=ACTOR)
        services.reply(workspace, conv.pk, rng.choice(CANNED)[2], user=agent, actor=ACTOR, key=f"demo-{conv.pk}")
        services.set_status(workspace, conv.pk, Status.RESOLVED, actor=ACTOR, ask_csat=False)

    # Today: new complaints arrive on WeChat and ask for a person.
    members = list(scoped(Interaction, workspace).filter(type=InteractionType.PURCHASE, occurred_at__gte=since)
                   .order_by("-occurred_at").values_list("member_id", flat=True).distinct()[:400])
    members = sorted(set(members))
    chosen = rng.sample(members, min(OPEN_CONVERSATIONS, len(members)))
    moment = min(now, clock_now())
    events = []
    for i, member_id in enumerate(chosen):
        at = moment - dt.timedelta(minutes=rng.randint(5, 600))
        if rng.random() < 0.4:
            events.append({"member_id": member_id, "type": "message", "channel": "wechat", "direction": "in",
                           "touchpoint": "wechat-menu", "occurred_at": at - dt.timedelta(minutes=3),
                           "source": "wechat-inbox-demo", "external_id": f"inbox-demo-{i}-a",
                           "properties": {"msg_type": "text", "content": "查积分", "bot_outcome": "answered"}})
        events.append({"member_id": member_id, "type": "message", "channel": "wechat", "direction": "in",
                       "touchpoint": "wechat-menu", "occurred_at": at, "source": "wechat-inbox-demo",
                       "external_id": f"inbox-demo-{i}-b",
                       "properties": {"msg_type": "text", "content": rng.choice(NEW_COMPLAINTS), "bot_outcome": "handoff",
                                      "sentiment": "negative"}})
    results = interactions.ingest_batch(workspace, events, actor=ACTOR)
    services.route_messages(workspace, [r.id for r in results if r.id is not None])
    fresh = list(scoped(Conversation, workspace).filter(status=Status.OPEN, member_id__in=chosen)
                 .order_by("member_id"))
    for n, conv in enumerate(fresh):
        agent = agents[n % len(agents)]
        if n % 3 == 0:
            continue  # waiting in the unassigned queue
        services.claim(workspace, conv.pk, user=agent, actor=ACTOR)
        if n % 3 == 1:
            services.reply(workspace, conv.pk, CANNED[0][2], user=agent, actor=ACTOR, key=f"demo-{conv.pk}")
        if n % 5 == 1:
            services.add_note(workspace, conv.pk, "顾客是老会员，优先处理", user=agent, actor=ACTOR)
        if n % 4 == 2:
            services.reply(workspace, conv.pk, CANNED[2][2], user=agent, actor=ACTOR, key=f"demo-r-{conv.pk}")
            services.resolve(workspace, conv.pk, actor=ACTOR)  # asks the satisfaction question

    # Members answer the question (the answer feeds the touchpoint's trust).
    answers = []
    for k, survey in enumerate(scoped(CsatSurvey, workspace).filter(score__isnull=True).order_by("pk")):
        score = rng.choices((5, 4, 3, 2, 1), weights=(45, 30, 12, 8, 5))[0]
        answers.append({"member_id": survey.member_id, "type": "message", "channel": survey.channel, "direction": "in",
                        "occurred_at": survey.asked_at + dt.timedelta(milliseconds=1 + k), "source": "wechat-inbox-demo",
                        "external_id": f"inbox-demo-csat-{survey.pk}",
                        "properties": {"msg_type": "text", "content": str(score), "bot_outcome": "answered"}})
    if answers:
        interactions.ingest_batch(workspace, answers, actor=ACTOR)

    # Tickets: from conversations and standalone; one from this morning is already overdue.
    open_convs = list(scoped(Conversation, workspace).filter(status=Status.OPEN, assignee__isnull=False,
                                                             member_id__in=chosen).order_by("pk")[:3])
    for conv, (title, priority) in zip(open_convs, (("外卖少送，需门店补送", "high"), ("退款申请", "urgent"),
                                                    ("积分补发核对", "normal")), strict=False):
        services.create_ticket(workspace, title=title, priority=priority, conversation_id=conv.pk,
                               team_id=service_team.pk, actor=ACTOR)
    services.create_ticket(workspace, title="公司下午茶 30 杯预订", priority="normal", team_id=store_team.pk,
                           description="客户电话预订，周五 15:00 送到科技园", actor=ACTOR)
    services.create_ticket(workspace, title="门店服务态度投诉跟进", priority="high", team_id=store_team.pk,
                           description="顾客反映店员态度不好，需要店长回访", actor=ACTOR,
                           at=moment - dt.timedelta(hours=13))
    services.escalate_overdue(moment)
