"""Concept extraction and Sobol importance against their floors (issue 6, "Performance").

Targets: (1) the extraction step costs at most 1.2x the scikit-learn factorisation alone plus one
batched pass of g over the patches; (2) Sobol importance is batched over designs.

Workload, for the digits and shapes CNNs (sample_models/*.pt), split at their default layer
(``default_layer``: relu3 / relu4): the first ``--n`` training images of class ``--class`` (as
``xaibench concepts`` picks them), normalised; CRAFT patches (patch size 0.25: 25 crops per image,
each resized to the input size), k = 10 concepts, seed 0, no batch size (one call, the CLI's default).

Extraction, per decomposition (nmf, kmeans, pca, sparse, semi_nmf; ``--methods``):
  activations  ``split.activations(split, x, "patches")``: build the crops, g, average over space;
  fit          ``DECOMPOSITIONS.get(name)().fit(rows, k, seed)`` on those rows;
  xaibench     activations + fit (timed as two calls in the same round; ``extract`` makes exactly
               these two calls in sequence, with a sign check between them);
  g            one batched pass ``split.g(crops)`` under ``torch.no_grad`` over the same crops, built
               before timing;
  sklearn      scikit-learn's estimator with the settings of xaibench's class, on a float64 numpy copy
               of the same rows made before timing: NMF(init="nndsvda", solver="cd", max_iter=200,
               tol=1e-4), KMeans(n_init=1, max_iter=300), PCA, DictionaryLearning (same alpha, tol,
               solvers) on the unit-normed rows xaibench factorises; semi_nmf has no scikit-learn
               counterpart (reported without a ratio);
  floor        g + sklearn; ratio = xaibench / floor (target <= 1.2).
  crops        building the crops alone (part of ``activations``, not of the floor), for the record.
Diagnostic, not part of the target: ``activations`` and g again in chunks of ``--g-batch`` crops
(``activations(..., batch_size=B)``), since one call over all crops spends much of its time in page
faults on freshly mapped memory (see RESULTS.md).

Sobol, on the images' spatial codes (the nmf bank's NNLS codes of every position of g(x), as
``extract`` encodes them; (N, 8, 8, 10)), target = the class, 32 designs (N * 32 * (k + 1) head rows):
  xaibench     ``IMPORTANCES.get("sobol")(head, codes, target)`` end to end (design, grid, head,
               Jansen estimator), head = ``concept_head`` (decode, then h);
  floor        the same rows, built before timing, through the head in one call under no_grad, plus
               the target gather;
  loop         what "not batched over designs" costs: the same design, then one head call of N rows
               per mask (352 calls), then the same estimator (checked equal to xaibench's result);
  @B           xaibench (``batch_size=B``) and the floor again in chunks of ``--sobol-batch`` rows.

Rounds are interleaved, each in a seeded shuffled order (see ``rounds``), after one warm-up round.
Reported: the median of ``--repeats`` rounds for each run and, in brackets, the median of the per-round
ratios. scikit-learn's and numpy's thread pools are limited to ``--threads`` like torch's.

    .venv/bin/python benchmarks/concepts_cost.py [--threads 2] [--repeats 5] [--quick]

``--quick``: 2 rounds, nmf only. Writes benchmarks/results/concepts_cost.json and prints markdown
tables. Cost: about 2 minutes with 2 threads on a quiet 2-core machine (3 minutes with 1 thread; 8-11
minutes when another job holds the cores); ``--quick`` under a minute. The shapes CNN's g over 1,600
crops of 3x64x64, sparse dictionary learning and semi-NMF take most of it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from threadpoolctl import threadpool_limits

import xaibench
from xaibench.concepts.base import DECOMPOSITIONS, IMPORTANCES
from xaibench.concepts.extract import concept_head, encode_maps
from xaibench.concepts.importance import jansen_total_indices, sobol_design
from xaibench.concepts.split import (
    Split,
    activations,
    crops,
    default_layer,
    feature_maps,
    split_model,
)
from xaibench.data import load_data
from xaibench.data.prepare import normalise
from xaibench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits_cnn", "shapes_cnn")
METHODS = ("nmf", "kmeans", "pca", "sparse", "semi_nmf")
EXTRACTION_TARGET = 1.2
PATCH_SIZE = 0.25
SEED = 0


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def workload(name: str, class_index: int, n: int) -> tuple[Split, torch.Tensor, torch.Tensor]:
    """The model split at its default layer, its first ``n`` training images of the class, the targets."""
    loaded = load_model(ROOT / "sample_models" / f"{name}.pt")
    model = loaded.module.eval()
    data = load_data(f"{loaded.meta.dataset}:train")
    x = normalise(data.x[data.y == class_index][:n].float(), loaded.meta)
    split = split_model(model, default_layer(model), x[:4])
    return split, x, torch.full((x.shape[0],), class_index, dtype=torch.long)


def sklearn_fit(method: str, rows: np.ndarray, k: int) -> Callable[[], object] | None:
    """scikit-learn's estimator for ``method`` with xaibench's settings, as a call on ``rows`` (float64);
    None for semi_nmf, which scikit-learn lacks."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import NMF, PCA, DictionaryLearning

    settings = DECOMPOSITIONS.get(method)()
    if method == "nmf":
        init = "nndsvda" if k <= min(rows.shape) else "random"
        return lambda: _quiet(NMF(n_components=k, init=init, solver="cd", max_iter=settings.max_iter,
                                  tol=settings.tol, random_state=SEED).fit_transform, rows)
    if method == "kmeans":
        return lambda: KMeans(n_clusters=k, n_init=1, max_iter=settings.max_iter,
                              random_state=SEED).fit_predict(rows)
    if method == "pca":
        return lambda: PCA(n_components=k, random_state=SEED).fit_transform(rows)
    if method == "sparse":
        unit = rows / np.where((norms := np.linalg.norm(rows, axis=1, keepdims=True)) > 0, norms, 1.0)
        return lambda: _quiet(DictionaryLearning(
            n_components=k, alpha=settings.alpha, max_iter=settings.max_iter, tol=settings.tol,
            fit_algorithm="cd", transform_algorithm="lasso_cd", transform_alpha=settings.alpha,
            transform_max_iter=settings.lasso_max_iter, random_state=SEED).fit, unit)
    return None


