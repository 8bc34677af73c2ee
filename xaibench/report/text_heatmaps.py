"""Token heatmaps of text classifiers: each token on a box coloured by its attribution.

One figure per sample (PNG, PDF or SVG) with the tokens laid out as running text, wrapped to the
figure's width, and one self-contained ``tokens.html`` with every sample (inline CSS, no script, nothing
fetched; each token's score in its ``title``). A token's score is the attribution of its embedding
summed over the embedding dimensions (``xaibench.models.text.token_scores``; a map that perturbation or
attention methods copy to every dimension counts once), the usual reading of attributions of text models
(Sundararajan et al., 2017, "Axiomatic Attribution for Deep Networks", ICML; Arras et al., 2017,
"'What is relevant in a text document?': An interpretable machine learning approach", PLOS ONE).

The colour scales are the image heatmaps' (``xaibench.report.colors``): a diverging map symmetric around
0 for signed scores, a sequential one from 0 for unsigned scores, saturating at the ``clip`` percentile
of |score| of all samples together or of each sample. Boxes are opaque (the image style and alpha do not
apply); a token's text is black or white, whichever contrasts more with its box (the WCAG 2.1 contrast
ratio). Tokens are shown as the tokenizer gives them ("##ing", "Ġword"), control characters as arrows;
figures shorten tokens longer than ``MAX_TOKEN_CHARS`` with an ellipsis and draw characters their font
lacks as empty boxes, the HTML page shows every token whole.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.core.errors import InputError
from xaibench.report import style as figure_style
from xaibench.report._canvas import MISCLASSIFIED, add_axes, mark_frame, whole_pixels
from xaibench.report.charts import CSS, fmt
from xaibench.report.colors import (
    HeatmapStyle,
    choose_cmap,
    relative_map,
    sample_saturations,
)
from xaibench.report.comparison import write_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HTML_FILE = "tokens.html"
DEFAULT_STYLE = HeatmapStyle()  # frozen: safe to share as a default
VALUE_LABEL = "token score (attribution summed over the embedding)"
NO_ATTRIBUTION = "no attribution"
MAX_TOKEN_CHARS = 20  # figures shorten longer tokens (the HTML page shows them whole)
CONTROL = str.maketrans({**{chr(c): "\ufffd" for c in (*range(32), 127)},
                         "\n": "↵", "\r": "↵", "\t": "→"})
DARK_TEXT, LIGHT_TEXT = "#000000", "#ffffff"
BLANK = (1.0, 1.0, 1.0, 1.0)  # the box of a token without a score
RAMP_STOPS = 11  # colours of the HTML legend's gradient
SPAN_STYLE = ("display:inline-block;white-space:pre;margin:1px;padding:0 .25em;border-radius:3px;"
              "box-shadow:inset 0 0 0 1px #0002;")  # inline: the fragment looks the same in any page
# Figure layout in inches; text sizes are style.FONT (tokens, caption), TITLE (title), SMALL (notes).
WIDTH = figure_style.TEXT_WIDTH
MARGIN = 0.12  # around the figure
PAD = 0.08  # inside the text frame, around the tokens
BOX_HEIGHT = 0.19  # a token's box: the font's ascent and descent with room above and below
LINE_GAP = 0.05  # between lines of boxes
TOKEN_PAD = 0.035  # left and right of a token's text inside its box
TOKEN_GAP = 0.04  # between neighbouring boxes
MIN_BOX = 0.1  # an empty token's box
HEAD_GAP = 0.06  # between the caption and the text frame
BAR_SIZE = (2.6, 0.11)  # the colour bar, centred under the text frame
BAR_GAP = 0.1  # between the text frame and the colour bar
BAR_BLOCK = 0.62  # from the text frame down to the bottom margin: colour bar, ticks, label, note
TITLE_LINE, CAPTION_LINE = figure_style.TITLE * 1.3 / 72, figure_style.FONT * 1.35 / 72


def render_text_heatmaps(
    scores: np.ndarray,
    tokens: list[list[str]],
    *,
    signed: bool,
    out_dir: Path,
    stems: list[str],
    captions: list[str],
    style: HeatmapStyle = DEFAULT_STYLE,
    title: str = "",
    misclassified: list[bool] | None = None,
) -> list[Path]:
    """Draw one figure per sample (``<stem>.<format>``) and write ``tokens.html`` with all samples.

    Args:
        scores: (N, L) attribution per token, L the longest text's token count (a shorter text's row
            ends in padding, read up to its own tokens); a row not all finite means "no attribution" (an
            explainer that gave no answer): its tokens are drawn uncoloured and its caption says so.
        tokens: N lists of at most L tokens, as the tokenizer gives them (subwords included).
        signed: whether scores carry a sign (diverging colours) or not (sequential colours).
        out_dir: folder to write into (created if missing).
        stems: file stem per sample: unique plain file names, none of them "tokens".
        captions: one line per sample (label, prediction...).
        style: colour map, clip percentile, shared or per-sample scale and file format (the image
            style and alpha do not apply to text).
        title: shown above every figure and as the HTML page's heading.
        misclassified: per sample, whether the prediction differs from the label (marked with a
            dashed frame and a text mark); None when unknown.

    Returns:
        The files written: the per-sample figures in sample order, then ``tokens.html``.

    Raises:
        InputError: shapes, lengths or stems do not fit.
    """
    job = _TextJob.checked(scores, tokens, signed=signed, out_dir=Path(out_dir), stems=list(stems),
                           captions=list(captions), style=style, title=title, misclassified=misclassified)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    vmax = sample_saturations(job.scores, style.clip, style.scale)
    with figure_style.styled(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")  # drawn as empty boxes
        measure = _width_meter()
        paths = [_draw_sample(job, i, float(vmax[i]), measure) for i in range(len(job.stems))]
    return [*paths, _write_html(job, vmax, job.out_dir / HTML_FILE)]


@dataclass(frozen=True)
class _TextJob:
    """Validated arguments of ``render_text_heatmaps``; rows without attribution are all NaN."""

    scores: np.ndarray
    tokens: list[list[str]]
    signed: bool
    out_dir: Path
    stems: list[str]
    captions: list[str]
    style: HeatmapStyle
    title: str
    misclassified: list[bool] | None

    @classmethod
    def checked(cls, scores: np.ndarray, tokens: list[list[str]], *, signed: bool, out_dir: Path,
                stems: list[str], captions: list[str], style: HeatmapStyle, title: str,
                misclassified: list[bool] | None) -> _TextJob:
        """The job, or InputError for arguments that do not fit together."""
        try:
            values = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise InputError(f"scores must be an (N, L) array of numbers: {err}") from err
        if values.ndim != 2:
            raise InputError(f"scores must be (N, L), one score per token, got shape {values.shape}")
        n, length = len(stems), values.shape[1]
        if n == 0 or values.shape[0] != n or len(tokens) != n or len(captions) != n:
            raise InputError(f"need one token list, stem and caption per sample: {values.shape[0]} score rows, "
                             f"{len(tokens)} token lists, {n} stems, {len(captions)} captions")
        for i, row in enumerate(tokens):
            if isinstance(row, str):
                raise InputError(f"sample {i}: tokens must be a list of strings, not one string")
            if len(row) > length:
                raise InputError(f"sample {i} has {len(row)} tokens for {length} scores")
            if not all(isinstance(token, str) for token in row):
                raise InputError(f"sample {i}: every token must be a string")
        if misclassified is not None and len(misclassified) != n:
            raise InputError(f"need one misclassified flag per sample: {n} samples, {len(misclassified)} flags")
        if len(set(stems)) != n or Path(HTML_FILE).stem in stems:
            raise InputError(f"file stems must be unique and must not be {Path(HTML_FILE).stem!r}")
        for stem in stems:
            if stem in ("", ".", "..") or Path(stem).name != stem or "\\" in stem:
                raise InputError(f"file stem {stem!r} is not a plain file name")
        # texts shorter than the longest: their scores stop at their last token, the rest is padding
        own = np.arange(length)[None, :] < np.array([len(row) for row in tokens])[:, None]
        answered = (np.isfinite(values) | ~own).all(axis=1)
        return cls(np.where(answered[:, None] & own, values, np.nan), [list(row) for row in tokens], signed,
                   out_dir, stems, captions, style, title,
                   None if misclassified is None else [bool(m) for m in misclassified])

    def row(self, i: int) -> np.ndarray:
        """Sample ``i``'s scores, one per token (a shorter text's padding left out)."""
        return self.scores[i, :len(self.tokens[i])]

    @property
    def cmap(self) -> str:
        """The colour map name for these scores."""
        return self.style.cmap_for(self.signed)

    def wrong(self, i: int) -> bool:
        """Whether sample ``i`` is misclassified (False when that is unknown)."""
        return self.misclassified is not None and self.misclassified[i]

    def caption(self, i: int) -> str:
        """Sample ``i``'s caption, marked when misclassified or without attribution."""
        text = f"{MISCLASSIFIED} · {self.captions[i]}" if self.wrong(i) else self.captions[i]
        return text if np.isfinite(self.row(i)).all() else f"{text} · {NO_ATTRIBUTION}"

    def scale_note(self) -> str:
        """Where colours saturate: one scale for all samples or one per sample."""
        clip = self.style.clip
        if self.style.scale == "shared":
            return f"one scale for all {len(self.stems)} samples, saturates at p{clip:g} of |attribution|"
        return f"each sample its own scale, saturates at its p{clip:g} of |attribution|"


