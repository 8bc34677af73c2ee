"""Validation of the records xaibench reads back from a run directory: run.json's heatmap entry and an
evaluate run's metrics.json.

Runs are passed around and can be edited or forged, so nothing read from them is trusted: every value
is checked for type and range before it reaches a renderer, every name that becomes a file name is a
plain name (``runs.plain_name``), and a violation is one ``InputError`` naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from xaibench.core.errors import InputError
from xaibench.core.runs import plain_name
from xaibench.data.transforms import Preprocessing
from xaibench.models.meta import MODALITIES, ModelMeta
from xaibench.report import HeatmapStyle


class _Checker:
    """Type checks that name the file and the key path of the first violation."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, where: str, expected: str) -> InputError:
        return InputError(f"{self.source}: {where} must be {expected}")

    def of(self, value: Any, kind: type | tuple[type, ...], where: str, expected: str) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.fail(where, expected)
        return value

    def text(self, value: Any, where: str) -> str:
        return self.of(value, str, where, "text")

    def texts(self, value: Any, where: str, size: int | None = None) -> list[str]:
        items = self.of(value, list, where, "a list of texts")
        if size is not None and len(items) != size:
            raise self.fail(where, f"a list of {size} texts")
        for i, item in enumerate(items):
            self.text(item, f"{where}[{i}]")
        return items

    def number(self, value: Any, where: str, optional: bool = True) -> float | None:
        if value is None and optional:
            return None
        number = self.of(value, (int, float), where, "a number" + (" or null" if optional else ""))
        if not math.isfinite(number):
            raise self.fail(where, "a finite number")
        return number

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        return self.of(value, dict, where, "an object")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def heatmap_spec(record: dict[str, Any], source: Path, samples: int) -> dict[str, Any]:
    """run.json's "heatmaps" entry, checked against ``samples`` stored attributions.

    Raises:
        InputError: a missing or mistyped field, a stem that is not a plain file name (a path outside
            the run), duplicate stems, or lists whose length differs from the stored samples.
    """
    check = _Checker(source)
    spec = check.mapping(record.get("heatmaps"), "heatmaps")
    if spec.get("modality") not in MODALITIES:
        raise check.fail("heatmaps.modality", " or ".join(MODALITIES))
    check.of(spec.get("signed"), bool, "heatmaps.signed", "true or false")
    stems = check.texts(spec.get("stems"), "heatmaps.stems", samples)
    for stem in stems:
        plain_name(stem, "heatmap stem", source)
    if len(set(stems)) != len(stems):
        raise check.fail("heatmaps.stems", "distinct names")
    check.texts(spec.get("captions"), "heatmaps.captions", samples)
    if spec["modality"] == "text":  # one list of token strings per sample
        rows = check.of(spec.get("tokens"), list, "heatmaps.tokens", f"{samples} lists of tokens")
        if len(rows) != samples:
            raise check.fail("heatmaps.tokens", f"{samples} lists of tokens")
        for row in rows:
            check.texts(row, "heatmaps.tokens")
    if spec.get("feature_names") is not None:
        check.texts(spec["feature_names"], "heatmaps.feature_names")
    value_range = spec.get("value_range")
    if value_range is not None:
        check.of(value_range, list, "heatmaps.value_range", "two numbers")
        if len(value_range) != 2:
            raise check.fail("heatmaps.value_range", "two numbers")
        low, high = (check.number(v, "heatmaps.value_range", optional=False) for v in value_range)
        if not low < high:
            raise check.fail("heatmaps.value_range", "[low, high] with low < high")
    check.text(spec.get("title", ""), "heatmaps.title")
    flags = spec.get("misclassified")
    if flags is not None:
        check.of(flags, list, "heatmaps.misclassified", f"a list of {samples} true/false values")
        if len(flags) != samples or not all(isinstance(flag, bool) for flag in flags):
            raise check.fail("heatmaps.misclassified", f"a list of {samples} true/false values")
    check.text(spec.get("value_label") or "", "heatmaps.value_label")
    heatmap_style(spec, source)
    return spec


def heatmap_style(spec: dict[str, Any], source: Path) -> HeatmapStyle:
    """The style recorded in a run.json "heatmaps" entry (the default style when none is recorded).

    Raises:
        InputError: the entry is not an object, names an unknown field, or holds a value the style
            refuses (an unknown scale, format, colour map; a clip or alpha out of range).
    """
    check = _Checker(source)
    recorded = check.mapping(spec.get("style") or {}, "heatmaps.style")
    known = {f.name for f in fields(HeatmapStyle)}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise check.fail(f"heatmaps.style.{unknown[0][:40]}", f"one of the style fields ({', '.join(sorted(known))})")
    for name in ("style", "scale", "format"):
        if name in recorded:
            check.text(recorded[name], f"heatmaps.style.{name}")
    if recorded.get("cmap") is not None:
        check.text(recorded["cmap"], "heatmaps.style.cmap")
    for name in ("clip", "alpha"):
        if name in recorded:
            check.number(recorded[name], f"heatmaps.style.{name}", optional=False)
    try:
        return HeatmapStyle(**recorded)
    except InputError as err:
        raise InputError(f"{source}: heatmaps.style: {err}") from None


def normalisation(record: dict[str, Any], source: Path, channels: int) -> ModelMeta:
    """The model's input normalisation stored in run.json (what heatmaps undo to show raw inputs)."""
    check = _Checker(source)
    model = record.get("model") or {}
    meta = check.mapping(check.mapping(model, "model").get("meta") or {}, "model.meta")
    values = {}
    for key in ("mean", "std"):
        if meta.get(key) is None:
            continue
        numbers = check.of(meta[key], list, f"model.meta.{key}", "a list of numbers")
        if len(numbers) not in (1, channels):
            raise check.fail(f"model.meta.{key}", f"1 or {channels} numbers")
        values[key] = tuple(check.number(v, f"model.meta.{key}", optional=False) for v in numbers)
    if any(v == 0 for v in values.get("std", ())):
        raise check.fail("model.meta.std", "non-zero numbers")
    return ModelMeta(**values)