def _quiet(fit: Callable[[np.ndarray], object], rows: np.ndarray) -> object:
    """Call ``fit`` with ConvergenceWarning silenced, as xaibench's classes do."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit(rows)


def chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int | None,
            target: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``fn`` over ``x`` in chunks of ``batch_size`` rows (None: one call) under no_grad; with ``target``
    (rows, 1), only the target column of each output is kept (what an importance estimator reads)."""
    step = batch_size or x.shape[0]
    with torch.no_grad():
        outputs = [fn(x[start:start + step]) for start in range(0, x.shape[0], step)]
    if target is None:
        return outputs
    return [out.gather(1, target[start:start + step]) for out, start in zip(outputs, range(0, x.shape[0], step))]


def extraction_runs(split: Split, x: torch.Tensor, methods: list[str], k: int, g_batch: int
                    ) -> tuple[dict[str, Callable[[], object]], torch.Tensor]:
    """Every timed call of the extraction comparison, by key, and the patch activations. ``g_batch``:
    the chunk size of the diagnostic runs ``activations@B`` and ``g@B``."""
    rows = activations(split, x, "patches", patch_size=PATCH_SIZE)
    patches = crops(x, PATCH_SIZE)
    rows64 = rows.double().numpy()
    runs: dict[str, Callable[[], object]] = {
        "activations": lambda: activations(split, x, "patches", patch_size=PATCH_SIZE),
        "g": lambda: chunked(split.g, patches, None),
        "crops": lambda: crops(x, PATCH_SIZE),
        "activations@B": lambda: activations(split, x, "patches", patch_size=PATCH_SIZE, batch_size=g_batch),
        "g@B": lambda: chunked(split.g, patches, g_batch),
    }
    for method in methods:
        decomposition = DECOMPOSITIONS.get(method)()
        runs[f"fit:{method}"] = lambda d=decomposition: d.fit(rows, k, SEED)
        if (reference := sklearn_fit(method, rows64, k)) is not None:
            runs[f"sklearn:{method}"] = reference
    return runs, rows


