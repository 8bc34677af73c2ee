"""Every figure type xaibench writes passes the mechanical checks of ``tests.report.figure_checks``: no text
clipped by the figure edge, no caption or label over another axes, no legend over a data area, and the
labels a reader needs (what the colours are, the scale, misclassified marks) present.

Figures are drawn on small arrays through the same functions the jobs call; one CLI smoke test runs
``xaibench explain`` and ``xaibench heatmap`` on a bundled model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.report.figure_checks import figure_problems, recording
from xaibench.models.meta import ModelMeta
from xaibench.report import HeatmapStyle, render_heatmaps, style
from xaibench.report.arms import arm_figure, write_arm_chart
from xaibench.report.montage import write_influence_montage, write_self_montage

CAPTION = "#{i} · label malignant · pred malignant (0.93) · target malignant"  # three lines in a tile
SHAPES = {"image": (3, 24, 24), "tabular": (30,), "sequence": (1, 40)}
FEATURES = [f"worst fractal dimension {i}" for i in range(30)]


def draw(tmp_path: Path, modality: str, n: int = 16, *, shape: tuple[int, ...] | None = None,
         attributions: np.ndarray | None = None, **kwargs) -> list[Path]:
    rng = np.random.default_rng(0)
    shape = (n, *(shape or SHAPES[modality]))
    a = rng.normal(size=shape) if attributions is None else attributions
    return render_heatmaps(
        a, rng.uniform(size=shape), modality=modality, signed=bool((a < 0).any()), out_dir=tmp_path / "h",
        stems=[f"sample_{i:04d}" for i in range(n)], captions=[CAPTION.format(i=i) for i in range(n)],
        misclassified=[i % 5 == 1 for i in range(n)], title="integrated_gradients · breast_cancer_mlp",
        feature_names=FEATURES if modality == "tabular" else None, **kwargs)


def assert_all_ok(saved, *labels: str) -> None:
    """No figure had a problem when it was saved, and the grid (last) carries ``labels``."""
    assert saved, "no figure was saved"
    problems = [f"{s.path.name}: {p}" for s in saved for p in s.problems]
    assert not problems, "\n".join(problems)
    for label in labels:
        assert any(label in text for text in saved[-1].texts), (label, saved[-1].texts)


# --- the checks themselves catch what they claim to catch --------------------------------------------------

def test_checks_find_clipped_text_overlapping_titles_legends_over_data_and_missing_labels() -> None:
    with style.styled():
        fig = style.new_figure(3, 3)
        low = fig.add_axes((0.2, 0.1, 0.7, 0.35))
        high = fig.add_axes((0.2, 0.5, 0.7, 0.35))
        low.set_title("three\nline\ntitle")  # reaches into the axes above
        high.plot([0, 1], [0, 1], label="line")
        high.legend(loc="center")
        fig.text(0.9, 0.5, "runs past the edge")
        problems = figure_problems(fig, ["absent label"])
    assert any("clipped" in p and "runs past the edge" in p for p in problems)
    assert any("overlaps another axes" in p and "three" in p for p in problems)
    assert any(p.startswith("legend (line)") for p in problems)
    assert "missing label 'absent label'" in problems


def test_checks_pass_a_clean_figure() -> None:
    with style.styled():
        fig = style.new_figure(3, 2.5, layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], label="line")
        ax.set_xlabel("position")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle("a title")
    assert figure_problems(fig, ["position", "a title"]) == []


# --- heatmaps ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["overlay", "heatmap", "masked"])
@pytest.mark.parametrize("scale", ["shared", "sample"])
def test_image_figures_and_the_16_tile_grid_pass(tmp_path, monkeypatch, kind, scale) -> None:
    n = 16 if (kind, scale) == ("overlay", "shared") else 5  # the 4 x 4 print grid once, the rest small
    with recording(monkeypatch) as saved:
        draw(tmp_path, "image", n=n, style=HeatmapStyle(style=kind, scale=scale))
    assert len(saved) == n + 1
    scale_words = f"one scale for all {n} samples" if scale == "shared" else "each sample its own scale"
    assert_all_ok(saved, "integrated_gradients", "misclassified", scale_words)
    if kind != "masked":
        assert any(t.startswith("attribution, sum over 3 channels") for t in saved[-1].texts)


def test_a_map_copied_to_every_channel_is_not_called_a_sum(tmp_path, monkeypatch) -> None:
    one = np.abs(np.random.default_rng(1).normal(size=(2, 1, 24, 24)))
    with recording(monkeypatch) as saved:
        draw(tmp_path, "image", n=2, attributions=np.repeat(one, 3, axis=1))
    assert_all_ok(saved, "attribution")
    assert not any("sum over" in t for s in saved for t in s.texts)


def test_misclassified_tiles_are_marked_in_text_and_frame(tmp_path, monkeypatch) -> None:
    with recording(monkeypatch) as saved:
        draw(tmp_path, "image", n=6)
    marked = [t for t in saved[-1].texts if t.startswith("✗ misclassified")]
    assert len(marked) == 1  # sample 1 of 6
    assert "(1 of 6)" in " ".join(saved[-1].texts)
    assert any(t.startswith("✗ misclassified · #1") for t in saved[1].texts)  # its own figure's title


def test_tabular_chart_and_grid_pass_with_full_row_labels_and_value_units(tmp_path, monkeypatch) -> None:
    with recording(monkeypatch) as saved:
        draw(tmp_path, "tabular", value_label="standardised value (z-score)")
    assert_all_ok(saved, "attribution", "one scale for all 16 samples", "#15 · label malignant")
    assert "feature = standardised value (z-score)" in saved[0].texts
    assert not any("[...]" in t for t in saved[-1].texts)  # row labels wrap, never cut


@pytest.mark.parametrize("channels", [1, 3])
def test_sequence_plot_and_grid_pass(tmp_path, monkeypatch, channels) -> None:
    with recording(monkeypatch) as saved:
        draw(tmp_path, "sequence", n=4, shape=(channels, 40))
    assert_all_ok(saved, "attribution", "misclassified")
    assert "input value" in saved[0].texts  # the y-axis says what the signal is
    summed = [t for t in saved[0].texts if "sum over" in t]
    assert summed == (["attribution, sum over 3 channels"] if channels == 3 else [])


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_vector_formats_are_written_and_recognised_as_ours(tmp_path, fmt) -> None:
    paths = draw(tmp_path, "sequence", n=2, style=HeatmapStyle(format=fmt))
    assert [p.name for p in paths] == [f"sample_0000.{fmt}", f"sample_0001.{fmt}", f"grid.{fmt}"]
    assert all(style.is_xaibench_figure(p) for p in paths)
    (tmp_path / f"foreign.{fmt}").write_bytes(paths[0].read_bytes().replace(b"xaibench", b"somebody"))
    assert not style.is_xaibench_figure(tmp_path / f"foreign.{fmt}")


# --- bee arms chart ----------------------------------------------------------------------------------------

SHARES = {"deletion": {"zero": 0.82, "constant": 0.01, "uniform": 0.08, "gaussian": 0.01, "blur": 0.07},
          "insertion": {"zero": 0.03, "constant": 0.03, "uniform": 0.07, "gaussian": 0.06, "blur": 0.81}}


def test_arm_chart_keeps_the_cli_order_names_model_and_inputs_and_keeps_the_legend_off_the_bars() -> None:
    fig = arm_figure(SHARES, "digits_cnn", 64)
    assert figure_problems(fig, ["digits_cnn · 64 inputs", "baseline family"]) == []
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["zero", "constant", "uniform", "gaussian", "blur"]


def test_arm_chart_is_written_in_the_asked_format(tmp_path) -> None:
    path = write_arm_chart(SHARES, tmp_path / "bee_arms.png", model="m", samples=3, fmt="svg")
    assert path == tmp_path / "bee_arms.svg" and style.is_xaibench_figure(path)


# --- influence montages ------------------------------------------------------------------------------------

def _prepared(n: int) -> SimpleNamespace:
    meta = ModelMeta(modality="image", input_shape=(1, 8, 8), class_names=tuple("0123456789"),
                     value_range=(0.0, 1.0))
    return SimpleNamespace(inputs=torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                           meta=meta, data=SimpleNamespace(indices=torch.arange(n)))


def _example(i: int, score: float) -> dict:
    return {"index": i, "label": i % 10, "prediction": i % 10, "score": score}


@pytest.mark.parametrize("top", [1, 6])
def test_self_influence_montage_title_fits_even_with_few_columns(tmp_path, monkeypatch, top) -> None:
    ranking = [{"index": i, "label": i, "prediction": (i + (i == 0)) % 10, "self_influence": 10.0 / (i + 1)}
               for i in range(top)]
    summary = {"ranking": ranking, "strategy": "ekfac", "samples": 1437}
    with recording(monkeypatch) as saved:
        write_self_montage(tmp_path / "montage.png", summary, _prepared(10))
    assert_all_ok(saved)
    text = " ".join(saved[0].texts).replace("\n", " ")
    assert "label differs from the model's prediction" in text and "✗ 1. #0" in text


def test_influence_montage_passes(tmp_path, monkeypatch) -> None:
    queries = [{"index": q, "label": q, "prediction": q, "proponents": [_example(i, 1.0 / (i + 1)) for i in range(4)],
                "opponents": [_example(i + 4, -1.0 / (i + 1)) for i in range(4)]} for q in range(2)]
    summary = {"queries": queries, "strategy": "ekfac", "measurement": "loss"}
    with recording(monkeypatch) as saved:
        write_influence_montage(tmp_path / "montage.png", summary, _prepared(2), _prepared(10))
    assert_all_ok(saved)
    assert "top 4 proponents" in saved[0].texts and "top 4 opponents" in saved[0].texts


# --- one run through the CLI -------------------------------------------------------------------------------

def test_explain_and_heatmap_record_and_reuse_scale_and_format(tmp_path, monkeypatch) -> None:
    from tests.cli.conftest import SAMPLES, run_main

    run = tmp_path / "run"
    with recording(monkeypatch) as saved:
        result = run_main("explain", str(SAMPLES / "breast_cancer_logreg.pt"), "-m", "saliency", "-n", "3",
                          "--scale", "sample", "--format", "svg", "--out", str(run))
        assert result.code == 0, result.stderr
        assert_all_ok(saved, "each sample its own scale")
        assert "feature = standardised value (z-score)" in saved[0].texts
        record = json.loads((run / "run.json").read_text())["heatmaps"]
        assert record["style"]["scale"] == "sample" and record["style"]["format"] == "svg"
        assert len(record["misclassified"]) == 3
        manifest = json.loads((run / "xaibench-manifest.json").read_text())["files"]
        assert "heatmaps/grid.svg" in manifest
        assert run_main("heatmap", str(run), "--cmap", "PiYG").code == 0  # keeps the recorded svg, sample
    assert sorted(p.name for p in (run / "heatmaps").iterdir() if p.suffix == ".svg") == [
        "grid.svg", "sample_0000.svg", "sample_0001.svg", "sample_0002.svg"]
    assert json.loads((run / "run.json").read_text())["heatmaps"]["style"]["scale"] == "sample"
