"""Attributions reused from earlier explain / evaluate runs (``xaibench evaluate --attributions RUN``).

A run is reused only for the same model file (sha256), the same inputs and the same targets, so
scores never mix attributions of another model, other samples or another class. The method's
parameters and seed come from the run too, so metrics that re-explain (robustness, randomisation)
call the method as it was called to make the reused maps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from xaibench.core import runs
from xaibench.core.errors import InputError
from xaibench.data.prepare import Prepared, Selection
from xaibench.data.transforms import Preprocessing
from xaibench.jobs import record_checks as records

PREFIX = "attributions/"


@dataclass(frozen=True)
class Reused:
    """A method's attributions from an earlier run, with the parameters and seed that made them."""

    attributions: torch.Tensor
    params: dict[str, Any]
    seed: int


def reused_attributions(run_dirs: list[Path], sha256: str, prepared: Prepared) -> dict[str, Reused]:
    """Method name -> what ``run_dirs`` hold for it; later runs win for a repeated name.

    Raises:
        InputError: a run of another model, of other inputs or targets, or with unreadable tensors.
    """
    found: dict[str, Reused] = {}
    for run_dir in run_dirs:
        record = runs.read_run(run_dir)
        if record.get("model", {}).get("sha256") != sha256:
            raise InputError(f"{run_dir} was made with another model file (sha256 differs)")
        tensors = _load(run_dir / runs.ATTRIBUTIONS_FILE)
        _check_same_inputs(run_dir, tensors, prepared)
        seed = int(record.get("seed", 0))
        if record.get("command") == "explain":
            method = record["method"]
            found[method["name"]] = Reused(tensors["attributions"], dict(method.get("params", {})), seed)
        else:
            params = record.get("config", {}).get("params", {})
            found.update({key[len(PREFIX):]: Reused(value, dict(params.get(key[len(PREFIX):], {})), seed)
                          for key, value in tensors.items() if key.startswith(PREFIX)})
    return found


def reused_selection(run_dirs: list[Path], selection: Selection) -> Selection:
    """The first reused run's data, samples and target, unless the user selected samples; its
    preprocessing (resize, crop, normalisation) too unless the user gave preprocessing flags."""
    if not run_dirs or selection.n is not None or selection.indices is not None:
        return selection
    record = runs.read_run(run_dirs[0])
    data = record.get("data", {})
    if "indices" not in data:
        return selection
    asked = record.get("config", {}).get("selection", {})
    spec = selection.data or asked.get("data") or (
        f"{data['name']}:{data['split']}" if data.get("split") else data["name"])
    target = asked.get("target", "pred") if selection.target == "pred" else selection.target
    steps = selection.preprocessing
    if steps == Preprocessing():
        steps = records.preprocessing(data.get("preprocessing"), run_dirs[0] / runs.RUN_FILE)
    return replace(selection, data=spec, target=target, preprocessing=steps,
                   indices=",".join(str(i) for i in data["indices"]))


def _check_same_inputs(run_dir: Path, tensors: dict[str, torch.Tensor], prepared: Prepared) -> None:
    for key in ("indices", "inputs", "targets"):
        if key not in tensors:
            raise InputError(f"{run_dir} holds no {key!r} tensor; --attributions takes explain or "
                             "evaluate runs")
    if not torch.equal(tensors["indices"].long(), prepared.data.indices.long()):
        raise InputError(f"{run_dir} explains other samples; select the same ones "
                         f"(--indices {','.join(str(int(i)) for i in tensors['indices'])})")
    same_shape = tensors["inputs"].shape == prepared.inputs.shape
    if not same_shape or not torch.allclose(tensors["inputs"], prepared.inputs.cpu(), rtol=1e-5, atol=1e-6):
        raise InputError(f"{run_dir} explains other inputs (another dataset or split, or other preprocessing "
                         "flags?); pass its --data and its --resize, --center-crop, --mean, --std or --normalize")
    if not torch.equal(tensors["targets"].long(), prepared.targets.long().cpu()):
        raise InputError(f"{run_dir} explains other target classes; pass the --target it was made with")


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
