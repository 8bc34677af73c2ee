"""Benchmark suites: a YAML file naming models, data, methods, metrics and parameters, read and checked
whole before anything runs.

    name: bundled                      # a plain name
    seed: 0
    n: 32                              # samples per model (evaluate)
    methods: [saliency, integrated_gradients]
    metrics: [deletion, insertion]     # or a string: names, categories, globs, "all"
    params: {integrated_gradients: {n_steps: 32}}
    meta: {n: 16, perturbations: 3}    # meta-evaluation of the same metrics; "meta: false" skips it
    models:
      - path: digits_cnn.pt            # relative to the suite file
        name: digits                   # optional: the cell's name (default: the file's stem)
        data: digits:test              # optional; n, methods, metrics, params, reference and meta may be
                                       # overridden (reference: a method, or ground_truth for synthetic data)

Nothing in the file becomes code: models load safely (checkpoints and safetensors; anything that runs code
on load needs --trust-model), names are plain names, and the paths are model files only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaibench.core.errors import InputError
from xaibench.core.runs import plain_name

SUITE_KEYS = {"name", "seed", "n", "methods", "metrics", "params", "reference", "meta", "models"}
MODEL_KEYS = {"path", "name", "data", "n", "methods", "metrics", "params", "reference", "meta"}
META_KEYS = {"n", "perturbations", "metrics"}


@dataclass(frozen=True)
class MetaSpec:
    """The meta-evaluation of one cell: samples, draws per test and the metrics judged."""

    n: int = 16
    perturbations: int = 3
    metrics: str = ""


@dataclass(frozen=True)
class CellSpec:
    """One model of a suite with everything its evaluate and meta-evaluate runs need."""

    name: str
    path: Path
    data: str | None
    n: int
    methods: tuple[str, ...]
    metrics: str
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    reference: str | None = None
    meta: MetaSpec | None = None

    def fingerprint(self, seed: int, kind: str) -> dict[str, Any]:
        """What decides the results of the cell's ``kind`` run (evaluate or meta): a finished run is reused
        only while this is unchanged."""
        common = {"path": str(self.path), "data": self.data, "methods": list(self.methods), "params": self.params,
                  "reference": self.reference, "seed": seed}
        if kind == "evaluate":
            return {**common, "n": self.n, "metrics": self.metrics}
        return {**common, "meta": None if self.meta is None else vars(self.meta)}


@dataclass(frozen=True)
class Suite:
    name: str
    seed: int
    cells: tuple[CellSpec, ...]


def read_suite(path: Path) -> Suite:
    """The suite in ``path`` (YAML), checked whole.

    Raises:
        InputError: unreadable YAML, an unknown or mistyped key, a name that is not plain, a model file
            that does not exist, two cells with one name, no models.
    """
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputError(f"cannot read suite {path}: {' '.join(str(error).split())[:200]}") from None
    where = str(path)
    raw = _mapping(raw, where, SUITE_KEYS)
    name = plain_name(_text(raw.get("name", Path(path).stem), f"{where}: name"), "suite name", Path(path))
    seed = _integer(raw.get("seed", 0), f"{where}: seed", 0)
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise InputError(f"{where}: models must be a non-empty list")
    cells = tuple(_cell(entry, raw, Path(path).parent, f"{where}: models[{i}]") for i, entry in enumerate(models))
    names = [cell.name for cell in cells]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"{where}: two models share the name {duplicated[0]!r}; give one of them another name")
    return Suite(name=name, seed=seed, cells=cells)


def _cell(entry: Any, suite: dict[str, Any], folder: Path, where: str) -> CellSpec:
    entry = _mapping(entry, where, MODEL_KEYS)
    path = folder / _text(entry.get("path"), f"{where}: path")
    if not path.is_file():
        raise InputError(f"{where}: no model file {path}")
    name = plain_name(_text(entry.get("name", path.stem), f"{where}: name"), "model name", path)
    data = entry.get("data")
    methods = entry.get("methods", suite.get("methods"))
    metrics = entry.get("metrics", suite.get("metrics", "faithfulness"))
    meta = entry.get("meta", suite.get("meta", {}))
    reference = entry.get("reference", suite.get("reference"))
    return CellSpec(name=name, path=path, data=None if data is None else _text(data, f"{where}: data"),
                    n=_integer(entry.get("n", suite.get("n", 32)), f"{where}: n", 1),
                    methods=_names(methods, f"{where}: methods"), metrics=_metric_list(metrics, f"{where}: metrics"),
                    params=_params(entry.get("params", suite.get("params", {})), f"{where}: params"),
                    reference=None if reference is None else _text(reference, f"{where}: reference"),
                    meta=_meta(meta, _metric_list(metrics, f"{where}: metrics"), f"{where}: meta"))


def _meta(raw: Any, metrics: str, where: str) -> MetaSpec | None:
    if raw is False or raw is None:
        return None
    raw = _mapping(raw, where, META_KEYS)
    return MetaSpec(n=_integer(raw.get("n", 16), f"{where}.n", 1),
                    perturbations=_integer(raw.get("perturbations", 3), f"{where}.perturbations", 1),
                    metrics=_metric_list(raw.get("metrics", metrics), f"{where}.metrics"))


def _mapping(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where} must be a non-empty string")
    return value.strip()


def _integer(value: Any, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{where} must be an integer of at least {low}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{where} must list at least two method names")
    return tuple(value)


def _metric_list(value: Any, where: str) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return ",".join(value)
    return _text(value, where)


def _params(value: Any, where: str) -> dict[str, dict[str, str]]:
    """{method or metric: {key: value}} with the values as the CLI would give them (text)."""
    outer = _mapping(value, where, set(value) if isinstance(value, dict) else set())
    out: dict[str, dict[str, str]] = {}
    for owner, inner in outer.items():
        inner = _mapping(inner, f"{where}.{owner}", set(inner) if isinstance(inner, dict) else set())
        out[str(owner)] = {str(k): _scalar(v, f"{where}.{owner}.{k}") for k, v in inner.items()}
    return out


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise InputError(f"{where} must be a number, a string or true / false")
