"""Concept report: ordering and cluster helpers exactly, figures by file and size, the page by content."""

from __future__ import annotations

import base64
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xaibench.core.errors import InputError
from xaibench.report import concepts
from xaibench.report.clusters import (
    cluster_graph,
    cluster_stats,
    grouping,
    write_cluster_graph,
)
from xaibench.report.concept_page import write_concept_report
from xaibench.report.concepts import (
    concept_colors,
    importance_order,
    overlay_concepts,
    text_color,
    top_concepts,
    write_concept_maps,
    write_concept_montage,
    write_importance_chart,
)
from xaibench.report.style import DPI

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
K = 3


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    return struct.unpack(">II", head[16:24])


# --- helpers ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3, 10, 15, 40, 70])
def test_concept_colors_are_k_distinct_hex_colours(k: int) -> None:
    colors = concept_colors(np.random.default_rng(k).random(k))
    assert len(colors) == len(set(colors)) == k
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors)


def test_concept_colors_follow_the_importance_rank() -> None:
    """The most important concept gets the palette's first colour, whatever its index."""
    assert concept_colors(np.array([0.1, 0.9, 0.5])) == ["#009e73", "#0072b2", "#d55e00"]


def delta_e_2000(colors: list[str], over_gray: float | None = None) -> np.ndarray:
    """Pairwise CIEDE2000 distances of hex colours (k, k), optionally as blended at the concept maps'
    opacity over a gray of that level."""
    from matplotlib.colors import to_rgb
    from skimage.color import deltaE_ciede2000, rgb2lab

    rgb = np.array([to_rgb(c) for c in colors])
    if over_gray is not None:
        rgb = (1 - concepts.MAP_ALPHA) * over_gray + concepts.MAP_ALPHA * rgb
    lab = rgb2lab(rgb[None])[0]
    return deltaE_ciede2000(lab[:, None, :], lab[None, :, :])


@pytest.mark.parametrize("k", [2, 4, 8, 10])
def test_the_first_ten_concept_colours_are_pairwise_distinguishable(k: int) -> None:
    """CIEDE2000 >= 20 as drawn and >= 14 blended over mid-gray (tab10, used before, had 16.2 and 11.8:
    its orange and red concepts were hard to tell apart in the maps)."""
    colors = concept_colors(np.arange(k, 0, -1.0))
    off_diagonal = ~np.eye(k, dtype=bool)
    assert delta_e_2000(colors)[off_diagonal].min() >= 20
    assert delta_e_2000(colors, over_gray=0.5)[off_diagonal].min() >= 14


def test_text_colours_are_darkened_to_half_luminance_only_when_lighter() -> None:
    assert text_color("#ffffff") == "#808080"
    assert text_color("#0072b2") == "#0072b2"  # Okabe-Ito blue, luminance 0.35: kept


def test_importance_order_is_decreasing_with_ties_by_index_and_nan_last() -> None:
    assert importance_order(np.array([0.2, np.nan, 0.9, 0.2, -1.0])).tolist() == [2, 0, 3, 4, 1]


def test_top_concepts_per_row() -> None:
    scores = np.array([[0.1, 0.5, 0.3, 0.5], [np.nan, 0.0, 2.0, -1.0]])
    assert top_concepts(scores, 2).tolist() == [[1, 3], [2, 1]]
    assert top_concepts(scores, 1)[:, 0].tolist() == [1, 2]


def test_overlay_blends_the_concept_colour_where_its_code_is_and_leaves_the_rest_gray() -> None:
    image = np.full((1, 2, 2, 3), 0.5)
    maps = np.zeros((1, 2, 2, 2))
    maps[0, 1, 0, 1] = 4.0  # concept 1 at one pixel only; concept 0 nowhere
    out = overlay_concepts(image, maps, np.array([[1, 0]]), ["#000000", "#ff0000"])
    expected = np.full((2, 2, 3), 0.5)
    a = concepts.MAP_ALPHA  # the pixel is at the map's saturation: full opacity
    expected[0, 1] = [0.5 * (1 - a) + a, 0.5 * (1 - a), 0.5 * (1 - a)]
    np.testing.assert_allclose(out[0], expected)


def test_overlay_paints_the_most_important_concept_on_top() -> None:
    image = np.zeros((1, 1, 1))
    maps = np.ones((1, 2, 1, 1))  # both concepts cover the only pixel
    out = overlay_concepts(image, maps, np.array([[0, 1]]), ["#0000ff", "#ff0000"])
    a = concepts.MAP_ALPHA
    red_then_blue = [a * (1 - a), 0.0, a]  # red painted first, blue (concept 0, ranked first) over it
    np.testing.assert_allclose(out[0, 0, 0], red_then_blue)


