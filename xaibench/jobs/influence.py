"""``xaibench influence fit | score | self``: factors and scores for a model file and data specs.

fit writes a factors directory; score and self write run directories (run.json, scores.safetensors,
influence.json, montage.png for images). All three resume interrupted work from a ``.partial`` folder
beside their destination (``storage.PartialWork``) and never leave half-written output.

Under torchrun every process loads the model and the data and computes its share (``factors``,
``scores``); only rank 0 writes the factors or run directory (run.json records the world size) and
removes the partial folder, after the last collective, when every process has saved its checkpoints.
A checkpoint belongs to its rank and world size, so an interrupted multi-process run resumes with the
same number of processes.

``--device`` places the model, the data, the factors and every pass (``xaibench.core.devices``); the
scores come back to the CPU to be written, and run.json records the device. Rows per pass, query blocks
and the groups of modules whose factors are held at once come from the memory budget (``influence.plan``);
stored factors stay in their file until a group needs them.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from xaibench.core import distributed
from xaibench.core.devices import device_record, resolve_device
from xaibench.core.errors import IncompatibleError, InputError
from xaibench.core.memory import RowPlan
from xaibench.core.runs import (
    check_destination,
    default_run_dir,
    run_record,
    staged_dir,
    write_json,
)
from xaibench.data.prepare import Prepared, Selection, default_split, prepare
from xaibench.influence.factors import (
    Factors,
    FitConfig,
    checkpoint_stage,
    fit_factors,
    sum_device,
)
from xaibench.influence.plan import score_plan, training_rows
from xaibench.influence.scores import Influence, ScoreConfig
from xaibench.influence.storage import (
    PartialWork,
    fingerprint,
    load_factors,
    save_factors,
)
from xaibench.influence.stored_tensors import STORED
from xaibench.influence.task import ClassificationTask
from xaibench.jobs.influence_ranking import TrainData, query_rankings, self_ranking
from xaibench.models import LoadedModel, ModelSource
from xaibench.report.style import check_format, figure_file

SIGN = ("positive = the training example helps the query's prediction (a gradient step on it lowers the "
        "query's measurement); negative = it works against it")


def load_train(loaded: LoadedModel, selection: Selection, batch_size: int | RowPlan | None) -> TrainData:
    """The training data (default: the model's dataset, train split); labels are required."""
    if loaded.meta.modality == "text":  # EK-FAC tracks Linear and Conv calls; attention calls its weights directly
        raise IncompatibleError("influence does not take text models yet: the attention layers' projections "
                                "are not tracked; explain them with xaibench explain")
    selection = default_split(selection, loaded.meta, "train")
    prepared = prepare(loaded, selection, batch_size)
    if prepared.data.y is None:
        raise InputError(f"influence needs labelled training data; {selection.data} has no labels")
    spec = {"data": selection.data, "n": selection.n, "indices": selection.indices,
            "preprocessing": asdict(selection.preprocessing),
            "normalisation": {"mean": prepared.meta.mean, "std": prepared.meta.std},
            "samples": len(prepared.data), "fingerprint": fingerprint(prepared.inputs, prepared.data.y)}
    return TrainData(prepared, prepared.data.y.to(prepared.inputs.device), spec)


@dataclass(frozen=True)
class FitJob:
    source: ModelSource
    train: Selection
    config: FitConfig
    out: Path
    overwrite: bool = False
    batch_size: int | None = None  # --batch-size; None: rows per pass from the memory budget
    max_memory: str | None = None
    device: str = "auto"
    factor_dtype: str = "float64"  # --factor-dtype: what factors.safetensors stores


def fit(job: FitJob, argv: list[str]) -> dict[str, Any]:
    """Fit factors and write the factors directory; a summary for the CLI."""
    started = time.perf_counter()
    if job.factor_dtype not in STORED:  # a usage error before the work
        raise InputError(f"--factor-dtype takes {', '.join(STORED)}, got {job.factor_dtype!r}")
    check_destination(job.out, job.overwrite)  # before the work, on every process
    device = resolve_device(job.device)
    memory = RowPlan.of(job.batch_size, job.max_memory, device)
    loaded = job.source.load(device)
    data = load_train(loaded, job.train, memory)
    config = replace(job.config, batch_size=training_rows(memory, loaded.module, data.prepared.inputs[:1]))
    arguments = fit_arguments(config, loaded, data)
    partial = PartialWork.beside(job.out, arguments)
    task = ClassificationTask()
    factors = fit_factors(loaded.module, task, data.prepared.inputs, data.labels, config, partial)
    summary = {"factors": str(job.out), "strategy": factors.strategy, "fisher": job.config.fisher,
               "dtype": job.factor_dtype,
               "modules": {name: list(shape) for name, shape in factors.shapes.items()},
               "samples": data.spec["samples"]}
    if not distributed.world().main:  # rank 0 writes
        return {**summary, "seconds": round(time.perf_counter() - started, 3)}
    with staged_dir(job.out, job.overwrite) as staging:
        save_factors(staging, factors, arguments, job.factor_dtype)
        record = run_record("influence fit", argv, asdict(config), config.seed)
        write_json(staging / "run.json", {**record, "model": _model_record(loaded), "data": data.spec,
                                          "device": device_record(job.device, device),
                                          "memory": memory.record(),
                                          "seconds": round(time.perf_counter() - started, 3)})
    partial.discard()
    return {**summary, "seconds": round(time.perf_counter() - started, 3)}


def fit_arguments(config: FitConfig, loaded: LoadedModel, data: TrainData) -> dict[str, Any]:
    """What makes factors what they are (the batch size does not, beyond rounding)."""
    options = {k: v for k, v in asdict(config).items() if k != "batch_size"}
    return {**options, "model_sha256": loaded.sha256, "train": data.spec}


def _model_record(loaded: LoadedModel) -> dict[str, Any]:
    return {"path": loaded.path, "format": loaded.format, "sha256": loaded.sha256}


@dataclass(frozen=True)
class ScoreJob:
    """``influence score`` (``query`` set) or ``influence self`` (``query`` None)."""

    source: ModelSource
    factors: Path | None
    train: Selection
    query: Selection | None
    score: ScoreConfig
    measurement: str = "loss"
    top_k: int = 5
    out: Path | None = None
    overwrite: bool = False
    fit: FitConfig = field(default_factory=FitConfig)
    batch_size: int | None = None  # --batch-size; None: rows per pass from the memory budget
    max_memory: str | None = None
    format: str = "png"  # the montage's file format: png, pdf or svg
    device: str = "auto"


def score(job: ScoreJob, argv: list[str]) -> dict[str, Any]:
    """Pairwise or self-influence scores, rankings and montage, written as a run directory."""
    started = time.perf_counter()
    check_format(job.format)  # a usage error before the work
    if job.out is not None:
        check_destination(job.out, job.overwrite)  # before the work, on every process
    device = resolve_device(job.device)
    memory = RowPlan.of(job.batch_size, job.max_memory, device)
    loaded = job.source.load(device)
    data = load_train(loaded, job.train, memory)
    queries = None if job.query is None else prepare(loaded, job.query, memory)
    sample = data.prepared.inputs[:1]
    fit_config = job.fit
    if job.factors is None:  # self-influence fits them first, into the partial folder (below)
        fit_config = replace(job.fit, batch_size=training_rows(memory, loaded.module, sample))
        factors, fitted = None, fit_arguments(fit_config, loaded, data)
    else:
        factors, fitted = load_factors(job.factors, loaded.module, loaded.sha256, sum_device(device))
    command = "influence score" if job.query is not None else "influence self"
    # rank 0's default, so that every process checkpoints beside the same destination
    out = job.out or Path(distributed.broadcast_object(str(default_run_dir(command.replace(" ", "-"),
                                                                          Path(loaded.path).stem))))
    # the rows per pass and the query blocks change no score, so a resumed run may use another budget
    score_arguments = {k: v for k, v in asdict(job.score).items()
                       if k not in ("batch_size", "query_batch_size", "query_block", "factor_memory")}
    arguments = {"command": command, "factors": fitted, "train": data.spec, "score": score_arguments,
                 "measurement": job.measurement, "query": None if job.query is None else asdict(job.query)}
    partial = PartialWork.beside(out, arguments)
    if factors is None:
        factors = _fitted(partial, fit_config, loaded, data, device)
    influence = Influence(loaded.module, ClassificationTask(job.measurement), factors, job.score)
    influence = replace(influence, config=score_plan(memory, influence, sample,
                                                     None if queries is None else queries.inputs))
    if queries is None:
        values = influence.self_influence(data.prepared.inputs, data.labels, partial).cpu()
        ranking = self_ranking(values.sum(0), data, job.top_k)
    else:
        values = influence.pairwise(queries.inputs, queries.targets, data.prepared.inputs, data.labels,
                                    partial).cpu()
        ranking = query_rankings(values.sum(0), queries, data, job.top_k)
    summary = {"sign": SIGN, "strategy": factors.strategy, "measurement": job.measurement,
               "damping": job.score.damping if job.score.damping is not None else "0.1 x mean eigenvalue",
               **ranking}
    if not distributed.world().main:  # rank 0 writes
        return {"run_dir": str(out), "montage": None, **summary}
    with staged_dir(out, job.overwrite) as staging:
        tensors = {"scores": values.sum(0).contiguous(),
                   **{f"modules/{name}": part.contiguous() for name, part in zip(factors.shapes, values)}}
        save_file(tensors, str(staging / "scores.safetensors"))
        write_json(staging / "influence.json", summary)
        montage = _montage(staging, summary, data, queries, job.format)
        record = run_record(command, argv, arguments, job.fit.seed)
        write_json(staging / "run.json", {**record, "model": _model_record(loaded), "train": data.spec,
                                          "device": device_record(job.device, device),
                                          "memory": {**memory.record(),
                                                     "factor_groups": influence.module_groups(sample)},
                                          "seconds": round(time.perf_counter() - started, 3)})
    partial.discard()
    return {"run_dir": str(out), "montage": None if montage is None else str(out / montage), **summary}


def _fitted(partial: PartialWork, config: FitConfig, loaded: LoadedModel, data: TrainData,
            device: torch.device) -> Factors:
    """Factors fitted for ``influence self`` without --factors, written into the partial folder and read
    from there like stored ones (so that scoring holds only what the budget allows); a resumed run
    reads the ones an earlier try fitted. The fit's own passes checkpoint there too."""
    folder = partial.folder / checkpoint_stage("fitted-factors")  # each process its own under torchrun
    if not folder.is_dir():
        factors = fit_factors(loaded.module, ClassificationTask(), data.prepared.inputs, data.labels, config,
                              partial)
        writing = folder.with_name(f".{folder.name}.tmp")  # renamed once whole: a kill leaves no half
        shutil.rmtree(writing, ignore_errors=True)
        writing.mkdir(parents=True)
        save_factors(writing, factors, fit_arguments(config, loaded, data))
        del factors
        os.replace(writing, folder)
    return load_factors(folder, loaded.module, device=sum_device(device))[0]


def _montage(folder: Path, summary: dict[str, Any], data: TrainData, queries: Prepared | None,
             fmt: str) -> str | None:
    """montage.<fmt> for image models (None otherwise)."""
    if data.prepared.meta.modality != "image":
        return None
    from xaibench.report.montage import write_influence_montage, write_self_montage

    path = figure_file(folder, "montage", fmt)
    train = replace(data.prepared, inputs=data.prepared.inputs.cpu())  # the images, drawn from the CPU
    if queries is None:
        write_self_montage(path, summary, train)
    else:
        write_influence_montage(path, summary, replace(queries, inputs=queries.inputs.cpu()), train)
    return path.name
