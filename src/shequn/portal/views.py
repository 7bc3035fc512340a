"""The member H5 portal: thin pages over the domains' services and queries."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlparse

import segno
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from shequn.core.errors import ShequnError
from shequn.loyalty import queries as loyalty

from . import auth
from .access import portal_view, session_key, sign_in, sign_out, workspace_or_404

PAGE = 30
BOARDS = [("points", "week", _lazy("Points this week")), ("points", "month", _lazy("Points this month")),
          ("invites", "month", _lazy("Invites this month")), ("streak", "all", _lazy("Check-in streaks"))]


def masked_name(name: str) -> str:
    """Other members' names on a leaderboard: the first character and stars (王** / J***)."""
    name = (name or "").strip()
    if not name or name.startswith("#"):
        return "***"
    return name[0] + "*" * min(max(len(name) - 1, 2), 4)


def _phone_key(ws: Any) -> str:
    return f"portal-phone:{ws.pk}"


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return fallback


def svg_response(payload: str, *, scale: int = 6) -> HttpResponse:
    out = io.BytesIO()
    segno.make(payload, error="m").save(out, kind="svg", scale=scale, border=2, dark="#111", xmldecl=False)
    response = HttpResponse(out.getvalue(), content_type="image/svg+xml")
    response["Cache-Control"] = "private, max-age=300"
    return response


@never_cache
def login(request: HttpRequest, slug: str) -> HttpResponse:
    ws = workspace_or_404(slug)
    if request.session.get(session_key(ws)):
        return redirect("portal:home", ws.slug)
    error = ""
    phone = request.session.get(_phone_key(ws), "")
    if request.method == "POST":
        phone = request.POST.get("phone", "").strip()
        try:
            auth.request_code(ws, phone)
        except ShequnError as exc:
            error = str(exc)
        else:
            request.session[_phone_key(ws)] = phone
            target = reverse("portal:login_code", args=[ws.slug])
            nxt = _safe_next(request, "")
            return redirect(f"{target}?next={nxt}" if nxt else target)
    return render(request, "portal/login.html", {"workspace": ws, "phone": phone, "error": error,
                                                 "next": _safe_next(request, "")},
                  status=400 if error else 200)


@never_cache
def login_code(request: HttpRequest, slug: str) -> HttpResponse:
    ws = workspace_or_404(slug)
    phone = request.session.get(_phone_key(ws))
    if not phone:
        return redirect("portal:login", ws.slug)
    error = ""
    if request.method == "POST":
        try:
            member_id = auth.verify_code(ws, phone, request.POST.get("code", ""))
        except ShequnError as exc:
            error = str(exc)
        else:
            sign_in(request, ws, member_id)
            request.session.pop(_phone_key(ws), None)
            return redirect(_safe_next(request, reverse("portal:home", args=[ws.slug])))
    masked = phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else phone
    return render(request, "portal/login_code.html", {"workspace": ws, "masked_phone": masked, "error": error,
                                                      "next": _safe_next(request, "")},
                  status=400 if error else 200)


@require_POST
def logout(request: HttpRequest, slug: str) -> HttpResponse:
    ws = workspace_or_404(slug)
    sign_out(request, ws)
    return redirect("portal:login", ws.slug)


def _ctx(request: HttpRequest, tab: str, **extra: Any) -> dict[str, Any]:
    return {"workspace": request.workspace, "member": request.member, "tab": tab,  # type: ignore[attr-defined]
            **extra}


@portal_view
def home(request: HttpRequest) -> HttpResponse:
    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    from shequn.engagement import queries as engagement
    from shequn.wallet import queries as wallet

    balances = loyalty.balances(ws, member.pk)
    types = {t.code: t for t in loyalty.point_types(ws)}
    points = [{"type": types.get(b.point_type), "balance": b} for b in balances]
    return render(request, "portal/home.html", _ctx(
        request, "home", points=points, summary=engagement.member_summary(ws, member.pk),
        stored_value_yuan=f"{wallet.balance(ws, member.pk) / 100:.2f}"))


@portal_view
def card_qr(request: HttpRequest) -> HttpResponse:
    from shequn.offers import cards

    return svg_response(cards.card_code(request.workspace, request.member.pk))  # type: ignore[attr-defined]


@portal_view
def points(request: HttpRequest) -> HttpResponse:
    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    before = request.GET.get("before", "")
    rows = loyalty.history(ws, member.pk, before_id=int(before) if before.isdigit() else None, limit=PAGE + 1)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return render(request, "portal/points.html", _ctx(
        request, "points", entries=rows, next_before=rows[-1].pk if more and rows else None))


@portal_view
def coupons(request: HttpRequest) -> HttpResponse:
    from shequn.offers import queries as offers

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    return render(request, "portal/coupons.html", _ctx(
        request, "coupons", coupons=offers.redeemable_coupons(ws, member.pk)))