# --- cluster graph ----------------------------------------------------------------------------------------

def test_cluster_stats_by_hand() -> None:
    # Top concepts [0, 0, 1, 1, 1, 2]; concept 3 is never on top.
    local = np.zeros((6, 4))
    local[np.arange(6), [0, 0, 1, 1, 1, 2]] = 1.0
    correct = np.array([True, False, True, True, False, True])
    _, stats = cluster_graph(local, correct, seed=0)
    assert [s["concept"] for s in stats] == [0, 1, 2, 3]
    assert [s["images"] for s in stats] == [2, 3, 1, 0]
    assert [s["prevalence"] for s in stats] == [2 / 6, 3 / 6, 1 / 6, 0.0]
    assert sum(s["prevalence"] for s in stats) == pytest.approx(1.0)
    assert [s["reliability"] for s in stats] == [0.5, 2 / 3, 1.0, None]
    assert cluster_stats(np.array([1, 1]), np.array([False, True]), 2) == [
        {"concept": 0, "images": 0, "prevalence": 0.0, "reliability": None},
        {"concept": 1, "images": 2, "prevalence": 1.0, "reliability": 0.5}]


def test_tsne_embedding_is_deterministic_for_a_seed() -> None:
    local = np.random.default_rng(0).random((12, 4))
    correct = np.ones(12, dtype=bool)
    first, _ = cluster_graph(local, correct, seed=3)
    second, _ = cluster_graph(local, correct, seed=3)
    assert first.shape == (12, 2)
    np.testing.assert_array_equal(first, second)


def test_few_images_fall_back_to_pca() -> None:
    # Three points on the diagonal: the first component is the distance along it, the second is empty.
    local = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    embedding, _ = cluster_graph(local, np.ones(3, dtype=bool), seed=0)
    np.testing.assert_allclose(np.abs(embedding[:, 0]), [np.sqrt(2), 0.0, np.sqrt(2)], atol=1e-12)
    np.testing.assert_allclose(embedding[:, 1], 0.0, atol=1e-12)
    single, stats = cluster_graph(np.array([[0.3, 0.7]]), np.array([False]), seed=0)
    assert single.tolist() == [[0.0, 0.0]] and stats[1]["reliability"] == 0.0


def test_cluster_graph_rejects_mismatched_inputs() -> None:
    with pytest.raises(InputError):
        cluster_graph(np.ones((4, 2)), np.ones(3, dtype=bool), seed=0)


# --- figures and report -----------------------------------------------------------------------------------

