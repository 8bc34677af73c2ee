"""The explain job: attributions for selected samples, written as a run directory with heatmaps."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from xaibench.attribution import METHODS, describe_params, parse_params
from xaibench.attribution.draws import sampled_shard
from xaibench.core import distributed, runs
from xaibench.core.devices import device_record, on_cpu, resolve_device
from xaibench.core.errors import InputError
from xaibench.core.memory import RowPlan
from xaibench.core.method_notes import collecting
from xaibench.core.precision import autocast, check_precision
from xaibench.data import DATASETS, load_data
from xaibench.data.prepare import Prepared, Selection, normalise
from xaibench.data.text_lengths import joined, padded, prepare_by_length
from xaibench.models import LoadedModel, ModelSource
from xaibench.models.text import token_scores
from xaibench.report import HeatmapStyle, render_heatmaps
from xaibench.report.text_heatmaps import render_text_heatmaps

DEFAULT_SAMPLES = 16  # explained when neither --n nor --indices is given: a grid a person can read


@dataclass(frozen=True)
class ExplainConfig:
    """Everything ``xaibench explain`` was asked to do."""

    source: ModelSource
    method: str
    selection: Selection = Selection()
    params: dict[str, str] = field(default_factory=dict)
    out: str | None = None
    overwrite: bool = False
    seed: int = 0
    batch_size: int | None = None
    max_memory: str | None = None
    device: str = "auto"  # xaibench.core.devices
    dtype: str = "float32"  # xaibench.core.precision
    scale: str = "shared"  # heatmap colour scale: "shared" by all samples or one per "sample"
    format: str = "png"  # heatmap files: png, pdf or svg

    @property
    def heatmap_style(self) -> HeatmapStyle:
        """The heatmaps' style (validated: a bad scale or format fails before the model loads)."""
        return HeatmapStyle(scale=self.scale, format=self.format)


@dataclass(frozen=True)
class ExplainResult:
    run_dir: Path
    heatmaps: list[Path]
    samples: int
    seconds: float
    tokens: list[dict[str, Any]] | None = None  # text: per sample, its tokens and their scores


def explain(config: ExplainConfig, argv: list[str], on_progress: Any = None) -> ExplainResult:
    """Run ``config`` and write its run directory; ``on_progress(total)`` gives a progress context."""
    started = time.perf_counter()
    method = METHODS.get(config.method)()
    parse_params(method.Params, config.params, owner=f"method {method.name!r}")  # fail before loading
    check_precision(config.dtype, [method])
    style = config.heatmap_style
    out = Path(config.out) if config.out else runs.default_run_dir(
        "explain", config.source.stem, method.name)
    runs.check_destination(out, config.overwrite)
    device = resolve_device(config.device)
    plan = RowPlan.of(config.batch_size, config.max_memory, device)
    loaded = config.source.load(device)
    selection = config.selection
    if selection.n is None and selection.indices is None:
        selection = replace(selection, n=DEFAULT_SAMPLES)
    parts, order = prepare_by_length(loaded, selection, plan)  # texts: one part per token length
    prepared = joined(parts, order)
    batch_size = plan.rows(loaded.module, prepared.inputs[:1])
    timings = {"load": time.perf_counter() - started}
    generator = torch.Generator().manual_seed(config.seed)
    tic = time.perf_counter()
    progress = on_progress(_shard_size(parts)) if on_progress else nullcontext()
    with progress, collecting() as details, autocast(config.dtype, device):
        maps = [_attribute(method, loaded, part, generator, batch_size, config.params) for part in parts]
    attributions = padded(maps, order)
    timings["attribute"] = time.perf_counter() - tic
    if not distributed.world().main:  # rank 0 writes the run
        return ExplainResult(out, [], len(prepared.data), time.perf_counter() - started)
    with runs.staged_dir(out, config.overwrite) as staging:
        tic = time.perf_counter()
        spec = heatmap_spec(prepared, attributions, method, loaded.path, style)
        heatmaps = render_run_heatmaps(spec, attributions, prepared.data.x, staging / runs.HEATMAPS_DIR, style)
        timings["heatmaps"] = time.perf_counter() - tic
        _write_attributions(staging, prepared, attributions, method.name)
        attached = write_attached(staging, details.files)
        record = runs.run_record("explain", argv, _config_dict(config, method), config.seed)
        record.update(model=model_record(loaded, prepared), data=data_record(prepared),
                      method={"name": method.name,
                              "params": {**describe_params(method.Params), **config.params},
                              "details": details},
                      heatmaps=spec, memory=plan.record(), device=device_record(config.device, device),
                      dtype=config.dtype,
                      timings=timings, outputs=[runs.ATTRIBUTIONS_FILE, runs.HEATMAPS_DIR, *attached])
        runs.write_json(staging / runs.RUN_FILE, record)
    files = [out / p.relative_to(staging) for p in heatmaps]
    return ExplainResult(out, files, len(prepared.data), time.perf_counter() - started,
                         token_table(prepared, attributions))


