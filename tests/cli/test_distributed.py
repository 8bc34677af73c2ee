"""The same commands under ``torchrun --nproc-per-node 2`` (gloo, this machine) as in one process:
explain, evaluate, bee and bee pretrain give the same results; a rank that dies is a clear error.

The one-process side of each comparison runs ``main`` in this process with one thread, as each of
torchrun's processes has (OMP_NUM_THREADS=1); torchrun starts the entry point afresh in every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import EXE, SAMPLES, Result, run_cli, run_main
from tests.llm.server import Answer, serving

TORCHRUN = Path(sys.executable).with_name("torchrun")
DIGITS = str(SAMPLES / "digits_cnn.pt")
ENV = {"OMP_NUM_THREADS": "1", "XAIBENCH_DIST_TIMEOUT": "60"}


def torchrun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "xaibench", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, **ENV, "XAIBENCH_DEBUG": "", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def alone(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """``args`` in one process (this one), on one thread like each of torchrun's processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_main(*args, cwd=cwd, env={**ENV, **(env or {})})
    finally:
        torch.set_num_threads(threads)


def both(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Run ``args`` (ending in --out) in one process and in two; return the two run directories."""
    one, two = tmp_path / "one", tmp_path / "two"
    single = alone(*args, str(one), cwd=tmp_path, env=env)
    assert single.code == 0, single.stderr
    torchrun(*args, str(two), cwd=tmp_path, env=env)
    for run, size in ((one, 1), (two, 2)):
        assert json.loads((run / "run.json").read_text())["world_size"] == size
    return one, two


def tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "attributions.safetensors"))


def test_explain_is_the_same_on_two_processes(tmp_path: Path) -> None:
    """lime: captum's sampling under a seed per sample (evaluate below covers smoothgrad and random)."""
    one, two = both(["explain", DIGITS, "-m", "lime", "-n", "5", "--out"], tmp_path)  # 2 + 3 samples
    a, b = tensors(one), tensors(two)
    torch.testing.assert_close(b["attributions"], a["attributions"], rtol=0, atol=1e-6)
    assert torch.equal(a["indices"], b["indices"])
    assert sorted(p.name for p in (two / "heatmaps").iterdir()) == sorted(p.name for p in (one / "heatmaps").iterdir())


def test_evaluate_is_the_same_on_two_processes(tmp_path: Path) -> None:
    metrics = "deletion,insertion,faithfulness_correlation,pgi,sparseness,random_logit,max_sensitivity"
    one, two = both(["evaluate", DIGITS, "--methods", "saliency,smoothgrad,random", "--metrics", metrics,
                     "-n", "5", "-p", "smoothgrad.n_samples=4", "--out"], tmp_path)
    first = json.loads((one / "metrics.json").read_text())["results"]
    second = json.loads((two / "metrics.json").read_text())["results"]
    for method, scores in first.items():
        for metric, entry in scores.items():
            if method in ("smoothgrad", "random") and metric in ("max_sensitivity", "random_logit"):
                continue  # a metric's re-explanations of a stochastic method draw per process
            assert second[method][metric]["values"] == pytest.approx(entry["values"], abs=1e-6), (method, metric)
            assert second[method][metric]["ci95"] == pytest.approx(entry["ci95"], abs=1e-6)


def test_bee_and_its_pretraining_are_the_same_on_two_processes(tmp_path: Path) -> None:
    one, two = both(["explain", DIGITS, "-m", "bee", "-n", "5", "-p", "rounds=3", "--seed", "4", "--out"],
                    tmp_path)
    assert torch.equal(tensors(one)["attributions"], tensors(two)["attributions"])
    details = [json.loads((run / "run.json").read_text())["method"]["details"] for run in (one, two)]
    assert details[0] == details[1]  # the arm chosen for every sample, the learned distribution
    policies = [tmp_path / "p1.safetensors", tmp_path / "p2.safetensors"]
    args = ["bee", "pretrain", DIGITS, "-n", "40", "-p", "rounds=2", "--out"]
    assert alone(*args, str(policies[0]), cwd=tmp_path).code == 0
    torchrun(*args, str(policies[1]), cwd=tmp_path)
    learned = [load_file(str(p)) for p in policies]
    assert all(torch.equal(learned[0][key], learned[1][key]) for key in learned[0])


def test_llm_e_icl_on_two_processes_joins_the_transcript_in_sample_order(tmp_path: Path) -> None:
    with serving(lambda body: Answer(text="Answer: " + "ABCDE"[len(body["messages"][-1]["content"]) % 5]
                                     + ", F, G")) as server:
        one, two = both(["explain", str(SAMPLES / "breast_cancer_logreg.pt"), "-m", "llm", "-n", "5", "-p", "k=3",
                         "-p", "strategy=e-icl",
                         "-p", "llm_model=scripted", "-p", f"base_url={server.url}", "-p", "cache=false", "--out"],
                        tmp_path)
    assert torch.equal(tensors(one)["attributions"], tensors(two)["attributions"])
    lines = [(run / "transcript.jsonl").read_text().splitlines() for run in (one, two)]
    assert [json.loads(line)["sample"] for line in lines[1]] == [0, 1, 2, 3, 4]
    assert [json.loads(line)["reply"] for line in lines[0]] == [json.loads(line)["reply"] for line in lines[1]]
    account = json.loads((two / "run.json").read_text())["method"]["details"]["llm"]["account"]
    assert account["sent"] == 5 and account["prompt_tokens"] == 500


def test_bee_re_explained_by_a_metric_does_not_mix_the_processes(tmp_path: Path) -> None:
    """max_sensitivity re-explains copies in chunks of --batch-size rows, which can match one process's
    block of samples and not the other's: BEE must not gather from inside a metric (a collective
    mismatch aborted the run before)."""
    one, two = both(["evaluate", DIGITS, "--methods", "bee", "--metrics", "max_sensitivity,deletion", "-n", "3",
                     "--batch-size", "1", "-p", "bee.rounds=1", "-p", "max_sensitivity.samples=2", "--out"], tmp_path)
    first, second = (json.loads((run / "metrics.json").read_text())["results"]["bee"] for run in (one, two))
    assert second["deletion"]["values"] == pytest.approx(first["deletion"]["values"], abs=1e-6)


def test_launcher_variables_are_checked_without_torchrun(tmp_path: Path) -> None:
    half = run_cli("explain", DIGITS, "-n", "2", cwd=tmp_path, env={"WORLD_SIZE": "2", "RANK": "0"})
    assert half.code == 2 and "MASTER_ADDR, MASTER_PORT not set: start the command with torchrun" in half.stderr
    listing = run_cli("datasets", cwd=tmp_path, env={"WORLD_SIZE": "2"})
    assert listing.code == 2 and listing.stderr.startswith("error: [rank ?] xaibench datasets runs in one process")
    alone = run_cli("datasets", "--json", cwd=tmp_path, env={"RANK": "1"})  # not launched: prints as usual
    assert alone.code == 0 and json.loads(alone.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dead_rank_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    """Two processes started as torchrun starts them. Rank 1 joins the process group and dies (its model
    file does not exist); rank 0 explains its block, finds nobody at the gather and stops with exit
    code 1 and one line, writing nothing, instead of waiting for ever."""
    env = {**os.environ, **ENV, "XAIBENCH_DIST_TIMEOUT": "30", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "XAIBENCH_DEBUG": ""}
    ranks = [subprocess.Popen([str(EXE), "explain", model, "-m", "saliency", "-n", "4", "--out", str(tmp_path / "run")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for r, model in ((0, DIGITS), (1, str(tmp_path / "missing.pt")))]
    _, stderr = ranks[0].communicate(timeout=120)  # a hang fails the test here
    _, dead = ranks[1].communicate(timeout=120)
    assert ranks[1].returncode == 2 and "missing.pt" in dead
    assert ranks[0].returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: [rank 0] gathering results failed, another process "
                                                   "died"), stderr
    assert not (tmp_path / "run").exists()


def test_benchmark_is_the_same_on_two_processes(tmp_path: Path) -> None:
    """The evaluate cells spread their rows over the processes, the meta-evaluation runs on the first; the
    leaderboard is the one of a single process."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: two\nn: 6\nmethods: [saliency, integrated_gradients]\nmetrics: [deletion, sparseness]\n"
                     f"meta: {{n: 6, perturbations: 1}}\nmodels:\n  - path: {SAMPLES / 'breast_cancer_logreg.pt'}\n")
    one, two = tmp_path / "one", tmp_path / "two"
    assert alone("benchmark", str(suite), "--out", str(one), cwd=tmp_path).code == 0
    torchrun("benchmark", str(suite), "--out", str(two), cwd=tmp_path)
    cells = [json.loads((run / "cells" / "breast_cancer_logreg" / "evaluate" / "run.json").read_text())
             for run in (one, two)]
    assert [cell["world_size"] for cell in cells] == [1, 2]
    rows = [json.loads((run / "leaderboard.json").read_text())["models"][0]["metrics"] for run in (one, two)]
    for first, second in zip(*rows, strict=True):
        assert (first["metric"], first["best"], first["mc"]) == (second["metric"], second["best"], second["mc"])
        for a, b in zip(first["ranking"], second["ranking"], strict=True):
            assert (a["method"], a["rank"], a["worse"]) == (b["method"], b["rank"], b["worse"])
            assert a["mean"] == pytest.approx(b["mean"], abs=1e-6)
