"""The benchmark job: a suite's grid of cells (one per model: an evaluate run and a meta-evaluate run),
resumable, and one leaderboard across the models.

Layout of the output folder (default runs/benchmark-<suite name>, stable so that a rerun continues):

    suite.json                      the suite as read; marks the folder as a benchmark's
    cells/<name>/evaluate/          an evaluate run (metrics.json, reports, heatmaps)
    cells/<name>/meta/              a meta-evaluate run
    cells/<name>/<kind>.cell.json   the cell's fingerprint, written after its run: the run is reused while
                                    the suite asks for the same thing
    leaderboard.json / .md / .html

A run folder whose fingerprint is missing (a run stopped before it was written) or differs is run again:
its own --overwrite rules apply (only what xaibench wrote is replaced). Under torchrun every process takes
part in each evaluate cell (the rows are spread over the processes); the meta-evaluations and the
leaderboard are computed by the first process while the others wait.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaibench.core import distributed, runs
from xaibench.core.errors import InputError
from xaibench.data.prepare import Selection
from xaibench.jobs import evaluate as evaluate_job
from xaibench.jobs import meta_evaluate as meta_job
from xaibench.jobs import record_checks as records
from xaibench.jobs.suite import CellSpec, Suite, read_suite
from xaibench.metrics.meta_evaluation import MetaParams
from xaibench.models import ModelSource
from xaibench.report.leaderboard import leaderboard, write_leaderboard

SUITE_FILE = "suite.json"
CELLS = "cells"


@dataclass(frozen=True)
class BenchmarkConfig:
    suite: Path
    out: str | None = None
    trust_model: bool = False
    device: str = "auto"
    batch_size: int | None = None
    max_memory: str | None = None


@dataclass(frozen=True)
class BenchmarkResult:
    out: Path
    board: dict[str, Any]
    reused: list[str]
    computed: list[str]
    seconds: float


def run_benchmark(config: BenchmarkConfig, argv: list[str], on_progress: Any = None,
                  on_cell: Any = None) -> BenchmarkResult:
    """Run the suite's missing cells, then write the leaderboard; ``on_cell(name, kind, reused)`` is told
    about each cell as it starts."""
    started = time.perf_counter()
    suite = read_suite(config.suite)
    out = Path(config.out) if config.out else Path("runs") / f"benchmark-{suite.name}"
    _claim(out, suite)
    reused, computed = [], []
    for cell in suite.cells:
        for kind in ("evaluate", "meta"):
            if kind == "meta" and cell.meta is None:
                continue
            tag = f"{cell.name}/{kind}"
            done = _finished(out, cell, kind, suite.seed)
            if on_cell:
                on_cell(cell.name, kind, done)
            if done:
                reused.append(tag)
                continue
            if distributed.world().main:  # a run replaced but not yet recorded must never pass as the old one
                _fingerprint_file(out, cell, kind).unlink(missing_ok=True)
            if kind == "evaluate":
                _evaluate(cell, out, suite.seed, config, argv, on_progress)
            elif distributed.world().main:
                _meta(cell, out, suite.seed, config, argv, on_progress)
            distributed.barrier()
            if distributed.world().main:
                runs.write_json(_fingerprint_file(out, cell, kind), cell.fingerprint(suite.seed, kind))
            distributed.barrier()
            computed.append(tag)
    board = leaderboard(suite.name, _cell_summaries(out, suite))
    if distributed.world().main:
        write_leaderboard(board, out)
    return BenchmarkResult(out, board, reused, computed, time.perf_counter() - started)


def _claim(out: Path, suite: Suite) -> None:
    """Create ``out`` or check that it is this suite's folder (a folder of something else is refused)."""
    marker = out / SUITE_FILE
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise InputError(f"{out} is not empty and holds no {SUITE_FILE}: not a benchmark folder; choose another --out")
    if marker.is_file():
        found = runs.read_json(marker)
        if not isinstance(found, dict) or found.get("name") != suite.name:
            raise InputError(f"{out} holds another suite's results; choose another --out")
    if distributed.world().main:
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json(marker, {"name": suite.name, "seed": suite.seed,
                                 "cells": [{"name": c.name, **c.fingerprint(suite.seed, "evaluate"),
                                            "meta": c.fingerprint(suite.seed, "meta")["meta"]} for c in suite.cells]})
    distributed.barrier()


