"""Token heatmaps: colours, layout and HTML checked exactly; figures by files, texts and pixels."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from tests.report.figure_checks import recording
from xaibench.core.errors import InputError
from xaibench.report import style as figure_style
from xaibench.report import text_heatmaps as th
from xaibench.report.colors import HeatmapStyle

RDBU = matplotlib.colormaps["RdBu_r"]
CIVIDIS = matplotlib.colormaps["cividis"]


def to_hex(rgba: tuple) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])


# --- colours, tokens and layout --------------------------------------------------------------------------

def test_signed_colours_saturate_at_vmax_and_zero_is_the_neutral_middle() -> None:
    colors = th.token_colors(np.array([2.0, -1.0, 0.0, 5.0, -3.0, np.nan]), signed=True, vmax=2.0)
    np.testing.assert_array_equal(colors[0], RDBU(1.0))  # the max |score|: the saturated red end
    np.testing.assert_array_equal(colors[1], RDBU(0.25))
    np.testing.assert_array_equal(colors[2], RDBU(0.5))  # 0: the neutral middle
    np.testing.assert_array_equal(colors[3], RDBU(1.0))  # beyond vmax: clipped
    np.testing.assert_array_equal(colors[4], RDBU(0.0))
    np.testing.assert_array_equal(colors[5], th.BLANK)  # no score: a white box


def test_unsigned_colours_run_from_the_sequential_map_start_and_a_named_map_is_used() -> None:
    colors = th.token_colors(np.array([0.0, 1.0, 3.0]), signed=False, vmax=2.0)
    np.testing.assert_array_equal(colors, CIVIDIS(np.array([0.0, 0.5, 1.0])))
    named = th.token_colors(np.array([1.0]), signed=False, vmax=1.0, cmap="Reds")
    np.testing.assert_array_equal(named[0], matplotlib.colormaps["Reds"](1.0))
    with pytest.raises(InputError, match="vmax must be a positive number"):
        th.token_colors(np.array([1.0]), signed=True, vmax=0.0)


def test_text_is_white_on_dark_boxes_and_black_on_light_ones() -> None:
    boxes = np.array([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], RDBU(1.0), RDBU(0.0), RDBU(0.5),
                      CIVIDIS(0.0), CIVIDIS(1.0)])
    assert th.text_colors(boxes) == ["#ffffff", "#000000", "#ffffff", "#ffffff", "#000000", "#ffffff",
                                     "#000000"]


def test_tokens_show_control_characters_and_long_tokens_are_cut_with_an_ellipsis() -> None:
    assert th.display_token("##ing") == "##ing"
    assert th.display_token("") == ""
    assert th.display_token("a\nb\tc\x00") == "a↵b→c\ufffd"
    assert th.display_token("x" * 30, 20) == "x" * 19 + "…"
    assert th.display_token("x" * 20, 20) == "x" * 20


def test_layout_fills_lines_left_to_right_and_gives_a_too_wide_box_its_own_line() -> None:
    places = th.layout_tokens([1.0, 1.0, 1.0, 3.0, 0.5], 2.5, gap=0.25)
    assert places == [(0, 0.0), (0, 1.25), (1, 0.0), (2, 0.0), (3, 0.0)]
    assert th.layout_tokens([], 2.5) == []


# --- html ------------------------------------------------------------------------------------------------

def test_spans_escape_tokens_and_carry_scores_and_colours() -> None:
    fragment = th.token_spans_html(np.array([0.123, -0.5, 0.0, np.nan]), ["<script>", "a&b", "", '"q"'],
                                   signed=True, vmax=0.5)
    assert "<script" not in fragment
    assert "&lt;script&gt;" in fragment and "a&amp;b" in fragment and "&quot;q&quot;" in fragment
    assert re.findall(r'title="([^"]*)"', fragment) == ["0.123", "-0.5", "0", "no attribution"]
    backgrounds = re.findall(r"background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})", fragment)
    assert backgrounds == [(to_hex(RDBU(0.623)), "#000000"), (to_hex(RDBU(0.0)), "#ffffff"),
                           (to_hex(RDBU(0.5)), "#000000"), ("#ffffff", "#000000")]
    assert fragment.count("<span") == 4
    with pytest.raises(InputError, match="got 1 tokens for 2 scores"):
        th.token_spans_html(np.zeros(2), ["a"], signed=True, vmax=1.0)


# --- rendering -------------------------------------------------------------------------------------------

def render(tmp_path: Path, scores: np.ndarray, tokens: list[list[str]], **kwargs) -> list[Path]:
    n = len(tokens)
    args = {"signed": True, "out_dir": tmp_path / "text", "stems": [f"sample_{i}" for i in range(n)],
            "captions": [f"#{i}  label pos · pred pos (0.90)" for i in range(n)]}
    return th.render_text_heatmaps(scores, tokens, **{**args, **kwargs})


def box_pixel(path: Path, frame: tuple[float, float, float, float], height: float, k: int) -> np.ndarray:
    """RGB (0-255) at the centre of the ``k``-th box of the first line, in a figure of empty tokens."""
    rgba = matplotlib.image.imread(path)
    x = frame[0] + (th.PAD + k * (th.MIN_BOX + th.TOKEN_GAP) + th.MIN_BOX / 2) * figure_style.DPI
    y = frame[3] - (th.PAD + th.BOX_HEIGHT / 2) * figure_style.DPI
    return np.round(rgba[round(height - y), round(x), :3] * 255)


def test_figures_and_page_are_written_with_exact_box_colours(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    scores = np.array([[2.0, 0.0, -2.0], [np.nan, 1.0, 0.0]])
    with recording(monkeypatch) as saved:
        paths = render(tmp_path, scores, [["", "", ""]] * 2, style=HeatmapStyle(clip=100.0),
                       title="ig · <b>toy</b>", misclassified=[False, True])
    out = tmp_path / "text"
    assert paths == [out / "sample_0.png", out / "sample_1.png", out / "tokens.html"]
    assert sorted(p.name for p in out.iterdir()) == ["sample_0.png", "sample_1.png", "tokens.html"]
    assert [s.problems for s in saved] == [[], []]
    assert all(figure_style.is_xaibench_figure(p) for p in paths[:2])
    assert [s.size[0] for s in saved] == [round(figure_style.TEXT_WIDTH * figure_style.DPI)] * 2
    first, second = saved
    assert "ig · <b>toy</b>" in first.texts and th.VALUE_LABEL in first.texts
    assert "✗ misclassified · #1  label pos · pred pos (0.90) · no attribution" in second.texts
    frame, height = first.axes[0], first.size[1]
    expected = [np.round(np.array(RDBU(v)[:3]) * 255) for v in (1.0, 0.5, 0.0)]
    for k in range(3):
        np.testing.assert_array_equal(box_pixel(paths[0], frame, height, k), expected[k])
        np.testing.assert_array_equal(box_pixel(paths[1], second.axes[0], second.size[1], k), [255, 255, 255])
    page = paths[2].read_text(encoding="utf-8")
    assert "<b>" not in page and "ig · &lt;b&gt;toy&lt;/b&gt;" in page
    assert '<section class="sample wrong"><h2>✗ misclassified · #1' in page
    assert re.findall(r'title="([^"]*)"', page) == ["2", "0", "-2"] + ["no attribution"] * 3
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_svg_long_tokens_and_per_sample_scales(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = [["Ġthe", "x" * 40, "<script>alert(1)</script>", "$a$", "日本"], ["##ing", "", "a\nb", "b", "c"]]
    scores = np.array([[1.0, -2.0, 0.5, 0.0, 0.1], [10.0, 5.0, 0.0, -1.0, 2.0]])
    with recording(monkeypatch) as saved:
        paths = render(tmp_path, scores, tokens, style=HeatmapStyle(format="svg", scale="sample", clip=100.0))
    assert [p.suffix for p in paths] == [".svg", ".svg", ".html"]
    assert all(figure_style.is_xaibench_figure(p) for p in paths[:2])
    assert [s.problems for s in saved] == [[], []]
    assert "x" * 19 + "…" in saved[0].texts and "$a$" in saved[0].texts and "a↵b" in saved[1].texts
    assert any(text.endswith("long tokens shortened (…): 2") for text in saved[0].texts)
    assert not any("shortened" in text for text in saved[1].texts)
    page = paths[2].read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "x" * 40 in page and "日本" in page
    assert re.findall(r"saturates at ±([\d.]+)", page) == ["2", "10"]


@pytest.mark.parametrize(("change", "message"), [
    ({"scores": np.zeros(3)}, "scores must be (N, L), one score per token, got shape (3,)"),
    ({"stems": ["a"]}, "need one token list, stem and caption per sample: 2 score rows, 2 token lists, 1 stems"),
    ({"tokens": [["a", "b", "c"]]}, "need one token list, stem and caption per sample: 2 score rows, 1 token"),
    ({"captions": ["x"]}, "need one token list, stem and caption per sample: 2 score rows, 2 token lists, 2 stems, 1"),
    ({"tokens": [["a", "b", "c"], ["a", "b", "c", "d"]]}, "sample 1 has 4 tokens for 3 scores"),
    ({"tokens": [["a", "b", "c"], "abc"]}, "sample 1: tokens must be a list of strings, not one string"),
    ({"tokens": [["a", "b", "c"], ["a", "b", 3]]}, "sample 1: every token must be a string"),
    ({"misclassified": [True]}, "need one misclassified flag per sample: 2 samples, 1 flags"),
    ({"stems": ["a", "a"]}, "file stems must be unique and must not be 'tokens'"),
    ({"stems": ["a", "tokens"]}, "file stems must be unique and must not be 'tokens'"),
    ({"stems": ["a", "../b"]}, "file stem '../b' is not a plain file name"),
])
def test_arguments_that_do_not_fit_raise_input_error_and_write_nothing(tmp_path: Path, change: dict,
                                                                       message: str) -> None:
    args = {"scores": np.zeros((2, 3)), "tokens": [["a", "b", "c"]] * 2, "stems": ["a", "b"],
            "captions": ["x", "y"], "misclassified": None}
    args.update(change)
    with pytest.raises(InputError) as info:
        th.render_text_heatmaps(args.pop("scores"), args.pop("tokens"), signed=True, out_dir=tmp_path / "out",
                                **args)
    assert str(info.value).startswith(message)
    assert not (tmp_path / "out").exists()


def test_shorter_texts_end_in_padding_that_is_neither_drawn_nor_scaled(tmp_path):
    scores = np.array([[1.0, -2.0, 4.0], [0.5, 1000.0, np.nan]])  # sample 1 has two tokens: the rest is padding
    th.render_text_heatmaps(scores, [["a", "b", "c"], ["d", "e"]], signed=True, out_dir=tmp_path,
                            stems=["s0", "s1"], captions=["x", "y"])
    page = (tmp_path / "tokens.html").read_text()
    assert 'title="1e+03"' in page or 'title="1000"' in page  # the second token of the short text is drawn
    assert "no attribution" not in page  # padding is not a missing answer
