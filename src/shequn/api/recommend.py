"""Personalised offers: the clippable offers ranked for one member from their purchase history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from shequn.recommend import services as recommend

from .auth import READERS, allow, context
from .schemas import with_errors

router = Router(tags=["recommend"])


class RecommendedOfferSummary(Schema):
    id: int
    name: str
    kind: str
    items: list[str]
    categories: list[str]
    valid_until: dt.datetime | None


class RecommendedOfferOut(Schema):
    offer: RecommendedOfferSummary
    score: float = Field(description="Higher is more likely to be used; comparable within one list only")
    reason: str = Field(description="Short text for the member, in the request's language")
    reason_code: str = Field(description="buy_again, similar_members, category or popular")


class RecommendedOfferList(Schema):
    member_id: int
    items: list[RecommendedOfferOut]


class RecommendQuery(Schema):
    limit: int = Field(10, ge=1, le=recommend.MAX_LIMIT, description="How many offers (1–50)")


@router.get("/members/{int:member_id}/offers/recommended", response=with_errors({200: RecommendedOfferList}),
            operation_id="member_offers_recommended", summary="Offers ranked for a member")
@allow(*READERS)
def recommended(request: HttpRequest, member_id: int, params: Query[RecommendQuery]) -> dict[str, Any]:
    """The member's clippable offers, best first: ranked by the member's own purchases (frequency and
    recency of the offer's items), what members with similar purchases buy, and the member's favourite
    categories. A member of another workspace is reported as not found."""
    ctx = context(request)
    ranked = recommend.rank_offers(ctx.workspace, member_id, limit=params.limit)
    return {"member_id": member_id,
            "items": [{"offer": r.offer, "score": r.score, "reason": r.reason, "reason_code": r.reason_code}
                      for r in ranked]}


routers: list[Router] = [router]