def preprocessing(value: Any, source: Path) -> Preprocessing:
    """A run's recorded ``data.preprocessing`` (none recorded: none), checked as the flags are.

    Raises:
        InputError: a mistyped field, or values the flags would refuse (an unknown preset, std 0, ...).
    """
    where = "data.preprocessing"
    if value is None:
        return Preprocessing()
    check = _Checker(source)
    value = check.mapping(value, where)
    fields: dict[str, Any] = {}
    if value.get("preset") is not None:
        fields["preset"] = check.text(value["preset"], f"{where}.preset")
    for key, kind, expected in (("mean", (int, float), "numbers"), ("std", (int, float), "numbers"),
                                ("resize", int, "integers"), ("center_crop", int, "integers")):
        if value.get(key) is not None:
            items = check.of(value[key], list, f"{where}.{key}", f"a list of {expected}")
            fields[key] = tuple(check.of(v, kind, f"{where}.{key}", f"a list of {expected}") for v in items)
    try:
        return Preprocessing(**fields)
    except InputError as err:
        raise InputError(f"{source}: {where}: {err}") from None


SUMMARY_KEYS = ("title", "model", "data", "methods", "metrics", "results", "ranking", "skipped")


def evaluate_summary(summary: Any, source: Path) -> dict[str, Any]:
    """An evaluate run's metrics.json, checked for everything the reports read.

    Raises:
        InputError: a missing or mistyped field, or a method name that is not a plain name (method
            names become heatmap folder names).
    """
    check = _Checker(source)
    summary = check.mapping(summary, "metrics.json")
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise InputError(f"{source} is not an evaluate metrics.json (missing {', '.join(missing)})")
    check.text(summary.get("title"), "title")
    model = check.mapping(summary.get("model"), "model")
    check.text(model.get("path"), "model.path")
    if model.get("sha256") is not None:
        check.text(model["sha256"], "model.sha256")
    data = check.mapping(summary.get("data"), "data")
    for key in ("name", "split"):
        check.of(data.get(key), (str, type(None)), f"data.{key}", "text or null")
    check.of(data.get("samples"), int, "data.samples", "an integer")
    methods = check.texts(summary.get("methods"), "methods")
    for name in methods:
        plain_name(name, "method name", source)
    metrics = check.mapping(summary.get("metrics"), "metrics")
    for name, info in metrics.items():
        _metric_info(check, name, info)
    results = check.mapping(summary.get("results"), "results")
    for method, per_metric in results.items():
        for metric, stats in check.mapping(per_metric, f"results.{method}").items():
            _stats(check, stats, f"results.{method}.{metric}")
    _ranking(check, summary.get("ranking"))
    for i, entry in enumerate(check.of(summary.get("skipped") or [], list, "skipped", "a list")):
        entry = check.mapping(entry, f"skipped[{i}]")
        for key in ("method", "metric", "reason"):
            check.text(entry.get(key), f"skipped[{i}].{key}")
    check.of(summary.get("seed"), int, "seed", "an integer")
    check.of(summary.get("created", ""), str, "created", "text")
    for key, value in check.mapping(summary.get("versions", {}), "versions").items():
        check.text(value, f"versions.{key}")
    return summary


def _metric_info(check: _Checker, name: str, info: Any) -> None:
    where = f"metrics.{name}"
    info = check.mapping(info, where)
    check.text(info.get("category"), f"{where}.category")
    check.of(info.get("higher_is_better"), bool, f"{where}.higher_is_better", "true or false")
    check.of(info.get("description", ""), str, f"{where}.description", "text")
    check.of(info.get("curve_label"), (str, type(None)), f"{where}.curve_label", "text or null")
    check.of(info.get("params") or {}, dict, f"{where}.params", "an object")


def _stats(check: _Checker, stats: Any, where: str) -> None:
    if stats is None:
        return
    stats = check.mapping(stats, where)
    for key in ("mean", "std"):
        check.number(stats.get(key), f"{where}.{key}")
    ci95 = stats.get("ci95")
    if ci95 is not None:
        if not isinstance(ci95, list) or len(ci95) != 2:
            raise check.fail(f"{where}.ci95", "[low, high]")
        for value in ci95:
            check.number(value, f"{where}.ci95")
    for key in ("n", "nan"):
        check.of(stats.get(key, 0), int, f"{where}.{key}", "an integer")
    curve = stats.get("curve")
    if curve is not None:
        curve = check.mapping(curve, f"{where}.curve")
        x = check.of(curve.get("x"), list, f"{where}.curve.x", "a list of numbers")
        for key in ("x", "mean", "low", "high"):
            values = check.of(curve.get(key), list, f"{where}.curve.{key}", "a list of numbers")
            if len(values) != len(x):
                raise check.fail(f"{where}.curve.{key}", f"{len(x)} numbers like curve.x")
            for value in values:
                check.number(value, f"{where}.curve.{key}", optional=key != "x")


def _ranking(check: _Checker, ranking: Any) -> None:
    for i, row in enumerate(check.of(ranking, list, "ranking", "a list")):
        row = check.mapping(row, f"ranking[{i}]")
        check.text(row.get("method"), f"ranking[{i}].method")
        check.number(row.get("mean_rank"), f"ranking[{i}].mean_rank")
        for metric, rank in check.mapping(row.get("ranks"), f"ranking[{i}].ranks").items():
            check.number(rank, f"ranking[{i}].ranks.{metric}", optional=False)
