"""--device and --dtype on the commands: recorded in run.json, applied to the passes, refused in one line."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from tests.cli.conftest import SAMPLES

DIGITS = str(SAMPLES / "digits_cnn.pt")


def _attributions(run):
    return load_file(str(run / "attributions.safetensors"))["attributions"]


def test_a_bfloat16_run_records_its_device_and_precision_and_differs_only_by_rounding(cli_in_process, tmp_path):
    for dtype in ("float32", "bfloat16"):
        result = cli_in_process("explain", DIGITS, "-m", "saliency", "-n", "3", "--device", "cpu", "--dtype", dtype,
                                "--out", str(tmp_path / dtype))
        assert result.code == 0, result.stderr
    record = json.loads((tmp_path / "bfloat16" / "run.json").read_text())
    assert record["device"] == {"requested": "cpu", "device": "cpu"} and record["dtype"] == "bfloat16"
    exact, low = _attributions(tmp_path / "float32"), _attributions(tmp_path / "bfloat16")
    assert low.dtype == torch.float32
    assert not torch.equal(exact, low)  # the passes did run in bfloat16
    # bfloat16 keeps 8 bits of mantissa: single gradients move by up to a quarter of the largest, the maps
    # keep their direction (cosine 0.98 to 0.99 on these samples)
    assert (torch.nn.functional.cosine_similarity(low.flatten(1), exact.flatten(1)) > 0.97).all()


def test_absent_devices_and_float32_only_parts_are_refused_before_any_work(cli_in_process, tmp_path):
    cases = [
        (("explain", DIGITS, "--device", "cuda:3"), "--device cuda:3"),
        (("explain", DIGITS, "--device", "tpu"), "--device must be auto, cpu, cuda, cuda:N or mps"),
        (("explain", DIGITS, "-m", "deeplift", "--dtype", "float16"), "deeplift needs float32"),
        (("evaluate", DIGITS, "--methods", "saliency", "--metrics", "completeness", "--dtype", "bfloat16"),
         "completeness needs float32"),
        (("bee", "pretrain", DIGITS, "--dtype", "double"), "--dtype must be one of float32, bfloat16, float16"),
    ]
    for args, message in cases:
        result = cli_in_process(*args, "--out", str(tmp_path / "run"))
        assert result.code == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
