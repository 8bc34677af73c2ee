"""The evaluate job: attributions of several methods scored by many metrics, written as a run with reports.

Every (method, metric) pair sees the same random draws (a fresh generator seeded with the run's seed),
so differences between methods are not sampling noise of the perturbations.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from xaibench.attribution import METHODS, parse_params
from xaibench.attribution.draws import sampled_shard
from xaibench.core import distributed, runs
from xaibench.core.devices import device_record, on_cpu, resolve_device
from xaibench.core.errors import IncompatibleError
from xaibench.core.memory import RowPlan
from xaibench.core.method_notes import collecting
from xaibench.core.precision import autocast, check_precision
from xaibench.core.progress import advance, reporting
from xaibench.data.prepare import Prepared, Selection, prepare
from xaibench.jobs.evaluate_plan import GROUND_TRUTH, Plan, make_plan
from xaibench.jobs.explain import (
    data_record,
    heatmap_spec,
    model_record,
    render_run_heatmaps,
    supplied_params,
    write_attached,
)
from xaibench.jobs.reused_runs import Reused, reused_attributions, reused_selection
from xaibench.metrics import METRICS
from xaibench.metrics.base import Explainer
from xaibench.metrics.summary import summarise
from xaibench.models import LoadedModel, ModelSource
from xaibench.report import HeatmapStyle
from xaibench.report.comparison import rank_methods, write_reports
from xaibench.report.metric_agreement import agreement

DEFAULT_SAMPLES = 32  # scored when neither --n nor --indices is given
HEATMAP_SAMPLES = 6  # heatmaps per method shown in the report
METRICS_FILE = "metrics.json"
CSV_FILE = "metrics.csv"


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything ``xaibench evaluate`` was asked to do; ``params`` maps a method or metric name to
    its parameters."""

    source: ModelSource
    methods: tuple[str, ...] = ()
    metrics: str = "faithfulness"
    selection: Selection = Selection()
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    reference: str | None = None
    attributions: tuple[str, ...] = ()
    out: str | None = None
    overwrite: bool = False
    seed: int = 0
    batch_size: int | None = None
    max_memory: str | None = None
    device: str = "auto"  # xaibench.core.devices
    dtype: str = "float32"  # xaibench.core.precision
    scale: str = "shared"  # heatmap colours: one scale per method for all its samples, or per "sample"
    format: str = "png"  # heatmap files besides the PNGs the report embeds: png, pdf or svg


@dataclass(frozen=True)
class EvaluateResult:
    run_dir: Path
    summary: dict[str, Any]
    seconds: float


Progress = Callable[[str, int], Any]