# --- colours and tokens -------------------------------------------------------------------------------------

def token_colors(scores_row: np.ndarray, *, signed: bool, vmax: float, cmap: str | None = None) -> np.ndarray:
    """(L, 4) RGBA box colours of one sample's tokens.

    Args:
        scores_row: (L,) scores; NaN (no score) gets a white box.
        signed: diverging map with 0 in its middle, or sequential map from 0.
        vmax: the |score| at which colours saturate (> 0): the ends of the colour map.
        cmap: a matplotlib colour map name; None picks the heatmaps' default (``choose_cmap``).
    """
    import matplotlib

    if not np.isfinite(vmax) or vmax <= 0:
        raise InputError(f"vmax must be a positive number, got {vmax!r}")
    row = np.asarray(scores_row, dtype=np.float64).reshape(-1)
    finite = np.isfinite(row)
    rel = relative_map(np.where(finite, row, 0.0), signed, 100.0, vmax)
    rgba = matplotlib.colormaps[choose_cmap(signed, cmap)]((rel + 1.0) / 2.0 if signed else rel)
    rgba[~finite] = BLANK
    return rgba


def text_colors(rgba: np.ndarray) -> list[str]:
    """Black or white text for each (…, 4) box colour: whichever has the higher WCAG 2.1 contrast ratio
    with the box (black on light boxes, white on dark ones)."""
    rgb = np.asarray(rgba, dtype=np.float64).reshape(-1, 4)[:, :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    black_wins = (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05)
    return [DARK_TEXT if dark else LIGHT_TEXT for dark in black_wins]


def display_token(token: str, limit: int | None = None) -> str:
    """A token as shown: control characters as visible marks, cut to ``limit`` characters with an
    ellipsis when longer (None: whole)."""
    text = token.translate(CONTROL)
    return text[:limit - 1] + "…" if limit is not None and len(text) > limit else text


def layout_tokens(widths: Sequence[float], line_width: float, gap: float = TOKEN_GAP) -> list[tuple[int, float]]:
    """(line, x) of each box of the given widths, filling lines of ``line_width`` left to right with
    ``gap`` between boxes; a box wider than a line gets a line of its own."""
    places: list[tuple[int, float]] = []
    line, x = 0, 0.0
    for width in widths:
        if x > 0 and x + width > line_width:
            line, x = line + 1, 0.0
        places.append((line, x))
        x += width + gap
    return places


def _hex(rgba: Sequence[float]) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgba[:3])


