"""Personalised offers: rank the clippable offers for one member, and refresh the item statistics
the ranking reads.

``rank_offers`` is read-only and costs a handful of indexed queries: the member's purchases (the
``member, -occurred_at`` index of interactions), the neighbour rows of the items they bought, the
statistics of those items and of the candidates' items, and the candidates themselves. The heavy
part — item-item co-purchase over every member — is ``refresh_affinity``, run by the periodic task
``recommend.refresh_affinity`` (see tasks.py) and replaced atomically per workspace.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from shequn.core import clock
from shequn.core.errors import NotFound
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from . import ranking
from .models import ItemAffinity, ItemStat

HISTORY_DAYS = 365
"""Purchases older than this do not count (their weight would be below 1/8 anyway)."""
HISTORY_LIMIT = 500
"""At most this many of the member's latest purchases are read per request."""
MAX_LIMIT = 50
TOP_NEIGHBOURS = 20
MAX_ITEMS_PER_MEMBER = 200
"""refresh_affinity keeps a member's 200 most-bought items for co-purchase pairs (bounds the work)."""

REASONS = {
    ranking.REASON_BUY_AGAIN: gettext_lazy("You buy this often"),
    ranking.REASON_SIMILAR: gettext_lazy("Members with similar taste buy this"),
    ranking.REASON_CATEGORY: gettext_lazy("From a category you like"),
    ranking.REASON_POPULAR: gettext_lazy("Popular with members"),
}


@dataclass(frozen=True)
class RankedOffer:
    offer: Any  # shequn.offers.models.Offer
    score: float
    reason: str  # translated short text
    reason_code: str  # buy_again, similar_members, category or popular


def _line_items(properties: Any) -> list[tuple[str, list[str]]]:
    """(item name, categories) of the lines of a purchase's ``properties.items``."""
    lines = properties.get("items") if isinstance(properties, dict) else None
    out: list[tuple[str, list[str]]] = []
    for line in lines if isinstance(lines, list) else ():
        if not isinstance(line, dict):
            continue
        name = str(line.get("name") or "").strip()[:200]
        if not name:
            continue
        raw = line.get("categories", line.get("category", []))
        cats = [str(c) for c in raw] if isinstance(raw, list) else ([str(raw)] if raw else [])
        out.append((name, cats))
    return out


def purchase_history(workspace: Workspace, member_id: int, *, at: dt.datetime | None = None
                     ) -> tuple[list[tuple[str, float]], dict[str, list[str]]]:
    """The member's purchase occasions ``(item, age in days)`` (one per item per purchase) over the
    last ``HISTORY_DAYS`` days, newest first, and the categories the purchase lines gave."""
    from shequn.interactions.models import Interaction, InteractionType

    now = at or clock.now()
    rows = (Interaction.objects.filter(workspace=workspace, member_id=member_id, type=InteractionType.PURCHASE,
                                       occurred_at__lte=now,
                                       occurred_at__gt=now - dt.timedelta(days=HISTORY_DAYS))
            .order_by("-occurred_at").values_list("occurred_at", "properties")[:HISTORY_LIMIT])
    occasions: list[tuple[str, float]] = []
    categories: dict[str, list[str]] = defaultdict(list)
    for occurred_at, properties in rows:
        age = (now - occurred_at).total_seconds() / 86400.0
        seen: set[str] = set()
        for name, cats in _line_items(properties):
            if name not in seen:
                seen.add(name)
                occasions.append((name, age))
            for c in cats:
                if c not in categories[name]:
                    categories[name].append(c)
    return occasions, dict(categories)


def _affinity_for(workspace: Workspace, own_items: set[str], other_items: set[str]) -> ranking.Affinity:
    neighbours: dict[str, list[tuple[str, float]]] = defaultdict(list)
    if own_items:
        for item, other, similarity in (scoped(ItemAffinity, workspace).filter(item__in=sorted(own_items))
                                        .order_by("item", "-similarity", "other")
                                        .values_list("item", "other", "similarity")):
            neighbours[item].append((other, similarity))
    wanted = own_items | other_items | {o for rows in neighbours.values() for o, _ in rows}
    popularity: dict[str, float] = {}
    repeat_rate: dict[str, float] = {}
    if wanted:
        for item, pop, rate in (scoped(ItemStat, workspace).filter(item__in=sorted(wanted))
                                .values_list("item", "popularity", "repeat_rate")):
            popularity[item] = pop
            repeat_rate[item] = rate
    return ranking.Affinity(neighbours=dict(neighbours), popularity=popularity, repeat_rate=repeat_rate)