def evaluate(config: EvaluateConfig, argv: list[str], on_progress: Progress | None = None) -> EvaluateResult:
    """Run ``config`` and write its run directory; ``on_progress(label, total)`` gives a progress context."""
    started = time.perf_counter()
    style = HeatmapStyle(scale=config.scale, format=config.format)  # a bad value fails before the work
    reused_runs = [Path(p) for p in config.attributions]
    plan = make_plan(config.methods, config.metrics, config.params, config.reference, reused_runs)
    check_precision(config.dtype, [*map(METHODS.get, plan.attributed), *map(METRICS.get, plan.metrics)])
    out = Path(config.out) if config.out else runs.default_run_dir(
        "evaluate", config.source.stem)
    runs.check_destination(out, config.overwrite)
    device = resolve_device(config.device)
    memory = RowPlan.of(config.batch_size, config.max_memory, device)
    loaded = config.source.load(device)
    selection = reused_selection(reused_runs, config.selection)
    if selection.n is None and selection.indices is None:
        selection = replace(selection, n=DEFAULT_SAMPLES)
    prepared = prepare(loaded, selection, memory)
    batch_size = memory.rows(loaded.module, prepared.inputs[:1])
    plan = plan.applicable(prepared.meta.modality, prepared.data.masks is not None,
                           prepared.data.ground_truth is not None)
    with autocast(config.dtype, device):
        _dry_run(plan, prepared, loaded.module, batch_size)
    timings: dict[str, Any] = {"load": time.perf_counter() - started}
    reused = reused_attributions(reused_runs, loaded.sha256, prepared)
    explainers = {name: _explainer(name, plan, config, prepared, reused.get(name), loaded, batch_size)
                  for name in plan.attributed}
    with autocast(config.dtype, device):
        attributions, details = _attributions(plan, prepared, loaded.module, reused, explainers, on_progress,
                                              timings)
        reference = _reference(plan, prepared, attributions)
        tic = time.perf_counter()
        results, skipped = _score(plan, config, prepared, loaded.module, attributions, reference, explainers,
                                  on_progress, batch_size)
    timings["metrics"] = time.perf_counter() - tic
    summary = _summary(replace(plan, skipped=[*plan.skipped, *skipped]), prepared, loaded, results, config.seed)
    summary["details"] = details
    if not distributed.world().main:  # rank 0 writes the run
        return EvaluateResult(out, summary, time.perf_counter() - started)
    with runs.staged_dir(out, config.overwrite) as staging:
        tic = time.perf_counter()
        heatmaps = _heatmaps(plan, prepared, attributions, loaded.path, staging, style)
        timings["heatmaps"] = time.perf_counter() - tic
        _write_tensors(staging, prepared, attributions)
        attached = [file for name, noted in details.items()
                    for file in write_attached(staging, noted.files, prefix=f"{name}.")]
        runs.write_json(staging / METRICS_FILE, summary)
        _write_csv(staging / CSV_FILE, summary)
        tic = time.perf_counter()
        write_reports(summary, staging, heatmaps)
        timings["reports"] = time.perf_counter() - tic
        record = runs.run_record("evaluate", argv, _config_dict(config), config.seed)
        record.update(model=model_record(loaded, prepared), data=data_record(prepared),
                      methods=plan.methods, metrics=list(plan.metrics), memory=memory.record(),
                      device=device_record(config.device, device), dtype=config.dtype, timings=timings,
                      outputs=[runs.ATTRIBUTIONS_FILE, METRICS_FILE, CSV_FILE, "report.md",
                               "report.html", runs.HEATMAPS_DIR, *attached])
        runs.write_json(staging / runs.RUN_FILE, record)
    return EvaluateResult(out, summary, time.perf_counter() - started)


