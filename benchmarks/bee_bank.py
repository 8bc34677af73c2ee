"""The score bank behind BEE's design study (benchmarks/bee_design.py): every arm's maps, scored once.

BEE spends its T rounds per input on one thing: draw a baseline from a family (arm), integrate the
straight path, score the map with the metric. The draws of an arm are independent of the policy that
asks for them, so a study can draw them once: for each input, ``draws`` baselines from each stochastic
arm (one from a deterministic arm such as zero, repeated, since every draw gives the same map), the
integrated-gradients map of each (``straight_path_integral``, the engine ``bee`` runs), and that map's
score on every study metric. A BEE run of any policy, reward or T <= draws is then a replay: round t
takes the next unused draw of the arm the policy picks, so adaptive, uniform and single-family choice
are compared on the very same maps at exactly matched compute (T path integrals and T metric calls per
input), and one bank serves all eight metrics. The baseline methods (IG, Blur IG, Guided IG, expected
gradients, the CAM family) are scored on the same held-out inputs.

Files (under ``--work``; a chunk of inputs per file, so a stopped run resumes where it was):
  bank/<model>/<split>-<first index>.safetensors   scores (n, arms, draws, metrics), contexts (n, d)
  baselines/<model>.safetensors                    one (n, metrics) tensor per baseline method
Every file records the configuration it was made with; a file made with another one is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from xaibench.metrics import METRICS, compute

from xaibench.attribution import METHODS, attribute
from xaibench.attribution.baselines import BASELINES, baseline_family
from xaibench.attribution.bee import default_arms
from xaibench.attribution.context import embed
from xaibench.attribution.path import quadrature, straight_path_integral
from xaibench.core.errors import IncompatibleError
from xaibench.data.prepare import Prepared, Selection, prepare
from xaibench.jobs.explain import reference_samples
from xaibench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
IMAGE_METRICS = ("deletion", "insertion", "average_drop", "increase_in_confidence", "pos", "neg", "sic", "aic")
SEQUENCE_METRICS = IMAGE_METRICS[:6]  # SIC and AIC are defined on images only
#: metric settings that differ from the registry defaults, per modality; why: RESULTS.md, bee_design
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "image": {"pos": {"substrate": "blur"}, "neg": {"substrate": "blur"}},
    "sequence": {},
}
#: extra columns scored for the baseline methods only: the settings SETTINGS replaced, for the record
ALTERNATIVES: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "image": {"pos@zero": ("pos", {"substrate": "zero"}), "neg@zero": ("neg", {"substrate": "zero"})},
    "sequence": {},
}
BASELINE_METHODS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"baseline": "zero"},
    "blur_ig": {},
    "guided_ig": {},
    "expected_gradients": {},
    "gradcam": {},
    "gradcam_plus_plus": {},
    "xgradcam": {},
    "layercam": {},
    "hirescam": {},
}
CAM_VARIANTS = ("gradcam_plus_plus", "xgradcam", "layercam", "hirescam")  # "the best CAM variant"
CONTEXT_DIM = 16  # bee's default context_dim


@dataclasses.dataclass(frozen=True)
class BankConfig:
    """What a bank file depends on; recorded in every file and checked on resume."""

    model: str
    split: str
    draws: int
    n_steps: int
    seed: int

    def tag(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def derived_seed(seed: int, *parts: object) -> int:
    """A seed of its own for each (model, split, input, arm, ...): results do not depend on run order."""
    return (seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % 2**62


def log(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)


# --- models and data ----------------------------------------------------------------------------


def model_file(name: str, trained: Path) -> Path:
    """A shipped sample model, or one trained by ``sample_models/train.py --only NAME --out trained``."""
    shipped = ROOT / "sample_models" / f"{name}.pt"
    return shipped if shipped.exists() else trained / f"{name}.pt"


def selection(loaded: Any, split: str, n: int, batch_size: int) -> Prepared:
    """The first ``n`` samples of the model's dataset's ``split``; targets are the model's predictions."""
    return prepare(loaded, Selection(data=f"{loaded.meta.dataset}:{split}", n=n), batch_size)


def study_metrics(modality: str) -> tuple[str, ...]:
    return IMAGE_METRICS if modality == "image" else SEQUENCE_METRICS


def scores_of(model: torch.nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
              columns: dict[str, tuple[str, dict[str, Any]]], batch_size: int, seed: int,
              name: str) -> torch.Tensor:
    """(n, len(columns)) float64 per-input scores; one fixed generator per column, as bee's rounds use."""
    out = []
    for column, (metric, params) in columns.items():
        gen = torch.Generator().manual_seed(derived_seed(seed, name, column, "score"))
        out.append(compute(metric, model, inputs, maps, target=target, batch_size=batch_size, generator=gen,
                           **params).scores.double().cpu())
    return torch.stack(out, dim=1)


def metric_columns(modality: str) -> dict[str, tuple[str, dict[str, Any]]]:
    return {m: (m, SETTINGS[modality].get(m, {})) for m in study_metrics(modality)}


# --- the bank -----------------------------------------------------------------------------------


