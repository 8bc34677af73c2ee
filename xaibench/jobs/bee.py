"""``xaibench bee pretrain`` and ``bee report``: learn BEE's policy on training data; show what it learned.

A policy file is safetensors (posterior means and precisions) with metadata: the metric, the model
file's sha256, the context settings and the run's counts, so that ``explain --method bee -p policy=FILE``
can refuse a policy made for another metric.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from xaibench import __version__
from xaibench.attribution import METHODS, parse_params
from xaibench.attribution.bee import pretrain
from xaibench.attribution.context import embed
from xaibench.attribution.policy import ThompsonPolicy
from xaibench.core.distributed import world
from xaibench.core.errors import InputError
from xaibench.core.devices import device_record, resolve_device
from xaibench.core.memory import RowPlan
from xaibench.core.precision import autocast, check_precision
from xaibench.core.runs import check_file_destination
from xaibench.data.prepare import Prepared, Selection, default_split, prepare
from xaibench.metrics import METRICS
from xaibench.jobs.explain import supplied_params
from xaibench.models import LoadedModel, ModelSource, load_model

DEFAULT_SAMPLES = 256  # training inputs the policy learns from unless --n / --indices say otherwise


@dataclass(frozen=True)
class PretrainConfig:
    """What ``xaibench bee pretrain`` was asked to do; ``params`` are bee's other parameters."""

    source: ModelSource
    metric: str = "deletion"
    selection: Selection = Selection()
    params: dict[str, str] = field(default_factory=dict)
    out: str | None = None
    overwrite: bool = False
    seed: int = 0
    batch_size: int | None = None
    max_memory: str | None = None
    device: str = "auto"  # xaibench.core.devices
    dtype: str = "float32"  # xaibench.core.precision


def pretrain_policy(config: PretrainConfig) -> dict[str, Any]:
    """Learn and save a policy; returns a summary (path, arms, the learned arm distribution)."""
    started = time.perf_counter()
    method = METHODS.get("bee")()
    raw = {**config.params, "metric": config.metric}
    parse_params(method.Params, raw, owner="method 'bee'")  # fail before loading anything
    check_precision(config.dtype, [method, METRICS.get(config.metric)])
    device = resolve_device(config.device)
    memory = RowPlan.of(config.batch_size, config.max_memory, device)
    loaded = config.source.load(device)
    out = Path(config.out) if config.out else Path("policies") / f"{config.source.stem}-{config.metric}.safetensors"
    _check_destination(out, config.overwrite)
    prepared = _prepared(loaded, config.selection, "train", memory)
    batch_size = memory.rows(loaded.module, prepared.inputs[:1])
    generator = torch.Generator().manual_seed(config.seed)
    params = parse_params(method.Params, {**raw, **supplied_params(method, prepared, generator, raw, loaded)},
                          owner="method 'bee'")
    with autocast(config.dtype, device):
        outcome = pretrain(loaded.module, prepared.inputs, prepared.targets, params, batch_size, generator)
        contexts = embed(loaded.module, prepared.inputs, params.context_layer, params.context_dim, batch_size)
    shares = outcome.policy.choice_probabilities(contexts, torch.Generator().manual_seed(config.seed)).mean(0)
    metadata = {"metric": config.metric, "metric_params": params.metric_params, "model_sha256": loaded.sha256,
                "samples": str(len(prepared.data)),
                "world_size": str(world().size),
                "rounds": str(params.rounds), "n_steps": str(params.n_steps),
                "context_layer": str(params.context_layer), "created": _now(), "xaibench": __version__,
                "memory": json.dumps(memory.record()),
                "device": json.dumps(device_record(config.device, device)), "dtype": config.dtype}
    if world().main:  # under torchrun every process learned the same policy; rank 0 saves it
        out.parent.mkdir(parents=True, exist_ok=True)
        outcome.policy.save(out, metadata)
    return {"policy": str(out), "metric": config.metric, "samples": len(prepared.data), "rows_per_pass": batch_size,
            "distribution": dict(zip(outcome.families, (round(float(p), 4) for p in shares))),
            "seconds": round(time.perf_counter() - started, 3)}


@dataclass(frozen=True)
class ArmShares:
    """What ``bee report`` charts: per metric (policy), each family's mean choice probability, in the
    policy's arm order, and the inputs and model file they were measured on."""

    distributions: dict[str, dict[str, float]]
    samples: int
    model: str


def arm_distributions(model: str, policies: list[str], selection: Selection, batch_size: int | None,
                      seed: int, trust_model: bool = False, max_memory: str | None = None,
                      device: str = "auto") -> ArmShares:
    """Per policy file: the mean probability of each arm over the contexts of the selected data."""
    placed = resolve_device(device)
    memory = RowPlan.of(batch_size, max_memory, placed)
    loaded = load_model(model, trust_model=trust_model, device=placed)
    prepared = _prepared(loaded, selection, "test", memory)
    batch_size = memory.rows(loaded.module, prepared.inputs[:1])
    out: dict[str, dict[str, float]] = {}
    for path in policies:
        policy, meta = ThompsonPolicy.load(path)
        if meta.get("model_sha256") not in (None, loaded.sha256):
            raise InputError(f"{path} was trained for another model file (sha256 differs)")
        layer = meta.get("context_layer")
        contexts = embed(loaded.module, prepared.inputs, None if layer in (None, "None") else layer,
                         policy.dim, batch_size)
        shares = policy.choice_probabilities(contexts, torch.Generator().manual_seed(seed)).mean(0)
        out[f"{meta.get('metric', Path(path).stem)}"] = dict(zip(policy.arms, (float(p) for p in shares)))
    return ArmShares(out, len(prepared.data), Path(str(loaded.path)).stem)


def _prepared(loaded: LoadedModel, selection: Selection, split: str, memory: RowPlan) -> Prepared:
    """The selected data, by default the model's dataset in ``split`` and the first DEFAULT_SAMPLES."""
    selection = default_split(selection, loaded.meta, split)
    if selection.n is None and selection.indices is None:
        selection = replace(selection, n=DEFAULT_SAMPLES)
    return prepare(loaded, selection, memory)


def _check_destination(out: Path, overwrite: bool) -> None:
    """A policy file is replaced only with --overwrite, and only if it is a policy file."""
    check_file_destination(out, overwrite, _is_policy, "a BEE policy")


def _is_policy(path: Path) -> bool:
    try:
        ThompsonPolicy.load(path)
    except InputError:
        return False
    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
