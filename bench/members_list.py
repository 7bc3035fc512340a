"""Member list at scale: the console/API member list (filters + keyset page) at 1,000,000 members.

For each filter the console offers, the time to produce one page through
``members.queries.filter_members`` + ``page`` in a workspace of N members (1,000,000) is compared
with the same page in a workspace of 10,000 members in the same database (the baseline).
ratio = small time / large time: a page that uses the indexes costs about the same at any size
(ratio ≈ 1); a query that scans grows with N (ratio → 0). Goal: ≥ 0.5 for every filter, i.e. a
page at 1 M members costs at most twice a page at 10 K. A hand-written SQL query for each filter
checks that the ORM returns the same rows, and its time is printed alongside.

    python -m bench.members_list            # 1,000,000 members on SQLite
    python -m bench.members_list --quick    # 20,000 members
    python -m bench.members_list --postgres postgres://postgres@127.0.0.1:5432/shequn_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import zlib

from bench._harness import emit, p50, progress, run_isolated, setup_django, timed

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂英华慧欣怡晨宇浩然子涵一诺"
TAGS = ["奶茶控", "学生", "白领", "宝妈", "会员", "外卖党", "芝士爱好者", "低糖", "夜猫子", "新客"]
SOURCES = ["poster_qr", "clerk", "referral", "meituan", "article", "giveaway"]


def build(n: int, slug: str) -> dict:
    from django.db import connection, transaction

    from shequn.core import services as core
    from shequn.lifecycle.models import Stage
    from shequn.members import services as members
    from shequn.members.models import Identity, Member, MemberKeyword, MemberTag

    rnd = random.Random(zlib.crc32(slug.encode()))
    ws = core.create_workspace(slug, slug)
    stages = list(Stage.objects.filter(workspace=ws).values_list("pk", flat=True))
    tags = members.ensure_tags(ws, TAGS)
    kws = [members.ensure_keyword(ws, p) for p in ("口味/水果茶", "口味/奶茶/芝士", "口味/奶茶/原味", "门店/西湖店")]
    members.define_attribute(ws, "sweetness", "甜度", "choice", ["无糖", "半糖", "全糖"], actor="bench")
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    chunk = 10_000
    made = 0
    while made < n:
        size = min(chunk, n - made)
        with transaction.atomic():
            rows = []
            for _ in range(size):
                rows.append(Member(
                    workspace=ws, display_name=rnd.choice(SURNAMES) + "".join(rnd.choices(GIVEN, k=rnd.randint(1, 2))),
                    city=rnd.choice(["杭州", "上海", "苏州"]), stage_id=rnd.choice(stages), strength=rnd.randint(0, 5),
                    source_channel=rnd.choice(SOURCES), attributes={"sweetness": rnd.choice(["无糖", "半糖", "全糖"])},
                    last_interaction_at=now - dt.timedelta(days=rnd.randint(0, 180))))
            created = Member.objects.bulk_create(rows)
            ids = [m.pk for m in created]
            Identity.objects.bulk_create([Identity(workspace=ws, member_id=mid, kind="phone",
                                                   value=f"+86138{mid:08d}") for mid in ids])
            MemberTag.objects.bulk_create([MemberTag(workspace=ws, member_id=mid, tag=t) for mid in ids
                                           for t in rnd.sample(tags, rnd.randint(0, 3))])
            MemberKeyword.objects.bulk_create([MemberKeyword(workspace=ws, member_id=mid, keyword=rnd.choice(kws))
                                               for mid in ids if rnd.random() < 0.5])
        made += size
        progress(f"members ({slug})", made, n)
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
    else:
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
    rare_tag = tags[0]
    return {"ws": ws, "n": n, "tag": rare_tag, "stage": Stage.objects.filter(workspace=ws).order_by("position")[2],
            "kw": kws[1], "phone_member": made // 2}


def cases(ctx: dict):
    from django.db import connection

    from shequn.members import queries

    ws, tag, stage, kw = ctx["ws"], ctx["tag"], ctx["stage"], ctx["kw"]
    phone = f"+86138{ctx['phone_member']:08d}"
    m = "members_member"
    cols = f"{m}.id, {m}.display_name, {m}.stage_id, {m}.strength"
    base = f"SELECT {cols} FROM {m} WHERE {m}.workspace_id = %s AND {m}.status = 'active'"
    order = f" ORDER BY {m}.id DESC LIMIT 51"
    yield ("all", queries.MemberFilter(), base + order, [ws.pk])
    yield ("tag", queries.MemberFilter(tag=tag.name),
           base + f" AND EXISTS (SELECT 1 FROM members_membertag t WHERE t.tag_id = %s AND t.member_id = {m}.id)" + order,
           [ws.pk, tag.pk])
    yield ("keyword_subtree", queries.MemberFilter(keyword="口味/奶茶"),
           base + f" AND EXISTS (SELECT 1 FROM members_memberkeyword k WHERE k.keyword_id IN (%s, %s, %s) AND k.member_id = {m}.id)" + order,
           [ws.pk, *list(kw.parent.children.values_list("pk", flat=True))[:2], kw.parent.pk])
    yield ("stage", queries.MemberFilter(stage=stage.key), base + f" AND {m}.stage_id = %s" + order, [ws.pk, stage.pk])
    yield ("strength", queries.MemberFilter(strength=5), base + f" AND {m}.strength = 5" + order, [ws.pk])
    yield ("source", queries.MemberFilter(source="giveaway"), base + f" AND {m}.source_channel = 'giveaway'" + order, [ws.pk])
    yield ("search_phone", queries.MemberFilter(q=phone),
           base + f" AND {m}.id IN (SELECT i.member_id FROM members_identity i WHERE i.workspace_id = %s AND i.value = %s)" + order,
           [ws.pk, ws.pk, phone])
    yield ("tag+stage+strength", queries.MemberFilter(tag=tag.name, stage=stage.key, strength=3),
           base + f" AND {m}.stage_id = %s AND {m}.strength = 3 AND EXISTS (SELECT 1 FROM members_membertag t WHERE t.tag_id = %s AND t.member_id = {m}.id)" + order,
           [ws.pk, stage.pk, tag.pk])
    _ = connection


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = run_isolated("bench.members_list", argv)
    if code != -1:
        return code
    parser = argparse.ArgumentParser(prog="shequn bench members_list")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--small", type=int, default=None)
    parser.add_argument("--postgres", default=None)
    args = parser.parse_args(argv)
    n = args.members or (20_000 if args.quick else 1_000_000)
    setup_django()
    from django.db import connection

    from shequn.members import queries

    small = build(args.small or (2_000 if args.quick else 10_000), "small")
    large = build(n, "large")
    repeat = 5 if args.quick else 15
    vendor = connection.vendor
    failures = 0

    def measure(ctx: dict) -> dict[str, tuple[float, float]]:
        out = {}
        for name, flt, sql, params in cases(ctx):
            def ours(flt=flt):
                rows, _cursor = queries.page(queries.filter_members(ctx["ws"], flt), limit=50)
                return rows

            def raw(sql=sql, params=params):
                with connection.cursor() as cur:
                    cur.execute(sql, params)
                    return cur.fetchall()

            assert [r.pk for r in ours()] == [r[0] for r in raw()][:50], f"{name}: ORM and SQL disagree"
            out[name] = (p50(timed(ours, repeat)), p50(timed(raw, repeat)))
        return out

    at_small, at_large = measure(small), measure(large)
    for name, (t_large, t_sql) in at_large.items():
        t_small = at_small[name][0]
        ratio = t_small / t_large if t_large else 1.0
        ok = ratio >= 0.5
        failures += not ok
        emit(f"members.list.{name}.{vendor}", t_large * 1000, "ms/page",
             f"same page at {small['n']:,} members", t_small * 1000, ratio, ">= 0.5", ok,
             members=n, hand_sql_ms=round(t_sql * 1000, 4))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
