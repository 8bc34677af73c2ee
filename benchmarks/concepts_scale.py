"""Concept extraction at ResNet-18 scale against its floor (issue 23, point 4).

Workload: xaibench's ResNet-18 (``xaibench.models.resnet18``, torchvision's layout, 11.2M parameters,
5 classes, seeded random weights: the timings do not depend on training) on 16 shapes test images
upsampled to 224x224, split at its default layer (the last stage, ``layer4``: a cut, since the model is
an ``nn.Sequential``), the CLI's default settings (nmf, 10 concepts, CRAFT patches of a quarter side: 25
crops per image, Sobol importance with 32 designs), rows per pass from the default memory budget as
``xaibench concepts`` derives them.

  xaibench  ``extract(split, images, target, settings)``, what ``xaibench concepts`` runs.
  floor     what extraction cannot avoid, each timed alone on inputs built before timing: g (the prefix,
            up to layer4) over the 400 crops and over the 16 images (the concept maps), in the same
            rows per pass; the nmf factorisation of the crop rows; the suffix alone (h: pooling and the
            linear head) over every Sobol row, in the same rows per pass.
  ratio     xaibench / floor, target <= 1.2.

Each side runs in a process of its own (``--part``), so its peak resident memory (ru_maxrss) is its own;
target under 2 GB for xaibench. ``--wrapped`` runs the same ResNet inside a module that is no
``nn.Sequential``, which torch.fx splits (the issue's case).

    .venv/bin/python benchmarks/concepts_scale.py [--threads 2] [--repeats 3] [--wrapped]

Writes benchmarks/results/concepts_scale.json and prints the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SIZE, IMAGES, SEED = 224, 16, 0
TARGET_RATIO, TARGET_MIB = 1.2, 2048


class Wrapped(torch.nn.Module):
    """The ResNet inside a module that is no ``nn.Sequential``: what the issue measured (its split was an
    injection that ran the whole network before every call of h); split now by torch.fx."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


WRAPPED = False  # set by --wrapped in the child processes


def workload():
    from xaibench.concepts.extract import Settings
    from xaibench.concepts.split import split_at_default_layer
    from xaibench.core.memory import RowPlan
    from xaibench.data import load_data
    from xaibench.models.archs import resnet18

    torch.manual_seed(SEED)
    model = resnet18(num_classes=5).eval()
    model = Wrapped(model).eval() if WRAPPED else model
    data = load_data("shapes:test")
    images = torch.nn.functional.interpolate(data.x[:IMAGES], size=(SIZE, SIZE), mode="bilinear",
                                             align_corners=False)
    split = split_at_default_layer(model, images[:2])
    plan = RowPlan.of(None, None, "cpu")
    with torch.no_grad():  # as xaibench.jobs.concepts: the whole model's rows bound g's passes
        settings = Settings(batch_size=plan.rows(model, images[:1]),
                            head_batch_size=plan.rows(split.h, split.g(images[:1])))
    return split, images, torch.zeros(IMAGES, dtype=torch.long), settings


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def chunked(fn, x: torch.Tensor, rows: int) -> None:
    with torch.no_grad():
        for first in range(0, x.shape[0], rows):
            fn(x[first:first + rows])


def xaibench_part(repeats: int) -> dict:
    from xaibench.concepts.extract import extract

    split, images, target, settings = workload()
    times = [timed(lambda: extract(split, images, target, settings)) for _ in range(repeats)]
    return {"seconds": times, "layer": split.layer, "split": split.how, "batch_size": settings.batch_size,
            "head_batch_size": settings.head_batch_size}


