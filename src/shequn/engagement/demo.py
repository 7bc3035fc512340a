"""Demo data for engagement on top of the 茶语 demo workspace: four tiers (新芽/青叶/金叶/茶王), badges,
tasks, streak rewards, and daily check-ins of the most active members over the last two weeks.

Everything goes through the services, so tiers rise, badges are awarded, tasks complete and
leaderboards fill by the same code path as in production. Contribution points (成长值) for the
purchases already in the demo are credited through the ledger (one award per member, dated at the
member's last purchase, key ``demo:growth:<member>``) — the demo's purchases were ingested before the
programme existed."""

from __future__ import annotations

import datetime as dt
import random
from decimal import ROUND_FLOOR, Decimal

from django.db.models import Count, Max, Sum

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from . import services as engagement

ACTOR = "demo"

TIERS = [
    {"code": "sprout", "name": "新芽", "rank": 0, "multiplier": "1", "grace_days": 0,
     "benefits": "注册即享：生日饮品券"},
    {"code": "leaf", "name": "青叶", "rank": 1, "min_contribution": 150, "multiplier": "1.1", "grace_days": 30,
     "benefits": "积分 1.1 倍 · 每月免配送费券"},
    {"code": "gold", "name": "金叶", "rank": 2, "min_contribution": 500, "min_influence": 10, "multiplier": "1.25",
     "grace_days": 30, "benefits": "积分 1.25 倍 · 新品优先尝鲜 · 升级礼券"},
    {"code": "king", "name": "茶王", "rank": 3, "min_contribution": 1200, "min_influence": 30, "multiplier": "1.5",
     "grace_days": 60, "benefits": "积分 1.5 倍 · 专属客服 · 年度品鉴会邀请"},
]

BADGES = [
    {"code": "first-checkin", "name": "签到新人", "icon": "🌱", "metric": "check_in", "threshold": 1,
     "description": "完成第一次签到"},
    {"code": "streak-7", "name": "连签七天", "icon": "🔥", "metric": "streak", "threshold": 7,
     "description": "连续签到 7 天"},
    {"code": "sharer", "name": "分享达人", "icon": "📣", "metric": "share", "threshold": 3,
     "description": "分享 3 次"},
    {"code": "ambassador", "name": "口碑推荐官", "icon": "🤝", "metric": "referral", "threshold": 2,
     "description": "成功邀请 2 位好友"},
    {"code": "taster", "name": "品鉴师", "icon": "🍵", "metric": "review", "threshold": 2,
     "description": "写下 2 条评价"},
    {"code": "gold-member", "name": "金叶会员", "icon": "🏅", "metric": "tier", "ref": "gold",
     "description": "达到金叶等级"},
]


TASKS = [
    {"code": "profile", "name": "完善个人资料", "metric": "profile", "points": 30, "xp": 20, "position": 1,
     "description": "填写昵称、性别、生日和城市"},
    {"code": "invite-3", "name": "邀请 3 位好友", "metric": "referral", "target": 3, "points": 200, "xp": 100,
     "position": 2},
    {"code": "attend", "name": "参加一次品鉴会", "metric": "event_attendance", "points": 50, "xp": 60, "position": 3},
    {"code": "review", "name": "写一条评价", "metric": "review", "points": 20, "xp": 30, "position": 4},
    {"code": "checkin-5", "name": "本周签到 5 天", "metric": "check_in", "target": 5, "repeat": "weekly",
     "points": 10, "xp": 20, "position": 5},
    {"code": "streak-7", "name": "连续签到 7 天", "metric": "streak", "target": 7, "xp": 50, "badge": "streak-7",
     "position": 6},
]


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime, *, checkin_members: int = 30,
              checkin_days: int = 14) -> None:
    """Deterministic for a given ``rng`` and ``now``."""
    from shequn.interactions.models import Interaction
    from shequn.loyalty import services as loyalty

    engagement.save_programme(workspace, {"checkin_points": 2}, actor=ACTOR)
    for spec in TIERS:
        engagement.save_tier(workspace, spec, actor=ACTOR)
    for spec in BADGES:
        engagement.save_badge(workspace, spec, actor=ACTOR)
    start = now - dt.timedelta(days=checkin_days + 1)
    for task in TASKS:
        engagement.save_task(workspace, {**task, "starts_at": start}, actor=ACTOR)
    engagement.save_streak_reward(workspace, 3, 10, actor=ACTOR)
    engagement.save_streak_reward(workspace, 7, 50, badge="streak-7", actor=ACTOR)

    # 成长值 for the purchases made before the programme: ¥1 = 1, through the ledger (tiers rise by hook).
    purchases = (scoped(Interaction, workspace).filter(type="purchase", direction="in", amount__gt=0)
                 .values_list("member_id").annotate(total=Sum("amount"), last=Max("occurred_at")).order_by("member_id"))
    for member_id, total, last in purchases:
        points = int(Decimal(total).to_integral_value(rounding=ROUND_FLOOR))
        if points > 0:
            loyalty.earn(workspace, member_id, "growth", points, reason="历史消费成长值", actor=ACTOR,
                         idempotency_key=f"demo:growth:{member_id}", now=min(last, now))
    engagement.evaluate_all(workspace, now)  # members who qualify by invites and shares alone

    # Daily check-ins of the most active members, in date order, at a plausible local time.
    active = list(scoped(Interaction, workspace).filter(occurred_at__gte=now - dt.timedelta(days=60), direction="in")
                  .values_list("member_id").annotate(n=Count("pk")).order_by("-n", "member_id")
                  .values_list("member_id", flat=True)[:checkin_members])
    habits = {mid: rng.uniform(0.35, 0.97) for mid in active}
    tz = engagement.ws_zone(workspace)
    today = now.astimezone(tz).date()
    for back in range(checkin_days, -1, -1):
        day = today - dt.timedelta(days=back)
        for mid in active:
            if rng.random() >= habits[mid]:
                continue
            local = dt.datetime(day.year, day.month, day.day, rng.randint(7, 22), rng.randint(0, 59), tzinfo=tz)
            at = local.astimezone(dt.UTC)
            if at > now:
                continue
            engagement.check_in(workspace, mid, at, channel="miniprogram", actor=ACTOR)
