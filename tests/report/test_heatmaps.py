"""Heatmaps: pure colour/layout helpers checked exactly, rendering checked by files, sizes and pixels."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.report.figure_checks import recording
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.report import HeatmapStyle, _canvas, choose_cmap, color_limits, heatmaps, plots, render_heatmaps
from xaibench.report.colors import (
    feature_order,
    interpolation_for,
    masked_image,
    normalised_magnitude,
    relative_map,
    saturation,
    to_display,
    to_gray,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPES = {"image": (1, 32, 32), "tabular": (30,), "sequence": (2, 40)}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    return struct.unpack(">II", head[16:24])


def pixels(size_in: tuple[float, float]) -> tuple[int, int]:
    return round(size_in[0] * _canvas.DPI), round(size_in[1] * _canvas.DPI)


def render(tmp_path: Path, modality: str, n: int = 3, *, signed: bool = True, **kwargs) -> list[Path]:
    rng = np.random.default_rng(0)
    shape = (n, *SHAPES[modality])
    a = rng.normal(size=shape)
    return render_heatmaps(
        a if signed else np.abs(a), rng.uniform(size=shape), modality=modality, signed=signed,
        out_dir=tmp_path / "heatmaps", stems=[f"sample_{i:04d}" for i in range(n)],
        captions=[f"#{i}  label 1 · pred 1 (0.90) · target 1" for i in range(n)], **kwargs,
    )


# --- colour maps and limits ------------------------------------------------------------------------------

def test_signed_maps_get_a_diverging_map_and_unsigned_a_sequential_one() -> None:
    assert choose_cmap(signed=True) == "RdBu_r"
    assert choose_cmap(signed=False) == "cividis"
    assert choose_cmap(signed=True, cmap="PiYG") == "PiYG"
    assert HeatmapStyle(cmap="viridis").cmap_for(False) == "viridis"


def test_color_limits_are_the_clip_percentile_of_abs_and_symmetric_when_signed() -> None:
    a = np.arange(101.0)
    a[::2] *= -1  # |a| is 0..100, so the q-th percentile of |a| is q
    assert color_limits(a, True, 99.0) == (-99.0, 99.0)
    assert color_limits(a, False, 99.0) == (0.0, 99.0)
    assert color_limits(a, True, 50.0) == (-50.0, 50.0)
    assert color_limits(a, True, 99.5) == (-99.5, 99.5)
    assert color_limits(a, True, 100.0) == (-100.0, 100.0)


def test_saturation_falls_back_to_max_then_one_and_ignores_nan() -> None:
    assert saturation(np.array([0.0, 0.0, 0.0, -5.0]), 50.0) == 5.0  # percentile 0: use max |a|
    assert color_limits(np.zeros(4), True, 99.0) == (-1.0, 1.0)
    assert color_limits(np.zeros(4), False, 99.0) == (0.0, 1.0)
    assert saturation(np.array([np.nan, 1.0, -2.0, 3.0]), 100.0) == 3.0


def test_normalised_magnitude_and_relative_map_divide_by_the_saturation() -> None:
    a = np.array([2.0, -1.0, 0.0, -4.0, np.nan])
    np.testing.assert_allclose(normalised_magnitude(a, 100.0), [0.5, 0.25, 0.0, 1.0, 0.0])
    # percentile 50 of |a| (NaN ignored) = 1.5: values beyond it clip at 1
    np.testing.assert_allclose(normalised_magnitude(a[:4], 50.0), [1.0, 2 / 3, 0.0, 1.0])
    np.testing.assert_allclose(relative_map(a[:4], True, 50.0), [1.0, -2 / 3, 0.0, -1.0])
    np.testing.assert_allclose(relative_map(np.abs(a[:4]), False, 100.0), [0.5, 0.25, 0.0, 1.0])


def test_masked_image_multiplies_the_input_by_the_normalised_abs_map() -> None:
    gray = np.array([[1.0, 0.5], [0.25, 1.0]])
    relevance = np.array([[2.0, -1.0], [0.0, -4.0]])  # saturation at clip 100: 4
    np.testing.assert_allclose(masked_image(gray, relevance, 100.0), [[0.5, 0.125], [0.0, 1.0]])
    rgb = np.stack([gray, gray / 2, np.ones((2, 2))], axis=-1)
    expected = rgb * np.array([[0.5, 0.25], [0.0, 1.0]])[..., None]
    np.testing.assert_allclose(masked_image(rgb, relevance, 100.0), expected)


# --- display helpers -------------------------------------------------------------------------------------

def test_to_display_maps_the_value_range_to_unit_and_picks_gray_or_rgb() -> None:
    x = np.array([[[0.0, 127.5], [255.0, 300.0]]])
    np.testing.assert_allclose(to_display(x, (0.0, 255.0)), [[0.0, 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(to_display(x, None), [[0.0, 0.425], [0.85, 1.0]])  # own min..max
    rgb = np.arange(12.0).reshape(3, 2, 2)
    assert to_display(rgb, (0.0, 11.0)).shape == (2, 2, 3)
    np.testing.assert_allclose(to_display(rgb, (0.0, 11.0))[0, 1], [1 / 11, 5 / 11, 9 / 11])
    two = np.stack([np.zeros((2, 2)), np.ones((2, 2))])  # other channel counts: the mean
    np.testing.assert_allclose(to_display(two, (0.0, 1.0)), np.full((2, 2), 0.5))
    np.testing.assert_allclose(to_display(np.ones((1, 2, 2)), None), np.full((2, 2), 0.5))


def test_to_gray_uses_luminance_weights() -> None:
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    np.testing.assert_allclose(to_gray(rgb), [[0.299, 0.587, 0.114]])
    gray = np.array([[0.3]])
    assert to_gray(gray) is gray


def test_interpolation_is_nearest_for_magnified_small_images() -> None:
    assert interpolation_for(32, 348.0) == "nearest"
    assert interpolation_for(174, 348.0) == "nearest"
    assert interpolation_for(224, 348.0) == "antialiased"


def test_feature_order_sorts_by_abs_attribution_with_stable_ties() -> None:
    a = np.array([0.1, -3.0, 2.0, -0.5, 3.0])
    assert feature_order(a).tolist() == [1, 4, 2, 3, 0]
    assert feature_order(a, 3).tolist() == [1, 4, 2]
    batch = np.array([[1.0, 0.0, -2.0], [-1.0, 4.0, 0.0]])  # mean |a|: 1, 2, 1
    assert feature_order(batch).tolist() == [1, 0, 2]


def test_feature_labels_use_three_significant_digits() -> None:
    labels = plots.feature_labels(["a", "b", "c", "d"], np.array([25.0, 1960.4, 0.0052249, -3.14159]))
    assert labels == ["a = 25", "b = 1.96e+03", "c = 0.00522", "d = -3.14"]


def test_bar_limits_include_zero_with_a_margin() -> None:
    assert plots.bar_limits(np.array([-1.0, 3.0])) == pytest.approx((-1.32, 3.32))
    assert plots.bar_limits(np.array([1.0, 2.0])) == pytest.approx((0.0, 2.16))
    assert plots.bar_limits(np.array([-2.0, -1.0])) == pytest.approx((-2.16, 0.0))
    assert plots.bar_limits(np.zeros(3)) == (0.0, 1.0)


def test_captions_wrap_at_separators_and_grids_say_when_truncated() -> None:
    caption = "#12  label 3 · pred 3 (0.97) · target 3"
    assert heatmaps.wrap_caption(caption, 26) == "#12  label 3\npred 3 (0.97) · target 3"
    assert heatmaps.wrap_caption(caption, 80) == caption
    assert _canvas.grid_title("ig · cnn", 64, 100) == "ig · cnn  (first 64 of 100 samples)"
    assert _canvas.grid_title("", 3, 3) == "3 samples"
    assert _canvas.grid_shape(3, 8) == (2, 2)
    assert _canvas.grid_shape(64, 8) == (8, 8)
    assert _canvas.grid_shape(65, 8) == (9, 8)


# --- validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"style": "overlayy"}, "unknown heatmap style 'overlayy'; did you mean 'overlay'?"),
    ({"cmap": "rdbu_r"}, "unknown colour map 'rdbu_r'; did you mean 'RdBu_r'?"),
    ({"cmap": "viridus"}, "unknown colour map 'viridus'; did you mean 'viridis'?"),
    ({"cmap": "zzzz"}, "unknown colour map 'zzzz' (see matplotlib's list of colormaps)"),
    ({"clip": 0.0}, "clip must be a percentile in (0, 100], got 0.0"),
    ({"clip": 100.5}, "clip must be a percentile in (0, 100], got 100.5"),
    ({"clip": float("nan")}, "clip must be a percentile in (0, 100], got nan"),
    ({"alpha": -0.1}, "alpha must be in [0, 1], got -0.1"),
    ({"alpha": 1.5}, "alpha must be in [0, 1], got 1.5"),
    ({"scale": "shard"}, "unknown colour scale 'shard'; did you mean 'shared'?"),
    ({"format": "jpg"}, "unknown figure format 'jpg'; did you mean 'png'?"),
])
def test_bad_style_values_raise_input_error(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError) as info:
        HeatmapStyle(**kwargs)
    assert str(info.value) == message
    if {"style", "cmap", "scale", "format"} & set(kwargs):
        assert isinstance(info.value, UnknownNameError)


def test_edge_values_of_clip_and_alpha_are_valid() -> None:
    assert HeatmapStyle(clip=100, alpha=0.0).clip == 100
    assert HeatmapStyle(style="masked", alpha=1.0).alpha == 1.0


@pytest.mark.parametrize(("change", "message"), [
    ({"modality": "audio"}, "unknown modality 'audio'"),
    ({"inputs": np.zeros((2, 6))}, "attributions (2, 5) and inputs (2, 6) differ in shape"),
    ({"modality": "image"}, "image attributions must be (N, C, H, W), got (2, 5)"),
    ({"stems": ["a"]}, "need one stem and caption per sample: 2 samples, 1 stems, 2 captions"),
    ({"stems": ["a", "a"]}, "file stems must be unique and must not be 'grid'"),
    ({"stems": ["a", "grid"]}, "file stems must be unique and must not be 'grid'"),
    ({"feature_names": ["f0"]}, "got 1 feature names for 5 features"),
])
def test_inconsistent_arguments_raise_input_error(tmp_path: Path, change: dict, message: str) -> None:
    args = {"modality": "tabular", "inputs": np.zeros((2, 5)), "stems": ["a", "b"], "feature_names": None}
    args.update(change)
    with pytest.raises(InputError) as info:
        render_heatmaps(np.zeros((2, 5)), args["inputs"], modality=args["modality"], signed=True,
                        out_dir=tmp_path, stems=args["stems"], captions=["x", "y"],
                        feature_names=args["feature_names"])
    assert str(info.value).startswith(message)
    assert not list(tmp_path.iterdir())


# --- rendering -------------------------------------------------------------------------------------------

CAPTIONS = [f"#{i}  label 1 · pred 1 (0.90) · target 1" for i in range(3)]


@pytest.mark.parametrize(("modality", "style", "sample_size", "grid_size"), [
    ("image", "overlay", heatmaps.IMAGE_SIZE, heatmaps.image_grid_size(3, CAPTIONS)[:2]),
    ("image", "heatmap", heatmaps.IMAGE_SIZE, heatmaps.image_grid_size(3, CAPTIONS)[:2]),
    ("image", "masked", heatmaps.IMAGE_SIZE, heatmaps.image_grid_size(3, CAPTIONS)[:2]),
    ("tabular", "overlay", plots.TABULAR_SIZE, plots.tabular_grid_size(3, 30, CAPTIONS, [f"x{i}" for i in range(30)])),
    ("sequence", "overlay", plots.SEQUENCE_SIZE, plots.sequence_grid_size(3)),
])
def test_each_modality_writes_one_png_per_sample_and_a_grid(
    tmp_path: Path, modality: str, style: str, sample_size: tuple, grid_size: tuple
) -> None:
    paths = render(tmp_path, modality, style=HeatmapStyle(style=style), title="ig · toy")
    out = tmp_path / "heatmaps"
    assert paths == [out / f"sample_{i:04d}.png" for i in range(3)] + [out / "grid.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert [png_size(p) for p in paths] == [pixels(sample_size)] * 3 + [pixels(grid_size)]
    assert max(p.stat().st_size for p in paths[:3]) < 200_000


def test_grid_is_truncated_to_max_tiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_canvas, "MAX_TILES", 2)
    paths = render(tmp_path, "image", signed=False)
    assert png_size(paths[-1]) == pixels(heatmaps.image_grid_size(2, CAPTIONS[:2])[:2])
    names = [f"f{i}" for i in range(30)]
    tabular = render(tmp_path / "tab", "tabular", feature_names=names)
    assert png_size(tabular[-1]) == pixels(plots.tabular_grid_size(2, 30, CAPTIONS[:2], names))


def map_pixel(path: Path, saved) -> np.ndarray:
    """RGB at the centre of the right (map) panel of a per-sample image PNG (its axes' box as saved)."""
    import matplotlib.image

    rgba = matplotlib.image.imread(path)
    x0, y0, x1, y1 = saved.axes[1]
    return rgba[round(saved.size[1] - (y0 + y1) / 2), round((x0 + x1) / 2), :3]


@pytest.mark.parametrize(("signed", "style", "value", "expected"), [
    # A constant map saturates: the top colour of RdBu_r (signed) or cividis (unsigned).
    (True, "heatmap", 1.0, "RdBu_r"),
    (True, "heatmap", -1.0, "RdBu_r"),
    (False, "heatmap", 1.0, "cividis"),
    # Overlay on a black input, lightened to heatmaps.LIGHTEN grey: the top colour at opacity alpha.
    (True, "overlay", 1.0, "RdBu_r"),
])
def test_rendered_map_uses_the_chosen_colour_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signed: bool, style: str, value: float, expected: str
) -> None:
    import matplotlib

    alpha = 0.25
    with recording(monkeypatch) as saved:
        paths = render_heatmaps(
            np.full((1, 1, 16, 16), value), np.zeros((1, 1, 16, 16)), modality="image", signed=signed,
            out_dir=tmp_path, stems=["s"], captions=["c"], value_range=(0.0, 1.0),
            style=HeatmapStyle(style=style, alpha=alpha),
        )
    colour = np.array(matplotlib.colormaps[expected](0.0 if value < 0 else 1.0)[:3])
    if style == "overlay":
        colour = alpha * colour + (1 - alpha) * heatmaps.LIGHTEN
    np.testing.assert_allclose(map_pixel(paths[0], saved[0]), colour, atol=1.5 / 255)