def sobol_runs(split: Split, x: torch.Tensor, target: torch.Tensor, rows: torch.Tensor, k: int,
               n_designs: int, batch: int) -> tuple[dict[str, Callable[[], object]], dict[str, Any]]:
    """The xaibench, floor and per-design-loop Sobol calls on the images' spatial nmf codes, xaibench and
    floor also in chunks of ``batch`` rows (``@B``), and facts about the workload (sizes, the loop's
    agreement with xaibench)."""
    bank = DECOMPOSITIONS.get("nmf")().fit(rows, k, SEED).bank
    codes = encode_maps(feature_maps(split, x, None), bank, None)
    head = concept_head(split, bank)
    sobol = IMPORTANCES.get("sobol")
    masks = _sobol_masks(k, n_designs)
    grid = (codes[:, None] * masks.view(1, -1, *(1,) * (codes.ndim - 2), k)).flatten(0, 1)
    grid_target = target.repeat_interleave(masks.shape[0])[:, None]
    runs: dict[str, Callable[[], object]] = {
        "xaibench": lambda: sobol(head, codes, target, generator=torch.Generator().manual_seed(SEED),
                                  n_designs=n_designs),
        "floor": lambda: chunked(head, grid, None, grid_target),
        "loop": lambda: looped_sobol(head, codes, target, n_designs),
        "xaibench@B": lambda: sobol(head, codes, target, batch_size=batch, n_designs=n_designs,
                                    generator=torch.Generator().manual_seed(SEED)),
        "floor@B": lambda: chunked(head, grid, batch, grid_target),
    }
    ours, looped = runs["xaibench"](), runs["loop"]()
    facts = {"codes_shape": list(codes.shape), "designs": n_designs, "head_rows": int(grid.shape[0]),
             "batch": batch, "loop_calls": int(masks.shape[0]),
             "loop_max_abs_difference": float((ours - looped).abs().max()),
             "batch_max_abs_difference": float((ours - runs["xaibench@B"]()).abs().max())}
    return runs, facts


def _sobol_masks(k: int, n_designs: int) -> torch.Tensor:
    """The (n_designs * (k + 1), k) masks xaibench's sobol draws with seed ``SEED``: A, then every C_i."""
    a, b = sobol_design(k, n_designs, torch.Generator().manual_seed(SEED))
    c = torch.where(torch.eye(k, dtype=torch.bool)[:, None, :], b[None], a[None])
    return torch.cat([a, c.reshape(-1, k)])


def looped_sobol(head: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor, target: torch.Tensor,
                 n_designs: int) -> torch.Tensor:
    """Sobol total indices with one head call per mask (N rows each): the unbatched baseline."""
    k = codes.shape[-1]
    masks = _sobol_masks(k, n_designs)
    with torch.no_grad():
        scores = torch.stack([head(codes * mask).gather(1, target[:, None]).squeeze(1) for mask in masks], 1)
    return jansen_total_indices(scores[:, :n_designs], scores[:, n_designs:].view(-1, k, n_designs))


