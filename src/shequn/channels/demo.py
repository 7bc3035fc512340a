"""Demo data of the channels: the demo Official Account and six channel QR codes (渠道活码) whose scans,
follows, early unfollows and first purchases went through the real write paths — the steps of
``services.receive_message`` (``services.interaction_for`` → ``interactions.ingest_batch`` →
``code_services.record_scan``), batched, and ``ingest_batch`` for purchases — so their stats are what
the endpoint would have counted.

Nothing here calls WeChat: the account's credentials are placeholders marked ``demoonly`` and each
code's QR is issued by :func:`demo_qr` — ticket ``demo-only:<scene>``, URL on the reserved
``.invalid`` domain — which the console and the API flag as demo data (docs/channel-codes.md)."""

from __future__ import annotations

import datetime as dt
import random
import string
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from . import code_services, queries, services
from .code_services import QrTicket
from .models import DEMO_TICKET_PREFIX, WeChatAccount, WeChatMode
from .wechat import QR_SCENE_PREFIX, message_from_fields

ACTOR = "demo"
ORIGINAL_ID = "gh_d3m0c0ffee01"
_ALPHABET = string.ascii_letters + string.digits


def demo_qr(account: WeChatAccount, scene: str) -> QrTicket:
    """A QR ticket that WeChat never issued: for demo data only (no network at demo time)."""
    return QrTicket(ticket=f"{DEMO_TICKET_PREFIX}{scene}",
                    url=f"https://demo-only.invalid/wechat-qr/{account.app_id}/{scene}")


@dataclass(frozen=True)
class _Plan:
    kind: str
    name: str
    scene: str
    welcome: str
    tags: tuple[str, ...]
    new: int  # new followers won by the code
    touches: int  # scans by members who already follow
    first_day: int  # days before now of the first and the last scan
    last_day: int
    early_unfollow: float  # share of new followers who leave within 7 days
    buy: float  # share of scanners (not customers yet) who buy afterwards
    active: bool = True


PLANS = (
    _Plan("poster", "门店海报 · 西湖店", "poster-xihu", "欢迎来到茶语西湖店!出示本消息,第二杯半价。",
          ("门店海报", "西湖店"), 32, 10, 58, 1, 0.08, 0.42),
    _Plan("store", "收银台立牌", "store-counter", "欢迎关注茶语!结账时报手机号即可累积积分。",
          ("收银台",), 40, 14, 60, 1, 0.05, 0.58),
    _Plan("clerk", "店员 小王", "clerk-wang", "我是茶语店员小王,有任何问题都可以在这里问我~",
          ("店员小王",), 18, 6, 45, 2, 0.04, 0.62),
    _Plan("event", "品鉴会", "event-tasting", "感谢参加茶语新品品鉴会!回复「品鉴」领取试饮券。",
          ("品鉴会",), 14, 12, 24, 20, 0.06, 0.48),
    _Plan("campaign", "双十一活动", "campaign-1111", "双十一:关注即领 11 元无门槛券,限今日使用!",
          ("双十一", "活动粉"), 44, 8, 22, 12, 0.31, 0.14),
    _Plan("campaign", "国庆活动(已结束)", "campaign-national-day", "国庆快乐!关注领取国庆限定杯套。",
          ("国庆活动", "活动粉"), 12, 0, 53, 47, 0.25, 0.12, active=False),
)


def _demo_account(workspace: Workspace, rng: random.Random) -> WeChatAccount:
    """The workspace's Official Account, or a demo one (placeholder credentials) with the AppID the demo
    members' openids belong to."""
    from shequn.demo import WECHAT_APPID

    existing = scoped(WeChatAccount, workspace).order_by("pk").first()
    if existing is not None:
        return existing
    secret = "demoonly" + "".join(rng.choice(_ALPHABET) for _ in range(24))
    token = "demoonly" + "".join(rng.choice(string.digits) for _ in range(8))
    aes_key = "".join(rng.choice(_ALPHABET) for _ in range(43))
    account, _path = services.connect_account(workspace, WECHAT_APPID, secret, token, aes_key, WeChatMode.SAFE, ACTOR)
    return services.set_auto_replies(workspace, account.pk, welcome_text="欢迎关注茶语·鲜果茶!回复「菜单」查看本季新品。",
                                     reply_text="收到啦,店员会尽快回复您~", actor=ACTOR)


