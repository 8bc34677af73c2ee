"""Hostile or careless inputs: exit 2 with exactly one line on stderr naming the culprit, and no run.

A regression must fail, not hang: the commands that once blocked run with a short subprocess timeout.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.conftest import EXE, SAMPLES, Result
from tests.data.test_hostile_files import png_header
from xaibench.attribution.base import METHODS, parse_params
from xaibench.core.distributed import TIMEOUT_ENV, timeout
from xaibench.core.errors import InputError

MLP = str(SAMPLES / "breast_cancer_mlp.pt")
DIGITS = str(SAMPLES / "digits_cnn.pt")


def _run(*args: str, cwd: Path, seconds: float = 120) -> Result:
    """The CLI with a timeout short enough that a hang fails the test."""
    env = {**os.environ, "XAIBENCH_DEBUG": ""}
    proc = subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=seconds)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _refused(result: Result, cwd: Path, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (cwd / "runs").exists()


def test_fifo_as_data_or_model_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.npz")
    os.mkfifo(tmp_path / "model.pt")
    _refused(_run("explain", MLP, "--data", "x.npz", "-n", "2", cwd=tmp_path, seconds=60), tmp_path,
             "x.npz is not a regular file or folder (a FIFO, socket or device)")
    _refused(_run("explain", "model.pt", "--data", "breast_cancer", cwd=tmp_path, seconds=60), tmp_path,
             "model.pt is not a model file (a directory or a special file)")


def test_decompression_bomb_image_is_refused(tmp_path: Path) -> None:
    png_header(tmp_path / "images" / "bomb.png", 15000, 15000)
    _refused(_run("explain", DIGITS, "--data", "images", cwd=tmp_path), tmp_path,
             "bomb.png: an image of 225000000 pixels is over the limit of 89478485 pixels")


def test_pt_data_of_pickle_protocol_4_gives_one_line(tmp_path: Path) -> None:
    torch.save(torch.rand(4, 30), tmp_path / "p4.pt", pickle_protocol=4)
    _refused(_run("explain", MLP, "--data", "p4.pt", cwd=tmp_path), tmp_path,
             "cannot read p4.pt: it uses pickle protocol 4")


def test_checkpoint_with_nan_weights_is_refused(tmp_path: Path) -> None:
    checkpoint = torch.load(MLP, weights_only=True)
    first = next(iter(checkpoint["state_dict"].values()))
    first.view(-1)[0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.pt")
    _refused(_run("explain", "nan.pt", "-n", "3", "--method", "saliency", cwd=tmp_path), tmp_path,
             "the model's outputs are NaN or infinite for samples 0, 1, 2 of breast_cancer:test")


def test_non_finite_method_parameter_is_refused(tmp_path: Path) -> None:
    result = _run("explain", MLP, "-n", "2", "--method", "smoothgrad", "-p", "stdev=nan", cwd=tmp_path)
    _refused(result, tmp_path, "parameter 'stdev' of method 'smoothgrad' must be a finite number, got 'nan'")


def test_model_and_data_names_that_are_not_utf8(tmp_path: Path) -> None:
    model = tmp_path / os.fsdecode(b"model\xff.pt")
    model.write_bytes(Path(MLP).read_bytes())
    np.savez(tmp_path / os.fsdecode(b"d\xff.npz"), x=np.random.default_rng(0).random((2, 30)))
    result = _run("explain", os.fsdecode(b"model\xff.pt"), "--data", os.fsdecode(b"./d\xff.npz"),
                  "--method", "saliency", "--json", cwd=tmp_path)
    assert (result.code, result.stderr) == (0, "")  # the heatmap title once failed to draw the name
    run = tmp_path / "runs" / next(os.walk(tmp_path / "runs"))[1][0]
    assert run.name.startswith("explain-model\\xff-saliency-")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert (record["model"]["path"], record["data"]["name"]) == ("model\\xff.pt", "d\\xff.npz")
    assert sorted(p.name for p in (run / "heatmaps").iterdir()) == ["grid.png", "sample_0000.png",
                                                                    "sample_0001.png"]


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity"])
def test_float_parameters_must_be_finite(text: str) -> None:
    params = METHODS.get("smoothgrad").Params
    with pytest.raises(InputError, match=f"parameter 'stdev' of x must be a finite number, got {text!r}"):
        parse_params(params, {"stdev": text}, owner="x")
    with pytest.raises(InputError, match="parameter 'stdev' of x must be a finite number, got nan"):
        parse_params(params, {"stdev": math.nan}, owner="x")  # from Python, not text
    assert parse_params(params, {"stdev": "0.25"}, owner="x").stdev == 0.25


@pytest.mark.parametrize("text", ["abc", "0", "-5", "nan", "inf", "31536001", ""])
def test_distributed_timeout_must_be_a_positive_number(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, text)
    with pytest.raises(InputError) as info:
        timeout()
    assert str(info.value) == (f"{TIMEOUT_ENV} must be a positive number of seconds (at most 31536000), "
                               f"got {text!r}")
    assert info.value.exit_code == 2


def test_distributed_timeout_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert timeout() == 600.0
    monkeypatch.setenv(TIMEOUT_ENV, " 12.5 ")
    assert timeout() == 12.5
