"""What an evaluation will compute, checked before any model is loaded: methods, metrics, parameters.

Metrics chosen by ``all``, a category or a glob are skipped (and listed in the report) where they
cannot run on this model and data; a metric the user named must run, or the command fails with exit 2.
The reference of the agreement metrics is a method's attributions or, named ``GROUND_TRUTH``, the data's
own ground-truth attributions (``Dataset.ground_truth``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xaibench.attribution import METHODS, parse_params
from xaibench.core import runs
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.metrics import METRICS
from xaibench.metrics.selection import choose_metrics

GROUND_TRUTH = "ground_truth"  # the reference name that means the data's ground-truth attributions


@dataclass(frozen=True)
class Plan:
    """Methods to score, metrics to compute, per-name parameters and what was skipped (with why)."""

    methods: list[str]
    metrics: list[str]
    explicit: frozenset[str]
    params: dict[str, dict[str, str]]
    reference: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def attributed(self) -> list[str]:
        """Methods whose attributions are needed: the scored ones and the reference method."""
        extra = [self.reference] if self.reference not in (None, GROUND_TRUTH, *self.methods) else []
        return [*self.methods, *extra]

    def applicable(self, modality: str, has_masks: bool, has_ground_truth: bool = False) -> Plan:
        """The plan without the metrics that cannot run on this data (and without a reference no metric
        needs); IncompatibleError for a named metric or a method that cannot run here, InputError for a
        ground-truth reference that a metric needs on data without one."""
        for name in self.attributed:
            if modality not in METHODS.get(name).modalities:
                raise IncompatibleError(f"{name} does not apply to {modality} inputs")
        keep, skipped = [], list(self.skipped)
        remote = [name for name in self.methods if METHODS.get(name).remote]
        for name in self.metrics:
            reason = _why_not(METRICS.get(name), modality, has_masks, self.reference, remote)
            if reason is None:
                keep.append(name)
            elif name in self.explicit:
                raise IncompatibleError(f"metric {name} cannot run here: {reason}")
            else:
                skipped.append({"method": "all", "metric": name, "reason": reason})
        if not keep:
            by_reason: dict[str, list[str]] = {}
            for skip in skipped:
                by_reason.setdefault(skip["reason"], []).append(skip["metric"])
            raise IncompatibleError("none of the chosen metrics can run on this model and data: " + "; ".join(
                f"{', '.join(names)}: {reason}" for reason, names in by_reason.items()))
        reference = self.reference if any(METRICS.get(name).needs_reference for name in keep) else None
        if reference == GROUND_TRUTH and not has_ground_truth:
            raise InputError(f"--reference {GROUND_TRUTH} needs data with ground-truth attributions and this "
                             "data has none (the synthetic_* datasets have them)")
        return replace(self, metrics=keep, skipped=skipped, reference=reference)


def make_plan(methods: tuple[str, ...], metrics: str, params: dict[str, dict[str, str]],
              reference: str | None, reused_runs: list[Path]) -> Plan:
    """Check names and parameters; methods default to those of the reused runs."""
    reused = reused_method_names(reused_runs)
    names = list(dict.fromkeys(methods)) or reused
    if not names:
        raise InputError("name the methods to compare with --methods (or reuse runs with --attributions)")
    reference_method = [] if reference in (None, GROUND_TRUTH) else [reference]
    for name in [*names, *reference_method]:
        METHODS.get(name)  # UnknownNameError with a suggestion
    chosen = choose_metrics(metrics)
    metric_names = [c.name for c in chosen]
    known = {*names, *metric_names, *reference_method}
    for owner, values in params.items():
        if owner not in known:
            raise UnknownNameError.for_name("method or metric", owner, sorted(known),
                                            where="the parameters (-p NAME.KEY=VALUE)")
        if owner in reused and owner not in metric_names:
            raise InputError(f"the parameters of {owner} come from its --attributions run; drop "
                             f"-p {owner}.KEY or compute it anew without that run")
        registry, kind = (METRICS, "metric") if owner in metric_names else (METHODS, "method")
        parse_params(registry.get(owner).Params, values, owner=f"{kind} {owner!r}")
    return Plan(methods=names, metrics=metric_names, explicit=frozenset(c.name for c in chosen if c.explicit),
                params=params, reference=reference)


def reused_method_names(run_dirs: list[Path]) -> list[str]:
    """Method names recorded in the run.json of explain and evaluate runs."""
    names: list[str] = []
    for run_dir in run_dirs:
        record = runs.read_run(run_dir)
        if record.get("command") == "explain":
            names.append(record["method"]["name"])
        elif record.get("command") == "evaluate":
            names.extend(record.get("methods", []))
        else:
            raise InputError(f"{run_dir} was written by {record.get('command')!r}; --attributions takes "
                             "explain or evaluate runs")
    return list(dict.fromkeys(names))


def _why_not(metric: Any, modality: str, has_masks: bool, reference: str | None,
             remote: list[str]) -> str | None:
    if modality not in metric.modalities:
        return f"does not apply to {modality} inputs"
    if metric.needs_masks and not has_masks:
        return "needs ground-truth masks (the shapes and synthetic_motifs datasets have them)"
    if metric.needs_reference and reference is None:
        return f"needs a reference attribution (--reference METHOD or {GROUND_TRUTH})"
    if metric.needs_explainer and remote:
        return (f"re-explains perturbed inputs, and {', '.join(remote)} would send a request for each "
                "(uncounted, unrecorded); score it without them")
    return None
