"""``xaibench concepts`` under ``torchrun --nproc-per-node 2`` (gloo, this machine) gives the run one
process gives: each process collects the activations of its block of images, the blocks are gathered in
image order, and rank 0 alone writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "sample_models" / "digits_cnn.pt")
XAIBENCH = Path(sys.executable).with_name("xaibench")
TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "XAIBENCH_DIST_TIMEOUT": "60", "XAIBENCH_DEBUG": ""}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, check=False, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("setting", [
    [DIGITS, "--class", "3", "-n", "7", "--batch-size", "5"],  # CRAFT patches, Sobol: 3 + 4 images
], ids=["patches-sobol-uneven"])
def test_concepts_on_two_processes_is_the_one_process_run(tmp_path: Path, setting: list[str]) -> None:
    args = ["concepts", *setting, "-k", "4", "--json", "--out"]
    run([str(XAIBENCH), *args, "one"], tmp_path)
    two = run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "xaibench", *args, "two"], tmp_path)
    json.loads(two.stdout)  # one JSON document: only rank 0 prints
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    a, b = load_file(str(one_dir / "bank.safetensors")), load_file(str(two_dir / "bank.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5, msg=name)
    first, second = (json.loads((d / "concepts.json").read_text()) for d in (one_dir, two_dir))
    assert second["images"] == first["images"] and second["rows"] == first["rows"]
    torch.testing.assert_close(torch.tensor(second["global_importance"]), torch.tensor(first["global_importance"]),
                               rtol=1e-5, atol=1e-5)
    for metric, value in first["metrics"].items():
        assert second["metrics"][metric]["value"] == pytest.approx(value["value"], rel=1e-4, abs=1e-5), metric
    assert [json.loads((d / "run.json").read_text())["world_size"] for d in (one_dir, two_dir)] == [1, 2]
    assert sorted(p.name for p in two_dir.iterdir()) == sorted(p.name for p in one_dir.iterdir())