def rank_offers(workspace: Workspace, member_id: int, *, limit: int = 10, at: dt.datetime | None = None,
                candidates: Sequence[Any] | None = None) -> list[RankedOffer]:
    """The clippable offers most likely to be used by the member, best first.

    ``candidates`` defaults to ``offers.queries.clippable_offers(workspace)``; each needs ``.items`` and
    ``.categories`` (lists of strings). Raises NotFound for a member of another workspace."""
    from shequn.members import queries as members

    if member_id not in members.existing_ids(workspace, [member_id]):
        raise NotFound(_("Member not found."))
    limit = max(1, min(int(limit), MAX_LIMIT))
    now = at or clock.now()
    if candidates is None:
        from shequn.offers import queries as offers

        candidates = offers.clippable_offers(workspace, at=now)
    if not candidates:
        return []
    history, item_categories = purchase_history(workspace, member_id, at=now)
    candidate_items = {str(i) for offer in candidates for i in (offer.items or [])}
    affinity = _affinity_for(workspace, {item for item, _ in history}, candidate_items)
    ranked = ranking.rank_candidates(history, list(candidates), affinity, item_categories=item_categories,
                                     limit=limit)
    return [RankedOffer(offer=offer, score=round(score, 6), reason=str(REASONS[reason]), reason_code=reason)
            for offer, score, reason in ranked]


def refresh_affinity(workspace: Workspace, *, at: dt.datetime | None = None) -> dict[str, int]:
    """Recompute the workspace's item statistics and item-item neighbours from the purchases of the
    last ``HISTORY_DAYS`` days and replace the stored rows in one transaction (idempotent: the same
    purchases give the same rows). Refreshes of one workspace are serialised by a row lock."""
    from shequn.interactions.models import Interaction, InteractionType

    now = at or clock.now()
    baskets: dict[int, list[list[str]]] = defaultdict(list)
    rows = (Interaction.objects.filter(workspace=workspace, type=InteractionType.PURCHASE, occurred_at__lte=now,
                                       occurred_at__gt=now - dt.timedelta(days=HISTORY_DAYS))
            .order_by().values_list("member_id", "properties"))
    for member_id, properties in rows.iterator(chunk_size=2000):
        names = [name for name, _ in _line_items(properties)]
        if names:
            baskets[member_id].append(names)
    for member_id, member_baskets in baskets.items():
        if len({i for b in member_baskets for i in b}) > MAX_ITEMS_PER_MEMBER:
            counts: dict[str, int] = defaultdict(int)
            for b in member_baskets:
                for i in set(b):
                    counts[i] += 1
            keep = set(sorted(counts, key=lambda i: (-counts[i], i))[:MAX_ITEMS_PER_MEMBER])
            baskets[member_id] = [[i for i in b if i in keep] for b in member_baskets]
    affinity = ranking.build_affinity(baskets, top_k=TOP_NEIGHBOURS)
    buyers: dict[str, int] = defaultdict(int)
    for member_baskets in baskets.values():
        for item in {i for b in member_baskets for i in b}:
            buyers[item] += 1
    stats = [ItemStat(workspace=workspace, item=str(item), buyers=buyers[str(item)], popularity=pop,
                      repeat_rate=affinity.repeat_rate.get(item, 0.0), computed_at=now)
             for item, pop in sorted(affinity.popularity.items(), key=lambda kv: str(kv[0]))]
    links = [ItemAffinity(workspace=workspace, item=str(item), other=str(other),
                          similarity=min(1.0, max(0.0, similarity)), computed_at=now)
             for item, rows_ in sorted(affinity.neighbours.items(), key=lambda kv: str(kv[0]))
             for other, similarity in rows_]
    with transaction.atomic():
        Workspace.objects.select_for_update().filter(pk=workspace.pk).first()
        scoped(ItemAffinity, workspace).delete()
        scoped(ItemStat, workspace).delete()
        ItemStat.objects.bulk_create(stats, batch_size=1000)
        ItemAffinity.objects.bulk_create(links, batch_size=1000)
    return {"members": len(baskets), "items": len(stats), "links": len(links)}
