"""Train ALS with cross-validated hyper-parameters, compare it with a popularity baseline and with the model in
service on a holdout, publish.

Flow of :func:`run_train`:

1. read gold/interactions (pinned Delta version), check there is something to learn from;
2. holdout split (``train.split``); cross-validate only on the train part over the grid, or ``train.trials``
   points sampled from its ranges (``train.search``), scoring top-K lists that exclude each fold's training items
   (:class:`~sparkpromo.evaluate.RankingALS` + :class:`~sparkpromo.evaluate.TopKEvaluator`). Folds are random
   (``CrossValidator``) for the random split and forward-chaining in time for the temporal ones
   (:func:`~sparkpromo.evaluate.temporal_folds`: no fold validates on data older than what it trains on).
   A one-point grid has nothing to choose and is not cross-validated (cv.json says so): its fold fits would only
   estimate what the holdout measures;
3. the best grid point is refitted on the whole train part; that train-only fit and the popularity baseline are
   scored on the holdout (ndcg, precision, recall, map, coverage, novelty; RMSE too for explicit ratings). With
   silver events, also with serving's exclusion (only non-repeatable bought or rated items excluded: ``als_served``,
   ``popularity_served``) when it differs from excluding every train pair;
4. champion gate (ALS against popularity), then the incumbent gate: the model in service (``registry/LATEST``) and
   the new champion are scored the same way on the gate holdout (:func:`gate_holdout`: the holdout pairs absent
   from the gold.interactions version the model in service was fitted on, since it was fitted on every
   interaction; popularity for users it cannot score, as in serving; neither lists a train pair or a holdout pair
   the model in service was fitted on, :func:`gate_exclusion`), and the new champion replaces it only when it
   scores at least ``incumbent * (1 - train.incumbent_margin)`` on ``train.metric``. With no such pair (or that
   version unreadable) there is no fair evidence: published, ``published_no_fresh_holdout``;
5. the chosen grid point is refitted on every interaction (train and holdout): that is the model persisted under
   the run's registry entry ``<lakehouse>/registry/<run_id>/`` (``<run_id>.r2/``, ``.r3/``, ... when the run's
   newest entry is the one in service, which is never rewritten; a rerun rewrites its unpublished newest entry)
   with cv.json, metrics.json and, last, params.json (the holdout metrics stay those of the train-only fit); the
   metrics rows (the incumbent and the new champion on the gate holdout as ``incumbent`` and ``challenger``, its
   size as ``gate``) and the decision go to the Delta table ``<lakehouse>/metrics/model`` under the entry (its rows
   replaced, so a rerun into the same entry is idempotent); log the run to MLflow (when enabled); finally, when the
   decision is to publish, write the entry to ``<lakehouse>/registry/LATEST``, which the recommend stage reads (a
   crash before that leaves LATEST on the previous complete entry).
"""

from sparkpromo.train.gate import *  # noqa: F403
from sparkpromo.train.search import *  # noqa: F403
from sparkpromo.train.search import _describe  # noqa: F401 - used by tests
from sparkpromo.train.stage import *  # noqa: F403
