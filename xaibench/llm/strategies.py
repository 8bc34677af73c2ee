"""The four prompting strategies of Kroeger et al. (2023) as registered prompt builders.

- ``p-icl`` perturbation-based ICL: the context, the labelled neighbourhood, the question; reason
  first, then only the top-k features on the last line, most important first.
- ``pg-icl`` prediction-based ICL: as p-icl plus one more neighbourhood sample with its output hidden,
  which the LLM predicts before it ranks.
- ``i-icl`` instruction-based ICL: step-by-step instructions (compare the samples where a feature is
  higher with those where it is lower, rate it 0-100, keep a running rank), the final rank on the last
  line.
- ``e-icl`` explanation-based ICL: few-shot examples of (input, output, explanation: the top-k features
  by another registry method, LIME by default), then the input with its explanation left to fill in.
  The examples are the first neighbourhood samples, shown with raw values: an explanation belongs to an
  input, not to a change.

The words are templates kept as package data (``xaibench/llm/prompts/*.txt``, ``string.Template``
syntax); code only fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, ClassVar

from xaibench.core.registry import Registry

if TYPE_CHECKING:
    import torch

    from xaibench.llm.neighbourhood import Neighbourhood

STRATEGIES: Registry[type[Strategy]] = Registry("LLM prompting strategy")


@cache
def template(name: str) -> Template:
    """The package-data template ``prompts/<name>.txt``."""
    text = resources.files("xaibench.llm").joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    return Template(text.strip())


@dataclass(frozen=True)
class Example:
    """An E-ICL example: a scaled input, the model's hard output and the explainer's top-k labels."""

    values: torch.Tensor
    output: int
    ranking: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """Everything a strategy needs to prompt for one input.

    Attributes:
        labels: how the prompt names the features, one per feature (A, B, ... or the real names).
        hood: the labelled neighbourhood.
        k: how many features to ask for.
        class_name: the explained class (output 1 means the model predicts it).
        changes: show changes from the input (True) or raw values.
        examples: E-ICL's explained examples.
        explainer: the method that explained them.
    """

    labels: tuple[str, ...]
    hood: Neighbourhood
    k: int
    class_name: str
    changes: bool = True
    examples: tuple[Example, ...] = ()
    explainer: str = ""


def _values(labels: tuple[str, ...], row: torch.Tensor) -> str:
    return ", ".join(f"{label}: {value:.3f}" for label, value in zip(labels, row.tolist(), strict=True))


def shown_sample(case: Case, row: torch.Tensor, output: int | str, changes: bool | None = None) -> str:
    """One sample in the case's format: raw values and output, or changes from the input."""
    change = case.changes if changes is None else changes
    if change:
        values = (row - case.hood.point).round(decimals=3)
        shown = output if isinstance(output, str) else output - case.hood.point_output
    else:
        values, shown = row, output
    name = "sample-change" if change else "sample-raw"
    return template(name).substitute(values=_values(case.labels, values), output=shown)


class Strategy:
    """A prompt builder: ``messages(case)`` gives the (role, content) pairs sent to the LLM."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    uses_examples: ClassVar[bool] = False

    def messages(self, case: Case) -> tuple[tuple[str, str], ...]:
        fields = {
            "n_features": str(len(case.labels)), "feature_list": ", ".join(case.labels),
            "class_name": case.class_name, "k": str(case.k), "n_shots": str(case.hood.samples.shape[0]),
        }
        fields["intro"] = template("intro-change" if case.changes else "intro-raw").substitute(fields)
        fields["samples"] = "\n\n".join(shown_sample(case, row, int(out))
                                        for row, out in zip(case.hood.samples, case.hood.outputs, strict=True))
        fields.update(self.fields(case))
        return (("system", template("system").substitute()), ("user", template(self.name).substitute(fields)))

    def fields(self, case: Case) -> dict[str, str]:
        """Strategy-specific template fields."""
        return {}


@STRATEGIES.register("p-icl")
class PerturbationICL(Strategy):
    description = "perturbation samples, then the top-k features on the last line"


@STRATEGIES.register("pg-icl")
class PredictionICL(Strategy):
    description = "as p-icl with one hidden output the LLM predicts before it ranks"

    def fields(self, case: Case) -> dict[str, str]:
        return {"query": shown_sample(case, case.hood.query, "?")}


@STRATEGIES.register("i-icl")
class InstructionICL(Strategy):
    description = "step-by-step instructions: compare, rate 0-100, keep a running rank"


@STRATEGIES.register("e-icl")
class ExplanationICL(Strategy):
    description = "few-shot (input, output, explanation) examples from another method (LIME by default)"
    uses_examples = True

    def fields(self, case: Case) -> dict[str, str]:
        examples = [shown_sample(case, e.values, e.output, changes=False) + "\nExplanation: "
                    + ", ".join(e.ranking) for e in case.examples]
        point = shown_sample(case, case.hood.point, case.hood.point_output, changes=False)
        return {"examples": "\n\n".join(examples), "query": point, "explainer": case.explainer}
