"""How good are xaibench's influence estimates? Linear datamodeling score and mislabel detection.

Model and recipe (every model below): a 64-32-10 tanh MLP (nn.Sequential Linear, Tanh, Linear) on
scikit-learn's digits (8x8 pixels / 16, flattened), trained full-batch with Adam (lr 1e-2, 300 steps)
on the mean cross-entropy of its training rows. Training is deterministic: all models of one series
are trained together as stacked parameters (batched matrix products; the summed per-model losses keep
each model's gradients, and Adam's elementwise updates, its own; checked: bit for bit the parameters
that torch.optim.Adam gives one nn.Sequential trained alone). Training data: the first 1,000
digits; queries: the next 50, measurement = their cross-entropy loss.

1. Linear datamodeling score (LDS; Park et al. 2023, TRAK; Grosse et al. 2023). ``--models`` subsets
   S_k of exactly 500 of the 1,000 (random, seed 0); one model per subset, trained twice: from the
   full-data model's own initialisation ("same init", torch.manual_seed(0)) and from an initialisation
   seeded per model ("seeded init", seed k + 1), so that the second series also carries the noise of
   the initialisation. Influence scores tau(q, m) (Q x N) of the full-data model; predicted subset
   score sum_{m in S_k} tau(q, m). Our scores are positive when m lowers the query loss, so the
   predicted query loss of the subset model falls as the sum grows:
       LDS = mean over queries q of Spearman_k( -sum_{m in S_k} tau(q, m), loss_q(model_k) ),
   the TRAK definition (rank correlation between predicted and measured output, here the loss) with
   the sign folded in; 1 is perfect, 0 is chance. Reported with its standard error over queries.
   Scored: xaibench identity, diagonal, kfac, ekfac and exact (the full D x D Fisher, the ceiling of
   block-diagonal approximations), kronfluence 1.0.1's ekfac on the same model and data, each with the
   empirical and the true Fisher and damping 1e-3 or 0.1 x the mean eigenvalue (``damping=None``),
   the true Fisher's labels drawn with seed 0. The true Fisher of a near-memorising model rests on a
   few draws of a label other than the data's, so EK-FAC's true-Fisher LDS is also given over
   ``--fisher-seeds`` draws for xaibench, kronfluence, and kronfluence fed one draw per example reused
   in both fitting passes (what xaibench did before it drew afresh per pass, as kronfluence does), and for
   xaibench with K = ``--draws`` label draws per example (the training set repeated K times in the
   fit, each row with its own draw; scores on the original 1,000).
   Also measured: how much the query losses vary across subsets and across 8 seeded inits on one
   fixed subset (init noise alone), and the heuristic damping's values.
2. Mislabel detection (Koh & Liang 2017; Grosse et al. 2023, self-influence). 10% of the 1,000 labels
   flipped to another class drawn uniformly (seed 1); the MLP retrained on the corrupted labels;
   training examples ranked by self-influence (true Fisher; identity, kfac, ekfac; xaibench and
   kronfluence's ekfac), by training loss under the corrupted model, or at random; reported: the
   fraction of the flipped examples found in the top 10% and 20% of each ranking (random: 0.10 and
   0.20 expected, hypergeometric standard deviation beside it).

    .venv/bin/python benchmarks/influence_quality.py [--threads 2] [--models 64] [--fisher-seeds 5]
        [--draws 1,4,16,64] [--quick] [--out PATH]

Writes benchmarks/results/influence_quality.json and prints markdown tables. --quick: 16 models, 2
Fisher seeds, draws 1,4 and no exact strategy (a smoke run). Cost (2-core VM, 2 threads, another
benchmark running beside it): 2 min 44 s for the defaults (5 min 13 s under heavier load), 2 min 4 s
with --quick; about 50 s of it trains the 138 models, the exact strategy's two fits take 15-40 s.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import kronfluence
import numpy as np
import torch
import torch.nn.functional as F
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from scipy.stats import hypergeom, pearsonr, spearmanr
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import xaibench
from xaibench.influence import (
    ClassificationTask,
    FitConfig,
    Influence,
    Preconditioner,
    ScoreConfig,
    fit_factors,
)

# kronfluence 1.0.1 builds torch.cuda.amp.GradScaler on every pass, which torch deprecates loudly
warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler", category=FutureWarning)

ROOT = Path(__file__).resolve().parents[1]
TRAIN, QUERIES, HIDDEN, CLASSES = 1000, 50, 32, 10
STEPS, LR = 300, 1e-2
SUBSET_SEED, FLIP_SEED, FLIP_FRACTION, INIT_NOISE_MODELS = 0, 1, 0.1, 8
DAMPINGS: tuple[float | None, ...] = (1e-3, None)
FISHERS = ("empirical", "true")
XAIBENCH_DRAWS = "kronfluence, one draw for both passes"
Params = dict[str, torch.Tensor]  # nn.Sequential state-dict keys -> tensors stacked over models


# ---------------------------------------------------------------------------------------------
# data and batched training


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training inputs and labels (first 1,000 digits), query inputs and labels (the next 50)."""
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    return x[:TRAIN], y[:TRAIN], x[TRAIN:TRAIN + QUERIES], y[TRAIN:TRAIN + QUERIES]


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, CLASSES))


