"""The meta-evaluate job: how far each metric can be trusted on a model and its data (MetaQuantus's tests,
``xaibench.metrics.meta_evaluation``), written as a run with a report ranking the metrics."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from xaibench.attribution import parse_params
from xaibench.core import runs
from xaibench.core.devices import device_record, resolve_device
from xaibench.core.errors import InputError
from xaibench.core.memory import RowPlan
from xaibench.core.progress import advance
from xaibench.data.prepare import Prepared, Selection, prepare
from xaibench.jobs.evaluate import method_explainer, metric_records
from xaibench.jobs.evaluate_plan import GROUND_TRUTH, Plan, make_plan
from xaibench.jobs.explain import data_record, model_record
from xaibench.metrics import METRICS
from xaibench.metrics.base import Explainer
from xaibench.metrics.meta_evaluation import (
    TESTS,
    MetaParams,
    MetricUnderTest,
    meta_evaluate,
)
from xaibench.models import LoadedModel, ModelSource
from xaibench.report.meta_report import write_meta_reports

DEFAULT_SAMPLES = 16
RESULT_FILE = "meta_evaluation.json"


@dataclass(frozen=True)
class MetaEvaluateConfig:
    """What ``xaibench meta-evaluate`` was asked: the metrics to judge, the methods whose explanations
    they judge, the data, and the perturbation draws (``meta``)."""

    source: ModelSource
    methods: tuple[str, ...] = ("saliency", "integrated_gradients", "gradient_shap")
    metrics: str = "faithfulness"
    selection: Selection = field(default_factory=Selection)
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    reference: str | None = None  # only ground_truth: a method's reference would move with each perturbation
    meta: MetaParams = field(default_factory=MetaParams)
    out: str | None = None
    overwrite: bool = False
    seed: int = 0
    batch_size: int | None = None
    max_memory: str | None = None
    device: str = "auto"


@dataclass(frozen=True)
class MetaEvaluateResult:
    run_dir: Path
    summary: dict[str, Any]
    seconds: float


def run_meta_evaluation(config: MetaEvaluateConfig, argv: list[str], on_progress: Any = None) -> MetaEvaluateResult:
    """Run ``config`` and write its run directory (run.json, meta_evaluation.json, report.md, report.html)."""
    started = time.perf_counter()
    if len(config.methods) < 2:
        raise InputError("meta-evaluate needs at least two --methods: inter-consistency compares their ranking")
    if config.meta.perturbations < 1:
        raise InputError("--perturbations must be at least 1")
    if config.reference not in (None, GROUND_TRUTH):
        raise InputError(f"meta-evaluate takes --reference {GROUND_TRUTH} only (the data's known attributions)")
    plan = make_plan(config.methods, config.metrics, config.params, config.reference, [])
    out = Path(config.out) if config.out else runs.default_run_dir("meta-evaluate", config.source.stem)
    runs.check_destination(out, config.overwrite)
    device = resolve_device(config.device)
    memory = RowPlan.of(config.batch_size, config.max_memory, device)
    loaded = config.source.load(device)
    selection = config.selection if config.selection.n or config.selection.indices else replace(
        config.selection, n=DEFAULT_SAMPLES)
    prepared = prepare(loaded, selection, memory)
    batch_size = memory.rows(loaded.module, prepared.inputs[:1])
    plan = plan.applicable(prepared.meta.modality, prepared.data.masks is not None,
                           prepared.data.ground_truth is not None)
    explainers = {name: method_explainer(name, plan.params.get(name, {}), config.seed, prepared, loaded, batch_size)
                  for name in plan.methods}
    reference = None if plan.reference is None else prepared.data.ground_truth.to(prepared.inputs.device)
    metrics = {name: _metric(name, plan.params.get(name, {}), prepared, explainers, reference, config.seed,
                             batch_size) for name in plan.metrics}
    steps = len(TESTS) * config.meta.perturbations * len(explainers)
    inputs = prepared.inputs
    with on_progress("perturbations", steps) if on_progress else nullcontext():
        result = meta_evaluate(loaded.module, inputs, prepared.targets, explainers, metrics, params=config.meta,
                               seed=config.seed, batch_size=batch_size,
                               value_range=(float(inputs.min()), float(inputs.max())), on_step=lambda: advance(1))
    summary = _summary(plan, result, prepared, loaded, config)
    with runs.staged_dir(out, config.overwrite) as staging:
        runs.write_json(staging / RESULT_FILE, summary)
        write_meta_reports(summary, staging)
        record = runs.run_record("meta-evaluate", argv, _config_dict(config), config.seed)
        record.update(model=model_record(loaded, prepared), data=data_record(prepared), methods=plan.methods,
                      metrics=list(plan.metrics), memory=memory.record(),
                      device=device_record(config.device, device),
                      timings={"total": time.perf_counter() - started},
                      outputs=[RESULT_FILE, "report.md", "report.html"])
        runs.write_json(staging / runs.RUN_FILE, record)
    return MetaEvaluateResult(out, summary, time.perf_counter() - started)


def _metric(name: str, params: dict[str, str], prepared: Prepared, explainers: dict[str, Explainer],
            reference: torch.Tensor | None, seed: int, batch_size: int) -> MetricUnderTest:
    """The registered metric as a scorer: the same draws (a generator seeded with ``seed``) for every call."""
    metric = METRICS.get(name)()
    masks = None if prepared.data.masks is None else prepared.data.masks.to(prepared.inputs.device)

    def score(model: torch.nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
              method: str) -> torch.Tensor:
        return metric.compute(model, inputs, maps, target=target, masks=masks, explainer=explainers[method],
                              reference=reference, batch_size=batch_size,
                              generator=torch.Generator().manual_seed(seed), **params).scores

    parsed = parse_params(metric.Params, params, owner=f"metric {name!r}")
    return MetricUnderTest(score=score, higher_is_better=metric.direction(parsed))


def _summary(plan: Plan, result: dict[str, Any], prepared: Prepared, loaded: LoadedModel,
             config: MetaEvaluateConfig) -> dict[str, Any]:
    metrics = metric_records(plan)
    ranking = sorted(plan.metrics, key=lambda n: (-(result["scores"][n]["mc"] or -1.0), n))
    data = data_record(prepared)
    return {"title": f"{Path(loaded.path).stem} · {data['name']}:{data['split']} · {data['samples']} samples",
            "model": model_record(loaded, prepared), "data": data, "methods": plan.methods,
            "metrics": metrics, "skipped": plan.skipped, "perturbations": asdict(config.meta),
            "ranking": ranking, "scores": result["scores"], "tests": result["tests"], "seed": config.seed,
            "versions": runs.versions()}


def _config_dict(config: MetaEvaluateConfig) -> dict[str, Any]:
    return {**asdict(config), "methods": list(config.methods)}
