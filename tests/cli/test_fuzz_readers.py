"""Fuzzing the readers of what xaibench wrote (issue 14): run.json, metrics.json, BEE policies and LLM
transcripts, each mutated by a seeded corpus (truncations, type swaps, traversal names, non-finite
numbers, binary garbage, pickles), read back through the CLI.

Every case must end in exit 0 or 2 with at most one line on stderr, change nothing outside the command's
named output (nothing at all when it fails) and never execute a payload. Factors are fuzzed beside their
reader in tests/influence/test_storage_validation.py.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import SAMPLES, run_main
from tests.cli.test_tampered_runs import snapshot

DIGITS = str(SAMPLES / "digits_cnn.pt")
LOGREG = SAMPLES / "breast_cancer_logreg.pt"
SEED = 14
SWAPS: list[Any] = [None, 7, -1, 1e308, "x", "", [], {}, True, "../../../escaped", "/tmp/xaibench-abs",
                    "a/b", "..", float("nan"), float("inf"), [1, 2], {"k": "v"}, "<script>", "\x00"]


class Payload:
    """Unpickling this creates ``marker``: the proof that a file's pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.mkdir, (str(self.marker),)


def leaves(data: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths to every value in a JSON document (containers included)."""
    yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data[:3]):
            yield from leaves(value, (*path, i))


def replaced(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def json_mutants(raw: bytes, count: int, focus: tuple[str, ...], rng: random.Random) -> list[tuple[str, bytes]]:
    """Truncations, whole-file replacements and ``count`` value swaps, half of them under ``focus``
    (the keys the reader uses)."""
    data = json.loads(raw)
    cases = [(f"truncated at {cut}", raw[:cut]) for cut in (0, 1, len(raw) // 3, len(raw) - 2)]
    cases += [("binary", bytes(range(256)) * 4), ("not utf-8", b'{"title": "\xff\xfe"}'),
              ("a list", b"[]"), ("a number", b"1e999"), ("deep", b"[" * 100000 + b"]" * 100000)]
    paths = list(leaves(data))
    focused = [p for p in paths if p and p[0] in focus]
    for i in range(count):
        path = rng.choice(focused if i % 2 == 0 and focused else paths)
        value = rng.choice(SWAPS)
        cases.append((f"{'.'.join(map(str, path)) or 'root'} = {value!r}",
                      json.dumps(replaced(data, path, value)).encode()))
    return cases


def binary_mutants(raw: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    cases = [(f"truncated at {cut}", raw[:cut]) for cut in (0, 7, 8, 40, len(raw) // 2, len(raw) - 1)]
    for _ in range(4):
        flipped = bytearray(raw)
        spot = rng.randrange(0, min(len(raw), 400))
        flipped[spot] ^= 0xFF
        cases.append((f"byte {spot} flipped", bytes(flipped)))
    cases.append(("header length huge", struct.pack("<Q", 2**62) + raw[8:]))
    return cases


def safetensors_header_mutants(raw: bytes, count: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """Edits of the JSON header of a safetensors file (metadata values and tensor entries)."""
    size = struct.unpack("<Q", raw[:8])[0]
    header, body = json.loads(raw[8:8 + size]), raw[8 + size:]
    cases = []
    for _ in range(count):
        path = rng.choice([p for p in leaves(header) if p])
        value = rng.choice(SWAPS) if path[0] != "__metadata__" else rng.choice(
            ["", "x", "../../x", "1e999", "nan", "-3", "zero,zero", "[]", "{}"])
        text = json.dumps(replaced(header, path, value)).encode()
        cases.append((f"header {'.'.join(map(str, path))} = {value!r}", struct.pack("<Q", len(text)) + text + body))
    return cases


def check_case(tmp_path: Path, args: list[str], allowed: set[str], name: str) -> None:
    """Run ``args`` in ``tmp_path`` and hold it to the contract; ``allowed``: relative paths (prefixes)
    the command may change when it succeeds."""
    marker = tmp_path / "PAYLOAD-RAN"
    before = snapshot(tmp_path)
    result = run_main(*args, cwd=tmp_path)
    assert result.code in (0, 2), (name, result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 1 and "Traceback" not in result.stderr, (name, result.stderr)
    if result.code == 2:
        assert lines and lines[0].startswith("error: "), (name, result.stderr)
    after = snapshot(tmp_path)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    if result.code == 2:
        assert not changed, (name, sorted(changed))
    else:
        assert all(any(p == a or p.startswith(a) for a in allowed) for p in changed), (name, sorted(changed))
    assert not marker.exists(), name
    assert not Path("/tmp/xaibench-abs.png").exists() and not (tmp_path.parent / "escaped.png").exists()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz-made")
    assert run_main("explain", DIGITS, "--method", "saliency", "--n", "2", "--out", str(root / "explain")).code == 0
    assert run_main("evaluate", DIGITS, "--methods", "saliency,random", "--metrics", "deletion,sparseness",
                    "--n", "2", "--out", str(root / "evaluate")).code == 0
    trained = run_main("bee", "pretrain", DIGITS, "--n", "4", "-p", "rounds=1", "-p", "n_steps=4", "-p",
                       "arms=zero,blur", "--out", str(root / "policy.safetensors"))
    assert trained.code == 0, trained.stderr
    return {"explain": root / "explain", "evaluate": root / "evaluate", "policy": root / "policy.safetensors"}


def _pickle_case(tmp_path: Path) -> tuple[str, bytes]:
    return "a pickle", pickle.dumps(Payload(tmp_path / "PAYLOAD-RAN"))


def test_fuzz_run_json_through_heatmap(made, tmp_path):
    rng = random.Random(SEED)
    raw = (made["explain"] / "run.json").read_bytes()
    for i, (name, content) in enumerate([*json_mutants(raw, 24, ("heatmaps", "model"), rng),
                                         _pickle_case(tmp_path)]):
        case = tmp_path / f"case{i}"
        run = Path(shutil.copytree(made["explain"], case / "run"))
        (run / "run.json").write_bytes(content)
        check_case(case, ["heatmap", "run"], {"run/heatmaps/", "run/run.json", "run/xaibench-manifest.json"}, name)


def test_fuzz_metrics_json_through_report(made, tmp_path):
    rng = random.Random(SEED + 1)
    raw = (made["evaluate"] / "metrics.json").read_bytes()
    focus = ("title", "model", "data", "methods", "metrics", "results", "ranking", "skipped", "versions")
    for i, (name, content) in enumerate([*json_mutants(raw, 30, focus, rng), _pickle_case(tmp_path)]):
        case = tmp_path / f"case{i}"
        run = Path(shutil.copytree(made["evaluate"], case / "run"))
        (run / "metrics.json").write_bytes(content)
        check_case(case, ["report", "run"], {"run/report.md", "run/report.html", "run/xaibench-manifest.json"},
                   name)


def test_fuzz_policy_files_through_bee_report_and_explain(made, tmp_path):
    rng = random.Random(SEED + 2)
    raw = made["policy"].read_bytes()
    cases = [*binary_mutants(raw, rng), *safetensors_header_mutants(raw, 10, rng), _pickle_case(tmp_path)]
    for i, (name, content) in enumerate(cases):
        case = tmp_path / f"case{i}"
        case.mkdir()
        (case / "policy.safetensors").write_bytes(content)
        check_case(case, ["bee", "report", DIGITS, "policy.safetensors", "--n", "2", "--out", "chart.png"],
                   {"chart.png"}, name)
        if i % 4 == 0:  # the same files where explain reads them (slower: a BEE run per accepted file)
            check_case(case, ["explain", DIGITS, "--method", "bee", "--n", "1", "-p", "policy=policy.safetensors",
                              "-p", "n_steps=4", "--out", "explained"], {"explained/"}, f"explain: {name}")


@pytest.fixture(scope="module")
def transcript(tmp_path_factory) -> bytes:
    """A one-sample llm run's transcript, recorded from the scripted local server."""
    from tests.llm.server import Answer, serving

    out = tmp_path_factory.mktemp("fuzz-llm") / "run"
    with pytest.MonkeyPatch.context() as patch, serving(lambda body: Answer(text="Answer: A, B, C, D, E")) as server:
        patch.setenv("XAIBENCH_CACHE_DIR", str(out.parent / "cache"))
        result = run_main("llm-explain", str(LOGREG), "-n", "2", "--base-url", server.url, "--llm", "scripted",
                          "--no-cache", "--out", str(out))
    assert result.code == 0, result.stderr
    return (out / "transcript.jsonl").read_bytes()


def test_fuzz_transcripts_through_replay(transcript, tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(tmp_path.parent / "fuzz-cache"))
    rng = random.Random(SEED + 3)
    first, *rest = transcript.splitlines(keepends=True)
    cases = [(f"line 1: {name}", content.replace(b"\n", b" ") + b"\n" + b"".join(rest))
             for name, content in json_mutants(first.strip(), 24, ("prompt", "reply", "messages"), rng)]
    cases += [("binary", b"\x89PNG\r\n\x1a\n\x00\xff" * 50), _pickle_case(tmp_path), ("empty", b""),
              ("blank lines", b"\n\n\n")]
    for i, (name, content) in enumerate(cases):
        case = tmp_path / f"case{i}"
        case.mkdir()
        (case / "transcript.jsonl").write_bytes(content)
        check_case(case, ["llm-explain", str(LOGREG), "-n", "2", "--backend", "replay", "--transcript",
                          "transcript.jsonl", "--out", "replayed"], {"replayed/"}, name)
