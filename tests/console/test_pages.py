"""Dashboard, funnel, stage rules, touchpoints, API keys, imports and the language switch."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from shequn.core.models import ApiKey
from shequn.interactions.models import Touchpoint
from shequn.lifecycle.models import StageRule
from shequn.members.models import ImportJob, Member

from .conftest import login

RULES = "/w/tea/lifecycle/rules/"


# ---------------------------------------------------------------------------------------------
# dashboard and funnel


def test_dashboard_numbers(agent, data, ws):
    response = agent.get("/w/tea/")
    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(r'id="members-total">3<', page)
    assert re.search(r'id="interactions-recent">7<', page)  # the follow 40 days ago is outside the window
    assert 'data-figure="funnel-figure"' in page and 'id="funnel-figure"' in page
    assert "/static/vendor/plotly.min.js" in page
    assert "最近的阶段变化" in page and "赵云" in page
    assert f'href="/w/tea/members/{data.zhao.pk}/"' in page  # an agent may open member pages


def test_clerk_sees_only_the_counter(clerk, data):
    assert clerk.get("/w/tea/").status_code == 403
    response = clerk.get("/", follow=True)
    assert response.redirect_chain[-1][0] == "/w/tea/counter/"
    nav = response.content.decode().split('class="sidenav"')[1].split("</nav>")[0]
    assert "/w/tea/counter/" in nav and "/w/tea/members/" not in nav and "/funnel/" not in nav


def test_funnel_page(agent, data):
    response = agent.get("/w/tea/funnel/")
    assert response.status_code == 200
    figure = json.loads(re.search(r'<script id="funnel-figure" type="application/json">(.*?)</script>',
                                  response.content.decode(), re.S).group(1))
    trace = figure["data"][0]
    assert trace["type"] == "funnel"
    assert trace["y"][:3] == ["认知", "考虑", "购买"]
    # wang purchased (reached 购买), li visited (考虑), zhao scanned (认知): reached 3 / 2 / 1
    assert trace["x"][:3] == [3, 2, 1]
    table = response.content.decode().split('id="funnel-table"')[1]
    assert "66.7%" in table and "50.0%" in table


def test_plotly_is_served_by_the_app(client, db):
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"plotly" in body[:2000].lower()


# ---------------------------------------------------------------------------------------------
# stage rules


def rule_data(**overrides):
    data = {"name": "大额购买 → 使用", "interaction_type": "purchase", "direction": "in", "channel": "",
            "touchpoint": "store-counter", "min_amount": "500", "min_count": "1", "target_stage": "using",
            "allow_backward": "", "priority": "35", "enabled": "on"}
    data.update(overrides)
    return data


def test_rules_are_listed_by_stage_in_order(operator, ws):
    page = operator.get(RULES).content.decode()
    positions = [page.index(name) for name in ("1. 认知", "2. 考虑", "3. 购买", "4. 使用", "5. 意见", "6. 口碑")]
    assert positions == sorted(positions)
    assert "首次购买 → 购买" in page


def test_rule_create_edit_delete(operator, data, ws):
    response = operator.post(RULES + "new/", rule_data())
    assert response.status_code == 302
    rule = StageRule.objects.get(workspace=ws, name="大额购买 → 使用")
    assert (rule.target_stage.key, rule.touchpoint.code, str(rule.min_amount), rule.priority, rule.enabled) == \
        ("using", "store-counter", "500.00", 35, True)

    form = operator.get(f"{RULES}{rule.pk}/").content.decode()
    assert 'value="大额购买 → 使用"' in form and 'value="500.00"' in form

    response = operator.post(f"{RULES}{rule.pk}/", rule_data(name="大额购买", enabled="", min_amount="", touchpoint=""))
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.enabled, rule.min_amount, rule.touchpoint_id) == ("大额购买", False, None, None)

    response = operator.post(f"{RULES}{rule.pk}/delete/", follow=True)
    assert "规则“大额购买”已删除" in response.content.decode()
    assert not StageRule.objects.filter(pk=rule.pk).exists()


@pytest.mark.parametrize("bad", [
    {"min_count": "0"}, {"target_stage": "moon"}, {"interaction_type": "teleport"}, {"name": ""},
    {"touchpoint": "nowhere"}, {"min_amount": "abc"}, {"priority": "x"},
])
def test_bad_rule_shows_error_and_changes_nothing(operator, ws, bad):
    before = list(StageRule.objects.filter(workspace=ws).values_list("pk", "name", "priority"))
    response = operator.post(RULES + "new/", rule_data(**bad))
    assert response.status_code == 200
    assert "errorlist" in response.content.decode() or "error-box" in response.content.decode()
    assert list(StageRule.objects.filter(workspace=ws).values_list("pk", "name", "priority")) == before
    rule = StageRule.objects.filter(workspace=ws).first()
    response = operator.post(f"{RULES}{rule.pk}/", rule_data(**bad))
    assert response.status_code == 200
    assert list(StageRule.objects.filter(workspace=ws).values_list("pk", "name", "priority")) == before


def test_agent_cannot_touch_rules(agent, ws):
    rule = StageRule.objects.filter(workspace=ws).first()
    assert agent.post(RULES + "new/", rule_data()).status_code == 403
    assert agent.post(f"{RULES}{rule.pk}/delete/").status_code == 403
    assert StageRule.objects.filter(pk=rule.pk).exists()


# ---------------------------------------------------------------------------------------------
# touchpoints


def tp_data(**overrides):
    data = {"code": "store-counter", "name": "门店收银台", "channel": "store", "function": "sales", "segment": "白领",
            "lifecycle_stage": "purchased", "importance": "5", "complexity": "2", "consistency": "4",
            "description": "收银时推荐会员"}
    data.update(overrides)
    return data


def test_touchpoint_page_has_map_and_fix_first_list(operator, data):
    response = operator.get("/w/tea/touchpoints/")
    page = response.content.decode()
    figure = json.loads(re.search(r'<script id="map-figure" type="application/json">(.*?)</script>', page, re.S).group(1))
    trace = figure["data"][0]
    assert trace["type"] == "scatter" and set(trace["text"]) == {"公众号菜单", "门店收银台", "客服热线"}
    assert len(figure["layout"]["shapes"]) == 2  # the quadrant lines
    # 门店收银台: 4 conversations, 1 bad review + 1 complaint → flagged
    fix_first = page.split('id="fix-first"')[1].split("</section>")[0]
    assert "门店收银台" in fix_first and "公众号菜单" not in fix_first


def test_touchpoint_edit_and_create(operator, data, ws):
    response = operator.get("/w/tea/touchpoints/?edit=store-counter")
    assert 'value="门店收银台"' in response.content.decode() and "readonly" in response.content.decode()
    response = operator.post("/w/tea/touchpoints/", tp_data())
    assert response.status_code == 302
    tp = Touchpoint.objects.get(workspace=ws, code="store-counter")
    assert (tp.importance, tp.complexity, tp.consistency, tp.segment, tp.lifecycle_stage) == (5, 2, 4, "白领", "purchased")
    response = operator.post("/w/tea/touchpoints/", tp_data(code="mini-program", name="小程序商城", channel="wechat"))
    assert response.status_code == 302
    assert Touchpoint.objects.filter(workspace=ws, code="mini-program", name="小程序商城").exists()


@pytest.mark.parametrize("bad", [{"importance": "9"}, {"complexity": "0"}, {"code": "Not A Slug"}, {"name": ""},
                                 {"lifecycle_stage": "moon"}, {"consistency": "x"}])
def test_bad_touchpoint_changes_nothing(operator, data, ws, bad):
    before = list(Touchpoint.objects.filter(workspace=ws).order_by("pk").values())
    response = operator.post("/w/tea/touchpoints/", tp_data(**bad))
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert list(Touchpoint.objects.filter(workspace=ws).order_by("pk").values()) == before


def test_touchpoints_are_per_workspace(owner, outsider, data, ws, other_ws):
    outsider.post("/w/phone/touchpoints/", tp_data(name="别家的收银台"))
    assert Touchpoint.objects.get(workspace=ws, code="store-counter").name == "门店收银台"
    assert Touchpoint.objects.get(workspace=other_ws, code="store-counter").name == "别家的收银台"
    assert "别家的收银台" not in owner.get("/w/tea/touchpoints/").content.decode()


# ---------------------------------------------------------------------------------------------
# API keys


def test_api_key_create_shows_secret_once_and_revoke(owner, ws, staff):
    response = owner.post("/w/tea/settings/api-keys/", {"name": "收银系统同步", "role": "operator"})
    assert response.status_code == 302
    key = ApiKey.objects.get(workspace=ws, name="收银系统同步")
    page = owner.get("/w/tea/settings/api-keys/").content.decode()
    secret = re.search(r'<code class="secret">([^<]+)</code>', page).group(1)
    assert secret.startswith(f"sq_{key.prefix}_")
    from shequn.core import services as core

    assert core.authenticate_api_key(secret).pk == key.pk
    again = owner.get("/w/tea/settings/api-keys/").content.decode()
    assert secret not in again and "收银系统同步" in again and "最近使用" in again
    assert key.created_by == staff["owner"]

    response = owner.post(f"/w/tea/settings/api-keys/{key.pk}/revoke/", follow=True)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "已吊销" in response.content.decode()


@pytest.mark.parametrize("bad", [{"name": ""}, {"name": "x" * 101}, {"role": "emperor"}])
def test_bad_api_key_changes_nothing(owner, ws, bad):
    response = owner.post("/w/tea/settings/api-keys/", {"name": "ok", "role": "operator", **bad})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert not ApiKey.objects.filter(workspace=ws).exists()


def test_only_owner_manages_keys(operator, ws):
    from shequn.core import services as core

    key, _secret = core.create_api_key(ws, "k")
    assert operator.post("/w/tea/settings/api-keys/", {"name": "mine", "role": "owner"}).status_code == 403
    assert operator.post(f"/w/tea/settings/api-keys/{key.pk}/revoke/").status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.objects.count() == 1


# ---------------------------------------------------------------------------------------------
# imports and exports

MEMBERS_CSV = "phone,name,city,tags\n13811112222,周杰,上海,新客|VIP\n12,坏号码,北京,\n13811113333,吴莫愁,,\n"


@pytest.fixture
def immediate_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


def upload(client, text: str, *, kind: str = "members", dry_run: bool = False, name: str = "members.csv"):
    payload = {"kind": kind, "file": SimpleUploadedFile(name, text.encode("utf-8"), content_type="text/csv")}
    if dry_run:
        payload["dry_run"] = "on"
    return client.post("/w/tea/imports/", payload)


def test_import_runs_and_reports_errors(operator, ws, immediate_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(operator, MEMBERS_CSV)
    assert response.status_code == 302
    job = ImportJob.objects.get(workspace=ws)
    assert response.url == f"/w/tea/imports/{job.pk}/"
    job.refresh_from_db()
    assert (job.status, job.total_rows, job.created_count, job.error_count) == ("done", 3, 2, 1)
    assert Member.objects.filter(workspace=ws, display_name="周杰").exists()

    status = operator.get(f"/w/tea/imports/{job.pk}/status/").json()
    assert status["status"] == "done" and status["percent"] == 100 and status["finished"] is True
    page = operator.get(f"/w/tea/imports/{job.pk}/").content.decode()
    assert 'data-finished="1"' in page and "已完成" in page
    report = page.split('id="error-report"')[1]
    assert re.search(r'<td class="num">2</td><td><code>phone</code></td>', report)
    listing = operator.get("/w/tea/imports/").content.decode()
    assert "members.csv" in listing


def test_dry_run_changes_nothing(operator, ws, immediate_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        upload(operator, MEMBERS_CSV, dry_run=True)
    job = ImportJob.objects.get(workspace=ws)
    assert job.dry_run and job.status == "done" and job.created_count == 2
    assert not Member.objects.filter(workspace=ws, display_name="周杰").exists()
    assert "将新建" in operator.get(f"/w/tea/imports/{job.pk}/").content.decode()


@pytest.mark.parametrize(("text", "message"), [
    ("", "所提交的是空文件"),
    ("  \n", "文件是空的"),
    ("colour,shape\nred,round\n", "未知的列"),
])
def test_unusable_file_is_refused(operator, ws, text, message):
    response = upload(operator, text)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ImportJob.objects.exists()


def test_import_job_of_another_workspace_is_404(operator, outsider, ws, other_ws):
    from shequn.members import imports

    job = imports.create_import_job(other_ws, "members", "x.csv", b"phone\n13811112222\n", dry_run=True,
                                    enqueue=False)
    assert operator.get(f"/w/tea/imports/{job.pk}/").status_code == 404
    assert operator.get(f"/w/tea/imports/{job.pk}/status/").status_code == 404
    assert outsider.get(f"/w/phone/imports/{job.pk}/status/").json()["status"] == "queued"


def test_exports(operator, data):
    response = operator.get("/w/tea/imports/export/members.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeffphone,")
    assert "王小明" in text and "李娜" in text and "外部会员" not in text
    response = operator.get("/w/tea/imports/export/interactions.csv")
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.count("\n") == 9  # header + 8 interactions
    assert operator.get("/w/tea/imports/export/secrets.csv").status_code == 404


# ---------------------------------------------------------------------------------------------
# language


def test_chinese_by_default_and_english_on_request(staff, ws):
    client = login(staff["owner"])
    page = client.get("/w/tea/").content.decode()
    assert '<html lang="zh-hans">' in page and "概览" in page
    response = client.post("/i18n/setlang/", {"language": "en", "next": "/w/tea/"})
    assert response.status_code == 302 and response.url == "/w/tea/"
    page = client.get("/w/tea/").content.decode()
    assert '<html lang="en">' in page and "Dashboard" in page and "概览" not in page
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/w/tea/"})
    assert "概览" in client.get("/w/tea/").content.decode()


def test_strength_labels_are_translated(staff, data):
    client = login(staff["agent"])
    zh = client.get("/w/tea/members/").content.decode()
    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    en = client.get("/w/tea/members/").content.decode()
    level = data.wang.strength
    zh_label = ["无关系", "潜在", "弱", "强", "长", "亢"][level]
    en_label = ["None", "Potential", "Weak", "Strong", "Long", "Fervent"][level]
    assert f'class="strength s{level}">{zh_label}<' in zh
    assert f'class="strength s{level}">{en_label}<' in en
