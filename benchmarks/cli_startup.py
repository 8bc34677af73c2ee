"""Start-up time of the CLI: ``xaibench --help`` and ``xaibench methods`` must not pay for torch.

Runs each command R times in fresh processes through the installed entry point, next to
``python -c "import torch"`` as the cost they avoid, and reports median and minimum wall times.

    .venv/bin/python benchmarks/cli_startup.py [--repeats R]

Writes benchmarks/results/cli_startup.json and prints a table. Target: ``xaibench --help`` < 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("xaibench"))
COMMANDS = {
    "xaibench --help": [EXE, "--help"],
    "xaibench methods": [EXE, "methods"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def wall_times(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - tic)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cli_startup.json")
    args = parser.parse_args()
    results = {}
    for name, argv in COMMANDS.items():
        times = wall_times(argv, args.repeats)
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "all_s": times}
        print(f"{name:28s} median {results[name]['median_s']:.3f} s   min {results[name]['min_s']:.3f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "cli_startup", "repeats": args.repeats,
                                    "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
