"""Influence creates every tensor on the device of the model and data it meets (issue 18).

With torch's default device set to "meta" while the model and the data live on the CPU, a tensor made
without an explicit device lands on "meta" and the computation fails or gives meta tensors; the results
must instead be on the CPU and equal to those computed with the default device left alone. The library
runs every strategy (true Fisher: labels drawn from a CPU generator and moved), and the CLI runs fit,
score and self end to end with ``--device cpu``, whose run records name the device.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import SAMPLES, run_main
from tests.influence.helpers import padded_cnn
from xaibench.influence import ClassificationTask, FitConfig, Influence, ScoreConfig, fit_factors

TASK = ClassificationTask()
CNN = str(SAMPLES / "digits_cnn.pt")


@pytest.fixture
def on_meta() -> Iterator[Callable[..., Any]]:
    """``on_meta(fn)`` calls fn with "meta" as the default device, and restores the CPU even on failure."""

    def call(fn: Callable[[], Any]) -> Any:
        torch.set_default_device("meta")
        try:
            return fn()
        finally:
            torch.set_default_device(None)

    try:
        yield call
    finally:
        torch.set_default_device(None)


def scores(strategy: str, rank: int | None, model: torch.nn.Module, x: torch.Tensor,
           y: torch.Tensor) -> list[torch.Tensor]:
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy=strategy, batch_size=3))  # true Fisher
    influence = Influence(model, TASK, factors, ScoreConfig(rank=rank, batch_size=3, query_block=2))
    return [*factors.tensors.values(), influence.pairwise(x[:3], y[:3], x, y), influence.self_influence(x, y)]


@pytest.mark.parametrize(("strategy", "rank"), [("identity", None), ("diagonal", None), ("kfac", 1),
                                                ("ekfac", None), ("exact", None)])
def test_the_library_under_a_meta_default_device(strategy, rank, on_meta):
    model, gen = padded_cnn(), torch.Generator().manual_seed(0)  # on the CPU
    x, y = torch.randn(7, 2, 3, 3, generator=gen, dtype=torch.float64), torch.randint(0, 3, (7,), generator=gen)
    expected = scores(strategy, rank, model, x, y)
    got = on_meta(lambda: scores(strategy, rank, model, x, y))
    assert len(got) == len(expected)
    for value, reference in zip(got, expected):
        assert value.device.type == "cpu"
        torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-9)


def test_fit_score_and_self_under_a_meta_default_device(tmp_path, on_meta):
    lines = [("influence", "fit", CNN, "--train-n", "24", "--out", "f"),
             ("influence", "score", CNN, "--factors", "f", "--train-n", "24", "-n", "2", "-k", "1", "--out", "s"),
             ("influence", "self", CNN, "--train-n", "24", "--strategy", "kfac", "-k", "1", "--out", "r")]
    for where, call in (("cpu", lambda f: f()), ("meta", on_meta)):
        (tmp_path / where).mkdir()
        for line in lines:
            result = call(lambda line=line, where=where: run_main(*line, "--device", "cpu", "--json",
                                                                   cwd=tmp_path / where))
            assert result.code == 0, (where, line, result.stderr)
    for name in ("f/factors.safetensors", "s/scores.safetensors", "r/scores.safetensors"):
        expected, got = (load_file(str(tmp_path / where / name)) for where in ("cpu", "meta"))
        assert got.keys() == expected.keys()
        for key, value in got.items():
            torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-9)
    for name in ("f", "s", "r"):
        record = json.loads((tmp_path / "meta" / name / "run.json").read_text())
        assert record["device"] == {"requested": "cpu", "device": "cpu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine has the device")
def test_an_absent_device_is_one_line_and_exit_2(tmp_path):
    result = run_main("influence", "fit", CNN, "--train-n", "8", "--device", "cuda", "--out", "f", cwd=tmp_path)
    assert result.code == 2 and "--device cuda" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "f").exists()