@portal_view
def coupon_qr(request: HttpRequest, coupon_id: int) -> HttpResponse:
    from shequn.offers import queries as offers

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    for coupon in offers.redeemable_coupons(ws, member.pk):
        if coupon.pk == coupon_id:
            return svg_response(coupon.code)
    return HttpResponse(status=404)


@portal_view
def offers_page(request: HttpRequest) -> HttpResponse:
    from shequn.offers import queries as offers
    from shequn.recommend import services as recommend

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    clipped = {o.pk for o in offers.clipped_offers(ws, member.pk)}
    ranked = recommend.rank_offers(ws, member.pk, limit=10)
    return render(request, "portal/offers.html", _ctx(request, "offers", ranked=ranked, clipped=clipped))


@portal_view
@require_POST
def offer_clip(request: HttpRequest, offer_id: int) -> HttpResponse:
    from shequn.offers import services as offers

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    try:
        offers.clip_offer(ws, member.pk, offer_id, actor=f"member:{member.pk}")
    except ShequnError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Clipped: give your card or phone number at the counter to use it."))
    return redirect("portal:offers", ws.slug)


@portal_view
def tasks(request: HttpRequest) -> HttpResponse:
    from shequn.engagement import queries as engagement

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    return render(request, "portal/tasks.html", _ctx(request, "tasks",
                                                     summary=engagement.member_summary(ws, member.pk)))


@portal_view
@require_POST
def check_in(request: HttpRequest) -> HttpResponse:
    from shequn.engagement import services as engagement

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    try:
        result = engagement.check_in(ws, member.pk)
    except ShequnError as exc:
        messages.error(request, str(exc))
    else:
        text = _("Checked in: %(n)s days in a row.") % {"n": result.current}
        if result.points:
            text += " " + _("+%(n)s points.") % {"n": result.points}
        messages.success(request, text)
    target = request.POST.get("next", "")
    path = urlparse(target).path if target else ""
    return redirect(path if path.startswith(f"/m/{ws.slug}/") else reverse("portal:home", args=[ws.slug]))


@portal_view
def leaderboards(request: HttpRequest) -> HttpResponse:
    from shequn.engagement import queries as engagement

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    boards = []
    for board, period, title in BOARDS:
        top = [{"rank": r.rank, "member_id": r.member_id, "score": r.score,
                "name": r.name if r.member_id == member.pk else masked_name(r.name)}
               for r in engagement.leaderboard(ws, board, period, limit=10)]
        mine = engagement.member_rank(ws, board, period, member.pk)
        boards.append({"key": f"{board}-{period}", "title": title, "top": top, "mine": mine,
                       "mine_listed": any(r["member_id"] == member.pk for r in top)})
    return render(request, "portal/leaderboards.html", _ctx(request, "leaderboards", boards=boards))


@portal_view
def claim(request: HttpRequest, code: str) -> HttpResponse:
    """A campaign QR: the member sees the offer and takes one coupon (a second scan shows the same one)."""
    from shequn.offers import queries as offers_q
    from shequn.offers import services as offers

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    row = offers_q.claim_code(ws, code)
    if request.method == "POST":
        try:
            _coupon, created = offers.claim(ws, code, member.pk, actor=f"member:{member.pk}")
        except ShequnError as exc:
            messages.error(request, str(exc))
            return redirect("portal:claim", ws.slug, code)
        messages.success(request, _("The coupon is yours: find it under Coupons.") if created
                         else _("You already have this coupon."))
        return redirect("portal:coupons", ws.slug)
    return render(request, "portal/claim.html", _ctx(request, "coupons", claim=row))


@portal_view
def share(request: HttpRequest, code: str) -> HttpResponse:
    """'Share after consumption': the table code. The member shares (the phone's share sheet where there
    is one) and gets the reward once per day."""
    from shequn.offers import queries as offers_q
    from shequn.offers import services as offers

    ws, member = request.workspace, request.member  # type: ignore[attr-defined]
    activity = offers_q.activity_code(ws, code)
    if request.method == "POST":
        try:
            row, created = offers.claim_activity(ws, code, member.pk, actor=f"member:{member.pk}")
        except ShequnError as exc:
            messages.error(request, str(exc))
            return redirect("portal:share", ws.slug, code)
        if not created:
            messages.info(request, _("You already got today's reward for this table."))
        elif row.coupon_id:
            messages.success(request, _("Thank you for sharing! Your reward coupon is under Coupons."))
        else:
            messages.success(request, _("Thank you for sharing! Your reward points are on their way."))
        return redirect("portal:coupons" if row.coupon_id else "portal:home", ws.slug)
    return render(request, "portal/share.html", _ctx(request, "home", activity=activity,
                                                     share_url=request.build_absolute_uri(
                                                         reverse("portal:home", args=[ws.slug]))))