def test_overlay_shows_the_input_in_colour_where_the_map_is_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    red = np.zeros((1, 3, 16, 16))
    red[:, 0] = 1.0
    with recording(monkeypatch) as saved:
        paths = render_heatmaps(np.zeros((1, 3, 16, 16)), red, modality="image", signed=True, out_dir=tmp_path,
                                stems=["s"], captions=["c"], value_range=(0.0, 1.0))
    light = heatmaps.LIGHTEN
    np.testing.assert_allclose(map_pixel(paths[0], saved[0]), [1.0, light, light], atol=1.5 / 255)


def test_shared_scale_keeps_a_weak_map_faint_and_sample_scale_saturates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib

    maps = np.stack([np.full((1, 16, 16), 1.0), np.full((1, 16, 16), 0.5)])
    top = np.array(matplotlib.colormaps["RdBu_r"](1.0)[:3])
    half = np.array(matplotlib.colormaps["RdBu_r"](0.75)[:3])
    for scale, expected in (("shared", half), ("sample", top)):
        with recording(monkeypatch) as saved:
            paths = render_heatmaps(
                maps, np.zeros((2, 1, 16, 16)), modality="image",
                signed=True, out_dir=tmp_path / scale, stems=["a", "b"], captions=["a", "b"], value_range=(0.0, 1.0),
                style=HeatmapStyle(style="heatmap", scale=scale))
        np.testing.assert_allclose(map_pixel(paths[1], saved[1]), expected, atol=1.5 / 255)


