"""The demo workspace: 茶语 · 鲜果茶, a fresh-fruit-tea and milk-tea chain with stores in Hangzhou and
Shanghai, with six months of member history that ends at the moment the demo is built.

Nothing here writes a table directly: members, tags, keywords, attributes, consent, touchpoints and
interactions all go through the domain services, so the demo exercises the same write path as real
traffic — stage rules move members along the pipeline, strength is computed from what they did,
touchpoint roll-ups and trust signals come from the events, and duplicate people are merged by the
event that reveals them.

Every member gets a persona (loyal regular, occasional, churned, giveaway hunter, advocate, or a
registered member who never came back) drawn from a mix that depends on how the member was
acquired; the persona drives what the member does. Figures such as "members won by a giveaway
convert worst" are not written anywhere: they emerge from the behaviour. A given seed always builds
the same data relative to the day of ``now``.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from shequn.core import services as core
from shequn.core.clock import now as clock_now
from shequn.core.models import Role, Workspace
from shequn.interactions import services as interactions
from shequn.members import services as members
from shequn.members.models import Member

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "chayu-demo-2026"  # noqa: S105 — fixed on purpose: it only ever exists in the demo
DEMO_STAFF: tuple[tuple[str, str], ...] = (
    (DEMO_USERNAME, Role.OWNER),
    ("demo-operator", Role.OPERATOR),
    ("demo-agent", Role.AGENT),
    ("demo-clerk", Role.CLERK),
)
WECHAT_APPID = "wx7c3e9a5b1d2f4608"  # the demo official account's AppID: namespace of its openids
ACTOR = "demo"
HISTORY_DAYS = 184  # six months, ending the day before the build
BATCH_SIZE = 5000

ProgressFn = Callable[[int, int, str], None]

# ---------------------------------------------------------------------------------------------
# the brand


@dataclass(frozen=True)
class Store:
    key: str
    name: str
    city: str


STORES = (
    Store("xihu", "西湖店", "杭州"),
    Store("binjiang", "滨江店", "杭州"),
    Store("wulin", "武林店", "杭州"),
    Store("hubin", "湖滨银泰店", "杭州"),
    Store("xixi", "西溪店", "杭州"),
    Store("jingan", "静安店", "上海"),
    Store("xuhui", "徐汇店", "上海"),
    Store("lujiazui", "陆家嘴店", "上海"),
    Store("wujiaochang", "五角场店", "上海"),
    Store("zhongshan", "中山公园店", "上海"),
)
STORE_WEIGHTS = (16, 12, 10, 12, 8, 12, 9, 9, 6, 6)


@dataclass(frozen=True)
class Drink:
    name: str
    price: int
    keyword: str


MENU = (
    Drink("多肉葡萄", 28, "口味/水果茶/葡萄"),
    Drink("芝芝莓莓", 29, "口味/水果茶/草莓"),
    Drink("满杯红柚", 22, "口味/水果茶/柚子"),
    Drink("霸气橙子", 25, "口味/水果茶/橙子"),
    Drink("杨枝甘露", 26, "口味/水果茶/芒果"),
    Drink("椰椰芒芒", 27, "口味/水果茶/芒果"),
    Drink("桃桃乌龙", 23, "口味/水果茶/桃子"),
    Drink("芝士茉莉", 21, "口味/奶茶/芝士"),
    Drink("芝士莓莓奶盖", 27, "口味/奶茶/芝士"),
    Drink("烤黑糖波波牛乳", 24, "口味/奶茶/牛乳"),
    Drink("经典珍珠奶茶", 15, "口味/奶茶/经典"),
    Drink("桂花乌龙奶茶", 18, "口味/奶茶/经典"),
    Drink("纯绿妍茶", 12, "口味/纯茶"),
    Drink("金凤茶王", 16, "口味/纯茶"),
)
TOPPINGS = (("芋圆", 3), ("椰果", 2), ("奶盖", 5), ("珍珠", 2))
SUGAR_LEVELS = ("全糖", "七分糖", "半糖", "三分糖", "无糖")
ICE_LEVELS = ("正常冰", "少冰", "去冰", "常温", "热")

# Touchpoints with the seed's four dimensions (渠道/功能/客群/生命周期) and the operator's scores.
TOUCHPOINTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("wechat-menu", {"name": "公众号菜单", "channel": "wechat", "function": "service", "segment": "全部粉丝",
                     "lifecycle_stage": "aware", "importance": 3, "complexity": 2, "consistency": 4,
                     "description": "公众号底部菜单与自动回复：查门店、查积分、联系客服"}),
    ("wechat-article", {"name": "公众号文章", "channel": "wechat", "function": "marketing", "segment": "全部粉丝",
                        "lifecycle_stage": "aware", "importance": 3, "complexity": 2, "consistency": 4,
                        "description": "新品推文与会员日推送"}),
    ("store-counter", {"name": "门店收银台", "channel": "store", "function": "sales", "segment": "到店顾客",
                       "lifecycle_stage": "purchased", "importance": 5, "complexity": 3, "consistency": 4,
                       "description": "点单、收银、会员码核销、店员推荐关注"}),
    ("mini-program", {"name": "小程序点单", "channel": "miniprogram", "function": "sales", "segment": "白领",
                      "lifecycle_stage": "using", "importance": 5, "complexity": 3, "consistency": 4,
                      "description": "线上点单到店自取，取餐通知，邀请有礼"}),
    ("delivery-card", {"name": "外卖包装卡片", "channel": "meituan", "function": "sales", "segment": "外卖党",
                       "lifecycle_stage": "using", "importance": 4, "complexity": 4, "consistency": 2,
                       "description": "美团外卖袋里的卡片：扫码评价、反馈、关注公众号"}),
    ("member-card", {"name": "会员卡积分", "channel": "miniprogram", "function": "loyalty", "segment": "会员",
                     "lifecycle_stage": "using", "importance": 3, "complexity": 2, "consistency": 3,
                     "description": "会员卡、积分到账通知、绑定手机号"}),
    ("hotline", {"name": "客服热线", "channel": "phone", "function": "service", "segment": "全部顾客",
                 "lifecycle_stage": "using", "importance": 3, "complexity": 4, "consistency": 3,
                 "description": "400 客服热线，处理外卖与门店投诉"}),
    ("dianping", {"name": "大众点评", "channel": "dianping", "function": "feedback", "segment": "全部顾客",
                  "lifecycle_stage": "feedback", "importance": 4, "complexity": 3, "consistency": 3,
                  "description": "大众点评门店页的评价与评分"}),
    ("wechat-group", {"name": "社群（微信群）", "channel": "wechat_group", "function": "community", "segment": "会员",
                      "lifecycle_stage": "advocate", "importance": 4, "complexity": 4, "consistency": 3,
                      "description": "各门店福利群：新品剧透、拼单、晒单"}),
    ("tasting-event", {"name": "新品试饮会", "channel": "offline", "function": "community", "segment": "核心粉丝",
                       "lifecycle_stage": "advocate", "importance": 3, "complexity": 5, "consistency": 4,
                       "description": "每月一次的门店新品试饮会，邀请会员参加"}),
    ("store-poster-qr", {"name": "门店海报二维码", "channel": "store", "function": "marketing", "segment": "到店顾客",
                         "lifecycle_stage": "aware", "importance": 2, "complexity": 1, "consistency": 4,
                         "description": "门店海报与桌贴上的渠道活码"}),
    ("giveaway-booth", {"name": "赠品活动", "channel": "offline", "function": "marketing", "segment": "路人",
                        "lifecycle_stage": "aware", "importance": 2, "complexity": 2, "consistency": 2,
                        "description": "扫码关注送帆布袋/免费小杯的地推赠品活动"}),
)

ATTRIBUTES = (
    ("sweetness", "甜度偏好", "choice", SUGAR_LEVELS),
    ("cups_per_week", "每周杯数", "number", ()),
    ("is_student", "是否学生", "boolean", ()),
)

# Acquisition sources (the first channel code that brought a member).
SOURCE_STORE_POSTER = "门店海报二维码"
SOURCE_CLERK = "店员推荐"
SOURCE_REFERRAL = "好友推荐"
SOURCE_MEITUAN = "美团外卖"
SOURCE_ARTICLE = "公众号文章"
SOURCE_GIVEAWAY = "赠品活动"
SOURCE_WEIGHTS = {
    SOURCE_STORE_POSTER: 22, SOURCE_CLERK: 16, SOURCE_REFERRAL: 14, SOURCE_MEITUAN: 16, SOURCE_ARTICLE: 12,
    SOURCE_GIVEAWAY: 20,
}

# Personas and the mix each source brings in. A giveaway mostly attracts people who came for the gift.
LOYAL, OCCASIONAL, CHURNED, HUNTER, ADVOCATE, DORMANT = "loyal", "occasional", "churned", "hunter", "advocate", "dormant"
PERSONA_MIX = {
    SOURCE_STORE_POSTER: {LOYAL: 22, OCCASIONAL: 38, CHURNED: 20, ADVOCATE: 6, HUNTER: 8, DORMANT: 6},
    SOURCE_CLERK: {LOYAL: 30, OCCASIONAL: 30, CHURNED: 14, ADVOCATE: 8, HUNTER: 3, DORMANT: 15},
    SOURCE_REFERRAL: {LOYAL: 32, OCCASIONAL: 30, CHURNED: 12, ADVOCATE: 20, HUNTER: 4, DORMANT: 2},
    SOURCE_MEITUAN: {LOYAL: 20, OCCASIONAL: 45, CHURNED: 25, ADVOCATE: 3, HUNTER: 5, DORMANT: 2},
    SOURCE_ARTICLE: {LOYAL: 12, OCCASIONAL: 40, CHURNED: 30, ADVOCATE: 5, HUNTER: 10, DORMANT: 3},
    SOURCE_GIVEAWAY: {LOYAL: 4, OCCASIONAL: 12, CHURNED: 10, ADVOCATE: 1, HUNTER: 70, DORMANT: 3},
}


@dataclass(frozen=True)
class Persona:
    gap_days: float  # mean days between two visits of the member to the brand
    sessions: dict[str, int]  # what a visit is, with weights
    review_rate: float  # share of these members who ever write reviews
    complaint: float  # chance that a support contact is a complaint
    group_rate: float  # share who are in a store's WeChat group
    card_rate: float  # share with a member card
    event_rate: float  # chance to attend one tasting event
    cups: tuple[int, int]


PERSONAS = {
    LOYAL: Persona(4.5, {"purchase": 60, "message": 11, "group": 8, "visit": 5, "review": 5, "support": 3,
                         "share": 1}, 0.4, 0.3, 0.5, 0.9, 0.15, (3, 7)),
    ADVOCATE: Persona(3.0, {"purchase": 45, "message": 10, "group": 15, "share": 10, "review": 7, "visit": 4,
                            "support": 2}, 0.9, 0.2, 0.9, 1.0, 0.4, (4, 9)),
    OCCASIONAL: Persona(18.0, {"purchase": 55, "message": 15, "visit": 15, "review": 3, "support": 4, "group": 2},
                        0.2, 0.4, 0.1, 0.35, 0.04, (1, 2)),
    CHURNED: Persona(7.0, {"purchase": 50, "message": 18, "visit": 14, "support": 12, "review": 6},
                     0.3, 0.65, 0.05, 0.3, 0.0, (1, 3)),
    HUNTER: Persona(30.0, {"purchase": 100}, 0.0, 0.5, 0.0, 0.05, 0.0, (0, 1)),
    DORMANT: Persona(0.0, {}, 0.0, 0.0, 0.0, 0.0, 0.0, (0, 1)),
}

PUSH_DAYS = ((12, "新品上市｜桃桃乌龙回归"), (42, "会员日｜周三第二杯半价"), (72, "夏日限定｜椰椰芒芒上新"),
             (102, "新品剧透｜芝士莓莓奶盖"), (132, "会员日｜积分翻倍"), (162, "秋季上新｜桂花乌龙奶茶"))
TASTING_DAYS = (28, 58, 88, 118, 148, 176)
GIVEAWAYS = ((21, "giveaway-launch", "开业扫码送帆布袋"), (112, "giveaway-summer", "夏日赠品节·扫码送小杯"))

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈"
            "姚卢钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万钱戴严")
COMPOUND_SURNAMES = ("欧阳", "上官", "司马", "诸葛")
FEMALE_CHARS = "欣怡婷雪静丽娜敏颖琳佳悦萱雯晴瑶思诗梦雨涵琪璐菲妍彤楠蕾倩芸晨曦若溪可馨月薇妮"
MALE_CHARS = "伟强磊洋勇军杰涛斌超明浩亮鹏宇航博文俊轩昊然哲凯辉鑫帆睿泽子一天志峰阳鸣翔嘉逸"
PHONE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
                  "156", "157", "158", "159", "166", "173", "175", "176", "177", "180", "181", "182", "183",
                  "185", "186", "187", "188", "189", "191", "198", "199")
ID_CHARS = string.ascii_letters + string.digits + "-_"

QUESTIONS = (
    ("请问{store}几点关门？", "您好，{store}营业到22:00哦，欢迎来喝茶～"),
    ("{drink}可以做少冰吗？", "可以的亲，下单时备注「少冰」即可～"),
    ("会员积分怎么兑换？", "点击菜单「会员中心」→「积分商城」即可兑换饮品券哦"),
    ("生日当天有优惠吗？", "会员生日当月可领一张免费饮品券，记得在会员中心领取～"),
    ("新品什么时候上？", "下周三全门店上新，敬请期待！"),
    ("可以开发票吗？", "小程序订单详情页可以直接申请电子发票哦"),
    ("{drink}还有吗？今天想喝", "{store}今天还有的，建议小程序提前下单免排队～"),
    ("优惠券怎么用不了？", "抱歉给您带来不便，券需满30元可用，已为您补发一张无门槛券"),
    ("你们招兼职吗？", "感谢关注！招聘信息请留意公众号推文哦"),
    ("{drink}的糖可以换成代糖吗？", "目前可以选择无糖或三分糖，代糖正在筹备中～"),
)
THANKS = ("好的谢谢～", "收到，回复好快", "太贴心了，谢谢客服")
PUSH_REPLIES = ("想喝！什么时候到{store}？", "第二杯半价可以和朋友一起吗？", "已经在排队了哈哈", "积分翻倍太香了")
GROUP_LINES = (
    ("今天的{drink}太好喝了！", "positive"),
    ("{store}今天人好多，排了二十分钟", ""),
    ("有人一起拼单吗？满减划算", ""),
    ("新品{drink}已打卡，推荐三分糖", "positive"),
    ("群里的福利券怎么领？", ""),
    ("店员小姐姐超级nice", "positive"),
    ("求问{drink}和哪个小料最配", ""),
)
GROUP_REPLIES = ("感谢喜欢～晒单截图可领积分哦", "福利券在群公告里，点击领取即可", "已反馈给门店，我们会加派人手")
REVIEW_TEXTS = {
    5: ("{drink}果肉超多，茶底清爽，必点！", "{store}环境很好，店员推荐的{drink}很惊艳", "性价比高，会员日第二杯半价太香了"),
    4: ("{drink}好喝，就是排队有点久", "整体不错，{store}出杯速度可以再快一点", "味道稳定，会继续回购"),
    3: ("{drink}一般般，甜度有点高", "中规中矩，价格略贵", "口味还行，环境有点吵"),
    2: ("等了半个小时才拿到，{drink}已经不冰了", "这次的{drink}果肉很少，有点失望"),
    1: ("店员态度很差，点错单还不认", "{drink}喝出异物，体验很糟糕"),
}
DELIVERY_COMPLAINTS = ("外卖送了一个多小时，{drink}都化了", "奶茶洒了一半，袋子里全是", "少送了一杯{drink}",
                       "骑手放错地址了，找了半天")
DELIVERY_REVIEWS = {
    1: ("送了一个半小时，冰全化了", "杯子漏了，包装太差"),
    2: ("配送太慢，{drink}味道都变了", "小料漏放了"),
    4: ("送得挺快，{drink}还是冰的", "包装很用心"),
    5: ("准时送达，{drink}好喝！", "外卖卡片上的小心意很暖"),
}
SUPPORT_TOPICS = (
    ("外卖迟到", "外卖超时五十分钟，要求退款", True),
    ("饮品质量", "{drink}喝起来是坏的", True),
    ("服务态度", "{store}店员态度不好", True),
    ("少送漏送", "外卖少了一杯{drink}", True),
    ("会员积分", "积分没有到账", False),
    ("门店咨询", "想预订20杯{drink}做公司下午茶", False),
    ("发票", "发票抬头开错了，想重开", False),
)
AGENT_REPLIES = ("非常抱歉，已为您办理退款并补偿一张饮品券", "已核实，积分已补发到您的账户", "已帮您预订，届时门店会电话联系您")
SHARE_CONTENTS = ("新品海报", "晒单照片", "会员日活动", "试饮会合影", "邀请有礼链接")
HOUR_WEIGHTS = {8: 1, 9: 2, 10: 3, 11: 5, 12: 8, 13: 7, 14: 5, 15: 6, 16: 7, 17: 6, 18: 5, 19: 6, 20: 6, 21: 4, 22: 2}


# ---------------------------------------------------------------------------------------------
# the people


@dataclass
class _Person:
    index: int
    persona: str
    source: str
    source_code: str
    join: dt.datetime
    store: Store
    name: str
    gender: str
    birthday: dt.date
    phone: str | None
    email: str | None
    openid: str | None
    unionid: str | None
    segment: str
    favourites: list[Drink]
    delivery_share: float
    mp_share: float
    reviewer: bool
    in_group: bool
    member_card: bool
    marketing: bool
    new_products: bool
    cups: int | None
    sweetness: str
    referrer: int | None = None  # index of the person who invited this one
    duplicate: bool = False  # also registered at a store counter with the phone only
    merge_at: dt.datetime | None = None
    member_id: int = 0
    pos_member_id: int = 0  # the duplicate, phone-only member


@dataclass
class _Event:
    at: dt.datetime
    person: int
    seq: int
    data: dict[str, Any]
    member: str = "main"  # main / pos / referrer
    merge: bool = False


class _Builder:
    def __init__(self, *, members_total: int, interactions_total: int, seed: int, end_day: dt.date,
                 tz: ZoneInfo) -> None:
        self.members_total = max(1, members_total)
        self.interactions_total = max(0, interactions_total)
        self.seed = seed
        self.tz = tz
        self.first_day = end_day - dt.timedelta(days=HISTORY_DAYS - 1)
        self.end = dt.datetime.combine(end_day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=tz)
        self.rng = random.Random(f"shequn-demo:{seed}")
        self.people: list[_Person] = []

    # -- time ----------------------------------------------------------------------------------

    def at(self, day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
        return dt.datetime.combine(self.first_day + dt.timedelta(days=day), dt.time(hour, minute, second),
                                   tzinfo=self.tz)

    def random_time(self, rng: random.Random, day: int) -> dt.datetime:
        hour = rng.choices(list(HOUR_WEIGHTS), weights=list(HOUR_WEIGHTS.values()))[0]
        return self.at(day, hour, rng.randrange(60), rng.randrange(60))

    def day_of(self, when: dt.datetime) -> int:
        return (when.astimezone(self.tz).date() - self.first_day).days

    # -- planning people -----------------------------------------------------------------------

    def plan_people(self) -> None:
        rng = self.rng
        n_dup = max(2, self.members_total // 100) if self.members_total >= 20 else 0
        n_people = self.members_total - n_dup
        phones: set[str] = set()
        rows: list[tuple[dt.datetime, int, str, str]] = []
        sources = list(SOURCE_WEIGHTS)
        for i in range(n_people):
            source = rng.choices(sources, weights=[SOURCE_WEIGHTS[s] for s in sources])[0]
            mix = PERSONA_MIX[source]
            persona = rng.choices(list(mix), weights=list(mix.values()))[0]
            if source == SOURCE_GIVEAWAY:
                day = rng.choice(GIVEAWAYS)[0] + rng.randrange(4)
            elif persona in (LOYAL, ADVOCATE) and source in (SOURCE_STORE_POSTER, SOURCE_CLERK) and rng.random() < 0.35:
                day = rng.randrange(2)  # the members who were there when the programme launched
            else:
                day = rng.randrange(HISTORY_DAYS - 7)
            rows.append((self.random_time(rng, day), i, source, persona))
        rows.sort()
        for join, _, source, persona in rows:
            self.people.append(self._person(len(self.people), join, source, persona, phones))
        self._assign_referrers()
        candidates = [p for p in self.people if p.persona in (LOYAL, OCCASIONAL) and p.phone and p.openid
                      and self.day_of(p.join) < HISTORY_DAYS - 40]
        for p in rng.sample(candidates, min(n_dup, len(candidates))):
            p.duplicate = True
            merge_day = rng.randrange(self.day_of(p.join) + 10, HISTORY_DAYS - 20)
            p.merge_at = self.random_time(rng, merge_day)

    def _person(self, index: int, join: dt.datetime, source: str, persona: str, phones: set[str]) -> _Person:
        rng = self.rng
        pdef = PERSONAS[persona]
        gender = "female" if rng.random() < 0.68 else "male"
        surname = rng.choice(COMPOUND_SURNAMES) if rng.random() < 0.01 else rng.choice(SURNAMES)
        chars = FEMALE_CHARS if gender == "female" else MALE_CHARS
        given = "".join(rng.choice(chars) for _ in range(2 if rng.random() < 0.7 else 1))
        segment = rng.choices(("student", "office", "mom", "other"), weights=(25, 45, 15, 15))[0]
        if segment == "mom":
            gender = "female"
            given = "".join(rng.choice(FEMALE_CHARS) for _ in range(2))
        age = {"student": (18, 23), "office": (23, 36), "mom": (27, 40), "other": (20, 46)}[segment]
        year = self.first_day.year - rng.randint(*age)
        birthday = dt.date(year, rng.randint(1, 12), rng.randint(1, 28))
        store = rng.choices(STORES, weights=STORE_WEIGHTS)[0]
        phone = None
        if persona == DORMANT or source in (SOURCE_MEITUAN, SOURCE_CLERK) or rng.random() < 0.7:
            while True:
                phone = rng.choice(PHONE_PREFIXES) + "".join(rng.choice(string.digits) for _ in range(8))
                if phone not in phones:
                    phones.add(phone)
                    break
        email = None
        if persona != DORMANT and rng.random() < 0.15:
            if rng.random() < 0.6:
                email = f"{rng.randint(10_000_000, 3_999_999_999)}@qq.com"
            else:
                local = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 8)))
                email = f"{local}{rng.randint(80, 2009)}@{rng.choice(('163.com', '126.com', 'outlook.com'))}"
        openid = None if persona == DORMANT else "o" + "".join(rng.choice(ID_CHARS) for _ in range(27))
        unionid = "oU" + "".join(rng.choice(ID_CHARS) for _ in range(26)) if openid and rng.random() < 0.4 else None
        favourites = rng.sample(MENU, 3)
        delivery = rng.uniform(0.55, 0.85) if source == SOURCE_MEITUAN else rng.uniform(0.03, 0.2)
        if segment == "office":
            delivery = min(0.9, delivery + 0.1)
        mp = rng.uniform(0.2, 0.6) if segment in ("office", "student") else rng.uniform(0.05, 0.3)
        marketing = rng.random() < (0.5 if persona == HUNTER else 0.78)
        code = {
            SOURCE_STORE_POSTER: f"poster-{store.key}",
            SOURCE_CLERK: f"clerk-{store.key}-{rng.randint(1, 6):02d}",
            SOURCE_REFERRAL: "invite",
            SOURCE_MEITUAN: f"meituan-card-{'hz' if store.city == '杭州' else 'sh'}",
            SOURCE_ARTICLE: rng.choice(("article-new-peach", "article-summer-menu", "article-member-day")),
            SOURCE_GIVEAWAY: "",
        }[source]
        if source == SOURCE_GIVEAWAY:
            code = min(GIVEAWAYS, key=lambda g: abs(g[0] - self.day_of(join)))[1]
        cups = rng.randint(*pdef.cups) if rng.random() < 0.7 else None
        return _Person(
            index=index, persona=persona, source=source, source_code=code, join=join, store=store,
            name=surname + given, gender=gender, birthday=birthday, phone=phone, email=email, openid=openid,
            unionid=unionid, segment=segment, favourites=favourites, delivery_share=delivery, mp_share=mp,
            reviewer=rng.random() < pdef.review_rate, in_group=rng.random() < pdef.group_rate,
            member_card=rng.random() < pdef.card_rate, marketing=marketing,
            new_products=marketing and rng.random() < 0.7, cups=cups,
            sweetness=rng.choices(SUGAR_LEVELS, weights=(10, 20, 35, 25, 10))[0],
        )

    def _assign_referrers(self) -> None:
        rng = self.rng
        inviters: list[_Person] = []
        for p in self.people:
            if p.source == SOURCE_REFERRAL:
                if inviters:
                    weights = [3 if q.persona == ADVOCATE else 1 for q in inviters]
                    p.referrer = rng.choices(inviters, weights=weights)[0].index
                else:  # nobody to invite them yet: they found the poster instead
                    p.source, p.source_code = SOURCE_STORE_POSTER, f"poster-{p.store.key}"
            if p.persona in (LOYAL, ADVOCATE):
                inviters.append(p)

    # -- creating members ----------------------------------------------------------------------

    def tags_for(self, p: _Person) -> list[str]:
        tags = []
        if p.segment == "student":
            tags.append("学生")
        elif p.segment == "office":
            tags.append("白领")
        elif p.segment == "mom":
            tags.append("宝妈")
        if p.cups is not None and p.cups >= 4:
            tags.append("奶茶控")
        if p.delivery_share >= 0.5:
            tags.append("外卖党")
        if p.member_card:
            tags.append("会员")
        if any("芝士" in d.keyword for d in p.favourites):
            tags.append("芝士控")
        if sum("水果茶" in d.keyword for d in p.favourites) >= 2:
            tags.append("果茶党")
        return tags

    def keywords_for(self, p: _Person) -> list[str]:
        paths = {p.favourites[0].keyword, f"门店/{p.store.name}"}
        if p.delivery_share >= 0.5:
            paths.add("场景/外卖")
        return sorted(paths)

    def create_members(self, workspace: Workspace, progress: ProgressFn | None) -> None:
        by_index: dict[int, Member] = {}
        total = self.members_total
        done = 0
        for p in self.people:
            identities: list[dict[str, str]] = []
            if p.openid:
                identities.append({"kind": "wechat_openid", "namespace": WECHAT_APPID, "value": p.openid})
            if p.unionid:
                identities.append({"kind": "wechat_unionid", "value": p.unionid})
            if p.phone and not p.duplicate:
                identities.append({"kind": "phone", "value": p.phone})
            if p.email:
                identities.append({"kind": "email", "value": p.email})
            profile: dict[str, Any] = {"display_name": p.name, "gender": p.gender, "city": p.store.city,
                                       "source_channel": p.source, "source_code": p.source_code}
            if not p.duplicate:
                profile["birthday"] = p.birthday
            attributes: dict[str, Any] = {"sweetness": p.sweetness, "is_student": p.segment == "student"}
            if p.cups is not None:
                attributes["cups_per_week"] = p.cups
            referrer = by_index[p.referrer] if p.referrer is not None else None
            if referrer is not None:
                p.source_code = profile["source_code"] = f"invite-{referrer.pk}"
            result = members.upsert_member(workspace, identities, profile, attributes, actor=ACTOR,
                                           reason="demo", referrer=referrer)
            member = result.member
            by_index[p.index] = member
            p.member_id = member.pk
            members.add_tags(workspace, member.pk, self.tags_for(p), actor=ACTOR)
            members.add_keywords(workspace, member.pk, self.keywords_for(p), actor=ACTOR)
            if p.persona != DORMANT:
                members.set_subscription(workspace, member.pk, "category", "marketing", p.marketing,
                                         source="wechat", actor=ACTOR)
                if p.new_products:
                    members.set_subscription(workspace, member.pk, "category", "new_products", True,
                                             source="wechat", actor=ACTOR)
            done += 1
            if p.duplicate:
                assert p.phone is not None
                # The same person, registered at a store counter with the phone number only.
                pos = members.upsert_member(workspace, [{"kind": "phone", "value": p.phone}],
                                            {"display_name": p.name, "birthday": p.birthday, "city": p.store.city,
                                             "source_channel": SOURCE_CLERK, "source_code": f"pos-{p.store.key}"},
                                            actor=ACTOR, reason="demo")
                p.pos_member_id = pos.member.pk
                members.add_keywords(workspace, pos.member.pk, [f"门店/{p.store.name}"], actor=ACTOR)
                done += 1
            if progress is not None and (done % 50 == 0 or done >= total):
                progress(min(done, total), total, "members")

    # -- simulating behaviour ------------------------------------------------------------------

    def simulate(self, scale: float) -> list[_Event]:
        events: list[_Event] = []
        for p in self.people:
            events.extend(_Life(self, p, scale).run())
        events.sort(key=lambda e: (e.at, e.person, e.seq))
        return events

    def calibrated_events(self) -> list[_Event]:
        """Simulate, then adjust the pace of visits until the total is close to the requested one."""
        if self.interactions_total == 0:
            return []
        scale = 1.0
        events = self.simulate(scale)
        for _ in range(3):
            if not events:
                break
            ratio = self.interactions_total / len(events)
            if abs(ratio - 1) < 0.02:
                break
            scale *= ratio
            events = self.simulate(scale)
        return events


class _Life:
    """One person's six months, as interactions."""

    def __init__(self, b: _Builder, p: _Person, scale: float) -> None:
        self.b, self.p, self.scale = b, p, scale
        self.rng = random.Random(f"shequn-demo:{b.seed}:{p.index}")
        self.events: list[_Event] = []

    def add(self, when: dt.datetime, member: str = "main", **data: Any) -> None:
        if when >= self.b.end:
            return
        if member == "main" and self.p.duplicate and self.p.merge_at and when < self.p.merge_at \
                and data.get("channel") in ("store", "meituan", "phone"):
            member = "pos"  # before the merge, counter and delivery orders land on the phone-only member
        self.events.append(_Event(at=when, person=self.p.index, seq=len(self.events), data=data, member=member))

    def drink(self) -> Drink:
        if self.rng.random() < 0.7:
            return self.rng.choice(self.p.favourites)
        return self.rng.choice(MENU)

    def fmt(self, text: str) -> str:
        return text.format(drink=self.drink().name, store=self.p.store.name)

    def run(self) -> list[_Event]:
        p, b, rng = self.p, self.b, self.rng
        if p.persona == DORMANT:
            return []
        pdef = PERSONAS[p.persona]
        join_day = b.day_of(p.join)
        self.acquire()
        unfollow_at: dt.datetime | None = None
        active_end = b.end
        if p.persona == HUNTER:
            if rng.random() < 0.75:
                unfollow_at = p.join + dt.timedelta(days=rng.uniform(0.5, 6))
            if rng.random() < 0.15:
                for _ in range(rng.randint(1, 2)):
                    day = rng.randrange(join_day + 5, HISTORY_DAYS + 5)
                    if day < HISTORY_DAYS:
                        self.session(b.random_time(rng, day), "purchase")
        elif p.persona == CHURNED:
            active_end = p.join + dt.timedelta(days=rng.uniform(14, 75))
            if rng.random() < 0.5:
                unfollow_at = active_end + dt.timedelta(days=rng.uniform(0.2, 5))
        elif p.persona == LOYAL and rng.random() < 0.15:
            active_end = b.end - dt.timedelta(days=rng.uniform(15, 50))
        if p.persona != HUNTER:
            kinds = list(pdef.sessions)
            weights = list(pdef.sessions.values())
            mean_gap = pdef.gap_days / max(self.scale, 0.01)
            elapsed = rng.expovariate(1 / mean_gap)
            while True:
                when = p.join + dt.timedelta(days=elapsed)
                if when >= active_end or when >= b.end:
                    break
                day = b.day_of(when)
                moment = b.random_time(rng, day)
                if moment <= p.join:
                    moment = p.join + dt.timedelta(minutes=rng.randint(30, 180))
                self.session(moment, rng.choices(kinds, weights=weights)[0])
                elapsed += rng.expovariate(1 / mean_gap)
        self.tasting_events(join_day, active_end)
        self.pushes(join_day, unfollow_at or active_end)
        if p.duplicate and p.merge_at is not None:
            self.events.append(_Event(at=p.merge_at, person=p.index, seq=len(self.events), merge=True, data={
                "type": "scan", "channel": "miniprogram", "direction": "in", "touchpoint": "member-card",
                "source": "miniprogram", "properties": {"action": "bind_phone", "text": "会员卡绑定手机号"}}))
        if unfollow_at is not None and unfollow_at < b.end:
            self.add(unfollow_at, type="unfollow", channel="wechat", source="wechat", properties={"event": "unsubscribe"})
        return self.events

    # acquisition: the first contact, by source

    def acquire(self) -> None:
        p, rng = self.p, self.rng
        t = p.join
        minute = dt.timedelta(minutes=1)
        welcome = {"type": "message", "channel": "wechat", "direction": "out", "source": "wechat", "properties": {"msg_type": "text", "text": "欢迎关注茶语·鲜果茶！回复「菜单」查看本季新品"}}
        if p.source == SOURCE_MEITUAN:
            self.purchase(t, "delivery")
            t += dt.timedelta(minutes=rng.randint(40, 90))
            self.add(t, type="scan", channel="wechat", touchpoint="delivery-card", source="wechat",
                     properties={"qr": p.source_code, "text": "扫外卖卡片关注"})
        elif p.source == SOURCE_GIVEAWAY:
            self.add(t, type="scan", channel="offline", touchpoint="giveaway-booth", source="wechat",
                     properties={"qr": p.source_code, "campaign": self.campaign_name()})
        elif p.source == SOURCE_REFERRAL:
            self.add(t, type="scan", channel="miniprogram", touchpoint="mini-program", source="wechat",
                     properties={"qr": p.source_code, "campaign": "邀请有礼"})
            if p.referrer is not None:
                self.add(t + minute, member="referrer", type="referral", channel="miniprogram",
                         touchpoint="mini-program", source="miniprogram",
                         properties={"invitee": p.name, "campaign": "邀请有礼"})
                self.add(t + 2 * minute, member="referrer", type="message", channel="wechat", direction="out",
                         touchpoint="member-card", source="wechat",
                         properties={"msg_type": "template", "text": "您邀请的好友已加入，邀请奖励券已到账"})
        elif p.source == SOURCE_CLERK:
            self.add(t, type="scan", channel="store", touchpoint="store-counter", source="wechat",
                     properties={"qr": p.source_code, "store": p.store.name})
        elif p.source == SOURCE_STORE_POSTER:
            self.add(t, type="scan", channel="store", touchpoint="store-poster-qr", source="wechat",
                     properties={"qr": p.source_code, "store": p.store.name})
        t += minute
        tp = {SOURCE_GIVEAWAY: "giveaway-booth", SOURCE_ARTICLE: "wechat-article", SOURCE_MEITUAN: "delivery-card",
              SOURCE_REFERRAL: "mini-program", SOURCE_CLERK: "store-counter"}.get(p.source, "store-poster-qr")
        self.add(t, type="follow", channel="wechat", touchpoint=tp, source="wechat",
                 properties={"event": "subscribe", "qrscene": p.source_code})
        self.add(t + dt.timedelta(seconds=2), **welcome)
        if p.source == SOURCE_GIVEAWAY and rng.random() < 0.8:
            self.add(t + dt.timedelta(minutes=rng.randint(1, 5)), type="visit", channel="store",
                     touchpoint="giveaway-booth", source="pos",
                     properties={"purpose": "领取赠品", "gift": "帆布袋" if "launch" in p.source_code else "免费小杯",
                                 "store": p.store.name})
            if rng.random() < 0.3:
                self.add(t + dt.timedelta(minutes=rng.randint(10, 90)), type="message", channel="wechat",
                         touchpoint="wechat-menu", source="wechat",
                         properties={"msg_type": "text", "text": "赠品还有吗？我朋友也想要"})
        if p.source in (SOURCE_CLERK, SOURCE_STORE_POSTER) and rng.random() < 0.6:
            self.purchase(t + dt.timedelta(minutes=rng.randint(2, 10)), "store")

    def campaign_name(self) -> str:
        return next(name for _, code, name in GIVEAWAYS if code == self.p.source_code)

    # what one visit of a member to the brand looks like

    def session(self, t: dt.datetime, kind: str) -> None:
        p, rng = self.p, self.rng
        if kind == "review" and not p.reviewer:
            kind = "purchase"
        if kind == "group" and not p.in_group:
            kind = "message"
        if kind == "purchase":
            roll = rng.random()
            self.purchase(t, "delivery" if roll < p.delivery_share else
                          "miniprogram" if roll < p.delivery_share + p.mp_share else "store")
        elif kind == "message":
            question, answer = rng.choice(QUESTIONS)
            drink, store = self.drink().name, p.store.name
            self.add(t, type="message", channel="wechat", touchpoint="wechat-menu", source="wechat",
                     properties={"msg_type": "text", "text": question.format(drink=drink, store=store)})
            if rng.random() < 0.85:
                replied = t + dt.timedelta(minutes=rng.randint(1, 25))
                self.add(replied, type="message", channel="wechat", direction="out", touchpoint="wechat-menu",
                         source="wechat", properties={"msg_type": "text", "text": answer.format(drink=drink, store=store)})
                if rng.random() < 0.2:
                    self.add(replied + dt.timedelta(minutes=rng.randint(1, 10)), type="message", channel="wechat",
                             touchpoint="wechat-menu", source="wechat",
                             properties={"msg_type": "text", "text": rng.choice(THANKS), "sentiment": "positive"})
        elif kind == "group":
            line, sentiment = rng.choice(GROUP_LINES)
            props: dict[str, Any] = {"group": f"茶语{p.store.name}福利群", "text": self.fmt(line)}
            if sentiment:
                props["sentiment"] = sentiment
            self.add(t, type="message", channel="wechat_group", touchpoint="wechat-group", source="wechat_group",
                     properties=props)
            if rng.random() < 0.35:
                self.add(t + dt.timedelta(minutes=rng.randint(2, 40)), type="message", channel="wechat_group",
                         direction="out", touchpoint="wechat-group", source="wechat_group",
                         properties={"group": props["group"], "text": rng.choice(GROUP_REPLIES)})
        elif kind == "visit":
            self.add(t, type="visit", channel="store", touchpoint="store-counter", source="pos",
                     properties={"store": p.store.name, "purpose": rng.choice(("到店咨询", "试喝", "等朋友"))})
        elif kind == "review":
            self.review(t)
        elif kind == "support":
            self.support(t)
        elif kind == "share":
            self.add(t, type="share", channel="wechat", touchpoint="mini-program", source="miniprogram",
                     properties={"content": rng.choice(SHARE_CONTENTS), "target": rng.choice(("朋友圈", "好友", "群聊"))})

    def items(self) -> tuple[list[dict[str, Any]], Decimal]:
        rng = self.rng
        lines: list[dict[str, Any]] = []
        total = 0
        for _ in range(rng.choices((1, 2, 3), weights=(60, 30, 10))[0]):
            d = self.drink()
            line: dict[str, Any] = {"name": d.name, "price": d.price, "qty": 1,
                                    "sugar": self.p.sweetness if rng.random() < 0.8 else rng.choice(SUGAR_LEVELS),
                                    "ice": rng.choice(ICE_LEVELS)}
            total += d.price
            if rng.random() < 0.25:
                topping, price = rng.choice(TOPPINGS)
                line["toppings"] = [topping]
                line["price"] = d.price + price
                total += price
            lines.append(line)
        return lines, Decimal(total)

    def purchase(self, t: dt.datetime, where: str) -> None:
        p, rng = self.p, self.rng
        lines, amount = self.items()
        if where == "delivery":
            fee = Decimal(rng.choice((3, 4, 5)))
            self.add(t, type="purchase", channel="meituan", touchpoint="delivery-card", source="meituan",
                     amount=str(amount + fee), currency="CNY",
                     properties={"items": lines, "store": p.store.name, "platform": "美团外卖", "delivery_fee": int(fee)})
            late = rng.random() < 0.5
            after = t + dt.timedelta(minutes=rng.randint(45, 120))
            if late and rng.random() < 0.5:
                roll = rng.random()
                if roll < 0.5:
                    rating = rng.choice((1, 2))
                    self.add(after, type="review", channel="meituan", touchpoint="delivery-card", source="meituan",
                             properties={"rating": rating, "text": self.fmt(rng.choice(DELIVERY_REVIEWS[rating])),
                                         "platform": "美团外卖", "late": True})
                elif roll < 0.85:
                    self.add(after, type="message", channel="wechat", touchpoint="delivery-card", source="wechat",
                             properties={"msg_type": "text", "text": self.fmt(rng.choice(DELIVERY_COMPLAINTS)),
                                         "sentiment": "negative"})
                    self.add(after + dt.timedelta(minutes=rng.randint(3, 30)), type="message", channel="wechat",
                             direction="out", touchpoint="delivery-card", source="wechat",
                             properties={"msg_type": "text", "text": "非常抱歉！已联系门店为您补送/退款"})
                else:
                    self.support(after, topic=SUPPORT_TOPICS[0])
            elif not late and rng.random() < 0.15:
                rating = rng.choice((4, 5))
                self.add(after, type="review", channel="meituan", touchpoint="delivery-card", source="meituan",
                         properties={"rating": rating, "text": self.fmt(rng.choice(DELIVERY_REVIEWS[rating])),
                                     "platform": "美团外卖", "late": False})
        elif where == "miniprogram":
            code = f"{rng.choice('ABC')}{rng.randint(100, 999)}"
            self.add(t, type="purchase", channel="miniprogram", touchpoint="mini-program", source="miniprogram",
                     amount=str(amount), currency="CNY",
                     properties={"items": lines, "store": p.store.name, "pickup_code": code})
            if rng.random() < 0.9:
                self.add(t + dt.timedelta(minutes=rng.randint(5, 15)), type="message", channel="miniprogram",
                         direction="out", touchpoint="mini-program", source="miniprogram",
                         properties={"msg_type": "subscribe", "text": f"您的饮品已制作完成，取餐号 {code}"})
            if rng.random() < 0.08:
                score = rng.choices((5, 4, 3, 2, 1), weights=(50, 30, 12, 5, 3))[0]
                self.add(t + dt.timedelta(minutes=rng.randint(20, 90)), type="satisfaction", channel="miniprogram",
                         touchpoint="mini-program", source="miniprogram",
                         properties={"score": score, "question": "为本单打个分吧", "pickup_code": code})
        else:
            self.add(t, type="purchase", channel="store", touchpoint="store-counter", source="pos",
                     amount=str(amount), currency="CNY", properties={"items": lines, "store": p.store.name})
            if rng.random() < 0.06:
                score = rng.choices((5, 4, 3, 2), weights=(55, 30, 10, 5))[0]
                self.add(t + dt.timedelta(minutes=rng.randint(5, 60)), type="satisfaction", channel="store",
                         touchpoint="store-counter", source="pos",
                         properties={"score": score, "question": "本次到店体验打几分？", "store": p.store.name})
        if p.member_card and where != "delivery" and rng.random() < 0.7:
            points = int(amount)
            self.add(t + dt.timedelta(minutes=rng.randint(1, 3)), type="message", channel="wechat", direction="out",
                     touchpoint="member-card", source="wechat",
                     properties={"msg_type": "template", "text": f"积分到账 +{points}，当前可兑换饮品券"})
            if rng.random() < 0.04:
                score = rng.choices((5, 4, 3, 2), weights=(45, 35, 15, 5))[0]
                self.add(t + dt.timedelta(hours=rng.randint(1, 8)), type="satisfaction", channel="miniprogram",
                         touchpoint="member-card", source="miniprogram",
                         properties={"score": score, "question": "您对会员权益满意吗？"})

    def review(self, t: dt.datetime) -> None:
        weights = {ADVOCATE: (70, 25, 4, 1, 0), LOYAL: (55, 32, 8, 3, 2), OCCASIONAL: (30, 30, 20, 10, 10),
                   CHURNED: (10, 20, 25, 25, 20)}.get(self.p.persona, (20, 20, 20, 20, 20))
        rating = self.rng.choices((5, 4, 3, 2, 1), weights=weights)[0]
        self.add(t, type="review", channel="dianping", touchpoint="dianping", source="dianping",
                 properties={"rating": rating, "text": self.fmt(self.rng.choice(REVIEW_TEXTS[rating])),
                             "platform": "大众点评", "store": self.p.store.name})

    def support(self, t: dt.datetime, topic: tuple[str, str, bool] | None = None) -> None:
        rng = self.rng
        if topic is None:
            complaints = [s for s in SUPPORT_TOPICS if s[2]]
            questions = [s for s in SUPPORT_TOPICS if not s[2]]
            topic = rng.choice(complaints if rng.random() < PERSONAS[self.p.persona].complaint else questions)
        name, text, complaint = topic
        self.add(t, type="support_contact", channel="phone", touchpoint="hotline", source="callcenter",
                 properties={"topic": name, "text": self.fmt(text), "complaint": complaint})
        if rng.random() < 0.7:
            self.add(t + dt.timedelta(minutes=rng.randint(10, 120)), type="message", channel="phone",
                     direction="out", touchpoint="hotline", source="callcenter",
                     properties={"text": rng.choice(AGENT_REPLIES)})
        if rng.random() < 0.6:
            weights = (5, 15, 25, 30, 25) if complaint else (2, 3, 15, 40, 40)
            score = rng.choices((1, 2, 3, 4, 5), weights=weights)[0]
            self.add(t + dt.timedelta(hours=rng.randint(2, 6)), type="satisfaction", channel="phone",
                     touchpoint="hotline", source="callcenter",
                     properties={"score": score, "question": "您对本次服务满意吗？"})

    def tasting_events(self, join_day: int, active_end: dt.datetime) -> None:
        p, rng, b = self.p, self.rng, self.b
        rate = PERSONAS[p.persona].event_rate
        for day in TASTING_DAYS:
            start = b.at(day, 14, rng.randint(0, 30))
            if day <= join_day or start >= active_end or rng.random() >= rate:
                continue
            name = f"新品试饮会 · {p.store.name}"
            self.add(start, type="event_attendance", channel="offline", touchpoint="tasting-event", source="events",
                     properties={"event": name, "seats": 20})
            if rng.random() < 0.8:
                score = rng.choices((5, 4, 3), weights=(70, 25, 5))[0]
                self.add(start + dt.timedelta(hours=2), type="satisfaction", channel="offline",
                         touchpoint="tasting-event", source="events",
                         properties={"score": score, "question": "试饮会体验如何？", "event": name})
            if p.persona == ADVOCATE or rng.random() < 0.25:
                self.add(start + dt.timedelta(hours=3), type="share", channel="wechat", touchpoint="tasting-event",
                         source="events", properties={"content": "试饮会合影", "target": "朋友圈", "event": name})

    def pushes(self, join_day: int, reach_until: dt.datetime) -> None:
        p, rng, b = self.p, self.rng, self.b
        if not (p.marketing and p.new_products):
            return
        for day, title in PUSH_DAYS:
            sent = b.at(day, 11, 30)
            if day <= join_day or sent >= reach_until or rng.random() >= min(1.0, self.scale):
                continue
            self.add(sent, type="message", channel="wechat", direction="out", touchpoint="wechat-article",
                     source="wechat", properties={"msg_type": "news", "title": title})
            if p.persona in (LOYAL, ADVOCATE) and rng.random() < 0.12:
                self.add(sent + dt.timedelta(minutes=rng.randint(5, 300)), type="message", channel="wechat",
                         touchpoint="wechat-article", source="wechat",
                         properties={"msg_type": "text", "text": self.fmt(rng.choice(PUSH_REPLIES)),
                                     "sentiment": "positive"})


