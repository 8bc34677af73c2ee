"""The replay check of BEE's design study: real ``bee`` runs next to their replays on the bank.

On one model and metric: ``bee.pretrain`` on the train inputs (16 rounds), then ``bee`` on the held-out
inputs at T = 16 with that policy, finetuned, and with uniform arm choice; each map is scored with the
metric at the study's settings. The replays (benchmarks/bee_replay.py) of the same two methods on the
bank must give the same mean within the intervals: the bank's draws are other draws from the same
families, so the two agree in distribution, not input by input.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import bee_analysis
import bee_bank
import torch

from xaibench.attribution import attribute
from xaibench.attribution.bee import BeeParams, pretrain
from xaibench.models import load_model

ROUNDS = 16


def run(model_name: str, metric: str, args: Any, trained: Path, started: float) -> None:
    out = args.work / "check" / f"{model_name}-{metric}.json"
    if out.exists():
        return
    loaded = load_model(bee_bank.model_file(model_name, trained))
    model = loaded.module.eval()
    test = bee_bank.selection(loaded, "test", args.test_n, args.batch_size)
    train = bee_bank.selection(loaded, "train", args.train_n, args.batch_size)
    modality = test.meta.modality
    settings = bee_bank.SETTINGS[modality].get(metric, {})
    metric_params = ";".join(f"{k}={v}" for k, v in settings.items())
    common = {"metric": metric, "metric_params": metric_params, "rounds": ROUNDS, "n_steps": args.n_steps}
    gen = torch.Generator().manual_seed(bee_bank.derived_seed(args.seed, model_name, metric, "check-pretrain"))
    outcome = pretrain(model, train.inputs, train.targets, BeeParams(**common), args.batch_size, gen)
    policy = args.work / "check" / f"{model_name}-{metric}.safetensors"
    policy.parent.mkdir(parents=True, exist_ok=True)
    outcome.policy.save(policy, {"metric": metric, "metric_params": metric_params})
    real = {}
    for name, extra in (("bee", {"policy": str(policy), "finetune": True}), ("bee_uniform", {"adaptive": False, "cycle": False})):
        begin = time.perf_counter()
        maps = attribute("bee", model, test.inputs, target=test.targets, batch_size=args.batch_size,
                         generator=torch.Generator().manual_seed(bee_bank.derived_seed(args.seed, "check", name)),
                         **common, **extra)
        scores = bee_bank.scores_of(model, test.inputs, maps, test.targets, {metric: (metric, settings)},
                                    args.batch_size, args.seed, model_name)[:, 0]
        real[name] = {"values": scores.tolist(), "seconds": round(time.perf_counter() - begin, 2)}
        bee_bank.log(f"check {model_name} {metric} {name}", started)
    policy.unlink()
    out.write_text(json.dumps({"model": model_name, "metric": metric, "metric_params": metric_params,
                               "rounds": ROUNDS, "real": real}, indent=1) + "\n")


def compare(work: Path, seed: int, replicates: int) -> list[dict[str, Any]]:
    """Real runs against replays, per check file: means and 95% intervals, oriented back to the metric."""
    rows = []
    for path in sorted((work / "check").glob("*.json")):
        found = json.loads(path.read_text())
        cells = [c for c in bee_analysis.cells_of(found["model"], work, seed, replicates) if c.metric == found["metric"]]
        if not cells:
            continue
        cell = cells[0]
        sign = 1.0 if cell.higher else -1.0
        replays = {"bee": bee_analysis.replayed(cell, bee_analysis.FINAL, ROUNDS),
                   "bee_uniform": bee_analysis.replayed(cell, bee_analysis.UNIFORM, ROUNDS)}
        for name, replay in replays.items():
            ran = torch.tensor(found["real"][name]["values"], dtype=torch.float64)
            kept = cell.index < ran.numel()  # the bank may have grown since the check ran: its inputs only
            real, values = sign * ran[cell.index[kept]], replay[kept]
            rows.append({"model": found["model"], "metric": found["metric"], "method": name,
                         "real": sign * real.nanmean().item(),
                         "real_ci95": sorted(sign * x for x in bee_analysis.interval(real, seed)),
                         "replay": sign * values.nanmean().item(),
                         "replay_ci95": sorted(sign * x for x in bee_analysis.interval(values, seed)),
                         "real_seconds": found["real"][name]["seconds"]})
    return rows
