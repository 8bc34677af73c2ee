"""The llm method through explain and evaluate, with scripted replies from a local server: rank
scores, the transcript, the cache, replay, unparsed replies, and the agreement metrics against the
logistic regression's coefficients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.llm.server import Answer, serving
from tests.llm.truth import LOGREG, logreg_order
from xaibench.attribution import attribute
from xaibench.data.prepare import Selection
from xaibench.jobs.evaluate import EvaluateConfig, evaluate
from xaibench.jobs.explain import ExplainConfig, explain
from xaibench.llm.method import rank_scores
from xaibench.llm.parse import letters

K = 5
KEY = "sk-test-never-stored-81c2"


@pytest.fixture(scope="module")
def true_order() -> list[int]:
    return logreg_order()


def reply_with(order: list[int]) -> str:
    labels = letters(30)
    return "I compared the samples.\nAnswer: " + ", ".join(labels[j] for j in order)


def run_explain(out: Path, **params: str) -> Path:
    explain(ExplainConfig(LOGREG, "llm", Selection(n=3), params={"llm_model": "scripted", "k": str(K), **params},
                          out=str(out)), ["test"])
    return out


def test_rank_scores() -> None:
    scores = rank_scores([("b", "c"), None, ()], ["a", "b", "c", "d"])
    assert scores[0].tolist() == [0.0, 4.0, 3.0, 0.0]  # rank i scores F - i
    assert torch.isnan(scores[1]).all() and scores[2].tolist() == [0.0] * 4


def test_explain_writes_rank_scores_and_a_transcript_without_the_key(
        tmp_path: Path, true_order: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTED_KEY", KEY)
    with serving(lambda body: Answer(text=reply_with(true_order))) as server:
        run = run_explain(tmp_path / "run", base_url=server.url, api_key_env="SCRIPTED_KEY")
    assert len(server.requests) == 3 and server.auth[0] == f"Bearer {KEY}"
    attributions = load_file(str(run / "attributions.safetensors"))["attributions"]
    expected = torch.zeros(30)
    expected[true_order[:K]] = torch.arange(30, 30 - K, -1).float()
    assert torch.equal(attributions, expected.expand(3, 30))
    transcript = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    assert [t["reply"] for t in transcript] == [reply_with(true_order)] * 3
    sent = sorted(json.dumps(r["messages"]) for r in server.requests)  # in any order: 4 at a time
    assert sorted(json.dumps(t["messages"]) for t in transcript) == sent
    details = json.loads((run / "run.json").read_text())["method"]["details"]["llm"]
    assert details["account"]["sent"] == 3 and details["account"]["prompt_tokens"] == 300
    assert all(s["ok"] and len(s["ranking"]) == K for s in details["samples"])
    for path in run.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_the_cache_makes_a_rerun_free_and_replay_reproduces_it(tmp_path: Path, true_order: list[int]) -> None:
    with serving(lambda body: Answer(text=reply_with(true_order[::-1]))) as server:
        first = run_explain(tmp_path / "first", base_url=server.url)
        second = run_explain(tmp_path / "second", base_url=server.url)
        assert len(server.requests) == 3  # the second run asked nothing
        run_explain(tmp_path / "uncached", base_url=server.url, cache="false")
        assert len(server.requests) == 6
        url = server.url
    account = json.loads((second / "run.json").read_text())["method"]["details"]["llm"]["account"]
    assert (account["sent"], account["cached"], account["cost_usd"]) == (0, 3, 0)
    replayed = run_explain(tmp_path / "replayed", backend="replay", transcript=str(first / "transcript.jsonl"),
                           base_url=url)  # the server is gone: every reply comes from the transcript
    for run in (second, replayed):
        assert torch.equal(load_file(str(first / "attributions.safetensors"))["attributions"],
                           load_file(str(run / "attributions.safetensors"))["attributions"])
    replies = [[json.loads(line)["reply"] for line in (run / "transcript.jsonl").read_text().splitlines()]
               for run in (first, replayed)]
    assert replies[0] == replies[1]


def test_an_unparsed_reply_is_recorded_never_guessed(tmp_path: Path) -> None:
    with serving(lambda body: Answer(text="I cannot tell which features matter.")) as server:
        run = run_explain(tmp_path / "run", base_url=server.url)
    assert torch.isnan(load_file(str(run / "attributions.safetensors"))["attributions"]).all()
    samples = json.loads((run / "run.json").read_text())["method"]["details"]["llm"]["samples"]
    assert [s["ok"] for s in samples] == [False] * 3 and samples[0]["reason"] == "the reply names no feature"
    assert (run / "heatmaps" / "grid.png").exists()


@pytest.mark.parametrize(("order", "agreement"), [
    ("true", {"feature_agreement": 1.0, "rank_agreement": 1.0}),
    # the true top 5 reversed: the same set, one position shared (the middle one)
    ("reversed", {"feature_agreement": 1.0, "rank_agreement": 1 / K}),
    # the 5 least important, least first: nothing shared
    ("bottom", {"feature_agreement": 0.0, "rank_agreement": 0.0}),
])
def test_evaluate_scores_scripted_answers_against_the_coefficients(
        tmp_path: Path, true_order: list[int], order: str, agreement: dict[str, float]) -> None:
    shown = {"true": true_order[:K], "reversed": true_order[:K][::-1], "bottom": true_order[::-1][:K]}[order]
    with serving(lambda body: Answer(text=reply_with(shown))) as server:
        result = evaluate(EvaluateConfig(
            LOGREG, methods=("llm", "coefficients"), metrics="feature_agreement,rank_agreement,pgi,pgu",
            selection=Selection(n=4), reference="coefficients", out=str(tmp_path / "eval"),
            params={"llm": {"llm_model": "scripted", "base_url": server.url, "k": str(K)},
                    "coefficients": {"scale": "range"},
                    **{m: {"k": str(K)} for m in ("feature_agreement", "rank_agreement", "pgi", "pgu")}}),
            ["test"])
    scores = result.summary["results"]["llm"]
    for name, value in agreement.items():
        assert scores[name]["values"] == pytest.approx([value] * 4), name
    truth = result.summary["results"]["coefficients"]
    same_set = order != "bottom"  # PGI and PGU perturb the top-k set, whatever its order
    for name in ("pgi", "pgu"):
        assert (scores[name]["values"] == pytest.approx(truth[name]["values"])) == same_set, name
    assert (tmp_path / "eval" / "llm.transcript.jsonl").exists()


def test_e_icl_shows_the_explainers_rankings(tmp_path: Path, true_order: list[int]) -> None:
    """Saliency of a logistic regression is |W_t| everywhere, so every example's explanation is the top-k
    of |W_t| (for target t = the prediction)."""
    with serving(lambda body: Answer(text=reply_with(true_order))) as server:
        run = run_explain(tmp_path / "run", base_url=server.url, strategy="e-icl", explainer="saliency",
                          examples="3")
    weight = LOGREG.load().module.fc.weight.detach()
    targets = load_file(str(run / "attributions.safetensors"))["targets"].tolist()
    labels = letters(30)
    prompts = [json.loads(line)["messages"][-1]["content"] for line in (run / "transcript.jsonl").open()]
    for prompt, target in zip(prompts, targets, strict=True):
        top = weight[target].abs().argsort(descending=True, stable=True)[:K].tolist()
        assert prompt.count("Explanation: " + ", ".join(labels[j] for j in top)) == 3
        assert prompt.rstrip().count("Explanation:") == 4  # three examples and the empty one to fill in


def test_coefficients_refuse_a_non_linear_model() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    from xaibench.core.errors import IncompatibleError

    with pytest.raises(IncompatibleError, match="linear models only"):
        attribute("coefficients", model, torch.randn(3, 4), target=0)
    fooling = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        fooling[0].bias.fill_(5.0)  # every ReLU open at x and at 0: only far points show the kinks
    with pytest.raises(IncompatibleError, match="linear models only"):
        attribute("coefficients", fooling, torch.randn(3, 4, generator=torch.Generator().manual_seed(0)) * 0.1,
                  target=0)
    linear = torch.nn.Linear(4, 3)
    got = attribute("coefficients", linear, torch.randn(2, 4), target=torch.tensor([0, 2]))
    w = linear.weight.detach()
    torch.testing.assert_close(got, torch.stack([w[0] - (w[1] + w[2]) / 2, w[2] - (w[0] + w[1]) / 2]))


def test_coefficients_scaled_by_the_training_range() -> None:
    linear = torch.nn.Linear(3, 2)
    references = torch.tensor([[0.0, -1.0, 5.0], [2.0, 1.0, 5.5], [1.0, 0.0, 6.0]])
    plain = attribute("coefficients", linear, torch.zeros(1, 3), target=1)
    scaled = attribute("coefficients", linear, torch.zeros(1, 3), target=1, scale="range", references=references)
    torch.testing.assert_close(scaled, plain * torch.tensor([2.0, 2.0, 1.0]))


def test_evaluate_leaves_unparsed_samples_out_and_refuses_to_re_explain(tmp_path: Path,
                                                                        true_order: list[int]) -> None:
    """Half the prompts get an unparsable reply: those samples score NaN for llm only; saliency's scores
    are those of a run without llm; metrics that re-explain are skipped (by category) or refused
    (by name) while llm is scored."""
    import hashlib

    from xaibench.core.errors import IncompatibleError

    def answer(body: dict) -> Answer:
        odd = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()[0] % 2
        return Answer(text=reply_with(true_order) if odd else "No idea.")

    def run(methods: tuple[str, ...], metrics: str, out: str, url: str) -> dict:
        return evaluate(EvaluateConfig(
            LOGREG, methods=methods, metrics=metrics, selection=Selection(n=8), reference="coefficients",
            out=str(tmp_path / out), params={"llm": {"llm_model": "scripted", "base_url": url}}
            if "llm" in methods else {}), ["test"]).summary

    with serving(answer) as server:
        both = run(("llm", "saliency"), "feature_agreement,pgi,robustness", "both", server.url)
        with pytest.raises(IncompatibleError, match="max_sensitivity cannot run here: re-explains"):
            run(("llm",), "max_sensitivity", "named", server.url)
    alone = run(("saliency",), "feature_agreement,pgi", "alone", "")
    parsed = [s["ok"] for s in both["details"]["llm"]["llm"]["samples"]]
    assert 0 < sum(parsed) < 8
    for metric in ("feature_agreement", "pgi"):
        values = both["results"]["llm"][metric]["values"]
        assert [v is not None for v in values] == parsed, metric
        assert both["results"]["llm"][metric]["nan"] == 8 - sum(parsed)
        assert both["results"]["saliency"][metric]["values"] == alone["results"]["saliency"][metric]["values"]
    from xaibench.metrics import METRICS

    re_explaining = {name for name, cls in METRICS.items() if cls.category == "robustness" and cls.needs_explainer}
    assert {s["metric"] for s in both["skipped"]} == re_explaining and "max_sensitivity" in re_explaining
