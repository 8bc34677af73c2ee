"""The jobs: one module per command or command group, each turning a config into a run directory.

explain, evaluate (with evaluate_plan: which method x metric pairs run; reused_runs: attributions taken
from earlier runs), bee (bee pretrain and bee report), influence (with influence_ranking: the training data
and the rankings it reports), concepts, llm (llm-explain), heatmap (re-render a run's heatmaps), report
(rebuild an evaluate run's reports) and record_checks (what heatmap and report validate in run.json and
metrics.json before they use it).

Jobs use the library packages, models, data and core; only the CLI uses jobs (see ``xaibench.core`` for
the layers).
"""