# --- figures ---------------------------------------------------------------------------------------------

def _width_meter() -> Callable[[str], float]:
    """A function giving a text's width in inches at style.FONT points (cached per text)."""
    from matplotlib.font_manager import FontProperties

    renderer = figure_style.new_figure(1.0, 1.0).canvas.get_renderer()
    font, widths = FontProperties(size=figure_style.FONT), {}

    def measure(text: str) -> float:
        if text not in widths:
            widths[text] = renderer.get_text_width_height_descent(text, font, ismath=False)[0] / figure_style.DPI
        return widths[text]

    return measure


def _draw_sample(job: _TextJob, i: int, vmax: float, measure: Callable[[str], float]) -> Path:
    """Draw sample ``i`` (colours saturating at ``vmax``) in a figure as tall as its text and save it."""
    shown = [display_token(token, MAX_TOKEN_CHARS) for token in job.tokens[i]]
    widths = [max(MIN_BOX, measure(text) + 2 * TOKEN_PAD) for text in shown]
    frame_width = WIDTH - 2 * MARGIN
    places = layout_tokens(widths, frame_width - 2 * PAD)
    lines = 1 + max((line for line, _ in places), default=0)
    frame_height = 2 * PAD + lines * BOX_HEIGHT + (lines - 1) * LINE_GAP
    title = figure_style.fit_text(job.title, frame_width) if job.title else ""
    caption = figure_style.fit_text(job.caption(i), frame_width, figure_style.FONT)
    head = (title.count("\n") + 1) * TITLE_LINE * bool(title) + (caption.count("\n") + 1) * CAPTION_LINE
    height = whole_pixels(2 * MARGIN + head + HEAD_GAP + frame_height + BAR_BLOCK)
    fig = figure_style.new_figure(WIDTH, height)
    top = height - MARGIN
    if title:
        _figure_text(fig, top, title, figure_style.TITLE, "black")
    top -= head - (caption.count("\n") + 1) * CAPTION_LINE
    _figure_text(fig, top, caption, figure_style.FONT, figure_style.MARK if job.wrong(i) else "black")
    bottom = height - MARGIN - head - HEAD_GAP - frame_height
    ax = add_axes(fig, MARGIN, bottom, frame_width, frame_height)
    colors = token_colors(job.row(i), signed=job.signed, vmax=vmax, cmap=job.cmap)
    _draw_tokens(ax, shown, widths, places, colors)
    mark_frame(ax, job.wrong(i))
    _colour_bar(fig, job, vmax, bottom - BAR_GAP - BAR_SIZE[1])
    shortened = sum(len(display_token(token)) > MAX_TOKEN_CHARS for token in job.tokens[i])
    note = job.scale_note() + (f"; long tokens shortened (…): {shortened}" if shortened else "")
    fig.text(0.5, MARGIN / height, figure_style.fit_text(note, frame_width, figure_style.SMALL), ha="center",
             va="bottom", fontsize=figure_style.SMALL, color=figure_style.MUTED, parse_math=False)
    return figure_style.save(fig, figure_style.figure_file(job.out_dir, job.stems[i], job.style.format))


