"""What the budget shortlist changes in the offers, on a lakehouse after ``sparkpromo run`` (no timing).

Computes the recommend stage's plan twice on the same model and data: with ``recommend.budget_shortlist`` as
configured, and with 0 (every audience user of a budgeted campaign scored). For each budgeted campaign it reports
the users served by both, and the mean score of the rank-1 offers (model scores are comparable only within a
source, so only ALS rows count). Campaigns without a budget must come out identical: the script checks it.

    .venv/bin/python benchmarks/shortlist_quality.py --lakehouse lakehouse [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

from harness import emit, local_config, session  # benchmarks/ is on sys.path when a script runs
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.campaigns import active_campaigns
from sparkpromo.config import AppConfig
from sparkpromo.recommend import ALS as ALS_SOURCE
from sparkpromo.recommend import load_champion, recommendation_plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lakehouse", required=True)
    ap.add_argument("--run-date", default="2026-11-01")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = local_config({"spark.master": "local[2]", "spark.shuffle_partitions": 8, "lakehouse": args.lakehouse})
    spark = session(cfg, "shortlist")
    run_date = dt.date.fromisoformat(args.run_date)
    model_run_id, model, _ = load_champion(spark, cfg)
    active = active_campaigns(cfg.campaigns, run_date)

    def offers(c: AppConfig) -> DataFrame:
        with recommendation_plan(spark, c, active, run_date, "bench", model_run_id, model) as p:
            return p.recs.select(C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID, C.RANK, C.SCORE, C.SOURCE).localCheckpoint()

    full = dataclasses.replace(cfg, recommend=dataclasses.replace(cfg.recommend, budget_shortlist=0))
    short, every = offers(cfg), offers(full)
    result: dict[str, object] = {"budget_shortlist": cfg.recommend.budget_shortlist}
    budgeted = [c for c in active if c.budget > 0]
    for camp in budgeted:
        mine = F.col(C.CAMPAIGN_ID) == camp.id
        a, b = (df.where(mine).select(C.USER_ID).distinct() for df in (short, every))
        best = [df.where(mine & (F.col(C.RANK) == 1) & (F.col(C.SOURCE) == ALS_SOURCE)).agg(F.avg(C.SCORE)).first()[0]
                for df in (short, every)]
        result.update({f"{camp.id}_budget": camp.budget, f"{camp.id}_served_shortlist": a.count(),
                       f"{camp.id}_served_no_shortlist": b.count(),
                       f"{camp.id}_served_by_both": a.join(b, C.USER_ID).count(),
                       f"{camp.id}_rank1_als_score_shortlist": round(best[0] or 0.0, 4),
                       f"{camp.id}_rank1_als_score_no_shortlist": round(best[1] or 0.0, 4)})
    others = ~F.col(C.CAMPAIGN_ID).isin(*[c.id for c in budgeted]) if budgeted else F.lit(True)
    x, y = short.where(others), every.where(others)
    result["other_campaigns_rows"] = x.count()
    result["other_campaigns_rows_that_differ"] = x.exceptAll(y).count() + y.exceptAll(x).count()
    spark.stop()
    emit(result, args.json)


if __name__ == "__main__":
    main()
