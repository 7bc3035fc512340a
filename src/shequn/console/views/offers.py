"""Console pages: offers (list, create, edit, issue), the shop counter where clerks redeem coupons,
the redemption log with void, reports with charts, stores and clerks, claim and table codes."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from shequn.console import charts
from shequn.console.access import actor, console_view
from shequn.core.errors import NotFound, ShequnError
from shequn.core.models import Role, StaffMembership
from shequn.core.tenancy import get_scoped, scoped
from shequn.members.queries import MemberFilter, filter_members
from shequn.offers import codes, queries
from shequn.offers import services as offers
from shequn.offers.models import ActivityCode, ClaimCode, Offer, OfferKind, Redemption, Trigger

COUNTER_STORE_SESSION = "offers_counter_store"
LOG_PAGE = 50


def _ws(request: HttpRequest) -> Any:
    return request.workspace  # type: ignore[attr-defined]


def _role(request: HttpRequest) -> str:
    return str(request.role)  # type: ignore[attr-defined]


def _fail(request: HttpRequest, exc: ShequnError) -> None:
    messages.error(request, exc.message)


# ---------------------------------------------------------------------------------------------
# forms


class OfferForm(forms.Form):
    name = forms.CharField(max_length=100, label=gettext_lazy("Name"))
    description = forms.CharField(max_length=500, required=False, label=gettext_lazy("Description"),
                                  widget=forms.Textarea(attrs={"rows": 2}))
    kind = forms.ChoiceField(choices=OfferKind.choices, label=gettext_lazy("Kind"))
    percent_off = forms.IntegerField(required=False, min_value=1, max_value=99, label=gettext_lazy("Percent off"),
                                     help_text=gettext_lazy("For percentage off: 50 = half price."))
    amount_off = forms.DecimalField(required=False, min_value=0, decimal_places=2, label=gettext_lazy("Amount off (¥)"))
    gift_item = forms.CharField(max_length=100, required=False, label=gettext_lazy("Gift item"))
    items = forms.CharField(max_length=1000, required=False, label=gettext_lazy("Items"),
                            help_text=gettext_lazy("Item names the offer is about, separated by commas."))
    min_spend = forms.DecimalField(required=False, min_value=0, decimal_places=2, label=gettext_lazy("Minimum spend (¥)"))
    valid_from = forms.DateTimeField(required=False, label=gettext_lazy("Valid from"),
                                     widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    valid_until = forms.DateTimeField(required=False, label=gettext_lazy("Valid until"),
                                      widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    coupon_days = forms.IntegerField(required=False, min_value=1, label=gettext_lazy("Coupon valid for (days)"),
                                     help_text=gettext_lazy("Empty: until the offer ends."))
    stock = forms.IntegerField(required=False, min_value=0, label=gettext_lazy("Stock (coupons in all)"))
    per_member = forms.IntegerField(required=False, min_value=1, label=gettext_lazy("Coupons per member"))
    uses_per_coupon = forms.IntegerField(min_value=1, initial=1, label=gettext_lazy("Uses per coupon"))
    points_price = forms.IntegerField(required=False, min_value=1, label=gettext_lazy("Price in points"),
                                      help_text=gettext_lazy("Members may buy the coupon with points (积分兑换)."))
    trigger = forms.ChoiceField(choices=Trigger.choices, initial=Trigger.MANUAL, label=gettext_lazy("Issued automatically"))
    trigger_tier = forms.CharField(max_length=32, required=False, label=gettext_lazy("Tier code (for tier upgrade)"))
    stores = forms.CharField(max_length=1000, required=False, label=gettext_lazy("Only at stores"),
                             help_text=gettext_lazy("Store codes separated by commas; empty: every store."))
    clippable = forms.BooleanField(required=False, label=gettext_lazy("Members may clip it (personalised offer)"))
    active = forms.BooleanField(required=False, initial=True, label=gettext_lazy("Active"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.BooleanField):
                field.label_suffix = ""


class IssueForm(forms.Form):
    members = forms.CharField(required=False, label=gettext_lazy("Member ids or phone numbers"),
                              widget=forms.Textarea(attrs={"rows": 4}),
                              help_text=gettext_lazy("One per line or separated by commas."))
    tag = forms.CharField(max_length=64, required=False, label=gettext_lazy("Or every member with the tag"))
    stage = forms.CharField(max_length=32, required=False, label=gettext_lazy("and in the stage (key)"))
    source = forms.CharField(max_length=64, required=False, label=gettext_lazy("and from the source channel"))
    batch_key = forms.CharField(max_length=100, widget=forms.HiddenInput)


class StoreForm(forms.Form):
    code = forms.CharField(max_length=32, label=gettext_lazy("Code"))
    name = forms.CharField(max_length=100, label=gettext_lazy("Name"))


# ---------------------------------------------------------------------------------------------
# offers


@console_view(read=Role.OPERATOR)
def offer_list(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    rows = list(queries.offers(ws))
    stats = queries.offer_stats(ws)
    empty = {"issued": 0, "redeemed": 0, "voided": 0, "expired": 0, "open": 0}
    return render(request, "console/offers/list.html", {
        "rows": [(o, stats.get(o.pk, empty)) for o in rows],
    })


def _offer_data(form: OfferForm) -> dict[str, Any]:
    data = dict(form.cleaned_data)
    for key in ("percent_off", "amount_off", "min_spend", "valid_from", "valid_until", "coupon_days", "stock",
                "per_member", "points_price"):
        if data.get(key) is None:
            data[key] = None
    return data


def _offer_form(request: HttpRequest, offer: Offer | None) -> HttpResponse:
    ws = _ws(request)
    if request.method == "POST":
        form = OfferForm(request.POST)
        if form.is_valid():
            try:
                saved = offers.save_offer(ws, _offer_data(form), offer_id=offer.pk if offer else None,
                                          actor=actor(request))
            except NotFound as exc:
                if exc.code == "not_found":
                    raise
                form.add_error(None, exc.message)
            except ShequnError as exc:
                field = exc.details.get("field") if isinstance(exc.details, dict) else None
                form.add_error(field if field in form.fields else None, exc.message)
            else:
                messages.success(request, _("Offer “%(name)s” saved.") % {"name": saved.name})
                return redirect("console:offers", slug=ws.slug)
    elif offer is not None:
        form = OfferForm(initial={
            "name": offer.name, "description": offer.description, "kind": offer.kind, "percent_off": offer.percent_off,
            "amount_off": offer.amount_off, "gift_item": offer.gift_item, "items": ", ".join(offer.items),
            "min_spend": offer.min_spend, "valid_from": offer.valid_from, "valid_until": offer.valid_until,
            "coupon_days": offer.coupon_days, "stock": offer.stock, "per_member": offer.per_member,
            "uses_per_coupon": offer.uses_per_coupon, "points_price": offer.points_price, "trigger": offer.trigger,
            "trigger_tier": offer.trigger_tier, "stores": ", ".join(s.code for s in offer.stores.all()),
            "clippable": offer.clippable, "active": offer.active,
        })
    else:
        form = OfferForm()
    return render(request, "console/offers/form.html", {"form": form, "offer": offer})


@console_view(read=Role.OPERATOR)
def offer_new(request: HttpRequest) -> HttpResponse:
    return _offer_form(request, None)


@console_view(read=Role.OPERATOR)
def offer_edit(request: HttpRequest, offer_id: int) -> HttpResponse:
    return _offer_form(request, get_scoped(Offer, _ws(request), offer_id))


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace("，", ",").replace(";", ",").replace("\n", ",").split(",") if p.strip()]


@console_view(read=Role.OPERATOR)
def offer_issue(request: HttpRequest, offer_id: int) -> HttpResponse:
    ws = _ws(request)
    offer = get_scoped(Offer, ws, offer_id)
    result = None
    unknown: list[str] = []
    if request.method == "POST":
        form = IssueForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                ids: list[int] = []
                phones: list[str] = []
                for part in _split(data["members"]):
                    if part.isdigit() and len(part) < 11:
                        ids.append(int(part))
                    else:
                        phones.append(part)
                by_phone, unknown = offers.members_by_phone(ws, phones)
                ids += by_phone
                if data["tag"] or data["stage"] or data["source"]:
                    f = MemberFilter(tag=data["tag"].strip(), stage=data["stage"].strip(), source=data["source"].strip())
                    ids += list(filter_members(ws, f).values_list("pk", flat=True)[:100_000])
                if not ids:
                    form.add_error(None, _("Name members, or a filter that finds some."))
                else:
                    result = offers.issue_to_members(ws, offer.pk, ids, batch_key=data["batch_key"],
                                                     actor=actor(request))
                    messages.success(request, _("%(n)d coupon(s) issued.") % {"n": result.created})
            except ShequnError as exc:
                form.add_error(None, exc.message)
    else:
        form = IssueForm(initial={"batch_key": f"console:{uuid.uuid4().hex}"})
    return render(request, "console/offers/issue.html", {"form": form, "offer": offer, "result": result,
                                                         "unknown": unknown})


# ---------------------------------------------------------------------------------------------
# the counter


def _counter_store(request: HttpRequest, choices: list[Any]) -> Any:
    wanted = request.POST.get("store") or request.GET.get("store") or request.session.get(COUNTER_STORE_SESSION)
    for store in choices:
        if str(store.pk) == str(wanted):
            request.session[COUNTER_STORE_SESSION] = store.pk
            return store
    return choices[0] if choices else None


@console_view(read=Role.CLERK)
def counter(request: HttpRequest) -> HttpResponse:
    """Scan or type a coupon code, a member card or a phone number; see what is redeemable; redeem."""
    ws = _ws(request)
    choices = queries.counter_stores(ws, _role(request), request.user.pk)
    store = _counter_store(request, choices)
    q = request.GET.get("q", "").strip()
    found = None
    error = None
    if q:
        try:
            found = queries.counter_lookup(ws, q)
        except ShequnError as exc:
            error = exc.message
    state = queries.coupon_state(found.coupon) if found is not None and found.coupon is not None else None
    return render(request, "console/offers/counter.html", {
        "stores": choices, "store": store, "q": q, "found": found, "error": error, "state": state,
        "key": f"counter:{uuid.uuid4().hex}", "no_store": _role(request) == Role.CLERK and not choices,
    })


def _back_to_counter(request: HttpRequest, q: str, store: Any) -> HttpResponse:
    url = reverse("console:offers_counter", kwargs={"slug": _ws(request).slug})
    from urllib.parse import urlencode

    params = {"q": q} if q else {}
    if store is not None:
        params["store"] = str(store.pk)
    return redirect(url + ("?" + urlencode(params) if params else ""))


@require_POST
@console_view(read=Role.CLERK)
def counter_redeem(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    choices = queries.counter_stores(ws, _role(request), request.user.pk)
    store = _counter_store(request, choices)
    code = request.POST.get("code", "")
    q = request.POST.get("q", "") or code
    member_id = request.POST.get("member_id")
    try:
        r = offers.redeem(ws, code, key=request.POST.get("key", ""), actor=actor(request), role=_role(request),
                          user_id=request.user.pk, store=request.POST.get("store") or None,
                          amount=request.POST.get("amount", "").strip() or None,
                          member_id=int(member_id) if member_id and member_id.isdigit() else None)
    except ShequnError as exc:
        _fail(request, exc)
    else:
        messages.success(request, _("Redeemed: %(offer)s (coupon %(code)s), discount ¥%(discount)s.")
                         % {"offer": r.offer.name, "code": codes.display(r.coupon.code), "discount": r.discount})
    return _back_to_counter(request, q, store)


@require_POST
@console_view(read=Role.CLERK)
def counter_clip(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    choices = queries.counter_stores(ws, _role(request), request.user.pk)
    store = _counter_store(request, choices)
    q = request.POST.get("q", "")
    try:
        r = offers.redeem_clip(ws, int(request.POST.get("member_id") or 0), int(request.POST.get("offer_id") or 0),
                               key=request.POST.get("key", ""), actor=actor(request), role=_role(request),
                               user_id=request.user.pk, store=request.POST.get("store") or None,
                               amount=request.POST.get("amount", "").strip() or None)
    except ShequnError as exc:
        _fail(request, exc)
    except ValueError:
        messages.error(request, _("Unknown member or offer."))
    else:
        messages.success(request, _("Clipped offer applied: %(offer)s, discount ¥%(discount)s.")
                         % {"offer": r.offer.name, "discount": r.discount})
    return _back_to_counter(request, q, store)


@console_view(read=Role.CLERK)
def coupon_qr(request: HttpRequest, code: str) -> HttpResponse:
    coupon = queries.find_coupon_or_none(_ws(request), code)
    if coupon is None:
        raise NotFound("coupon")
    return HttpResponse(codes.qr_svg(coupon.code), content_type="image/svg+xml")


# ---------------------------------------------------------------------------------------------
# redemption log, void, reports


@console_view(read=Role.OPERATOR)
def redemption_log(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    qs = queries.redemptions(ws)
    offer_id = request.GET.get("offer", "")
    if offer_id.isdigit():
        qs = qs.filter(offer_id=int(offer_id))
    page = Paginator(qs, LOG_PAGE).get_page(request.GET.get("page"))
    return render(request, "console/offers/redemptions.html", {"page": page, "offer_id": offer_id})


@require_POST
@console_view(read=Role.OPERATOR)
def redemption_void(request: HttpRequest, redemption_id: int) -> HttpResponse:
    ws = _ws(request)
    redemption = get_scoped(Redemption, ws, redemption_id)
    try:
        offers.void_redemption(ws, redemption.pk, reason=request.POST.get("reason", ""), actor=actor(request))
    except ShequnError as exc:
        _fail(request, exc)
    else:
        messages.success(request, _("Redemption #%(id)d voided; the coupon can be used again.") % {"id": redemption.pk})
    return redirect("console:offers_redemptions", slug=ws.slug)


def _offers_figure(rows: list[tuple[Offer, dict[str, int]]]) -> dict[str, Any]:
    names = [o.name for o, _s in rows]
    series = [("issued", _("Issued"), "#94a3b8"), ("redeemed", _("Redeemed"), "#2f9e8f"),
              ("expired", _("Expired"), "#f0b429")]
    return {
        "data": [{"type": "bar", "name": label, "x": names, "y": [s[key] for _o, s in rows], "marker": {"color": colour},
                  "hovertemplate": "%{x}: %{y}<extra>" + label + "</extra>"} for key, label, colour in series],
        "layout": charts._layout(height=340, barmode="group", showlegend=True,
                                 legend={"orientation": "h", "y": 1.12},
                                 yaxis={"title": {"text": _("Coupons")}, "rangemode": "tozero", "gridcolor": "#e5e9ef",
                                        "tick0": 0, "dtick": charts._count_axis_step(
                                            max((s[k] for _o, s in rows for k, _l, _c in series), default=0))}),
    }


def _by_figure(rows: list[dict[str, Any]], colour: str) -> dict[str, Any]:
    return {
        "data": [{"type": "bar", "orientation": "h", "y": [r["label"] for r in rows][::-1],
                  "x": [r["redemptions"] for r in rows][::-1], "marker": {"color": colour},
                  "hovertemplate": "%{y}: %{x}<extra></extra>"}],
        "layout": charts._layout(height=max(220, 34 * len(rows) + 80), margin={"l": 120, "r": 20, "t": 10, "b": 40},
                                 xaxis={"title": {"text": _("Redemptions")}, "rangemode": "tozero",
                                        "gridcolor": "#e5e9ef", "tick0": 0, "dtick": charts._count_axis_step(
                                            max((r["redemptions"] for r in rows), default=0))}),
    }


@console_view(read=Role.OPERATOR)
def reports(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    stats = queries.offer_stats(ws)
    empty = {"issued": 0, "redeemed": 0, "voided": 0, "expired": 0, "open": 0}
    rows = [(o, stats.get(o.pk, empty)) for o in scoped(Offer, ws).order_by("pk")]
    by_store = queries.redemptions_by(ws, "store")
    by_clerk = queries.redemptions_by(ws, "clerk")
    return render(request, "console/offers/reports.html", {
        "rows": rows, "by_store": by_store, "by_clerk": by_clerk,
        "offers_figure": _offers_figure(rows), "store_figure": _by_figure(by_store, "#2f9e8f"),
        "clerk_figure": _by_figure(by_clerk, "#13796d"),
    })


# ---------------------------------------------------------------------------------------------
# stores and clerks; claim and table codes


@console_view(read=Role.OPERATOR)
def stores(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    form = StoreForm()
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "assign":
                offers.assign_clerk(ws, int(request.POST.get("store") or 0), int(request.POST.get("user") or 0),
                                    actor=actor(request))
                messages.success(request, _("Clerk assigned."))
            elif action == "unassign":
                offers.unassign_clerk(ws, int(request.POST.get("store") or 0), int(request.POST.get("user") or 0),
                                      actor=actor(request))
                messages.success(request, _("Clerk removed from the store."))
            else:
                form = StoreForm(request.POST)
                if form.is_valid():
                    store = offers.save_store(ws, form.cleaned_data["code"], form.cleaned_data["name"],
                                              actor=actor(request))
                    messages.success(request, _("Store “%(name)s” saved.") % {"name": store.name})
                    return redirect("console:offers_stores", slug=ws.slug)
        except ShequnError as exc:
            _fail(request, exc)
        except ValueError:
            messages.error(request, _("Unknown store or user."))
        if action in ("assign", "unassign"):
            return redirect("console:offers_stores", slug=ws.slug)
    clerks = queries.store_clerks(ws)
    staff = list(StaffMembership.objects.filter(workspace=ws).select_related("user").order_by("user__username"))
    return render(request, "console/offers/stores.html", {
        "stores": [(s, clerks.get(s.pk, [])) for s in queries.stores(ws)], "staff": staff, "form": form,
    })


def _claim_url(request: HttpRequest, kind: str, code: str) -> str:
    return request.build_absolute_uri(f"/m/{_ws(request).slug}/{kind}/{code}/")


@console_view(read=Role.OPERATOR)
def codes_page(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    if request.method == "POST":
        try:
            if request.POST.get("action") == "activity":
                offers.create_activity_code(ws, {
                    "name": request.POST.get("name", ""), "store": request.POST.get("store") or None,
                    "table": request.POST.get("table", ""), "reward_offer": request.POST.get("reward_offer") or None,
                    "reward_points": request.POST.get("reward_points") or None}, actor=actor(request))
            else:
                offers.create_claim_code(ws, int(request.POST.get("offer") or 0), request.POST.get("name", ""),
                                         actor=actor(request))
            messages.success(request, _("Code created."))
        except ShequnError as exc:
            _fail(request, exc)
        except ValueError:
            messages.error(request, _("Choose an offer."))
        return redirect("console:offers_codes", slug=ws.slug)
    claim_codes = list(scoped(ClaimCode, ws).select_related("offer").order_by("-pk"))
    activity_codes = list(scoped(ActivityCode, ws).select_related("store", "reward_offer").order_by("-pk"))
    return render(request, "console/offers/codes.html", {
        "claim_codes": [(c, _claim_url(request, "claim", c.code)) for c in claim_codes],
        "activity_codes": [(a, _claim_url(request, "share", a.code)) for a in activity_codes],
        "offers": list(scoped(Offer, ws).filter(active=True).order_by("-pk")), "stores": queries.stores(ws),
    })


@console_view(read=Role.OPERATOR)
def code_qr(request: HttpRequest, kind: str, code_id: int) -> HttpResponse:
    ws = _ws(request)
    if kind not in ("claim", "share"):
        raise NotFound("code")
    model = ClaimCode if kind == "claim" else ActivityCode
    row = get_scoped(model, ws, code_id)
    return HttpResponse(codes.qr_svg(_claim_url(request, kind, row.code), scale=5), content_type="image/svg+xml")


urlpatterns = [
    path("offers/", offer_list, name="offers"),
    path("offers/new/", offer_new, name="offers_new"),
    path("offers/<int:offer_id>/", offer_edit, name="offers_edit"),
    path("offers/<int:offer_id>/issue/", offer_issue, name="offers_issue"),
    path("offers/redemptions/", redemption_log, name="offers_redemptions"),
    path("offers/redemptions/<int:redemption_id>/void/", redemption_void, name="offers_void"),
    path("offers/reports/", reports, name="offers_reports"),
    path("offers/stores/", stores, name="offers_stores"),
    path("offers/codes/", codes_page, name="offers_codes"),
    path("offers/codes/<str:kind>/<int:code_id>/qr.svg", code_qr, name="offers_code_qr"),
    path("counter/", counter, name="offers_counter"),
    path("counter/redeem/", counter_redeem, name="offers_counter_redeem"),
    path("counter/clip/", counter_clip, name="offers_counter_clip"),
    path("coupons/<str:code>/qr.svg", coupon_qr, name="offers_coupon_qr"),
]
