"""Demo data of the outbound domain: a month of outbox history (welcome texts, points templates,
a few failures and undeliverable rows, one-time codes), a paused webhook subscription and an inbound
endpoint for the POS. Nothing here calls the network: messages are recorded in their final state with
``services.record_external`` and the subscription is paused, so no delivery is ever attempted."""

from __future__ import annotations

import datetime as dt
import random

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members.models import Identity, IdentityKind

from . import services
from .models import Channel, MessageKind, MessageStatus

ACTOR = "demo"
WELCOMES = ("欢迎加入茶语会员！首单立减 5 元券已放入您的卡包。", "欢迎关注茶语·鲜果茶，回复「菜单」看本季新品。")
POINTS = "本次消费积分已到账，当前可用积分 {points}。"
CARE = ("亲，昨天的{drink}还满意吗？回复 1-5 给我们打个分吧。", "本周三会员日，全场第二杯半价，记得来哦～")
DRINKS = ("杨枝甘露", "多肉葡萄", "芝芝莓莓", "满杯红柚", "烤黑糖波波牛乳")


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    """About 120 outbox rows over the last 30 days, one paused subscription, one inbound endpoint."""
    openids = list(scoped(Identity, workspace).filter(kind=IdentityKind.WECHAT_OPENID)
                   .order_by("pk").values_list("member_id", "value")[:400])
    if not openids:
        return
    picks = rng.sample(openids, min(120, len(openids)))
    for i, (member_id, openid) in enumerate(picks):
        at = now - dt.timedelta(days=rng.uniform(0.02, 30))
        roll = rng.random()
        status, error = MessageStatus.SENT, ""
        if roll < 0.05:
            status, error = MessageStatus.FAILED, "the member has not written in the last 48 hours, so " \
                                                  "customer-service messages cannot reach them (45015)"
        if i % 4 == 0:
            kind, purpose = MessageKind.TEMPLATE, "points"
            payload = {"template_id": "TM00001-points", "data": {
                "first": {"value": POINTS.format(points=rng.randint(20, 900))},
                "remark": {"value": "积分可在会员中心兑换饮品"}}}
        elif i % 4 == 1:
            kind, purpose, payload = MessageKind.TEXT, "welcome", {"text": rng.choice(WELCOMES)}
        elif i % 4 == 2:
            kind, purpose = MessageKind.TEXT, "care"
            payload = {"text": rng.choice(CARE).format(drink=rng.choice(DRINKS))}
        else:
            kind, purpose = MessageKind.NEWS, "campaign"
            payload = {"articles": [{"title": "夏日限定 · 杨枝甘露回归", "description": "会员日第二杯半价",
                                     "url": "https://demo-only.invalid/articles/summer", "picurl": ""}]}
        services.record_external(workspace, member_id, kind=kind, payload=payload, purpose=purpose, actor=ACTOR,
                                 channel=Channel.WECHAT, recipient=openid, status=status, at=at, error=error,
                                 key=f"demo:{i}")
    # One-time login codes of the member portal, as the portal sends them (read them in the outbox).
    for j, (member_id, openid) in enumerate(picks[:3]):
        at = now - dt.timedelta(minutes=5 + 7 * j)
        services.record_external(workspace, member_id, kind=MessageKind.TEXT, purpose="otp", actor="portal",
                                 payload={"text": f"您的茶语会员中心登录验证码：{rng.randint(100000, 999999)}，"
                                                  "10 分钟内有效。"},
                                 channel=Channel.WECHAT, recipient=openid, status=MessageStatus.SENT, at=at,
                                 key=f"demo:otp:{j}")
    sub = services.create_subscription(workspace, "数据仓库（示例）", "https://demo-only.invalid/shequn-hooks",
                                       ["interaction.created", "message.sent"], actor=ACTOR)
    services.update_subscription(workspace, sub.pk, active=False, actor=ACTOR)
    services.create_endpoint(workspace, "POS 收银系统", source="webhook:pos", actor=ACTOR)