def _cell_dir(out: Path, cell: CellSpec, kind: str) -> Path:
    return out / CELLS / cell.name / kind


def _fingerprint_file(out: Path, cell: CellSpec, kind: str) -> Path:
    return out / CELLS / cell.name / f"{kind}.cell.json"


def _finished(out: Path, cell: CellSpec, kind: str, seed: int) -> bool:
    path = _fingerprint_file(out, cell, kind)
    if not path.is_file() or not (_cell_dir(out, cell, kind) / runs.RUN_FILE).is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(cell.fingerprint(seed, kind)))
    except (OSError, ValueError):
        return False


def _source(cell: CellSpec, config: BenchmarkConfig) -> ModelSource:
    return ModelSource(str(cell.path), trust_model=config.trust_model)


def _evaluate(cell: CellSpec, out: Path, seed: int, config: BenchmarkConfig, argv: list[str],
              on_progress: Any) -> None:
    job = evaluate_job.EvaluateConfig(
        source=_source(cell, config), methods=cell.methods, metrics=cell.metrics,
        selection=Selection(data=cell.data, n=cell.n), params=cell.params, reference=cell.reference,
        out=str(_cell_dir(out, cell, "evaluate")),
        overwrite=True, seed=seed, batch_size=config.batch_size, max_memory=config.max_memory, device=config.device)
    evaluate_job.evaluate(job, argv, on_progress=on_progress)


def _meta(cell: CellSpec, out: Path, seed: int, config: BenchmarkConfig, argv: list[str],
          on_progress: Any) -> None:
    assert cell.meta is not None
    job = meta_job.MetaEvaluateConfig(
        source=_source(cell, config), methods=cell.methods, metrics=cell.meta.metrics,
        selection=Selection(data=cell.data, n=cell.meta.n, target="pred"), params=cell.params,
        reference=cell.reference,
        meta=MetaParams(perturbations=cell.meta.perturbations), out=str(_cell_dir(out, cell, "meta")),
        overwrite=True, seed=seed, batch_size=config.batch_size, max_memory=config.max_memory, device=config.device)
    meta_job.run_meta_evaluation(job, argv, on_progress=on_progress)


def _cell_summaries(out: Path, suite: Suite) -> list[dict[str, Any]]:
    """Per cell: its name, the evaluate run's metrics.json and the meta-evaluate run's summary (or None)."""
    found = []
    for cell in suite.cells:
        path = _cell_dir(out, cell, "evaluate") / evaluate_job.METRICS_FILE
        evaluate = records.evaluate_summary(runs.read_json(path), path)
        meta_path = _cell_dir(out, cell, "meta") / meta_job.RESULT_FILE
        meta = _meta_scores(meta_path) if cell.meta is not None and meta_path.is_file() else None
        found.append({"name": cell.name, "evaluate": evaluate, "meta": meta})
    return found


def _meta_scores(path: Path) -> dict[str, Any]:
    """The scores of a meta_evaluation.json, checked: metric -> {mc, resilience, reactivity} numbers or null."""
    summary = runs.read_json(path)
    scores = summary.get("scores") if isinstance(summary, dict) else None
    if not isinstance(scores, dict):
        raise InputError(f"{path} is not a meta-evaluation (no scores)")
    checked = {}
    for metric, values in scores.items():
        if not isinstance(values, dict):
            raise InputError(f"{path}: scores.{str(metric)[:40]} is not a mapping")
        checked[str(metric)] = {key: _number_or_none(values.get(key), path) for key in ("mc", "resilience", "reactivity")}
    return {"scores": checked}


def _number_or_none(value: Any, path: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{path}: a meta-evaluation score is not a number")
    return float(value)
