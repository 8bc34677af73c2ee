"""Re-rendering a run's heatmaps from its stored tensors and run.json, without the model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from xaibench import runs
from xaibench.errors import InputError
from xaibench.explain import render_run_heatmaps
from xaibench.inputs import denormalise
from xaibench.models import ModelMeta
from xaibench.report import HeatmapStyle


def reexport(run_dir: Path, style: HeatmapStyle, out: Path | None = None) -> list[Path]:
    """Render ``run_dir``'s attributions with ``style`` into ``out`` (default: the run's heatmaps/).

    The new files are rendered into a temporary folder and swapped in only when complete.
    """
    record = runs.read_run(run_dir)
    spec = record.get("heatmaps")
    if not spec:
        raise InputError(f"{run_dir} has no heatmaps to re-export (command {record.get('command')})")
    try:
        tensors = load_file(str(run_dir / runs.ATTRIBUTIONS_FILE))
    except (OSError, SafetensorError) as err:
        raise InputError(f"cannot read {run_dir / runs.ATTRIBUTIONS_FILE}: {err}") from None
    meta = ModelMeta.from_dict(record.get("model", {}).get("meta", {}))
    raw = denormalise(tensors["inputs"], meta)
    target = out or run_dir / runs.HEATMAPS_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        files = render_run_heatmaps(spec, tensors["attributions"], raw, staging, style)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target / f.relative_to(staging) for f in files]
