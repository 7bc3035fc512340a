"""Service inbox at scale: list pages and the version poll with 50 agents and many conversations.

A workspace with 50 agents in 5 teams holds N conversations (default 100,000: a few months at
thousands a day; ``--quick`` 5,000) of which a few percent are live. Measured, in the same run:

* ``inbox.list.<view>``: one page (up to 50 rows with member, agent and team) of each list the
  console shows, through ``inbox.queries``, in the large workspace — against the same page in a
  workspace of N/20 conversations in the same database (baseline). ratio = small / large; goal >= 0.5:
  a page that uses the indexes costs about the same at any size. A hand-written SQL query with the
  same joins checks the rows, and its time is printed alongside (``hand_sql_ms``).
* ``inbox.poll_304``: the full HTTP request an agent's page makes every 3 s (session, membership,
  version row, ``304 Not Modified``) — against the naive alternative of reloading the inbox page every
  time (baseline). ratio = reload / poll; goal >= 3.
* ``inbox.poll_capacity``: polls per second one process answers (50 agents round-robin) against what
  50 agents polling every 3 s need (16.7/s). ratio = capacity / need; goal >= 2 (one sync worker
  serves the polling of 100 agents; deployments run several).

    python -m bench.inbox            # 100,000 conversations on SQLite
    python -m bench.inbox --quick    # 5,000
    python -m bench.inbox --postgres postgres://postgres@127.0.0.1:5432/shequn_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time

from bench._harness import emit, p50, progress, run_isolated, setup_django, timed

AGENTS = 50
TEAMS = 5
POLL_EVERY = 3.0


def build(n: int, slug: str) -> dict:
    from django.db import connection, transaction

    from shequn.core import services as core
    from shequn.core.models import StaffMembership
    from shequn.inbox import services
    from shequn.inbox.models import Conversation, InboxState, Team, TeamMember
    from shequn.members.models import Member

    rnd = random.Random(11)
    ws = core.create_workspace(slug, slug)
    users = []
    for i in range(AGENTS):
        user = core.ensure_user(f"{slug}-agent-{i:02d}")
        StaffMembership.objects.create(workspace=ws, user=user, role="agent")
        users.append(user)
    teams = [Team.objects.create(workspace=ws, name=f"组{t}") for t in range(TEAMS)]
    TeamMember.objects.bulk_create([TeamMember(workspace=ws, team=teams[i % TEAMS], user=u) for i, u in enumerate(users)])
    InboxState.objects.create(workspace=ws, version=1)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    chunk = 10_000
    made = 0
    while made < n:
        size = min(chunk, n - made)
        with transaction.atomic():
            members = Member.objects.bulk_create([Member(workspace=ws, display_name=f"会员{made + k}")
                                                  for k in range(size)])
            rows = []
            for k, m in enumerate(members):
                index = made + k
                at = now - dt.timedelta(seconds=(n - index) * 60)
                live = index >= n - max(200, n // 50)  # the newest 2 % are open or pending
                status = rnd.choice(("open", "open", "pending")) if live else "resolved"
                agent = None if (live and rnd.random() < 0.25) else rnd.choice(users)
                rows.append(Conversation(
                    workspace=ws, member=m, channel=rnd.choice(("wechat", "wechat", "miniprogram", "email")),
                    status=status, needs_human=rnd.random() < 0.9, assignee=agent,
                    team=teams[users.index(agent) % TEAMS] if agent else rnd.choice([None, *teams]),
                    preview="外卖少了一杯", opened_at=at, last_message_at=at + dt.timedelta(minutes=rnd.randint(0, 30)),
                    last_inbound_at=at, resolved_at=None if live else at + dt.timedelta(hours=1)))
            Conversation.objects.bulk_create(rows)
        made += size
        progress(f"conversations ({slug})", made, n)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    _ = services
    return {"ws": ws, "users": users, "teams": teams}


def hand_sql(view: str) -> str:
    c = "inbox_conversation"
    base = (f"SELECT {c}.id, {c}.preview, m.display_name, u.username, t.name FROM {c} "
            f"JOIN members_member m ON m.id = {c}.member_id LEFT JOIN auth_user u ON u.id = {c}.assignee_id "
            f"LEFT JOIN inbox_team t ON t.id = {c}.team_id WHERE {c}.workspace_id = %s ")
    where = {
        "mine": f"AND {c}.assignee_id = %s AND {c}.status IN ('open', 'pending') ",
        "unassigned": f"AND {c}.assignee_id IS NULL AND {c}.needs_human AND {c}.status = 'open' ",
        "team": f"AND {c}.team_id IN (%s) AND {c}.status IN ('open', 'pending') ",
        "all": "",
    }[view]
    return base + where + f"ORDER BY {c}.last_message_at DESC, {c}.id DESC LIMIT 51"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = run_isolated("bench.inbox", argv)
    if code != -1:
        return code
    parser = argparse.ArgumentParser(prog="shequn bench inbox")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--conversations", type=int, default=None)
    parser.add_argument("--postgres", default=None)
    args = parser.parse_args(argv)
    n = args.conversations or (5_000 if args.quick else 100_000)
    setup_django()
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from shequn.inbox import queries

    settings.ALLOWED_HOSTS = ["*"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    small, large = build(max(500, n // 20), "inbox-small"), build(n, "inbox-large")
    vendor = connection.vendor
    repeat = 10 if args.quick else 30
    failures = 0

    def measure(ctx: dict, view: str) -> tuple[float, float, int]:
        ws, agent, team = ctx["ws"], ctx["users"][7], ctx["teams"][7 % TEAMS]
        params = {"mine": [ws.pk, agent.pk], "unassigned": [ws.pk], "team": [ws.pk, team.pk], "all": [ws.pk]}[view]

        def ours():
            qs = queries.conversations(ws, agent.pk, queries.ConversationFilter(view=view))
            rows, _cursor = queries.page(qs, limit=50)
            return [(r.pk, r.member.display_name, r.assignee.username if r.assignee else None,
                     r.team.name if r.team else None) for r in rows]

        def raw():
            with connection.cursor() as cur:
                cur.execute(hand_sql(view), params)
                return cur.fetchall()[:50]

        assert [r[0] for r in ours()] == [r[0] for r in raw()], f"{view}: ORM and SQL disagree"
        return p50(timed(ours, repeat)), p50(timed(raw, repeat)), len(ours())

    for view in ("mine", "unassigned", "team", "all"):
        t_small, _sql_small, _rows = measure(small, view)
        t_large, t_sql, rows = measure(large, view)
        ratio = t_small / t_large if t_large else 1.0
        ok = ratio >= 0.5
        failures += not ok
        emit(f"inbox.list.{view}.{vendor}", t_large * 1000, "ms/page",
             f"same page at {max(500, n // 20):,} conversations", t_small * 1000, ratio, ">= 0.5", ok,
             conversations=n, rows=rows, hand_sql_ms=round(t_sql * 1000, 4))

    ws, users = large["ws"], large["users"]
    clients = []
    for user in users:
        client = Client()
        client.force_login(user)
        clients.append(client)
    version_url = f"/w/{ws.slug}/inbox/version/"
    etag = clients[0].get(version_url)["ETag"]
    list_url = f"/w/{ws.slug}/inbox/?view=unassigned"

    def poll(i=[0]):  # noqa: B006 - round-robin over the agents
        client = clients[i[0] % AGENTS]
        i[0] += 1
        response = client.get(version_url, HTTP_IF_NONE_MATCH=etag)
        assert response.status_code == 304

    def refetch(i=[0]):  # noqa: B006
        client = clients[i[0] % AGENTS]
        i[0] += 1
        assert client.get(list_url).status_code == 200

    polls = timed(poll, repeat * 10)
    lists = timed(refetch, repeat * 2)
    t_poll, t_list = p50(polls), p50(lists)
    ratio = t_list / t_poll if t_poll else 1.0
    ok = ratio >= 3
    failures += not ok
    emit(f"inbox.poll_304.{vendor}", t_poll * 1000, "ms/request", "reloading the inbox page every poll",
         t_list * 1000, ratio, ">= 3", ok, conversations=n, agents=AGENTS)

    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < (2.0 if args.quick else 5.0):
        poll()
        count += 1
    capacity = count / (time.perf_counter() - start)
    need = AGENTS / POLL_EVERY
    ratio = capacity / need
    ok = ratio >= 2
    failures += not ok
    emit(f"inbox.poll_capacity.{vendor}", capacity, "polls/s", f"{AGENTS} agents polling every {POLL_EVERY:g} s",
         need, ratio, ">= 2", ok, conversations=n, processes=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