def initial_params(seeds: list[int]) -> Params:
    """PyTorch's default initialisation of the MLP under each seed, stacked."""
    states = []
    for seed in seeds:
        torch.manual_seed(seed)
        states.append(mlp().state_dict())
    return {key: torch.stack([s[key] for s in states]) for key in states[0]}


def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Logits (M, n, 10) of the M stacked models on their inputs x (M, n, 64)."""
    hidden = torch.tanh(torch.baddbmm(params["0.bias"][:, None], x, params["0.weight"].transpose(1, 2)))
    return torch.baddbmm(params["2.bias"][:, None], hidden, params["2.weight"].transpose(1, 2))


def train(init: Params, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> Params:
    """Train one model per row set (rows: (M, n) indices into x, y) from the stacked ``init``."""
    params = {key: value.clone().requires_grad_() for key, value in init.items()}
    optimiser = torch.optim.Adam(params.values(), lr=LR)
    inputs, labels = x[rows], y[rows]
    for _ in range(STEPS):
        optimiser.zero_grad()
        logits = forward(params, inputs)
        # each model's mean loss; summing over models leaves every model's gradient its own
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum") / rows.shape[1]
        loss.backward()
        optimiser.step()
    return {key: value.detach() for key, value in params.items()}


def module(params: Params, index: int) -> nn.Sequential:
    """Model ``index`` of a stack as an ordinary nn.Module (what the influence libraries take)."""
    model = mlp()
    model.load_state_dict({key: value[index] for key, value in params.items()})
    return model.eval()


def per_example_losses(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every stacked model on every example: (M, n)."""
    with torch.no_grad():
        logits = forward(params, x.expand(len(params["0.bias"]), -1, -1))
        return F.cross_entropy(logits.transpose(1, 2), y.expand(logits.shape[0], -1), reduction="none")