def token_table(prepared: Prepared, attributions: torch.Tensor) -> list[dict[str, Any]] | None:
    """For text: each sample's index, prediction, target, tokens and token scores (None otherwise)."""
    if prepared.data.tokens is None:
        return None
    names, scores, tokens = prepared.meta.class_names, token_scores(attributions), prepared.data.tokens
    return [{"index": int(prepared.data.indices[i]), "prediction": names[int(prepared.predictions[i])],
             "target": names[int(prepared.targets[i])], "tokens": list(tokens[i]),
             "scores": [round(float(v), 6) for v in scores[i, :len(tokens[i])]]} for i in range(len(prepared.data))]


def _attribute(method: Any, loaded: LoadedModel, prepared: Prepared, generator: torch.Generator,
               batch_size: int, params: dict[str, str]) -> torch.Tensor:
    """The method's maps of ``prepared``'s samples, this process's rows computed, every row gathered."""
    n = len(prepared.data)
    extra = supplied_params(method, prepared, generator, params, loaded)
    rows = distributed.shard_rows(n, check=n)
    with sampled_shard(rows, n):
        local = method.attribute(loaded.module, prepared.inputs[rows], target=prepared.targets[rows],
                                 batch_size=batch_size, generator=generator, **params, **extra)
    return distributed.gather_rows(local.float(), n).cpu()


def _shard_size(parts: list[Prepared]) -> int:
    """The rows this process explains over all parts (its progress total)."""
    return sum(rows.stop - rows.start for rows in (distributed.shard_rows(len(p.data)) for p in parts))


def supplied_params(method: Any, prepared: Prepared, generator: torch.Generator,
                    params: dict[str, Any] | None = None, model: LoadedModel | None = None) -> dict[str, Any]:
    """The parameters xaibench supplies rather than the user: training samples (``reference_samples``)
    and, to methods that declare them, the model's feature and class names and the model file (BEE
    checks that a policy was trained for it)."""
    declared = {f.name for f in fields(method.Params)}
    names = {"feature_names": prepared.meta.feature_names, "class_names": prepared.meta.class_names}
    files = {"model_file": model} if model is not None and "model_file" in declared else {}
    return {**reference_samples(method, prepared, generator, params, model),
            **{key: list(value) for key, value in names.items() if key in declared and value}, **files}


def reference_samples(method: Any, prepared: Prepared, generator: torch.Generator,
                      params: dict[str, Any] | None = None, model: LoadedModel | None = None) -> dict[str, Any]:
    """Training samples for methods that draw baselines from data: expected_gradients, and path
    methods or bee given a training baseline family (``-p baseline=train_sample``,
    ``-p arms=zero,train_sample``); a method's ``reference_count`` says how many (None: all). For text,
    the training texts of the explained texts' token length (``text_references``)."""
    if not method.wants_references(params or {}):
        return {}
    name = prepared.data.name
    if prepared.meta.modality == "text":
        return {"references": text_references(prepared, model, generator, method.reference_count)}
    pool = load_data(f"{name}:train" if name in DATASETS else name)  # a file: all of it
    picks = torch.randperm(len(pool), generator=generator, device="cpu")[:method.reference_count]
    references = prepared.preprocessing.apply(pool.select(picks)).x.to(prepared.inputs.device)
    return {"references": normalise(references, prepared.meta)}


def text_references(prepared: Prepared, model: LoadedModel | None, generator: torch.Generator,
                    count: int | None) -> torch.Tensor:
    """Embedded training texts of the same token length as the explained ones, ``count`` drawn at random.

    Raises:
        InputError: no training data (``--text`` alone) or none of that length.
    """
    name = prepared.data.name
    if model is None or name not in DATASETS:
        raise InputError("reference texts come from a text dataset's training split; explain data of one "
                         "(such as planted_text) or choose a baseline that needs none")
    pool = load_data(f"{name}:train")
    length = prepared.inputs.shape[-1]
    encoded = model.module.tokenizer.encode(pool.texts)
    same = [i for i, e in enumerate(encoded) if len(e.ids) == length]
    if not same:
        raise InputError(f"no training text of {name} has {length} tokens, so none can be a reference")
    picks = torch.tensor(same, device="cpu")[torch.randperm(len(same), generator=generator, device="cpu")][:count]
    ids = torch.tensor([encoded[i].ids for i in picks.tolist()], dtype=torch.long, device="cpu")
    return model.module.embed(ids).to(prepared.inputs.device)


def write_attached(directory: Path, files: dict[str, str], prefix: str = "") -> list[str]:
    """Write the files a method attached (an llm transcript) into a staged run directory."""
    written = []
    for name, text in files.items():
        (directory / f"{prefix}{name}").write_text(text, encoding="utf-8")
        written.append(f"{prefix}{name}")
    return written