def _figure_text(fig: Figure, top: float, text: str, points: float, color: str) -> None:
    """Centred text whose first line's top is ``top`` inches above the figure's bottom edge."""
    fig.text(0.5, top / fig.get_size_inches()[1], text, ha="center", va="top", fontsize=points, color=color,
             parse_math=False)


def _draw_tokens(ax: Axes, shown: list[str], widths: list[float], places: list[tuple[int, float]],
                 colors: np.ndarray) -> None:
    """The tokens on their boxes, in axes whose data units are inches from the frame's top-left corner."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import FancyBboxPatch

    fw, fh = ax.get_figure().get_size_inches()  # type: ignore[union-attr]
    box = ax.get_position()
    ax.set_xlim(0.0, box.width * fw)
    ax.set_ylim(box.height * fh, 0.0)
    ax.set_xticks([])
    ax.set_yticks([])
    corners = [(PAD + x, PAD + line * (BOX_HEIGHT + LINE_GAP)) for line, x in places]
    ax.add_collection(PatchCollection(
        [FancyBboxPatch(corner, width, BOX_HEIGHT, boxstyle="round,pad=0,rounding_size=0.025")
         for corner, width in zip(corners, widths)],
        facecolors=colors, edgecolors="0.8", linewidths=0.4))
    for text, (x, y), width, ink in zip(shown, corners, widths, text_colors(colors)):
        ax.text(x + width / 2, y + BOX_HEIGHT / 2, text, ha="center", va="center_baseline",
                fontsize=figure_style.FONT, color=ink, parse_math=False)


def _colour_bar(fig: Figure, job: _TextJob, vmax: float, bottom: float) -> None:
    """A horizontal colour bar centred at ``bottom`` inches, with its ticks and label under it."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = add_axes(fig, (WIDTH - BAR_SIZE[0]) / 2, bottom, *BAR_SIZE)
    scale = ScalarMappable(Normalize(-vmax if job.signed else 0.0, vmax), job.cmap)
    bar = fig.colorbar(scale, cax=cax, orientation="horizontal", extend="both" if job.signed else "max")
    bar.set_label(VALUE_LABEL, fontsize=figure_style.SMALL, labelpad=2)
    bar.ax.tick_params(labelsize=figure_style.SMALL, length=2, pad=1.5)


