"""``xaibench concepts``: extract a class's concepts at a layer and write the concept run directory.

The run holds bank.safetensors (dictionary W, offset b, the fitted rows' codes, per-image codes and
local importances), concepts.json (settings, global importance, metrics, cluster statistics),
run.json, the figures (montage.png, importance.png, maps.png, clusters.png unless every image ranks the
concepts alike; with ``format`` pdf or svg, the same figures in that format beside them) and report.html /
report.md, which embed and link the PNGs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xaibench.concepts.base import DECOMPOSITIONS, ConceptBank
from xaibench.concepts.extract import (
    Extraction,
    Settings,
    concept_head,
    crop_codes,
    crop_images,
    extract,
    top_crops,
    upsampled,
)
from xaibench.concepts.split import split_at_default_layer, split_model
from xaibench.core import distributed
from xaibench.core.devices import device_record, on_cpu, require_float64, resolve_device
from xaibench.core.errors import InputError, first_line
from xaibench.core.memory import RowPlan
from xaibench.core.runs import (
    default_run_dir,
    run_record,
    staged_dir,
    versions,
    write_json,
)
from xaibench.data.prepare import (
    Prepared,
    Selection,
    default_split,
    denormalise,
    prepare,
    selected_data,
)
from xaibench.metrics.base import METRICS
from xaibench.models import LoadedModel, ModelSource
from xaibench.report.colors import to_display
from xaibench.report.style import check_format, figure_file

DEFAULT_IMAGES = 64
#: the one-line note a run keeps on how the model was split (``xaibench.concepts.split.Split.how``)
SPLIT_NOTES = {
    "cut": "cut: the model's later children run alone",
    "traced": "traced: the operations after the layer run alone (torch.fx)",
    "injected": "injected: the model runs with the layer's output replaced (torch.fx could not split it)",
}
MONTAGE_CROPS = 8


@dataclass(frozen=True)
class ConceptJob:
    source: ModelSource
    class_spec: str
    selection: Selection = field(default_factory=Selection)
    layer: str | None = None
    settings: Settings = field(default_factory=Settings)
    out: Path | None = None
    overwrite: bool = False
    max_memory: str | None = None
    device: str = "auto"  # xaibench.core.devices
    format: str = "png"  # figure files besides the PNGs the report embeds: png, pdf or svg


def class_images(loaded: LoadedModel, job: ConceptJob, memory: RowPlan) -> tuple[Prepared, int]:
    """The selected images labelled with the class (predicted, for unlabelled data) and its index.

    Data labelled with class indices is searched by its labels, without a model pass (one image is
    prepared for the class names); data labelled with names, or unlabelled, is prepared whole."""
    selection = default_split(job.selection, loaded.meta, "train")
    whole = replace(selection, n=None, indices=None)
    data = selected_data(loaded, whole)
    by_label = data.y is not None and data.label_names is None
    everything = prepare(loaded, replace(whole, n=1) if by_label else whole, memory)
    names = everything.meta.class_names
    index = names.index(job.class_spec) if job.class_spec in names else _class_index(job.class_spec, len(names))
    if by_label:
        labels = data.y
    else:
        labels = everything.data.y if everything.data.y is not None else everything.predictions.cpu()
    positions = torch.nonzero(labels == index).flatten()[: selection.n or DEFAULT_IMAGES]
    if positions.numel() == 0:
        raise InputError(f"no images of class {names[index]!r} in {selection.data}")
    picked = prepare(loaded, replace(selection, n=None, indices=",".join(map(str, positions.tolist())),
                                     target=str(index)), memory)
    return picked, index


def _class_index(spec: str, count: int) -> int:
    try:
        index = int(spec)
    except ValueError:
        raise InputError(f"--class {spec!r} is neither a class name nor an index") from None
    if not 0 <= index < count:
        raise InputError(f"class {index} is outside the model's {count} classes (0..{count - 1})")
    return index


def run_concepts(job: ConceptJob, argv: list[str]) -> dict[str, Any]:
    """Extract, score, draw and write the run; returns the summary (also concepts.json).

    Under torchrun every process extracts its share of the images (``extract``); rank 0 alone computes
    the metrics, draws the figures and writes the run, the others return the summary without metrics.
    """
    started = time.perf_counter()
    fmt = check_format(job.format)  # a usage error before the work
    device = require_float64(resolve_device(job.device), "concept extraction (its factorisations)")
    memory = RowPlan.of(job.settings.batch_size, job.max_memory, device)
    loaded = job.source.load(device)
    images, index = class_images(loaded, job, memory)
    # rows of the whole model bound every pass through g (crops cost less); h's rows are measured below
    settings = replace(job.settings, batch_size=memory.rows(loaded.module, images.inputs[:1]))
    probe = images.inputs[:4]
    split = (split_model(loaded.module, job.layer, probe) if job.layer
             else split_at_default_layer(loaded.module, probe))
    layer = split.layer
    with torch.no_grad():  # h's rows cost what the layers after the split keep, measured on one row
        settings = replace(settings, head_batch_size=memory.rows(split.h, split.g(images.inputs[:1])))
    found = extract(split, images.inputs, images.targets, settings)  # sharded under torchrun
    out = job.out or default_run_dir("concepts", job.source.stem, images.meta.class_names[index])
    summary = {
        "model": loaded.path, "layer": layer, "split": SPLIT_NOTES[split.how],
        "class": images.meta.class_names[index], **asdict(job.settings),
        "images": len(images.data), "rows": int(found.activations.shape[0]),
        "global_importance": [float(v) for v in found.importance], "versions": versions(),
    }
    if not distributed.world().main:  # rank 0 computes the metrics, draws the figures and writes the run
        return {"run_dir": str(out), **summary}
    summary["metrics"] = concept_metrics(found, split, images.targets, settings)
    with staged_dir(out, job.overwrite) as staging:
        save_file(_tensors(found), str(staging / "bank.safetensors"),
                  metadata={"method": job.settings.method, "layer": layer})
        summary["seconds"] = round(time.perf_counter() - started, 3)  # extraction and metrics
        summary["clusters"] = _figures(staging, found, split, images, settings, summary, fmt)
        write_json(staging / "concepts.json", summary)
        config = {**asdict(job.settings), "class": job.class_spec, "layer": layer, "format": fmt,
                  "selection": asdict(job.selection)}
        record = run_record("concepts", argv, config, job.settings.seed)
        write_json(staging / "run.json", {**record, "model": {"path": loaded.path, "sha256": loaded.sha256,
                                                              "meta": images.meta.to_dict()},
                                          "memory": memory.record(),
                                          "device": device_record(job.device, device)})
    return {"run_dir": str(out), **summary}


def concept_metrics(found: Extraction, split: Any, target: torch.Tensor, settings: Settings) -> dict[str, Any]:
    """Every registered concept metric on this extraction: name -> value, direction, description."""
    from xaibench.metrics.concept import ConceptInputs
    from xaibench.metrics.selection import choose_metrics

    inputs = ConceptInputs(
        activations=found.activations, codes=found.codes, bank=found.bank, head=concept_head(split, found.bank),
        image_codes=found.image_codes, importances=found.local, target=target,
        refit=DECOMPOSITIONS.get(settings.method)().fit, batch_size=settings.head_rows, seed=settings.seed)
    out = {}
    for chosen in choose_metrics("all", concept=True):
        name, metric = chosen.name, METRICS.get(chosen.name)
        scores = metric().compute_concepts(inputs, generator=torch.Generator().manual_seed(settings.seed)).scores
        finite = scores[torch.isfinite(scores)]
        out[name] = {"value": float(finite.mean()) if finite.numel() else None,
                     "higher_is_better": metric.higher_is_better, "description": metric.description}
    return out


def load_bank(run_dir: Path) -> tuple[ConceptBank, str]:
    """The concept bank of a ``xaibench concepts`` run and the layer it was learned at."""
    path = Path(run_dir) / "bank.safetensors"
    try:
        with safe_open(str(path), "pt") as file:
            meta = file.metadata() or {}
            dictionary, offset = file.get_tensor("dictionary"), file.get_tensor("offset")
    except (OSError, SafetensorError) as err:
        raise InputError(f"cannot read a concept bank from {run_dir}: {first_line(err)}") from None
    if "method" not in meta:
        raise InputError(f"{path} carries no decomposition name; was it written by xaibench concepts?")
    return ConceptBank(meta["method"], dictionary, offset), meta["layer"]


def _tensors(found: Extraction) -> dict[str, torch.Tensor]:
    tensors = {"dictionary": found.bank.dictionary, "offset": found.bank.offset, "codes": found.codes,
               "image_codes": found.image_codes, "local_importance": found.local,
               "importance": found.importance}
    return on_cpu(tensors)


def _display(images: torch.Tensor, prepared: Prepared) -> np.ndarray:
    """Model inputs (N, C, H, W) as display images (N, H, W[, 3]) in [0, 1]."""
    raw = denormalise(images, prepared.meta).detach().cpu().double().numpy()
    return np.stack([to_display(x, prepared.meta.value_range) for x in raw])


def _figures(folder: Path, found: Extraction, split: Any, images: Prepared, settings: Settings,
             summary: dict[str, Any], fmt: str = "png") -> list[dict[str, Any]]:
    """Draw the figures (PNGs for the report and, when ``fmt`` is pdf or svg, the same figures in that
    format beside them) and the report; returns the cluster statistics."""
    from xaibench.report import clusters, concept_page
    from xaibench.report import concepts as draw

    def drawn(stem: str, write: Any, *args: Any, **kwargs: Any) -> Path | None:
        png = write(figure_file(folder, stem, "png"), *args, **kwargs)
        if png is not None and fmt != "png":
            write(figure_file(folder, stem, fmt), *args, **kwargs)
        return png

    figures = {}
    if images.inputs.ndim == 4 and found.maps.ndim > 2:  # maps per position or per patch token
        order, codes = top_crops(crop_codes(split, images.inputs, found, settings).cpu(), MONTAGE_CROPS)
        shown = _display(crop_images(images.inputs, order, settings.patch_size).flatten(0, 1), images)
        figures["montage"] = drawn("montage", draw.write_concept_montage,
                                   shown.reshape(*order.shape, *shown.shape[1:]), codes.numpy(),
                                   found.importance.cpu().numpy())
        code_maps = upsampled(found.image_codes, tuple(images.inputs.shape[2:])).cpu()
        figures["maps"] = drawn("maps", draw.write_concept_maps, _display(images.inputs, images),
                                code_maps.clamp(min=0).numpy(), found.importance.cpu().numpy(),
                                local_importance=found.local.cpu().numpy())
    figures["importance"] = drawn("importance", draw.write_importance_chart, found.importance.cpu().numpy())
    correct = (images.predictions == images.targets).cpu().numpy()
    embedding, stats = clusters.cluster_graph(found.local.cpu().numpy(), correct, settings.seed)
    graph = drawn("clusters", clusters.write_cluster_graph, embedding, found.local.cpu().numpy(), correct,
                  found.importance.cpu().numpy())
    if graph is not None:  # None: every image ranks the concepts alike, and the report says so
        figures["clusters"] = graph
    concept_page.write_concept_report(folder, {**summary, "clusters": stats}, figures)
    return stats