def _attributions(plan: Plan, prepared: Prepared, model: torch.nn.Module, reused: dict[str, Reused],
                  explainers: dict[str, Explainer], on_progress: Progress | None,
                  timings: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Each method's attributions (and the reference method's), reused from runs where available, and
    what the methods noted while explaining (BEE's chosen baseline families)."""
    out: dict[str, torch.Tensor] = {}
    details: dict[str, Any] = {}
    n = len(prepared.data)
    rows = distributed.shard_rows(n, check=n)
    for name in plan.attributed:
        if name in reused:
            out[name] = reused[name].attributions.to(prepared.inputs.device)
            continue
        tic = time.perf_counter()
        progress = on_progress(name, rows.stop - rows.start) if on_progress else nullcontext()
        with progress, collecting() as noted, sampled_shard(rows, n):
            local = explainers[name](model, prepared.inputs[rows], prepared.targets[rows])
        out[name] = distributed.gather_rows(local.float(), n)
        if noted:
            details[name] = noted
        timings[f"attribute:{name}"] = time.perf_counter() - tic
    return out, details


def _explainer(name: str, plan: Plan, config: EvaluateConfig, prepared: Prepared,
               reused: Reused | None, loaded: LoadedModel, batch_size: int) -> Explainer:
    """The method as metrics call it: fixed parameters and seed (a reused run's own), any model,
    inputs and target."""
    params = reused.params if reused else plan.params.get(name, {})
    return method_explainer(name, params, reused.seed if reused else config.seed, prepared, loaded, batch_size)


def method_explainer(name: str, params: dict[str, Any], seed: int, prepared: Prepared, loaded: LoadedModel,
                     batch_size: int) -> Explainer:
    """Method ``name`` with fixed parameters and seed (the same draws every call), for any model, inputs
    and target, at most ``batch_size`` rows per pass."""
    method = METHODS.get(name)()
    extra = supplied_params(method, prepared, torch.Generator().manual_seed(seed), params, loaded)

    def explain(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return method.attribute(model, inputs, target=target, batch_size=batch_size,
                                generator=torch.Generator().manual_seed(seed), **params, **extra)

    return explain


def _reference(plan: Plan, prepared: Prepared, attributions: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The agreement metrics' reference: the data's ground-truth attributions or a method's."""
    if plan.reference == GROUND_TRUTH:
        return prepared.data.ground_truth.to(prepared.inputs.device)
    return attributions.get(plan.reference) if plan.reference else None


def _dry_run(plan: Plan, prepared: Prepared, model: torch.nn.Module, batch_size: int | None) -> None:
    """Every metric once on the first sample with stand-in attributions, so that a bad parameter value
    (a substrate that does not exist, blur on tabular data) fails before minutes of attributions."""
    inputs = prepared.inputs[:1]
    stand_in = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0), device="cpu").to(inputs.device)
    masks = None if prepared.data.masks is None else prepared.data.masks[:1].to(inputs.device)
    for name in plan.metrics:
        with reporting(lambda _: None):
            METRICS.get(name)().compute(
                model, inputs, stand_in, target=prepared.targets[:1], masks=masks,
                explainer=lambda _model, x, _target: torch.ones_like(x), reference=stand_in,
                batch_size=batch_size, **plan.params.get(name, {}))


def _score(plan: Plan, config: EvaluateConfig, prepared: Prepared, model: torch.nn.Module,
           attributions: dict[str, torch.Tensor], reference: torch.Tensor | None,
           explainers: dict[str, Explainer], on_progress: Progress | None,
           batch_size: int) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Summaries per method and metric, and the pairs skipped because the method cannot explain the
    model a metric makes; one progress step per pair."""
    results: dict[str, dict[str, Any]] = {name: {} for name in plan.methods}
    skipped: list[dict[str, str]] = []
    total = len(plan.methods) * len(plan.metrics)
    n = len(prepared.data)
    rows = distributed.shard_rows(n)
    masks = None if prepared.data.masks is None else prepared.data.masks[rows].to(prepared.inputs.device)
    progress = on_progress("metrics", total) if on_progress else nullcontext()
    with progress:
        for method in plan.methods:
            explainer = explainers[method]
            for metric_name in plan.metrics:
                metric = METRICS.get(metric_name)()
                tic = time.perf_counter()
                try:
                    with reporting(lambda _: None), sampled_shard(rows, n):  # the bar counts pairs
                        local = metric.compute(
                            model, prepared.inputs[rows], attributions[method][rows],
                            target=prepared.targets[rows], masks=masks, explainer=explainer,
                            reference=None if reference is None else reference[rows], batch_size=batch_size,
                            generator=torch.Generator().manual_seed(config.seed), **plan.params.get(metric_name, {}))
                except IncompatibleError as error:
                    # found only while scoring: a metric that re-explains on a model it changes (a shifted
                    # input, a randomised layer) that this method cannot handle. Every rank meets it alike;
                    # the other pairs' minutes of work are kept and the pair is listed as skipped.
                    skipped.append({"method": method, "metric": metric_name, "reason": str(error)})
                    advance(1)
                    continue
                result = replace(local, scores=distributed.gather_rows(local.scores, n).cpu(),
                                 curve=None if local.curve is None else distributed.gather_rows(local.curve, n).cpu(),
                                 curve_x=None if local.curve_x is None else local.curve_x.cpu())
                entry = summarise(result, torch.Generator().manual_seed(config.seed))
                entry["seconds"] = round(time.perf_counter() - tic, 4)
                results[method][metric_name] = entry
                advance(1)
    return results, skipped


def metric_records(plan: Plan) -> dict[str, Any]:
    """Per metric of the plan: category, direction under its parameters, description, curve label and
    the parameters in full, as metrics.json records them."""
    metrics: dict[str, Any] = {}
    for name in plan.metrics:
        cls = METRICS.get(name)
        parsed = parse_params(cls.Params, plan.params.get(name, {}), owner=f"metric {name!r}")
        metrics[name] = {"category": cls.category, "higher_is_better": cls().direction(parsed),
                         "description": cls.description, "curve_label": cls.curve_label,
                         "params": asdict(parsed)}
    return metrics


def _summary(plan: Plan, prepared: Prepared, loaded: Any, results: dict[str, Any], seed: int) -> dict[str, Any]:
    metrics = metric_records(plan)
    data = data_record(prepared)
    summary = {
        "title": f"{Path(loaded.path).stem} · {data['name']}:{data['split']} · {data['samples']} samples",
        "model": model_record(loaded, prepared), "data": data,
        "methods": plan.methods, "metrics": metrics, "results": results,
        "ranking": rank_methods(results, metrics),
        "skipped": plan.skipped, "reference": plan.reference, "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": runs.versions(),
    }
    summary["agreement"] = agreement(summary)  # for scripts; the reports recompute it from the results
    return summary


def _heatmaps(plan: Plan, prepared: Prepared, attributions: dict[str, torch.Tensor], model_path: str,
              staging: Path, style: HeatmapStyle = HeatmapStyle()) -> dict[str, list[Path]]:
    """The first few samples' heatmaps per method, under heatmaps/<method>/: PNGs for the report and,
    when ``style.format`` is pdf or svg, the same figures in that format beside them."""
    shown = min(HEATMAP_SAMPLES, len(prepared.data))
    raw = prepared.data.x[:shown]
    files: dict[str, list[Path]] = {}
    for name in plan.methods:
        maps = attributions[name][:shown].cpu()
        spec = heatmap_spec(prepared, attributions[name], METHODS.get(name), model_path, style)
        flags = spec["misclassified"]
        spec.update(stems=spec["stems"][:shown], captions=spec["captions"][:shown],
                    signed=bool((maps < 0).any()), misclassified=None if flags is None else flags[:shown],
                    tokens=None if spec["tokens"] is None else spec["tokens"][:shown])
        folder = staging / runs.HEATMAPS_DIR / name
        rendered = render_run_heatmaps(spec, maps, raw, folder, replace(style, format="png"))
        if style.format != "png":
            render_run_heatmaps(spec, maps, raw, folder, style)
        files[name] = [p for p in rendered if p.name != "grid.png"]
    return files


def _write_tensors(staging: Path, prepared: Prepared, attributions: dict[str, torch.Tensor]) -> None:
    tensors = {f"attributions/{name}": value for name, value in attributions.items()}
    tensors.update(inputs=prepared.inputs, targets=prepared.targets,
                   predictions=prepared.predictions, probabilities=prepared.probabilities,
                   indices=prepared.data.indices)
    if prepared.data.y is not None:
        tensors["labels"] = prepared.data.y
    if prepared.data.masks is not None:
        tensors["masks"] = prepared.data.masks.to(torch.uint8)
    if prepared.data.ground_truth is not None:
        tensors["ground_truth"] = prepared.data.ground_truth
    save_file(on_cpu(tensors), str(staging / runs.ATTRIBUTIONS_FILE), metadata={"methods": ",".join(attributions)})


def _write_csv(path: Path, summary: dict[str, Any]) -> None:
    """One row per method and metric: the statistics of metrics.json without the per-sample values."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "metric", "category", "higher_is_better", "mean", "std", "ci95_low",
                         "ci95_high", "n", "nan", "seconds"])
        for method, per_metric in summary["results"].items():
            for metric, entry in per_metric.items():
                meta = summary["metrics"][metric]
                writer.writerow([method, metric, meta["category"], meta["higher_is_better"], entry["mean"],
                                 entry["std"], *entry["ci95"], entry["n"], entry["nan"], entry["seconds"]])


def _config_dict(config: EvaluateConfig) -> dict[str, Any]:
    values = asdict(config)
    values["methods"] = list(config.methods)
    values["attributions"] = list(config.attributions)
    return values