def _captions(prepared: Prepared) -> list[str]:
    names = prepared.meta.class_names
    lines = []
    for i in range(len(prepared.data)):
        pred = int(prepared.predictions[i])
        parts = [f"#{int(prepared.data.indices[i])}"]
        if prepared.data.y is not None:
            parts.append(f"label {names[int(prepared.data.y[i])]}")
        parts.append(f"pred {names[pred]} ({float(prepared.probabilities[i, pred]):.2f})")
        parts.append(f"target {names[int(prepared.targets[i])]}")
        lines.append(" · ".join(parts))
    return lines


def heatmap_spec(prepared: Prepared, attributions: torch.Tensor, method: Any,
                 model_path: str, style: HeatmapStyle = HeatmapStyle()) -> dict[str, Any]:
    """What run.json keeps so that ``xaibench heatmap`` can re-render without the model."""
    meta = prepared.meta
    labels = prepared.data.y
    tokens = prepared.data.tokens
    return {
        "modality": meta.modality,
        "tokens": None if tokens is None else [list(row) for row in tokens],
        "signed": bool((attributions < 0).any()),  # by the values: saliency with abs=false is signed
        "stems": [f"sample_{int(i):04d}" for i in prepared.data.indices],
        "captions": _captions(prepared),
        "feature_names": list(meta.feature_names) if meta.feature_names else None,
        "value_range": list(meta.value_range) if meta.value_range else None,
        "title": f"{method.name} · {Path(model_path).stem}",
        "misclassified": None if labels is None else (labels != prepared.predictions.cpu()).tolist(),
        "value_label": value_label(prepared),
        "style": asdict(style),
    }


def value_label(prepared: Prepared) -> str:
    """What the inputs' values are, for tabular and sequence plots: built-in data that its registry
    entry describes as standardised is in z-scores, anything else in the data's own units."""
    name = prepared.data.name
    described = getattr(DATASETS.get(name), "description", "") if name in DATASETS else ""
    return "standardised value (z-score)" if "standardised" in described else "input value"


def render_run_heatmaps(spec: dict[str, Any], attributions: torch.Tensor, raw_inputs: torch.Tensor,
                        out_dir: Path, style: HeatmapStyle) -> list[Path]:
    """Render the heatmaps described by ``spec`` (a run.json "heatmaps" entry) into ``out_dir``; text
    as token figures and one tokens.html, each token scored by ``token_scores``."""
    if spec["modality"] == "text":
        return render_text_heatmaps(
            token_scores(attributions).numpy(), spec["tokens"], signed=spec["signed"], out_dir=out_dir,
            stems=spec["stems"], captions=spec["captions"], style=style, title=spec.get("title", ""),
            misclassified=spec.get("misclassified"))
    value_range = spec.get("value_range")
    return render_heatmaps(
        attributions.cpu().numpy(), raw_inputs.cpu().numpy(), modality=spec["modality"], signed=spec["signed"],
        out_dir=out_dir, stems=spec["stems"], captions=spec["captions"],
        feature_names=spec.get("feature_names"), value_range=tuple(value_range) if value_range else None,
        style=style, title=spec.get("title", ""), misclassified=spec.get("misclassified"),
        value_label=spec.get("value_label") or "input value",
    )


def _write_attributions(staging: Path, prepared: Prepared, attributions: torch.Tensor, method: str) -> None:
    tensors = {
        "attributions": attributions,
        "inputs": prepared.inputs,
        "targets": prepared.targets,
        "predictions": prepared.predictions,
        "probabilities": prepared.probabilities,
        "indices": prepared.data.indices,
    }
    if prepared.data.y is not None:
        tensors["labels"] = prepared.data.y
    if prepared.data.masks is not None:
        tensors["masks"] = prepared.data.masks.to(torch.uint8)
    if prepared.data.tokens is not None:  # texts: where each one ends in the padded tensors
        tensors["token_counts"] = torch.tensor([len(row) for row in prepared.data.tokens], dtype=torch.long)
    save_file(on_cpu(tensors), str(staging / runs.ATTRIBUTIONS_FILE), metadata={"method": method})


def model_record(loaded: LoadedModel, prepared: Prepared) -> dict[str, Any]:
    return {"path": str(loaded.path), "sha256": loaded.sha256, "format": loaded.format,
            "meta": prepared.meta.to_dict()}


def data_record(prepared: Prepared) -> dict[str, Any]:
    data = prepared.data
    return {"name": data.name, "split": data.split, "modality": data.modality, "samples": len(data),
            "indices": data.indices.tolist(), "preprocessing": asdict(prepared.preprocessing)}


def _config_dict(config: ExplainConfig, method: Any) -> dict[str, Any]:
    values = asdict(config)
    values["method"] = method.name
    return values