def bank_chunk(model: torch.nn.Module, data: Prepared, rows: slice, config: BankConfig,
               batch_size: int) -> dict[str, torch.Tensor]:
    """Scores (n, arms, draws, metrics) of the maps of every arm's draws, and the contexts (n, d)."""
    modality = data.meta.modality
    inputs, target = data.inputs[rows], data.targets[rows]
    n, k = inputs.shape[0], config.draws
    arms, columns = default_arms(modality), metric_columns(modality)
    alphas, weights = quadrature("gausslegendre", config.n_steps)
    scores = torch.empty((n, len(arms), k, len(columns)), dtype=torch.float64)
    for a, arm in enumerate(arms):
        family = baseline_family(arm, None)
        draws = k if BASELINES.get(arm).stochastic else 1  # a deterministic arm gives one map, repeated
        gens = [torch.Generator().manual_seed(derived_seed(config.seed, config.model, config.split, i, arm))
                for i in range(rows.start, rows.stop)]
        baselines = family.draw(inputs, gens, draws).flatten(0, 1)  # (n * draws, ...), input-major
        repeated, rows_target = inputs.repeat_interleave(draws, 0), target.repeat_interleave(draws, 0)
        maps = straight_path_integral(model, repeated, baselines, rows_target, alphas, weights, batch_size)
        got = scores_of(model, repeated, maps, rows_target, columns, batch_size, config.seed, config.model)
        scores[:, a] = got.view(n, draws, -1).expand(n, k, -1)
    contexts = embed(model, inputs, None, CONTEXT_DIM, batch_size)
    return {"scores": scores.contiguous(), "contexts": contexts.contiguous(), "targets": target.cpu().contiguous()}


def build_bank(name: str, split: str, n: int, draws: int, n_steps: int, chunk: int, work: Path,
               trained: Path, batch_size: int, seed: int, started: float, reverse: bool = False) -> None:
    """Write the missing chunk files of one model's bank on ``split`` (``reverse``: last chunk first,
    so a second process can work on the same bank from the other end)."""
    config = BankConfig(name, split, draws, n_steps, seed)
    folder = work / "bank" / name
    folder.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model_file(name, trained))
    model = loaded.module.eval()
    data = selection(loaded, split, n, batch_size)
    header = {"config": config.tag(), "arms": json.dumps(default_arms(data.meta.modality)),
              "metrics": json.dumps(list(metric_columns(data.meta.modality)))}
    starts = list(range(0, n, chunk))
    for start in reversed(starts) if reverse else starts:
        path = folder / f"{split}-{start:05d}.safetensors"
        if path.exists():
            check_header(path, header)
            continue
        rows = slice(start, min(n, start + chunk))
        staging = path.with_suffix(f".{os.getpid()}.tmp")  # whole files only: another process may look
        save_file(bank_chunk(model, data, rows, config, batch_size), str(staging), metadata=header)
        os.replace(staging, path)
        log(f"bank {name} {split} inputs {rows.start}-{rows.stop - 1}", started)


def check_header(path: Path, header: dict[str, str]) -> None:
    with safe_open(str(path), framework="pt") as handle:
        found = handle.metadata() or {}
    if any(found.get(key) != value for key, value in header.items()):
        raise SystemExit(f"{path} was made with another configuration; use another --work folder")


def load_bank(name: str, split: str, work: Path) -> dict[str, Any] | None:
    """The chunks of one model's bank on ``split`` that exist, concatenated, with ``index``: each row's
    position in the split (chunks may be missing in between when a run stopped). None: no chunk yet."""
    paths = sorted((work / "bank" / name).glob(f"{split}-*.safetensors"))
    if not paths:
        return None
    parts: dict[str, list[torch.Tensor]] = {"scores": [], "contexts": [], "targets": [], "index": []}
    for path in paths:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            for key in ("scores", "contexts", "targets"):
                parts[key].append(handle.get_tensor(key))
        first = int(path.stem.split("-")[1])
        parts["index"].append(torch.arange(first, first + parts["scores"][-1].shape[0]))
    return {**{key: torch.cat(value) for key, value in parts.items()},
            "arms": json.loads(meta["arms"]), "metrics": json.loads(meta["metrics"]),
            "config": json.loads(meta["config"])}


# --- the baseline methods -----------------------------------------------------------------------


def build_baselines(name: str, n: int, work: Path, trained: Path, batch_size: int, seed: int,
                    started: float) -> None:
    """Score the baseline methods' maps of the held-out inputs (skipped when the file holds ``n`` inputs)."""
    path = work / "baselines" / f"{name}.safetensors"
    if path.exists():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("n") == str(n):
                return
    path.parent.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model_file(name, trained))
    model = loaded.module.eval()
    data = selection(loaded, "test", n, batch_size)
    modality = data.meta.modality
    columns = {**metric_columns(modality), **ALTERNATIVES[modality]}
    out, seconds = {}, {}
    for method, params in BASELINE_METHODS.items():
        if modality not in METHODS.get(method).modalities:
            continue
        gen = torch.Generator().manual_seed(derived_seed(seed, name, method))
        extra = reference_samples(METHODS.get(method)(), data, torch.Generator().manual_seed(seed))
        begin = time.perf_counter()
        try:
            maps = attribute(method, model, data.inputs, target=data.targets, batch_size=batch_size,
                             generator=gen, **params, **extra)
        except IncompatibleError as err:
            log(f"baselines {name} {method}: skipped ({err})", started)
            continue
        seconds[method] = round(time.perf_counter() - begin, 2)
        out[method] = scores_of(model, data.inputs, maps, data.targets, columns, batch_size, seed, name)
        log(f"baselines {name} {method}", started)
    staging = path.with_suffix(f".{os.getpid()}.tmp")  # a larger --sizes replaces the file whole
    save_file({m: s.contiguous() for m, s in out.items()}, str(staging),
              metadata={"metrics": json.dumps(list(columns)), "seconds": json.dumps(seconds), "n": str(n)})
    os.replace(staging, path)


def load_baselines(name: str, work: Path) -> dict[str, Any] | None:
    path = work / "baselines" / f"{name}.safetensors"
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        scores = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (a file handle)
    return {"scores": scores, "metrics": json.loads(meta["metrics"]), "seconds": json.loads(meta["seconds"])}


def higher(metric: str) -> bool:
    return METRICS.get(metric.split("@")[0]).higher_is_better