def subsets(models: int, seed: int) -> torch.Tensor:
    """``models`` random halves of the training set: indices (models, 500), fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(TRAIN, generator=generator)[:TRAIN // 2] for _ in range(models)])


# ---------------------------------------------------------------------------------------------
# influence scores: xaibench and kronfluence


def xaibench_scores(model: nn.Module, fit: FitConfig, data: tuple[torch.Tensor, ...],
                    self_influence: bool = False, draws: int = 1) -> dict[float | None, torch.Tensor]:
    """Pairwise scores (Q, N) or self-influence (N,) per damping, from one fit of the factors.

    ``draws``: the factors are fitted on the training set repeated that many times, so that the true
    Fisher draws that many labels per example (each row has its own uniforms) and averages them.
    """
    x, y, xq, yq = data
    task = ClassificationTask()
    factors = fit_factors(model, task, x.repeat(draws, 1), y.repeat(draws), fit)
    out = {}
    for damping in DAMPINGS:
        influence = Influence(model, task, factors, ScoreConfig(damping=damping))
        scores = influence.self_influence(x, y) if self_influence else influence.pairwise(xq, yq, x, y)
        out[damping] = scores.sum(0)
    return out


class DigitsTask(kronfluence.Task):
    """kronfluence's task for the MLP: summed cross-entropy; true-Fisher labels drawn from the model.

    kronfluence draws the labels afresh in each pass (covariance, then eigenvalue correction) with
    ``torch.multinomial``. When the batch carries a third tensor, per-example uniforms, the labels are
    drawn from them by xaibench's own rule instead, so both passes see the same draws, as in xaibench.
    """

    def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> torch.Tensor:
        inputs, labels, *uniforms = batch
        logits = model(inputs)
        if sample:
            with torch.no_grad():
                labels = (ClassificationTask().sample_targets(logits, uniforms[0]) if uniforms
                          else torch.multinomial(logits.softmax(dim=1), 1)[:, 0])
        return F.cross_entropy(logits, labels, reduction="sum")

    def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
        return self.compute_train_loss(batch, model)


def kronfluence_scores(model: nn.Module, fisher: str, data: tuple[torch.Tensor, ...],
                       self_influence: bool = False, seed: int = 0,
                       xaibench_draws: bool = False) -> dict[float | None, torch.Tensor]:
    """kronfluence's EK-FAC pairwise scores (Q, N) or self-influence (N,) per damping.

    ``xaibench_draws``: the true Fisher's labels from one row of uniforms per example (``torch.rand``
    seeded with ``seed``, xaibench's sampling rule), the same draw in both fitting passes: the control
    for sharing draws between the passes.
    """
    x, y, xq, yq = data
    uniforms = torch.rand(len(x), CLASSES, generator=torch.Generator().manual_seed(seed))
    train = TensorDataset(x, y, uniforms) if xaibench_draws else TensorDataset(x, y)
    queries = TensorDataset(xq, yq)
    torch.manual_seed(seed)  # kronfluence's own draws come from the global generator
    with tempfile.TemporaryDirectory(prefix="kronfluence_") as directory:
        task = DigitsTask()
        analyzer = Analyzer("quality", prepare_model(copy.deepcopy(model), task), task, cpu=True,
                            log_level=logging.WARNING, disable_tqdm=True, output_dir=directory)
        analyzer.fit_all_factors("ekfac", train, per_device_batch_size=128,
                                 factor_args=FactorArguments(use_empirical_fisher=fisher == "empirical"))
        out = {}
        for i, damping in enumerate(DAMPINGS):
            arguments = ScoreArguments(damping_factor=damping)
            if self_influence:
                analyzer.compute_self_scores(f"self{i}", "ekfac", train, per_device_train_batch_size=128,
                                             score_args=arguments)
                out[damping] = analyzer.load_self_scores(f"self{i}")["all_modules"]
            else:
                analyzer.compute_pairwise_scores(f"pairs{i}", "ekfac", queries, train,
                                                 per_device_query_batch_size=QUERIES,
                                                 per_device_train_batch_size=128, score_args=arguments)
                out[damping] = analyzer.load_pairwise_scores(f"pairs{i}")["all_modules"]
    return out


# ---------------------------------------------------------------------------------------------
# 1. linear datamodeling score


def lds(scores: torch.Tensor, rows: torch.Tensor, losses: torch.Tensor) -> np.ndarray:
    """Per query: Spearman(-predicted subset score, measured query loss) over the subset models."""
    masks = torch.zeros(len(rows), TRAIN, dtype=torch.float64).scatter_(1, rows, 1.0)
    predicted = (masks @ scores.double().T).numpy()  # (models, queries)
    measured = losses.numpy()
    return np.array([spearmanr(-predicted[:, q], measured[:, q])[0] for q in range(scores.shape[0])])


def scored_configs(model: nn.Module, data: tuple[torch.Tensor, ...],
                   strategies: list[str]) -> list[dict[str, Any]]:
    """Scores of every library, strategy, Fisher and damping, with the seconds of each fit + scoring."""
    configs = []
    for fisher in FISHERS:
        for library, strategy in [("xaibench", s) for s in strategies] + [("kronfluence", "ekfac")]:
            start = time.perf_counter()
            by_damping = (xaibench_scores(model, FitConfig(strategy=strategy, fisher=fisher), data)
                          if library == "xaibench" else kronfluence_scores(model, fisher, data))
            seconds = time.perf_counter() - start
            configs += [{"library": library, "strategy": strategy, "fisher": fisher, "damping": damping,
                         "seconds": seconds, "scores": scores} for damping, scores in by_damping.items()]
    return configs


def lds_summary(scores: torch.Tensor, rows: torch.Tensor, losses: dict[str, torch.Tensor]) -> dict[str, Any]:
    """LDS mean, its standard error over queries and the per-query values, for each series of models."""
    out: dict[str, Any] = {}
    for init, measured in losses.items():
        per_query = lds(scores, rows, measured)
        out[f"lds_{init}"] = float(per_query.mean())
        out[f"lds_{init}_se"] = float(per_query.std(ddof=1) / np.sqrt(len(per_query)))
        out[f"lds_{init}_per_query"] = per_query.tolist()
    return out


def fisher_seed_spread(model: nn.Module, data: tuple[torch.Tensor, ...], rows: torch.Tensor,
                       losses: dict[str, torch.Tensor], seeds: int) -> list[dict[str, Any]]:
    """EK-FAC true-Fisher LDS under ``seeds`` draws of the Fisher's labels: xaibench, kronfluence, and
    kronfluence fed one draw shared by both passes (each with its Pearson r against xaibench's scores).

    A near-memorising model almost always draws the data's own label; the rare other draws, whose
    gradients are large, dominate the true Fisher, so one draw of labels is a noisy estimate of it,
    and whether the two fitting passes share their draws or not shows.
    """
    out = []
    for seed in range(seeds):
        runs = {"xaibench": xaibench_scores(model, FitConfig(fisher="true", seed=seed), data),
                "kronfluence": kronfluence_scores(model, "true", data, seed=seed),
                XAIBENCH_DRAWS: kronfluence_scores(model, "true", data, seed=seed, xaibench_draws=True)}
        for library, by_damping in runs.items():
            out += [{"library": library, "seed": seed, "damping": damping,
                     "pearson_vs_xaibench": float(pearsonr(scores.flatten(),
                                                           runs["xaibench"][damping].flatten())[0]),
                     **{k: v for k, v in lds_summary(scores, rows, losses).items() if "per_query" not in k}}
                    for damping, scores in by_damping.items()]
    return out


def fisher_draws(model: nn.Module, data: tuple[torch.Tensor, ...], rows: torch.Tensor,
                 losses: dict[str, torch.Tensor], draws: list[int]) -> list[dict[str, Any]]:
    """xaibench's EK-FAC true-Fisher LDS with K label draws per example, for each K in ``draws``."""
    out = []
    for k in draws:
        start = time.perf_counter()
        by_damping = xaibench_scores(model, FitConfig(fisher="true"), data, draws=k)
        seconds = time.perf_counter() - start
        out += [{"draws": k, "damping": damping, "seconds": seconds,
                 **{key: v for key, v in lds_summary(scores, rows, losses).items() if "per_query" not in key}}
                for damping, scores in by_damping.items()]
    return out


def heuristic_dampings(model: nn.Module, data: tuple[torch.Tensor, ...]) -> dict[str, dict[str, float]]:
    """0.1 x mean eigenvalue per module (what damping=None uses) of EK-FAC, per Fisher."""
    x, y, _, _ = data
    return {fisher: Preconditioner(fit_factors(model, ClassificationTask(), x, y,
                                               FitConfig(strategy="ekfac", fisher=fisher)), None).damping
            for fisher in FISHERS}


def loss_spread(losses: torch.Tensor) -> float:
    """Mean over queries of the standard deviation of the query loss across models."""
    return float(losses.std(dim=0).mean())


def lds_study(models: int, strategies: list[str], seeds: int, draws: list[int]) -> dict[str, Any]:
    """Train the full-data model and both series of subset models; the LDS of every configuration."""
    x, y, xq, yq = digits()
    data = (x, y, xq, yq)
    start = time.perf_counter()
    full = train(initial_params([0]), x, y, torch.arange(TRAIN)[None])
    rows = subsets(models, SUBSET_SEED)
    same = train(initial_params([0] * models), x, y, rows)
    seeded = train(initial_params(list(range(1, models + 1))), x, y, rows)
    noise = train(initial_params(list(range(1, INIT_NOISE_MODELS + 1))), x, y,
                  rows[:1].expand(INIT_NOISE_MODELS, -1))
    train_seconds = time.perf_counter() - start
    losses = {"same": per_example_losses(same, xq, yq), "seeded": per_example_losses(seeded, xq, yq)}
    model = module(full, 0)
    configs = scored_configs(model, data, strategies)
    reference = {(c["fisher"], c["damping"]): c["scores"] for c in configs if c["library"] == "kronfluence"}
    for config in configs:
        scores = config.pop("scores")
        config.update(lds_summary(scores, rows, losses))
        if config["strategy"] == "ekfac" and config["library"] == "xaibench":
            kron = reference[(config["fisher"], config["damping"])]
            config["pearson_vs_kronfluence"] = float(pearsonr(scores.flatten(), kron.flatten())[0])
    full_losses = per_example_losses(full, torch.cat([x, xq]), torch.cat([y, yq]))[0]
    return {
        "models": models, "train_seconds": train_seconds,
        "full_model": {"train_loss": float(full_losses[:TRAIN].mean()),
                       "query_loss": float(full_losses[TRAIN:].mean())},
        "query_loss_std_across_subsets_same_init": loss_spread(losses["same"]),
        "query_loss_std_across_subsets_seeded_init": loss_spread(losses["seeded"]),
        "query_loss_std_across_inits_one_subset": loss_spread(per_example_losses(noise, xq, yq)),
        "heuristic_damping": heuristic_dampings(model, data),
        "configs": configs,
        "true_fisher_seeds": fisher_seed_spread(model, data, rows, losses, seeds),
        "true_fisher_draws": fisher_draws(model, data, rows, losses, draws),
    }


# ---------------------------------------------------------------------------------------------
# 2. mislabel detection


def flip_labels(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with 10% flipped to a uniformly drawn other class (seed FLIP_SEED), and the flipped indices."""
    generator = torch.Generator().manual_seed(FLIP_SEED)
    flipped = torch.randperm(len(y), generator=generator)[:int(FLIP_FRACTION * len(y))]
    shift = torch.randint(1, CLASSES, (len(flipped),), generator=generator)
    corrupted = y.clone()
    corrupted[flipped] = (y[flipped] + shift) % CLASSES
    return corrupted, flipped


def found(ranking_scores: torch.Tensor, flipped: torch.Tensor, fraction: float) -> float:
    """Fraction of the flipped examples among the top ``fraction`` of examples by score."""
    top = ranking_scores.argsort(descending=True)[:int(fraction * len(ranking_scores))]
    return float(torch.isin(flipped, top).float().mean())


def mislabel_study(strategies: list[str]) -> dict[str, Any]:
    """Rank the corrupted training set by self-influence, by loss and at random; flipped found in top k."""
    x, y, xq, yq = digits()
    corrupted, flipped = flip_labels(y)
    params = train(initial_params([0]), x, corrupted, torch.arange(TRAIN)[None])
    model, data = module(params, 0), (x, corrupted, xq, yq)
    losses = per_example_losses(params, x, corrupted)[0]
    rankings: list[dict[str, Any]] = [{"ranking": "loss", "damping": None, "scores": losses}]
    for strategy in strategies:
        by_damping = xaibench_scores(model, FitConfig(strategy=strategy), data, self_influence=True)
        dampings = DAMPINGS[:1] if strategy == "identity" else DAMPINGS  # identity ignores the damping
        rankings += [{"ranking": f"xaibench {strategy}", "damping": d, "scores": by_damping[d]}
                     for d in dampings]
    by_damping = kronfluence_scores(model, "true", data, self_influence=True)
    rankings += [{"ranking": "kronfluence ekfac", "damping": d, "scores": s} for d, s in by_damping.items()]
    for row in rankings:
        scores = row.pop("scores")
        row.update({"top10": found(scores, flipped, 0.1), "top20": found(scores, flipped, 0.2),
                    "spearman_vs_loss": float(spearmanr(scores.numpy(), losses.numpy())[0])})
    expected = {"ranking": "random (expected)", "damping": None, "top10": 0.1, "top20": 0.2}
    spread = {f"top{round(100 * k)}": float(hypergeom(TRAIN, len(flipped), int(k * TRAIN)).std())
              / len(flipped) for k in (0.1, 0.2)}
    with torch.no_grad():
        fitted = model(x).argmax(1) == corrupted
    return {"flipped": len(flipped), "random_std": spread, "rankings": [expected, *rankings],
            "fitted_flipped": float(fitted[flipped].float().mean()),
            "fitted_all": float(fitted.float().mean())}


# ---------------------------------------------------------------------------------------------
# report


def damping_name(damping: float | None) -> str:
    return "0.1 x mean" if damping is None else f"{damping:g}"


def print_tables(report: dict[str, Any]) -> None:
    """Every table of the report, as markdown."""
    study = report["lds"]
    print_lds(study)
    print_seed_spread(study["true_fisher_seeds"])
    print_draws(study["true_fisher_draws"])
    for fisher, dampings in study["heuristic_damping"].items():
        print(f"EK-FAC {fisher} Fisher, 0.1 x mean eigenvalue per module: "
              + ", ".join(f"{name} {value:.2e}" for name, value in dampings.items()))
    print()
    print_mislabel(report["mislabel"])


def print_lds(study: dict[str, Any]) -> None:
    """The LDS of every configuration against both series of subset models, and the loss spreads."""
    print(f"LDS over {study['models']} subset models of 500 (mean over {QUERIES} queries +- standard "
          f"error); full-data model: train loss {study['full_model']['train_loss']:.4f}, query loss "
          f"{study['full_model']['query_loss']:.4f}; s = seconds of one fit + scoring at both dampings\n")
    print("| library | strategy | fisher | damping | LDS same init | LDS seeded init | r vs kronfluence "
          "| s |")
    print("|---|---|---|---|---|---|---|---|")
    for c in study["configs"]:
        r = f"{c['pearson_vs_kronfluence']:.4f}" if "pearson_vs_kronfluence" in c else "-"
        print(f"| {c['library']} | {c['strategy']} | {c['fisher']} | {damping_name(c['damping'])} | "
              f"{c['lds_same']:.3f} +- {c['lds_same_se']:.3f} | {c['lds_seeded']:.3f} +- "
              f"{c['lds_seeded_se']:.3f} | {r} | {c['seconds']:.2f} |")
    print(f"\nquery-loss std (mean over queries): across subsets, same init "
          f"{study['query_loss_std_across_subsets_same_init']:.4f}; across subsets, seeded init "
          f"{study['query_loss_std_across_subsets_seeded_init']:.4f}; across {INIT_NOISE_MODELS} inits on "
          f"one subset {study['query_loss_std_across_inits_one_subset']:.4f}\n")


def print_draws(rows: list[dict[str, Any]]) -> None:
    """xaibench's EK-FAC true-Fisher LDS against the number of label draws per example."""
    print("xaibench EK-FAC, true Fisher, K label draws per example (training set repeated K times for "
          "the fit; seed 0)\n")
    print("| K | damping | LDS same init | LDS seeded init | fit + score s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['draws']} | {damping_name(r['damping'])} | {r['lds_same']:.3f} +- "
              f"{r['lds_same_se']:.3f} | {r['lds_seeded']:.3f} +- {r['lds_seeded_se']:.3f} | "
              f"{r['seconds']:.2f} |")
    print()


def print_mislabel(mislabel: dict[str, Any]) -> None:
    """Flipped labels found in the top 10% and 20% of each ranking."""
    print(f"Mislabel detection: {mislabel['flipped']} of {TRAIN} labels flipped; the corrupted model fits "
          f"{mislabel['fitted_flipped']:.0%} of the flipped labels ({mislabel['fitted_all']:.0%} of all); "
          f"random std: top 10% {mislabel['random_std']['top10']:.3f}, top 20% "
          f"{mislabel['random_std']['top20']:.3f}\n")
    print("| ranking | damping | flipped in top 10% | flipped in top 20% | Spearman vs loss |")
    print("|---|---|---|---|---|")
    for row in mislabel["rankings"]:
        damping = "-" if row["ranking"] in ("loss", "random (expected)", "xaibench identity") \
            else damping_name(row["damping"])
        rho = f"{row['spearman_vs_loss']:.3f}" if "spearman_vs_loss" in row else "-"
        print(f"| {row['ranking']} | {damping} | {row['top10']:.2f} | {row['top20']:.2f} | {rho} |")


def print_seed_spread(rows: list[dict[str, Any]]) -> None:
    """EK-FAC true-Fisher LDS over the label-sampling seeds: mean +- std (min..max), library x damping."""
    seeds = len({r["seed"] for r in rows})
    print(f"EK-FAC, true Fisher, over {seeds} draws of the Fisher's labels (seeds 0..{seeds - 1}): "
          "LDS mean +- std (min..max)\n")
    print("| library | damping | LDS same init | LDS seeded init | r vs xaibench (min) |")
    print("|---|---|---|---|---|")
    for library in ("xaibench", "kronfluence", XAIBENCH_DRAWS):
        for damping in DAMPINGS:
            chosen = [r for r in rows if r["library"] == library and r["damping"] == damping]
            cells = []
            for init in ("same", "seeded"):
                values = np.array([r[f"lds_{init}"] for r in chosen])
                cells.append(f"{values.mean():.3f} +- {values.std(ddof=1):.3f} "
                             f"({values.min():.3f}..{values.max():.3f})")
            r = min(row["pearson_vs_xaibench"] for row in chosen)
            print(f"| {library} | {damping_name(damping)} | {cells[0]} | {cells[1]} | {r:.5f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--models", type=int, help="subset models for the LDS (default 64; 16 with --quick)")
    parser.add_argument("--fisher-seeds", type=int,
                        help="true-Fisher label draws for the EK-FAC spread (default 5; 2 with --quick)")
    parser.add_argument("--draws", help="true-Fisher label draws per example, comma-separated "
                                        "(default 1,4,16,64; 1,4 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="16 models, 2 Fisher seeds, draws 1,4 and no exact strategy (a smoke run)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "influence_quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models or (16 if args.quick else 64)
    seeds = args.fisher_seeds or (2 if args.quick else 5)
    draws = [int(k) for k in (args.draws or ("1,4" if args.quick else "1,4,16,64")).split(",")]
    strategies = ["identity", "diagonal", "kfac", "ekfac"] + ([] if args.quick else ["exact"])
    start = time.perf_counter()
    report = {
        "benchmark": "influence_quality", "threads": torch.get_num_threads(), "quick": args.quick,
        "recipe": {"hidden": HIDDEN, "optimiser": "adam", "lr": LR, "steps": STEPS, "batch": "full",
                   "train": TRAIN, "queries": QUERIES, "subset_seed": SUBSET_SEED, "flip_seed": FLIP_SEED},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "xaibench": xaibench.__version__, "kronfluence": kronfluence.__version__},
        "lds": lds_study(models, strategies, seeds, draws),
        "mislabel": mislabel_study(["identity", "kfac", "ekfac"]),
    }
    report["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)
    print(f"\ntotal {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