# --- html ------------------------------------------------------------------------------------------------

def token_spans_html(scores_row: np.ndarray, tokens_row: list[str], *, signed: bool, vmax: float,
                     cmap: str | None = None) -> str:
    """One sample's tokens as HTML ``<span>``s on their colours, each with its score as ``title``.

    Styles are inline, so the fragment looks the same in any page; tokens are HTML-escaped and shown
    whole (``display_token`` without a limit).

    Args:
        scores_row: (L,) scores; NaN gives a white box titled "no attribution".
        tokens_row: the L tokens.
        signed, vmax, cmap: the colour scale, as for ``token_colors``.
    """
    row = np.asarray(scores_row, dtype=np.float64).reshape(-1)
    if len(row) != len(tokens_row):
        raise InputError(f"got {len(tokens_row)} tokens for {len(row)} scores")
    colors = token_colors(row, signed=signed, vmax=vmax, cmap=cmap)
    spans = []
    for token, score, rgba, ink in zip(tokens_row, row, colors, text_colors(colors)):
        tip = fmt(score) if np.isfinite(score) else NO_ATTRIBUTION
        text = html.escape(display_token(token)) or "\u200b"
        spans.append(f'<span style="{SPAN_STYLE}background:{_hex(rgba)};color:{ink}" '
                     f'title="{html.escape(tip)}">{text}</span>')
    return "".join(spans)


TOKEN_CSS = f"""
.sample {{ line-height: 1.9; }}
.sample.wrong {{ border: 2px dashed {figure_style.MARK}; }}
.sample h2 {{ font-size: 14px; margin: 0 0 6px; line-height: 1.45; }}
.sample.wrong h2 {{ color: {figure_style.MARK}; }}
.tokens {{ margin: 0; }}
.ramp {{ display: inline-block; width: 220px; height: 12px; margin: 0 6px; vertical-align: -2px;
  border-radius: 2px; }}
"""


def _write_html(job: _TextJob, vmax: np.ndarray, path: Path) -> Path:
    """Write the page of all samples atomically and return ``path``."""
    shared = job.style.scale == "shared"
    samples = []
    for i in range(len(job.stems)):
        scale = "" if shared else f' <span class="muted">· saturates at ±{fmt(vmax[i])}</span>'
        spans = token_spans_html(job.row(i), job.tokens[i], signed=job.signed, vmax=float(vmax[i]),
                                 cmap=job.cmap)
        samples.append(f'<section class="sample{" wrong" if job.wrong(i) else ""}">'
                       f"<h2>{html.escape(job.caption(i))}{scale}</h2>\n<p class=\"tokens\">{spans}</p></section>")
    heading = job.title or "Token attributions"
    page = ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(heading)}</title>\n<style>{CSS}{TOKEN_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{html.escape(heading)}</h1>\n{_legend(job, float(vmax[0]))}\n" + "\n".join(samples)
            + "\n</main>\n</body>\n</html>\n")
    write_atomic(path, page)
    return path


def _legend(job: _TextJob, vmax: float) -> str:
    """The colour scale as a gradient with its ends labelled, and what the colours and marks mean."""
    import matplotlib

    cmap = matplotlib.colormaps[job.cmap]
    stops = ", ".join(_hex(cmap(t)) for t in np.linspace(0.0, 1.0, RAMP_STOPS))
    top = fmt(vmax) if job.style.scale == "shared" else "max"
    low = f"−{top}" if job.signed else "0"
    wrong = sum(job.wrong(i) for i in range(len(job.stems)))
    marks = (f"; dashed frame and ✗: misclassified ({wrong} of {len(job.stems)})"
             if job.misclassified is not None else "")
    maximum = "" if job.style.scale == "shared" else "; max: each sample's, given beside it"
    return (f'<p class="legend">{html.escape(low)}<span class="ramp" style="background:linear-gradient('
            f'90deg, {stops})"></span>{html.escape(top)}</p>\n'
            f'<p class="note">{html.escape(VALUE_LABEL)}; {html.escape(job.scale_note())}{maximum}{marks}. '
            "Point at a token to see its score.</p>")