def _follower_openids(workspace: Workspace, app_id: str, limit: int) -> list[str]:
    from shequn.members.models import Identity

    return list(scoped(Identity, workspace).filter(kind="wechat_openid", namespace=app_id)
                .order_by("pk").values_list("value", flat=True)[:limit])


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    """Add the demo account (if the workspace has none) and the codes of :data:`PLANS` with their
    scans over the last two months. Deterministic for a given ``rng`` and ``now``."""
    from shequn.demo import MENU, STORES
    from shequn.interactions import services as interactions

    account = _demo_account(workspace, rng)
    followers = _follower_openids(workspace, account.app_id, 400)
    rng.shuffle(followers)
    codes = {p.scene: code_services.create_code(workspace, account.pk, kind=p.kind, name=p.name, scene=p.scene,
                                                welcome_text=p.welcome, tags=list(p.tags), actor=ACTOR,
                                                issue_qr=demo_qr) for p in PLANS}
    # A fresh copy: creating codes changed the account's codes_version.
    account = scoped(WeChatAccount, workspace).select_related("workspace").get(pk=account.pk)

    pushes: list[tuple[int, dict[str, str]]] = []
    buyers: list[tuple[str, dt.datetime]] = []
    used_times: set[tuple[str, int]] = set()

    def at(plan: _Plan) -> int:
        day = rng.uniform(plan.last_day, plan.first_day)
        return int((now - dt.timedelta(days=day)).replace(hour=0, minute=0, second=0).timestamp()
                   + rng.randint(9 * 3600, 21 * 3600))  # shop hours, Asia/Shanghai-ish

    def event(openid: str, when: int, name: str, key: str) -> None:
        while (openid, when) in used_times:
            when += 1
        used_times.add((openid, when))
        fields = {"ToUserName": ORIGINAL_ID, "FromUserName": openid, "CreateTime": str(when), "MsgType": "event",
                  "Event": name}
        if key:
            fields.update({"EventKey": key, "Ticket": codes[key.removeprefix(QR_SCENE_PREFIX)].ticket})
        pushes.append((when, fields))

    touch_pool = iter(followers)
    for plan in PLANS:
        for _ in range(plan.new):
            openid = "o" + "".join(rng.choice(_ALPHABET + "_-") for _ in range(27))
            when = min(at(plan), int(now.timestamp()) - 3600)
            event(openid, when, "subscribe", QR_SCENE_PREFIX + plan.scene)
            if rng.random() < plan.early_unfollow:
                event(openid, min(when + rng.randint(3600, 6 * 86400), int(now.timestamp()) - 60), "unsubscribe", "")
            elif rng.random() < plan.buy:
                buyers.append((openid, dt.datetime.fromtimestamp(when, tz=dt.UTC)
                               + dt.timedelta(hours=rng.uniform(0.2, 240))))
        for _ in range(plan.touches):
            openid = next(touch_pool, None)
            if openid is None:
                break
            event(openid, min(at(plan), int(now.timestamp()) - 3600), "SCAN", plan.scene)
            if rng.random() < plan.buy / 2:
                buyers.append((openid, dt.datetime.fromtimestamp(at(plan), tz=dt.UTC) + dt.timedelta(days=1)))

    # What receive_message does for each push, in two batches (scans, then unfollows) to stay fast:
    # the interaction through ingest_batch, then the code's scan record.
    messages = [message_from_fields(f) for _when, f in sorted(pushes, key=lambda p: (p[0], p[1]["FromUserName"]))]
    scans = [m for m in messages if m.qr_scene]
    results = interactions.ingest_batch(workspace, [services.interaction_for(account, m) for m in scans],
                                        actor=account.source)
    for message, result in zip(scans, results, strict=True):
        if result.status != "created" or result.member_id is None:
            raise RuntimeError(f"demo scan rejected: {result}")
        info = queries.code_for_scene(account, message.qr_scene)
        assert info is not None
        code_services.record_scan(workspace, info, result.member_id, new_follower=message.event_lower == "subscribe",
                                  at=dt.datetime.fromtimestamp(message.create_time, tz=dt.UTC), actor=account.source)
    leaves = [services.interaction_for(account, m) for m in messages if not m.qr_scene]
    if leaves:
        interactions.ingest_batch(workspace, leaves, actor=account.source)

    purchases: list[dict[str, Any]] = []
    for n, (openid, when) in enumerate(sorted(buyers, key=lambda b: (b[1], b[0])), start=1):
        if when >= now:
            continue
        drinks = rng.sample(MENU, rng.choice((1, 1, 2)))
        store = rng.choice(STORES)
        amount = sum(Decimal(d.price) for d in drinks)
        purchases.append({
            "identities": [{"kind": "wechat_openid", "namespace": account.app_id, "value": openid}],
            "type": "purchase", "channel": "store", "occurred_at": when, "amount": str(amount), "currency": "CNY",
            "source": "pos", "external_id": f"POS-QR{n:06d}",
            "properties": {"store": store.name, "items": [{"name": d.name, "price": d.price, "qty": 1} for d in drinks]},
        })
    if purchases:
        failed = [r for r in interactions.ingest_batch(workspace, purchases, actor=ACTOR) if r.status != "created"]
        if failed:
            raise RuntimeError(f"demo purchase rejected: {failed[0]}")
    for plan in PLANS:
        if not plan.active:
            code_services.update_code(workspace, codes[plan.scene].pk, active=False, actor=ACTOR)