# ---------------------------------------------------------------------------------------------
# ingestion


def _setup_workspace(slug: str, name: str) -> Workspace:
    workspace = core.create_workspace(slug, name, actor=ACTOR)
    for username, role in DEMO_STAFF:
        user = core.ensure_user(username, DEMO_PASSWORD, email=f"{username}@demo.shequn.local")
        core.add_staff(workspace, user, role, actor=ACTOR)
    for key, label, type_, choices in ATTRIBUTES:
        members.define_attribute(workspace, key, label, type_, choices, actor=ACTOR)
    for code, data in TOUCHPOINTS:
        interactions.save_touchpoint(workspace, code, data, actor=ACTOR)
    return workspace


_EXTERNAL_PREFIX = {"wechat": "wx", "pos": "POS", "miniprogram": "MP", "meituan": "MT", "dianping": "DP",
                    "callcenter": "CC", "events": "EV", "wechat_group": "WG"}


def _ingest(workspace: Workspace, builder: _Builder, events: list[_Event], progress: ProgressFn | None) -> None:
    people = builder.people
    total = len(events)
    batch: list[dict[str, Any]] = []
    done = 0

    def flush() -> None:
        nonlocal done
        if batch:
            results = interactions.ingest_batch(workspace, batch, actor=ACTOR)
            failed = [r for r in results if r.status != "created"]
            if failed:
                raise RuntimeError(f"demo interaction rejected: {failed[0]}")
            done += len(batch)
            batch.clear()
            if progress is not None:
                progress(done, total, "interactions")

    for n, e in enumerate(events, start=1):
        p = people[e.person]
        row = dict(e.data)
        row["occurred_at"] = e.at
        source = row.get("source", "demo")
        row["external_id"] = f"{_EXTERNAL_PREFIX.get(source, 'DM')}{n:09d}"
        if e.merge:
            flush()
            assert p.openid is not None and p.phone is not None
            row["identities"] = [{"kind": "wechat_openid", "namespace": WECHAT_APPID, "value": p.openid},
                                 {"kind": "phone", "value": p.phone}]
            batch.append(row)
            flush()
            continue
        if e.member == "referrer":
            assert p.referrer is not None
            row["member_id"] = people[p.referrer].member_id
        elif e.member == "pos":
            row["member_id"] = p.pos_member_id
        else:
            row["member_id"] = p.member_id
        batch.append(row)
        if len(batch) >= BATCH_SIZE:
            flush()
    flush()


