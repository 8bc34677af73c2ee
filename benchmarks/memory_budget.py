"""Peak memory and time of the README's shapes commands: the default memory budget against no limit.

Runs each command as its own process through the installed entry point and reads that process's peak
resident memory from ``os.wait4`` (ru_maxrss), side by side in one run, alternating the two variants:

- ``default``: the command as the README shows it (rows per pass from the default memory budget);
- ``unbounded``: the same with ``--batch-size 1000000000``, more rows than any pass has, which takes the
  one-pass paths that the default took before the budget existed (no limit).

    .venv/bin/python benchmarks/memory_budget.py [--repeats 1] [--only evaluate|bee] [--variant default|unbounded]

Targets (issue 16): the evaluate command (5 methods, 15 metrics, 32 samples) under 2 GB peak RSS with
default flags and no slower than unbounded; the same for ``bee pretrain`` on shapes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("xaibench")
SHAPES = str(ROOT / "sample_models" / "shapes_cnn.pt")
UNBOUNDED = ["--batch-size", "1000000000"]

COMMANDS = {
    "evaluate": ["evaluate", SHAPES, "--methods", "saliency,integrated_gradients,gradcam,smoothgrad,random",
                 "--metrics", "deletion,insertion,pixel_flipping,region_perturbation,faithfulness_correlation,"
                 "road,irof,average_drop,max_sensitivity,sparseness,complexity,random_logit,pointing_game,"
                 "attribution_localisation,mask_auc"],
    "bee": ["bee", "pretrain", SHAPES, "--metric", "deletion"],
}


def measure(args: list[str], folder: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of one xaibench process writing into ``folder``."""
    out = ["--out", str(folder / ("policy.safetensors" if args[0] == "bee" else "run"))]
    tic = time.perf_counter()
    proc = subprocess.Popen([str(EXE), *args, *out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "XAIBENCH_MAX_MEMORY": ""})
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - tic
    error = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  exit {code}: {error[-300:]}", file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, code  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=sorted(COMMANDS))
    parser.add_argument("--variant", choices=("default", "unbounded"), help="run only this variant")
    options = parser.parse_args()
    names = [options.only] if options.only else list(COMMANDS)
    print("| command | variant | seconds | peak RSS (MB) | exit |")
    print("|---|---|---|---|---|")
    for name in names:
        for repeat in range(options.repeats):
            for variant, extra in (("default", []), ("unbounded", UNBOUNDED)):
                if options.variant not in (None, variant):
                    continue
                with tempfile.TemporaryDirectory() as folder:
                    seconds, peak, code = measure([*COMMANDS[name], *extra], Path(folder))
                print(f"| {name} | {variant} | {seconds:.1f} | {peak:.0f} | {code} |", flush=True)


if __name__ == "__main__":
    main()
