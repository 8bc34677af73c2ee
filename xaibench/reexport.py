"""Re-rendering a run's heatmaps from its stored tensors and run.json, without the model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from xaibench import runs
from xaibench.errors import InputError
from xaibench.explain import render_run_heatmaps
from xaibench.inputs import denormalise
from xaibench.models import ModelMeta
from xaibench.report import HeatmapStyle

GRID_FILE = "grid.png"  # what every heatmaps folder holds: the marker that it may be replaced


def reexport(run_dir: Path, style: HeatmapStyle, out: Path | None = None,
             overwrite: bool = False) -> list[Path]:
    """Render ``run_dir``'s attributions with ``style``.

    By default the run's own heatmaps/ folder is replaced (and run.json records the style); ``out``
    names a new folder outside the run instead, replaced only with ``overwrite`` and only if it holds
    heatmaps. Files are rendered into a temporary folder and swapped in when complete.
    """
    record = runs.read_run(run_dir)
    spec = record.get("heatmaps")
    if not spec:
        raise InputError(f"{run_dir} has no heatmaps to re-export (command {record.get('command')})")
    own = run_dir / runs.HEATMAPS_DIR
    if out is not None and out.resolve() != own.resolve():
        inside = out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents
        if inside:
            raise InputError(f"--out {out} lies inside the run; omit --out to replace its heatmaps")
    target = own if out is None else out
    tensors = _load_tensors(run_dir)
    raw = denormalise(tensors["inputs"], ModelMeta.from_dict(record.get("model", {}).get("meta", {})))
    replacing_own = target.resolve() == own.resolve()
    with runs.staged_dir(target, overwrite or replacing_own, marker=GRID_FILE) as staging:
        files = render_run_heatmaps(spec, tensors["attributions"], raw, staging, style)
    if replacing_own:
        record["heatmaps"]["style"] = asdict(style)
        runs.write_json(run_dir / runs.RUN_FILE, record)
    return [target / f.relative_to(staging) for f in files]


def _load_tensors(run_dir: Path) -> dict:
    path = run_dir / runs.ATTRIBUTIONS_FILE
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