def test_importing_the_package_does_not_import_matplotlib_and_rendering_avoids_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "import xaibench.report as r\n"
        "assert 'matplotlib' not in sys.modules\n"
        "r.HeatmapStyle()\n"
        "assert 'matplotlib' not in sys.modules\n"
        f"r.render_heatmaps(np.ones((1, 3)), np.ones((1, 3)), modality='tabular', signed=False,"
        f" out_dir=__import__('pathlib').Path({str(tmp_path)!r}), stems=['s'], captions=['c'])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bar_chart_draws_top_features_by_abs_value_coloured_by_sign(tmp_path: Path) -> None:
    import matplotlib

    a = np.array([0.1, -3.0, 2.0, -0.5, 2.5])
    x = np.array([1.0, 2.0, 3.0, 4.0, 1234.5])
    job = _canvas.RenderJob(a[None], x[None], True, tmp_path, ["s"], ["c"], None, None, HeatmapStyle(), "")
    chart = plots._BarChart(job, 3)
    chart.draw(a, x, ["a", "b", "c", "d", "e"], "caption", tmp_path / "s.png")
    assert [bar.get_width() for bar in chart.bars] == [-3.0, 2.5, 2.0]
    assert [t.get_text() for t in chart.ax.get_yticklabels()] == ["b = 2", "e = 1.23e+03", "c = 3"]
    red, blue = matplotlib.colormaps["RdBu_r"](0.85), matplotlib.colormaps["RdBu_r"](0.15)
    assert [bar.get_facecolor() for bar in chart.bars] == [blue, red, red]
    assert chart.note.get_text() == "2 more features with smaller |attribution| not shown"