def summary(klass: str = "<b>&") -> dict[str, Any]:
    local = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.5, 4.0]])
    _, stats = cluster_graph(local, np.array([True, False, True, True]), seed=0)
    return {"model": "models/shapes_cnn.pt", "layer": "features.6", "class": klass, "method": "nmf",
            "mode": "patches", "importance": "sobol", "n_concepts": K, "images": 4, "rows": 100,
            "seconds": 1.5, "seed": 7, "versions": {"python": "3.11.7", "xaibench": "0.1.0"},
            "global_importance": [0.1, 0.7, 0.4],
            "metrics": {"relative_l2": {"value": 0.25, "higher_is_better": False,
                                        "description": "reconstruction | error", "ci95": [0.2, 0.3]},
                        "sparsity": {"value": None, "higher_is_better": True, "description": "zero codes",
                                     "ci95": None}},
            "clusters": stats}


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every figure drawn once from small random inputs (3 concepts, 4 crops, 4 images)."""
    out, rng = tmp_path_factory.mktemp("concepts") / "figures", np.random.default_rng(0)
    out.mkdir()
    local, correct = rng.random((4, K)), np.array([True, False, True, True])
    embedding, _ = cluster_graph(local, correct, seed=0)
    importance = np.array([0.1, 0.7, 0.4])
    return {
        "montage": write_concept_montage(out / "montage.png", rng.random((K, 4, 8, 8, 3)), rng.random((K, 4)),
                                         importance),
        "importance": write_importance_chart(out / "importance.png", importance),
        "maps": write_concept_maps(out / "maps.png", rng.random((4, 8, 8)), rng.random((4, K, 8, 8)), importance,
                                   top=2),
        "clusters": write_cluster_graph(out / "clusters.png", embedding, local, correct, importance),
    }


def test_figures_are_pngs_of_the_laid_out_size(figures: dict[str, Path]) -> None:
    montage_in = (max(4.0, concepts.GAP + 4 * (concepts.TILE + concepts.GAP)),
                  K * (concepts.LABEL + concepts.TILE + concepts.CAPTION + concepts.GAP) + concepts.HEADER)
    assert png_size(figures["montage"]) == tuple(int(v * DPI) for v in montage_in)  # matplotlib truncates
    for path in figures.values():
        assert png_size(path)[0] > 0


def test_concept_maps_show_at_most_sixteen_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = write_concept_maps(tmp_path / "maps.png", rng.random((20, 6, 6, 3)), rng.random((20, 2, 6, 6)),
                              np.array([0.5, 0.2]), top=1, local_importance=rng.random((20, 2)))
    cell = concepts.MAP_TILE + 2 * concepts.LINE + concepts.GAP  # image, its name and one concept line
    assert png_size(path)[1] == int((4 * cell + concepts.HEADER) * DPI)  # 4 rows of 4


def test_figures_reject_shapes_that_do_not_fit(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        write_concept_montage(tmp_path / "m.png", np.zeros((3, 2, 4, 4)), np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(InputError):
        write_importance_chart(tmp_path / "i.png", np.ones((3, 2)))
    with pytest.raises(InputError):
        write_concept_maps(tmp_path / "c.png", np.zeros((2, 4, 4)), np.zeros((2, 3, 5, 5)), np.ones(3))
    with pytest.raises(InputError):  # an importance per concept
        write_concept_maps(tmp_path / "c.png", np.zeros((2, 4, 4)), np.zeros((2, 3, 4, 4)), np.ones(2))


@pytest.fixture(scope="module")
def report(figures: dict[str, Path]) -> tuple[str, str]:
    page, md = write_concept_report(figures["montage"].parent.parent, summary(), figures)
    assert (page.name, md.name) == ("report.html", "report.md")
    return page.read_text(encoding="utf-8"), md.read_text(encoding="utf-8")


def test_html_is_self_contained_and_embeds_every_figure(report: tuple[str, str]) -> None:
    page = report[0]
    assert page.startswith("<!doctype html>")
    assert not re.search(r"<(script|link)\b", page, flags=re.IGNORECASE) and "url(" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == PNG_SIGNATURE for s in srcs)
    assert re.findall(r'<img alt="(\w+)"', page) == ["importance", "montage", "maps", "clusters"]


def test_html_escapes_names(report: tuple[str, str]) -> None:
    page = report[0]
    assert "<b>&" not in page
    assert "class &lt;b&gt;&amp; in shapes_cnn</title>" in page and "<dd>&lt;b&gt;&amp;</dd>" in page


def test_html_tables_list_concepts_by_importance_and_the_metrics(report: tuple[str, str]) -> None:
    page = report[0]
    concepts_in_table = re.findall(r"</span>concept (\d)</td>", page)
    assert concepts_in_table == ["1", "2", "0"]
    # top concepts of the 4 images: 0, 1, 0, 2; correct: T, F, T, T
    assert re.findall(r"</span>concept \d</td>(.*?)</tr>", page) == [
        '<td class="num">0.7</td><td class="num">1</td><td class="num">25%</td><td class="num">0%</td>',
        '<td class="num">0.4</td><td class="num">1</td><td class="num">25%</td><td class="num">100%</td>',
        '<td class="num">0.1</td><td class="num">2</td><td class="num">50%</td><td class="num">100%</td>']
    assert '<td class="num">0.25</td><td class="num">[0.2, 0.3]</td><td>↓ lower is better</td>' in page
    assert "<td><b>sparsity</b></td><td>↑ higher is better</td><td>zero codes</td>" in page


def test_markdown_has_the_facts_tables_and_relative_links(report: tuple[str, str]) -> None:
    lines = report[1].splitlines()
    assert lines[0] == r"# Concepts of class \<b>\& in shapes_cnn"  # the model by name, not its path
    assert "- Model: models/shapes_cnn.pt" in lines and "- Layer: features.6" in lines
    assert "- Data: 4 images, 100 activation rows" in lines
    assert "- Seed: 7" in lines and "- Versions: python 3.11.7, xaibench 0.1.0" in lines
    assert "![montage](figures/montage.png)" in lines
    assert "| concept 1 | 0.7 | 1 | 25% | 0% |" in lines
    assert "| relative_l2 | 0.25 | [0.2, 0.3] | ↓ lower is better |" in lines
    assert "| sparsity | — | — | ↑ higher is better |" in lines
    assert "- `relative_l2` (↓ lower is better): reconstruction | error" in lines


def test_missing_figures_are_noted_and_unknown_ones_refused(tmp_path: Path) -> None:
    page, md = write_concept_report(tmp_path, summary("cat"), {})
    text = page.read_text(encoding="utf-8")
    assert text.count("Not drawn in this run.") == 4 and "src=" not in text
    assert md.read_text(encoding="utf-8").count("Not drawn.") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]  # no temp files
    with pytest.raises(InputError, match="heatmap"):
        write_concept_report(tmp_path, summary(), {"heatmap": tmp_path / "x.png"})


def test_importing_the_module_loads_neither_torch_matplotlib_nor_sklearn() -> None:
    code = ("import sys, xaibench.report.concepts, xaibench.report.concept_page; "
            "assert not {'torch._C', 'matplotlib', 'sklearn'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- importance on a scale where every bar shows; the cluster graph when one concept tops every image -------

@pytest.mark.parametrize("values", [[0.965, 0.0224, 0.000293, 2.82e-05], [0.5, -0.02, 0.0, 3e-4]])
def test_importance_figure_prints_every_value_and_every_nonzero_bar_shows(values: list[float]) -> None:
    """The circle run's importances span five decades: on a linear axis the last three bars are under a
    pixel wide; here each non-zero bar is at least 20 pixels and each value is printed, by importance."""
    fig = concepts.importance_figure(np.array(values))
    fig.canvas.draw()
    ax = fig.axes[0]
    ordered = sorted(values, reverse=True)
    assert [t.get_text().strip() for t in ax.texts] == [concepts.fmt(v) for v in ordered]
    widths = [bar.get_window_extent().width for bar in ax.patches]
    assert all(w >= 20 for w, v in zip(widths, ordered) if v != 0), widths
    assert ax.get_xscale() == ("log" if min(values) > 0 else "symlog")


def test_importance_scale_starts_a_decade_below_the_smallest_value() -> None:
    assert concepts.importance_scale(np.array([0.9, 2.8e-5])) == ("log", pytest.approx(1e-6))
    assert concepts.importance_scale(np.array([0.9, -0.02, 0.0, 3e-4])) == ("symlog", pytest.approx(1e-4))
    assert concepts.importance_scale(np.zeros(2)) == ("symlog", 1.0)


def test_one_top_concept_for_every_image_colours_the_graph_by_the_second(tmp_path: Path) -> None:
    local = np.array([[0.9, 0.1, 0.0], [0.8, 0.0, 0.2], [0.7, 0.2, 0.1], [0.9, 0.0, 0.05]])
    rank, group = grouping(local)
    assert rank == 1 and group.tolist() == [1, 2, 1, 2]
    correct = np.array([True, True, False, True])
    embedding, stats = cluster_graph(local, correct, seed=0)
    assert write_cluster_graph(tmp_path / "c.png", embedding, local, correct, local.mean(0)) == tmp_path / "c.png"
    page, _ = write_concept_report(tmp_path, {**summary("cat"), "images": 4, "clusters": stats},
                                   {"clusters": tmp_path / "c.png"})
    text = page.read_text(encoding="utf-8")
    assert "Concept 0 is the most important concept of all 4 images (reliability 75%" in text
    assert "its second concept" in text


def test_a_graph_of_identical_rankings_is_left_out_with_the_reason(tmp_path: Path) -> None:
    local = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    assert grouping(local) is None
    embedding, stats = cluster_graph(local, np.ones(3, dtype=bool), seed=0)
    assert write_cluster_graph(tmp_path / "c.png", embedding, local, np.ones(3, dtype=bool), local.mean(0)) is None
    assert not (tmp_path / "c.png").exists()
    page, md = write_concept_report(tmp_path, {**summary("cat"), "images": 3, "clusters": stats}, {})
    reason = ("Not drawn: concept 0 is the most important concept of all 3 images (reliability 100%: the "
              "model&#x27;s accuracy on them), and every image ranks the concepts alike")
    assert reason in page.read_text(encoding="utf-8")
    assert "Not drawn: concept 0 is the most important concept of all 3 images" in md.read_text(encoding="utf-8")


def test_captions_describe_only_what_is_drawn(report: tuple[str, str]) -> None:
    for text in report:
        assert "whisker" not in text  # the importance chart has no intervals
        assert "logarithmic" in text and "value printed" in text
