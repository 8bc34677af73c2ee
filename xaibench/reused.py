"""Attributions reused from earlier explain / evaluate runs (``xaibench evaluate --attributions RUN``).

A run is reused only for the same model file (sha256) and the same samples, so scores never mix
attributions of another model or other inputs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from xaibench import runs
from xaibench.errors import InputError
from xaibench.inputs import Selection

PREFIX = "attributions/"


def reused_attributions(run_dirs: list[Path], sha256: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """Method name -> attributions (N, *S) from ``run_dirs``; later runs win for a repeated name.

    Raises:
        InputError: a run of another model, of other samples, or with unreadable tensors.
    """
    found: dict[str, torch.Tensor] = {}
    for run_dir in run_dirs:
        record = runs.read_run(run_dir)
        if record.get("model", {}).get("sha256") != sha256:
            raise InputError(f"{run_dir} was made with another model file (sha256 differs)")
        tensors = _load(run_dir / runs.ATTRIBUTIONS_FILE)
        if not torch.equal(tensors["indices"].long(), indices.long()):
            raise InputError(f"{run_dir} explains other samples; select the same ones "
                             f"(--indices {','.join(str(int(i)) for i in tensors['indices'])})")
        if record.get("command") == "explain":
            found[record["method"]["name"]] = tensors["attributions"]
        else:
            found.update({key[len(PREFIX):]: value for key, value in tensors.items() if key.startswith(PREFIX)})
    return found


def reused_selection(run_dirs: list[Path], selection: Selection) -> Selection:
    """The first reused run's data and samples, unless the user selected samples."""
    if not run_dirs or selection.n is not None or selection.indices is not None:
        return selection
    data = runs.read_run(run_dirs[0]).get("data", {})
    if "indices" not in data:
        return selection
    spec = selection.data or (f"{data['name']}:{data['split']}" if data.get("split") else data["name"])
    return replace(selection, data=spec, indices=",".join(str(i) for i in data["indices"]))


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