def build_demo(slug: str = "demo", name: str = "茶语 · 鲜果茶", members: int = 2000, interactions: int = 50000, *,
               seed: int = 7, progress: ProgressFn | None = None, now: dt.datetime | None = None) -> Workspace:
    """Create the demo workspace ``slug`` with ``members`` members and about ``interactions``
    interactions over the six months before ``now`` (default: the current time).

    All of it is one transaction: either the whole demo exists or none of it does. ``progress``, if
    given, is called as ``progress(done, total, label)`` with label ``members`` or ``interactions``.
    Relationship strength is evaluated at the current time, as it is for real data."""
    moment = now or clock_now()
    tz = ZoneInfo(str(timezone.get_default_timezone()))
    end_day = moment.astimezone(tz).date() - dt.timedelta(days=1)
    builder = _Builder(members_total=members, interactions_total=interactions, seed=seed, end_day=end_day, tz=tz)
    builder.plan_people()
    with transaction.atomic():
        workspace = _setup_workspace(slug, name)
        builder.create_members(workspace, progress)
        events = builder.calibrated_events()
        _ingest(workspace, builder, events, progress)
        _seed_features(workspace, seed, moment, progress)
    return workspace


def _feature_seeders() -> list[tuple[str, Callable[[Workspace, random.Random, dt.datetime], None]]]:
    """Each domain's demo data, in dependency order: the Official Account and its channel codes, the
    bot, stored value, stores and offers, tiers and tasks (an upgrade grants coupons), offer statistics, the
    outbox, the inbox."""
    from shequn.channels import demo as channels
    from shequn.conversations import demo as conversations
    from shequn.engagement import demo as engagement
    from shequn.inbox import demo as inbox
    from shequn.offers import demo as offers
    from shequn.outbound import demo as outbound
    from shequn.recommend import demo as recommend
    from shequn.wallet import demo as wallet

    return [("channels", channels.seed_demo), ("conversations", conversations.seed_demo),
            ("wallet", wallet.seed_demo), ("offers", offers.seed_demo), ("engagement", engagement.seed_demo),
            ("recommend", recommend.seed_demo), ("outbound", outbound.seed_demo), ("inbox", inbox.seed_demo)]