def rounds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every run in ``repeats`` rounds, after one warm-up round (not kept). Each round runs
    the calls in a fresh seeded shuffle: a call that follows one that used another thread pool (a
    scikit-learn fit after OpenBLAS or torch's OpenMP work) pays a hand-off of up to 0.1 s on two cores,
    so a fixed order would charge it to whichever call always comes second."""
    for run in runs.values():
        run()
    order, shuffle = list(runs), random.Random(SEED).shuffle
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        shuffle(order)
        for key in order:
            times[key].append(timed(runs[key]))
    return times


def ratio(times: dict[str, list[float]], numerator: list[str], denominator: list[str]) -> dict[str, float]:
    """sum of medians / sum of medians, and the median over rounds of the per-round ratio of sums."""
    median = sum(statistics.median(times[key]) for key in numerator) / sum(
        statistics.median(times[key]) for key in denominator)
    per_round = [sum(times[key][i] for key in numerator) / sum(times[key][i] for key in denominator)
                 for i in range(len(times[numerator[0]]))]
    return {"of_medians": median, "median_per_round": statistics.median(per_round)}


def extraction_rows(model: str, times: dict[str, list[float]], methods: list[str], n_rows: int
                    ) -> list[dict[str, Any]]:
    """One result per decomposition: medians, floor, ratio."""
    med = {key: statistics.median(values) for key, values in times.items()}
    out = []
    for method in methods:
        reference = f"sklearn:{method}" if f"sklearn:{method}" in times else None
        row: dict[str, Any] = {
            "model": model, "method": method, "rows": n_rows, "activations_seconds": med["activations"],
            "crops_seconds": med["crops"], "fit_seconds": med[f"fit:{method}"], "g_seconds": med["g"],
            "sklearn_seconds": med[reference] if reference else None,
            "xaibench_seconds": med["activations"] + med[f"fit:{method}"],
            "floor_seconds": med["g"] + med[reference] if reference else None,
            "ratio": None, "meets_target": None,
            "all_seconds": {key: times[key] for key in ("activations", "g", "crops", f"fit:{method}")
                            + ((reference,) if reference else ())},
        }
        if reference:
            row["ratio"] = ratio(times, ["activations", f"fit:{method}"], ["g", reference])
            row["fit_ratio"] = ratio(times, [f"fit:{method}"], [reference])
            row["meets_target"] = row["ratio"]["of_medians"] <= EXTRACTION_TARGET
        out.append(row)
    return out


def chunking_row(model: str, times: dict[str, list[float]], batch: int) -> dict[str, Any]:
    """Patch activations and g in one call against chunks of ``batch`` crops (a diagnostic)."""
    med = {key: statistics.median(times[key]) for key in ("activations", "g", "activations@B", "g@B")}
    return {"model": model, "batch": batch, "activations_seconds": med["activations"], "g_seconds": med["g"],
            "activations_chunked_seconds": med["activations@B"], "g_chunked_seconds": med["g@B"],
            "activations_over_g": ratio(times, ["activations"], ["g"]),
            "chunked_activations_over_g": ratio(times, ["activations@B"], ["g@B"]),
            "g_over_chunked_g": ratio(times, ["g"], ["g@B"])}


def sobol_row(model: str, layer: str, facts: dict[str, Any], times: dict[str, list[float]]) -> dict[str, Any]:
    """Medians and ratios of the Sobol runs."""
    med = {key.replace("@B", "_chunked"): statistics.median(values) for key, values in times.items()}
    return {
        "model": model, "layer": layer, **facts, **{f"{key}_seconds": value for key, value in med.items()},
        "xaibench_over_floor": ratio(times, ["xaibench"], ["floor"]),
        "chunked_xaibench_over_floor": ratio(times, ["xaibench@B"], ["floor@B"]),
        "loop_over_floor": ratio(times, ["loop"], ["floor"]),
        "loop_over_xaibench": ratio(times, ["loop"], ["xaibench"]),
        "loop_over_chunked_xaibench": ratio(times, ["loop"], ["xaibench@B"]),
        "all_seconds": times,
    }


def measure(model: str, args: argparse.Namespace, methods: list[str]
            ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Extraction rows (one per method), the chunking diagnostic and the Sobol result for one model."""
    split, x, target = workload(model, args.class_index, args.n)
    runs, rows = extraction_runs(split, x, methods, args.k, args.g_batch)
    times = rounds(runs, args.repeats)
    extraction = extraction_rows(model, times, methods, int(rows.shape[0]))
    sobol, facts = sobol_runs(split, x, target, rows, args.k, args.n_designs, args.sobol_batch)
    return extraction, chunking_row(model, times, args.g_batch), sobol_row(
        model, split.layer, facts, rounds(sobol, args.repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch, BLAS and OpenMP threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds, nmf only")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--class", dest="class_index", type=int, default=0)
    parser.add_argument("--n", type=int, default=64, help="images of the class")
    parser.add_argument("--k", type=int, default=10, help="concepts")
    parser.add_argument("--n-designs", type=int, default=32)
    parser.add_argument("--g-batch", type=int, default=100, help="crops per g call, chunked diagnostic")
    parser.add_argument("--sobol-batch", type=int, default=1024, help="head rows per call, chunked Sobol")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "concepts_cost.json")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.methods = 2, "nmf"
    methods = [m.strip() for m in args.methods.split(",")]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    extraction, chunking, sobol = [], [], []
    with threadpool_limits(limits=args.threads):
        for model in args.models.split(","):
            rows, chunks, result = measure(model.strip(), args, methods)
            extraction += rows
            chunking.append(chunks)
            sobol.append(result)
    report = {
        "benchmark": "concepts_cost", "threads": args.threads, "repeats": args.repeats,
        "class": args.class_index, "k": args.k, "patch_size": PATCH_SIZE, "target": EXTRACTION_TARGET,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "sklearn": sklearn.__version__, "xaibench": xaibench.__version__},
        "extraction": extraction, "chunking": chunking, "sobol": sobol,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)


