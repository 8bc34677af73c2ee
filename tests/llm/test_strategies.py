"""The four prompting strategies render from their package-data templates, in either format."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import torch

from xaibench.llm.neighbourhood import Neighbourhood
from xaibench.llm.strategies import STRATEGIES, Case, Example

LABELS = ("A", "B", "C")


def hood() -> Neighbourhood:
    samples = torch.tensor([[0.6, 0.5, 0.1], [0.4, 0.5, 0.2], [0.55, 0.45, 0.3], [0.3, 0.7, 0.9]])
    return Neighbourhood(point=torch.tensor([0.5, 0.5, 0.5]), samples=samples, outputs=torch.tensor([1, 0, 1, 0]),
                         probabilities=torch.tensor([0.9, 0.1, 0.8, 0.2]), point_output=1,
                         query=torch.tensor([0.45, 0.52, 0.5]), query_output=0)


def case(**kw: object) -> Case:
    return Case(**{"labels": LABELS, "hood": hood(), "k": 2, "class_name": "benign", **kw})


def user(name: str, **kw: object) -> str:
    messages = STRATEGIES.get(name)().messages(case(**kw))
    assert [role for role, _ in messages] == ["system", "user"]
    return messages[1][1]


def test_the_four_strategies_are_registered_with_a_template_each() -> None:
    assert STRATEGIES.list() == ["e-icl", "i-icl", "p-icl", "pg-icl"]
    shipped = {p.name for p in resources.files("xaibench.llm").joinpath("prompts").iterdir()}
    assert {f"{name}.txt" for name in STRATEGIES.list()} <= shipped


@pytest.mark.parametrize("name", ["p-icl", "pg-icl", "i-icl", "e-icl"])
def test_every_placeholder_is_filled_and_the_answer_format_is_asked(name: str) -> None:
    text = user(name, examples=(Example(torch.tensor([0.1, 0.2, 0.3]), 1, ("C", "A")),), explainer="lime")
    assert "$" not in text and '"benign"' in text and "(A, B, C)" in text
    assert "last line" in text and "2 most important features" in text


def test_change_format_shows_differences_from_the_point_and_output_changes() -> None:
    text = user("p-icl")
    blocks = re.findall(r"Change in Input: (.*)\nChange in Output: (-?\d)", text)
    assert blocks[0] == ("A: 0.100, B: 0.000, C: -0.400", "0")  # same output as the point (1)
    assert blocks[1] == ("A: -0.100, B: 0.000, C: -0.300", "-1")
    assert len(blocks) == 4 and "4 small changes" in text


def test_raw_format_shows_values_and_outputs() -> None:
    text = user("p-icl", changes=False)
    assert re.findall(r"Input: (.*)\nOutput: (\d)", text)[3] == ("A: 0.300, B: 0.700, C: 0.900", "0")
    assert "Change" not in text


def test_pg_icl_hides_one_more_samples_output() -> None:
    text = user("pg-icl")
    assert "Change in Input: A: -0.050, B: 0.020, C: 0.000\nChange in Output: ?" in text
    assert "predict the hidden output" in text


def test_i_icl_gives_step_by_step_instructions() -> None:
    text = user("i-icl")
    assert "from 0 to 100" in text and "running ranking" in text


def test_e_icl_shows_explained_examples_then_the_input_to_explain() -> None:
    examples = (Example(torch.tensor([0.1, 0.2, 0.3]), 1, ("C", "A")),
                Example(torch.tensor([0.9, 0.8, 0.7]), 0, ("B", "C")))
    text = user("e-icl", examples=examples, explainer="lime")
    assert "Input: A: 0.100, B: 0.200, C: 0.300\nOutput: 1\nExplanation: C, A" in text
    assert "Input: A: 0.900, B: 0.800, C: 0.700\nOutput: 0\nExplanation: B, C" in text
    assert "Input: A: 0.500, B: 0.500, C: 0.500\nOutput: 1\nExplanation:\n" in text  # left to fill in
    assert "lime explainer" in text