def _seed_points(workspace: Workspace, moment: dt.datetime) -> None:
    """The points programme: from now on every purchase earns 1 积分 per ¥ (1 成长值 per ¥ comes with the
    tiers, see engagement's demo), and the purchases already in the demo are credited once per member
    through the ledger, dated at the member's last purchase."""
    from django.db.models import Max, Sum

    from shequn.interactions.models import Interaction
    from shequn.loyalty import services as loyalty

    for code in ("points", "growth"):
        loyalty.save_earn_rule(workspace, {"name": "消费积分" if code == "points" else "消费成长值",
                                           "point_type": code, "interaction_type": "purchase", "direction": "in",
                                           "points_per_yuan": "1"}, actor=ACTOR)
    purchases = (Interaction.objects.filter(workspace=workspace, type="purchase", direction="in", amount__gt=0)
                 .values_list("member_id").annotate(total=Sum("amount"), last=Max("occurred_at")).order_by("member_id"))
    for member_id, total, last in purchases:
        if int(total) > 0:
            loyalty.earn(workspace, member_id, "points", int(total), reason="历史消费积分", actor=ACTOR,
                         idempotency_key=f"demo:points:{member_id}", now=min(last, moment))


def _seed_features(workspace: Workspace, seed: int, moment: dt.datetime, progress: ProgressFn | None) -> None:
    _seed_points(workspace, moment)
    seeders = _feature_seeders()
    for done, (name, seeder) in enumerate(seeders, start=1):
        seeder(workspace, random.Random(f"{seed}:{name}"), moment)
        if progress is not None:
            progress(done, len(seeders), "features")


def portal_member_phone(workspace: Workspace) -> str | None:
    """A demo member to sign in to the member portal as: the most frequent buyer with a phone number."""
    from shequn.members.models import Identity, IdentityKind

    row = (Identity.objects.filter(workspace=workspace, kind=IdentityKind.PHONE, member__status="active")
           .order_by("-member__purchase_count", "member_id").values_list("value", flat=True).first())
    return row
