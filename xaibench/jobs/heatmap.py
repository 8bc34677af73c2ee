"""Re-rendering a run's heatmaps from its stored tensors and run.json, without the model."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from xaibench.core import ownership, runs
from xaibench.core.errors import InputError
from xaibench.data.prepare import denormalise
from xaibench.jobs import record_checks as records
from xaibench.jobs.explain import render_run_heatmaps
from xaibench.report import HeatmapStyle


def reexport(run_dir: Path, style: HeatmapStyle, out: Path | None = None,
             overwrite: bool = False, inherit: tuple[str, ...] = ()) -> list[Path]:
    """Render ``run_dir``'s attributions with ``style``; the fields named in ``inherit`` (such as
    "scale", "format") are taken from the style the run recorded instead.

    By default the run's own heatmaps/ folder is replaced (and run.json records the style); ``out``
    names a new folder outside the run instead, replaced only with ``overwrite`` and only if xaibench
    provably wrote it. Everything read from the run is validated first (``records.heatmap_spec``), files
    are rendered into a temporary folder and swapped in when complete: a bad run changes nothing.
    """
    record = runs.read_run(run_dir)
    if not record.get("heatmaps"):
        raise InputError(f"{run_dir / runs.RUN_FILE} has no heatmaps to re-export "
                         f"(command {str(record.get('command'))[:40]})")
    own = run_dir / runs.HEATMAPS_DIR
    if out is not None and out.resolve() != own.resolve():
        inside = out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents
        if inside:
            raise InputError(f"--out {out} lies inside the run; omit --out to replace its heatmaps")
    target = own if out is None else out
    tensors = _load_tensors(run_dir)
    spec = records.heatmap_spec(record, run_dir / runs.RUN_FILE, tensors["attributions"].shape[0])
    recorded = records.heatmap_style(spec, run_dir / runs.RUN_FILE)
    style = replace(style, **{name: getattr(recorded, name) for name in inherit})
    inputs = tensors["inputs"]
    raw = denormalise(inputs, records.normalisation(record, run_dir / runs.RUN_FILE, inputs.shape[1]))
    replacing_own = target.resolve() == own.resolve()
    with runs.staged_dir(target, overwrite or replacing_own, run_dir if replacing_own else None) as staging:
        files = render_run_heatmaps(spec, tensors["attributions"], raw, staging, style)
    if replacing_own:
        record["heatmaps"]["style"] = asdict(style)
        runs.write_json(run_dir / runs.RUN_FILE, record)
        # the swapped-in folder carries its own manifest; the run's manifest covers it instead
        (own / ownership.MANIFEST_FILE).unlink(missing_ok=True)
        ownership.update_manifest(run_dir, [runs.RUN_FILE], replaced=runs.HEATMAPS_DIR)
    return [target / f.relative_to(staging) for f in files]


def _load_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    path = run_dir / runs.ATTRIBUTIONS_FILE
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    attributions, inputs = tensors.get("attributions"), tensors.get("inputs")
    if attributions is None or inputs is None or attributions.shape != inputs.shape or attributions.ndim < 2:
        raise InputError(f"{path} lacks matching 'attributions' and 'inputs' tensors")
    return tensors