def _cell(value: dict[str, float] | None) -> str:
    return "n/a" if value is None else f"{value['of_medians']:.3f} [{value['median_per_round']:.3f}]"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_tables(report: dict[str, Any]) -> None:
    """The extraction and Sobol tables in markdown: medians, ratio of medians [median per-round ratio]."""
    print(f"threads {report['threads']}, median of {report['repeats']} rounds, {report['seconds']} s in all\n")
    print("| model | method | rows | activations s | crops s | fit s | g s | sklearn s | xaibench / floor "
          f"| fit / sklearn | <= {report['target']} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["extraction"]:
        verdict = "n/a" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO")
        print(f"| {r['model']} | {r['method']} | {r['rows']} | {r['activations_seconds']:.3f} | "
              f"{r['crops_seconds']:.3f} | {r['fit_seconds']:.3f} | {r['g_seconds']:.3f} | "
              f"{_seconds(r['sklearn_seconds'])} | {_cell(r['ratio'])} | {_cell(r.get('fit_ratio'))} | {verdict} |")
    print("\n| model | crops per call | activations s | g s | activations / g |")
    print("|---|---|---|---|---|")
    for r in report["chunking"]:
        print(f"| {r['model']} | all | {r['activations_seconds']:.3f} | {r['g_seconds']:.3f} | "
              f"{_cell(r['activations_over_g'])} |")
        print(f"| {r['model']} | {r['batch']} | {r['activations_chunked_seconds']:.3f} | "
              f"{r['g_chunked_seconds']:.3f} | {_cell(r['chunked_activations_over_g'])} |")
    print("\n| model | codes | head rows | rows per call | xaibench s | floor s | xaibench / floor | loop s "
          "| loop / floor | loop / xaibench |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in report["sobol"]:
        print(f"| {r['model']} | {tuple(r['codes_shape'])} | {r['head_rows']} | all | {r['xaibench_seconds']:.3f} "
              f"| {r['floor_seconds']:.3f} | {_cell(r['xaibench_over_floor'])} | {r['loop_seconds']:.3f} | "
              f"{_cell(r['loop_over_floor'])} | {_cell(r['loop_over_xaibench'])} |")
        print(f"| {r['model']} | {tuple(r['codes_shape'])} | {r['head_rows']} | {r['batch']} | "
              f"{r['xaibench_chunked_seconds']:.3f} | {r['floor_chunked_seconds']:.3f} | "
              f"{_cell(r['chunked_xaibench_over_floor'])} | {r['loop_seconds']:.3f} | "
              f"n/a | {_cell(r['loop_over_chunked_xaibench'])} |")
    for r in report["sobol"]:
        print(f"\n{r['model']}: loop vs xaibench max |difference| {r['loop_max_abs_difference']:.1e}, "
              f"chunked vs one call {r['batch_max_abs_difference']:.1e}")

if __name__ == "__main__":
    main()