def floor_part(repeats: int) -> dict:
    from xaibench.concepts.base import DECOMPOSITIONS
    from xaibench.concepts.extract import concept_head, encode_maps
    from xaibench.concepts.importance import sobol_design
    from xaibench.concepts.split import activations, crops, feature_maps

    split, images, _, settings = workload()
    patches = crops(images, settings.patch_size)
    rows = activations(split, images, "patches", patch_size=settings.patch_size, batch_size=settings.batch_size)
    bank = DECOMPOSITIONS.get("nmf")().fit(rows, settings.n_concepts, SEED).bank
    codes = encode_maps(feature_maps(split, images, settings.batch_size), bank, settings.batch_size)
    a, b = sobol_design(settings.n_concepts, 32, torch.Generator().manual_seed(SEED))
    eye = torch.eye(settings.n_concepts, dtype=torch.bool)[:, None, :]
    masks = torch.cat([a, torch.where(eye, b[None], a[None]).reshape(-1, settings.n_concepts)])
    decoded = concept_head(split, bank)  # decode, then h: what the estimator calls
    grid = (codes[:, None] * masks.view(1, -1, *(1,) * (codes.ndim - 2), settings.n_concepts)).flatten(0, 1)
    parts = {
        "g over crops": lambda: chunked(split.g, patches, settings.batch_size),
        "g over images": lambda: chunked(split.g, images, settings.batch_size),
        "nmf fit": lambda: DECOMPOSITIONS.get("nmf")().fit(rows, settings.n_concepts, SEED),
        "h over Sobol rows": lambda: chunked(decoded, grid, settings.head_rows),
    }
    return {"seconds": {name: [timed(run) for _ in range(repeats)] for name, run in parts.items()},
            "crops": int(patches.shape[0]), "sobol_rows": int(grid.shape[0])}


def child(part: str, repeats: int, threads: int, wrapped: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, "--part", part, "--repeats", str(repeats), "--threads",
                          str(threads), *(["--wrapped"] if wrapped else [])], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=("xaibench", "floor"))
    parser.add_argument("--wrapped", action="store_true", help="the ResNet inside a non-Sequential module")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global WRAPPED
    WRAPPED = args.wrapped
    if args.part:
        result = (xaibench_part if args.part == "xaibench" else floor_part)(args.repeats)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    ours = child("xaibench", args.repeats, args.threads, args.wrapped)
    floor = child("floor", args.repeats, args.threads, args.wrapped)
    median = lambda values: sorted(values)[len(values) // 2]
    floor_seconds = {name: median(times) for name, times in floor["seconds"].items()}
    total = sum(floor_seconds.values())
    ratio = median(ours["seconds"]) / total
    report = {"images": IMAGES, "size": SIZE, "threads": args.threads, "repeats": args.repeats,
              "wrapped": args.wrapped, "xaibench": ours,
              "floor": floor, "floor_seconds": floor_seconds, "ratio": ratio, "target_ratio": TARGET_RATIO,
              "target_mib": TARGET_MIB}
    name = "concepts_scale_wrapped.json" if args.wrapped else "concepts_scale.json"
    (ROOT / "benchmarks" / "results" / name).write_text(json.dumps(report, indent=1) + "\n")
    print(f"ResNet-18 at {SIZE}x{SIZE}, {IMAGES} images, split {ours['layer']} ({ours['split']}), rows per pass "
          f"{ours['batch_size']} through g and {ours['head_batch_size']} through h; {floor['crops']} crops, "
          f"{floor['sobol_rows']} Sobol rows\n")
    print(f"| | seconds (median of {args.repeats}) | peak RSS MiB |")
    print("|---|---|---|")
    print(f"| xaibench extract | {median(ours['seconds']):.1f} | {ours['peak_rss_mib']:.0f} |")
    for name, seconds in floor_seconds.items():
        print(f"| floor: {name} | {seconds:.1f} | |")
    print(f"| floor total | {total:.1f} | {floor['peak_rss_mib']:.0f} |")
    print(f"\nratio xaibench / floor: {ratio:.3f} (target <= {TARGET_RATIO}); xaibench peak "
          f"{ours['peak_rss_mib']:.0f} MiB (target < {TARGET_MIB})")


if __name__ == "__main__":
    main()
