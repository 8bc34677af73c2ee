"""The figures of ``xaibench concepts``: concept montages, importance bars, concept maps, cluster graph.

Fel et al. (NeurIPS 2023, "A Holistic Approach to Unifying Automatic Concept Extraction and Concept
Importance Estimation") and CRAFT (Fel et al., CVPR 2023) show a concept as its most activating crops,
its importance for the class as a bar, where it lies in an image as an attribution map, and the
"strategic cluster graph": each image's vector of concept importances embedded in 2-D and coloured by
its most important concept, with each concept's prevalence (share of images where it is the top
concept) and reliability (the model's accuracy on those images).

Everything takes plain numpy arrays (the job converts tensors) and draws with matplotlib's object-oriented
API on Agg canvases, imported lazily; scikit-learn is imported only by ``cluster_graph``. Concept i has
the colour ``concept_colors(k)[i]`` in every figure and table. The HTML and markdown report is built in
``xaibench.report.concept_page`` (``write_concept_report``), which uses this module's colours.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.core.errors import InputError
from xaibench.report._canvas import DPI, add_axes, grid_shape, new_figure, save
from xaibench.report.charts import MISSING, fmt
from xaibench.report.colors import LUMINANCE, interpolation_for

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["cluster_graph", "cluster_stats", "concept_colors", "importance_order", "overlay_concepts",
           "text_color", "top_concepts", "write_cluster_graph", "write_concept_maps", "write_concept_montage",
           "write_importance_chart"]

TILE, GAP, CAPTION, LABEL, HEADER = 0.95, 0.08, 0.2, 0.3, 0.45  # montage, inches
MAP_TILE, MAP_COLS, LINE = 1.8, 4, 0.17  # concept maps, inches (LINE: one caption line)
MAX_MAPS = 16  # images shown in the concept maps
MAP_ALPHA = 0.6  # opacity of a concept where its normalised code is 1
MAP_CLIP = 99.0  # percentile of an image's code map at which its opacity saturates
TSNE_MIN = 5  # below this many images the cluster graph uses PCA
TEXT_LUMINANCE = 0.5  # text in a concept's colour is darkened to at most this luminance
Stats = list[dict[str, Any]]  # per concept: concept, images, prevalence, reliability


def concept_colors(k: int) -> list[str]:
    """k distinct hex colours, concept i's being item i: tab10 up to 10, tab20 up to 20, then tab20,
    tab20b and tab20c (60), beyond that hues evenly spaced around the HSV circle."""
    import matplotlib
    from matplotlib.colors import to_hex

    if k > 60:
        cmap = matplotlib.colormaps["hsv"]
        return [to_hex(cmap(i / k)) for i in range(k)]
    names = ["tab10"] if k <= 10 else ["tab20"] if k <= 20 else ["tab20", "tab20b", "tab20c"]
    palette = [to_hex(color) for name in names for color in matplotlib.colormaps[name].colors]
    return palette[:k]


def text_color(color: str) -> str:
    """``color`` darkened to a luminance of at most ``TEXT_LUMINANCE``, so that text in a light colour
    (tab20's pale half) stays readable on white; bars, frames and dots keep the colour itself."""
    from matplotlib.colors import to_hex, to_rgb

    rgb = np.array(to_rgb(color))
    luminance = float(rgb @ LUMINANCE)
    return to_hex(rgb * TEXT_LUMINANCE / luminance) if luminance > TEXT_LUMINANCE else to_hex(rgb)


def importance_order(importance: np.ndarray) -> np.ndarray:
    """Concept indices by decreasing (signed) importance; ties keep index order, NaN comes last."""
    values = np.asarray(importance, dtype=np.float64)
    return np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")


def top_concepts(scores: np.ndarray, top: int) -> np.ndarray:
    """(N, top) indices of each row's ``top`` highest scores, highest first (ties by index, NaN last)."""
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.argsort(-values, axis=1, kind="stable")[:, :top]


def _label(concept: int, importance: float) -> str:
    return f"concept {concept} · importance {fmt(importance)}"


def _show(ax: Axes, image: np.ndarray, panel_in: float, color: str | None = None) -> None:
    """An image in [0, 1] ((H, W) gray or (H, W, 3)) on bare axes, framed in ``color``."""
    gray = image.ndim == 2
    ax.imshow(image, cmap="gray" if gray else None, vmin=0, vmax=1,
              interpolation=interpolation_for(max(image.shape[:2]), panel_in * DPI))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color or "0.8")
        spine.set_linewidth(2.5 if color else 0.8)


def _check_images(name: str, images: np.ndarray, lead: int) -> None:
    """Raise InputError unless ``images`` is (*lead dims, H, W) or (*lead dims, H, W, 3)."""
    rgb = images.ndim == lead + 3 and images.shape[-1] == 3
    if images.ndim != lead + 2 and not rgb:
        raise InputError(f"{name} must have {lead} leading dims then (H, W) or (H, W, 3), got {images.shape}")


def write_concept_montage(path: Path, patches: np.ndarray, scores: np.ndarray,
                          importance: np.ndarray) -> Path:
    """A row per concept of its most activating crops, rows by decreasing global importance.

    Args:
        path: the PNG to write.
        patches: (k, m, H, W, 3) or (k, m, H, W) display images in [0, 1]; concept i's m crops, most
            activating first.
        scores: (k, m) the crops' code values for their concept, printed under each crop.
        importance: (k,) global importance; orders the rows (``importance_order``) and labels them.

    Returns:
        ``path``.
    """
    patches, scores = np.asarray(patches, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    importance = np.asarray(importance, dtype=np.float64)
    _check_images("patches", patches, 2)
    k, m = patches.shape[:2]
    if k == 0 or m == 0 or scores.shape != (k, m) or importance.shape != (k,):
        raise InputError(f"need patches (k, m, ...), scores (k, m) and importance (k,) with k, m > 0: got "
                         f"{patches.shape}, {scores.shape}, {importance.shape}")
    colors, row_h = concept_colors(k), LABEL + TILE + CAPTION + GAP
    width = max(4.0, GAP + m * (TILE + GAP))
    fig = new_figure(width, k * row_h + HEADER)
    for row, concept in enumerate(importance_order(importance)):
        bottom = (k - 1 - row) * row_h + GAP
        fig.text(GAP / width, (bottom + CAPTION + TILE + 0.08) / fig.get_size_inches()[1],
                 _label(int(concept), importance[concept]), color=text_color(colors[concept]), fontsize=9,
                 fontweight="bold", va="bottom")
        for j in range(m):
            left = GAP + j * (TILE + GAP)
            ax = add_axes(fig, left, bottom + CAPTION, TILE, TILE)
            _show(ax, patches[concept, j], TILE, colors[concept])
            fig.text((left + TILE / 2) / width, (bottom + CAPTION - 0.03) / fig.get_size_inches()[1],
                     fmt(scores[concept, j]), ha="center", va="top", fontsize=7, color="0.35")
    fig.text(GAP / width, 1 - 0.12 / fig.get_size_inches()[1],
             f"Most activating crops of each concept (top {m}; number: code value).\n"
             "Rows by decreasing global importance.", fontsize=8, va="top", color="0.2")
    return save(fig, Path(path))


def write_importance_chart(path: Path, importance: np.ndarray, low: np.ndarray | None = None,
                           high: np.ndarray | None = None) -> Path:
    """Horizontal bars of the global importance per concept, most important on top, in concept colours.

    Args:
        path: the PNG to write.
        importance: (k,) global importance of each concept for the class.
        low, high: (k,) an interval per concept drawn as whiskers (both or neither); NaN: no whisker.

    Returns:
        ``path``.
    """
    values = np.asarray(importance, dtype=np.float64)
    k = values.shape[0] if values.ndim == 1 else 0
    if k == 0 or (low is None) != (high is None):
        raise InputError(f"need importance (k,) with k > 0 and low, high both or neither; got {values.shape}")
    order, colors = importance_order(values), concept_colors(k)
    fig = new_figure(6.4, 0.7 + 0.3 * k)
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    y, shown = np.arange(k), values[order]
    ax.barh(y, np.nan_to_num(shown), height=0.7, color=[colors[c] for c in order])
    if low is not None and high is not None:
        bounds = (np.asarray(b, dtype=np.float64)[order] for b in (low, high))
        _whiskers(ax, y, shown, *bounds)
    ax.set_yticks(y, [f"concept {c}" for c in order], fontsize=8)
    for tick, c in zip(ax.get_yticklabels(), order):
        tick.set_color(text_color(colors[c]))
    ax.invert_yaxis()
    ax.axvline(0.0, color="0.55", linewidth=0.8)
    ax.set_xlabel("global importance", fontsize=9)
    ax.grid(axis="x", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=8)
    return save(fig, Path(path))


def _whiskers(ax: Axes, y: np.ndarray, values: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Interval whiskers around the bars (clipped at 0: an interval need not contain its estimate)."""
    ok = np.isfinite(values) & np.isfinite(low) & np.isfinite(high)
    spread = np.maximum(0.0, np.vstack([values - low, high - values])[:, ok])
    ax.errorbar(values[ok], y[ok], xerr=spread, fmt="none", ecolor="0.25", elinewidth=1, capsize=3)


def write_concept_maps(path: Path, images: np.ndarray, code_maps: np.ndarray, top: int = 3,
                       local_importance: np.ndarray | None = None) -> Path:
    """Each image (in gray) with its top concepts overlaid as translucent regions in their colours.

    The top concepts of an image are those with the highest ``local_importance`` when it is given (what
    matters for the prediction, as CRAFT's attribution maps show), else those with the highest summed
    code (what is most present). Deliberate choice: each (image, concept) map is normalised on its own
    (opacity ``MAP_ALPHA`` at its ``MAP_CLIP`` percentile), since code scales differ between concepts;
    the most important concept is painted last, on top. The first ``MAX_MAPS`` images are shown.

    Args:
        path: the PNG to write.
        images: (N, H, W, 3) or (N, H, W) display images in [0, 1].
        code_maps: (N, k, H, W) non-negative code maps, upsampled to the image size.
        top: how many concepts per image.
        local_importance: (N, k) per-image concept importance, or None to rank by summed code.

    Returns:
        ``path``.
    """
    images, maps = np.asarray(images, dtype=np.float64), np.asarray(code_maps, dtype=np.float64)
    _check_images("images", images, 1)
    n, k = maps.shape[:2] if maps.ndim == 4 else (0, 0)
    if n == 0 or images.shape[0] != n or maps.shape[2:] != images.shape[1:3] or top < 1:
        raise InputError(f"need images (N, H, W[, 3]), code_maps (N, k, H, W) of the same N, H, W and "
                         f"top >= 1: got {images.shape}, {maps.shape}, top={top}")
    scores = maps.sum(axis=(2, 3)) if local_importance is None else np.asarray(local_importance, np.float64)
    if scores.shape != (n, k):
        raise InputError(f"local_importance must be (N, k) = {(n, k)}, got {scores.shape}")
    shown, top = min(n, MAX_MAPS), min(top, k)
    ranked = top_concepts(scores[:shown], top)
    overlays = overlay_concepts(images[:shown], maps[:shown], ranked, concept_colors(k))
    _draw_maps(Path(path), overlays, ranked, scores[:shown], n, local_importance is not None)
    return Path(path)


def overlay_concepts(images: np.ndarray, maps: np.ndarray, ranked: np.ndarray,
                     colors: list[str]) -> np.ndarray:
    """(n, H, W, 3): gray images with the ``ranked`` (n, t) concepts' maps blended in their colours."""
    from matplotlib.colors import to_rgb

    gray = images @ LUMINANCE if images.ndim == 4 else images
    out = np.repeat(gray[..., None], 3, axis=-1)
    rgb = np.array([to_rgb(c) for c in colors])  # (k, 3)
    chosen = np.take_along_axis(maps, ranked[:, :, None, None], axis=1)  # (n, t, H, W)
    level = np.percentile(chosen, MAP_CLIP, axis=(2, 3), keepdims=True)
    peak = chosen.max(axis=(2, 3), keepdims=True)
    scale = np.where(level > 0, level, np.where(peak > 0, peak, 1.0))
    alpha = MAP_ALPHA * np.clip(chosen / scale, 0.0, 1.0)
    for t in reversed(range(ranked.shape[1])):  # the most important concept last, on top
        a = alpha[:, t, :, :, None]
        out = out * (1 - a) + a * rgb[ranked[:, t]][:, None, None, :]
    return out


def _draw_maps(path: Path, overlays: np.ndarray, ranked: np.ndarray, scores: np.ndarray, total: int,
               by_importance: bool) -> None:
    """The overlays in a grid, each captioned with its concepts (coloured) and their scores."""
    shown, top = ranked.shape
    colors = concept_colors(int(scores.shape[1]))
    rows, cols = grid_shape(shown, MAP_COLS)
    cell_h = MAP_TILE + (top + 1) * LINE + GAP
    width = cols * (MAP_TILE + 2 * GAP) + GAP
    fig = new_figure(max(width, 4.0), rows * cell_h + HEADER)
    height = fig.get_size_inches()[1]
    for i in range(shown):
        row, col = divmod(i, cols)
        left, bottom = GAP + col * (MAP_TILE + 2 * GAP), (rows - 1 - row) * cell_h + GAP
        _show(add_axes(fig, left, bottom + (top + 1) * LINE, MAP_TILE, MAP_TILE), overlays[i], MAP_TILE)
        fig.text(left / fig.get_size_inches()[0], (bottom + (top + 1) * LINE - 0.04) / height,
                 f"image {i}", fontsize=7, va="top", color="0.3")
        for t, concept in enumerate(ranked[i]):
            fig.text(left / fig.get_size_inches()[0], (bottom + (top - t) * LINE - 0.04) / height,
                     f"■ concept {concept} · {fmt(scores[i, concept])}", fontsize=7, va="top",
                     color=text_color(colors[concept]), fontweight="bold")
    basis = "local importance" if by_importance else "summed code"
    note = f"first {shown} of {total} images" if shown < total else f"{total} images"
    fig.text(GAP / fig.get_size_inches()[0], 1 - 0.1 / height,
             f"Top {top} concepts per image by {basis} ({note}),\nopacity: the concept's normalised code.",
             fontsize=8, va="top", color="0.2")
    save(fig, path)


def cluster_graph(local_importance: np.ndarray, correct: np.ndarray, seed: int) -> tuple[np.ndarray, Stats]:
    """The strategic cluster graph's 2-D embedding and per-concept prevalence and reliability.

    Each image's concept-importance vector is embedded with scikit-learn's t-SNE (perplexity
    min(30, (N - 1) / 3), at least 2, which must stay below N; PCA initialisation) or, with fewer than
    ``TSNE_MIN`` images, with PCA; deterministic for the seed; NaN importances count as 0 there.
    Fel et al. (NeurIPS 2023), the strategic cluster graph.

    Args:
        local_importance: (N, k) importance of each concept for each image.
        correct: (N,) whether the model's prediction on the image is right.
        seed: the embedding's random state.

    Returns:
        (embedding (N, 2), stats): stats has one dict per concept, in concept order, with "concept",
        "images" (how many images have it as their top concept), "prevalence" (that count / N) and
        "reliability" (the accuracy on those images; None when there are none).
    """
    scores = np.asarray(local_importance, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.ndim != 2 or min(scores.shape) == 0 or correct.shape != scores.shape[:1]:
        raise InputError(f"need local_importance (N, k) and correct (N,): {scores.shape}, {correct.shape}")
    embedding = _embed(np.nan_to_num(scores, nan=0.0), seed)
    return embedding, cluster_stats(top_concepts(scores, 1)[:, 0], correct, scores.shape[1])


def cluster_stats(top_concept: np.ndarray, correct: np.ndarray, k: int) -> Stats:
    """Per concept: images where it is the top concept, their share, and the accuracy on them."""
    counts = np.bincount(top_concept, minlength=k)
    hits = np.bincount(top_concept, weights=correct.astype(np.float64), minlength=k)
    return [{"concept": i, "images": int(counts[i]), "prevalence": float(counts[i] / len(top_concept)),
             "reliability": float(hits[i] / counts[i]) if counts[i] else None} for i in range(k)]


def _embed(scores: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2): t-SNE of the rows, PCA below ``TSNE_MIN`` rows; zero-padded where fewer dims exist."""
    n, k = scores.shape
    if n >= TSNE_MIN:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = max(2.0, min(30.0, (n - 1) / 3))
        # One OpenMP thread: the same summation order whatever the core count, and far faster for the
        # few hundred points of a report than threads contending for busy cores (20 s -> 2 s for 400).
        with threadpool_limits(limits=1, user_api="openmp"):
            return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto",
                        random_state=seed).fit_transform(scores)
    from sklearn.decomposition import PCA

    dims = min(2, n, k)
    embedding = np.zeros((n, 2))
    if n > 1:
        embedding[:, :dims] = PCA(dims, svd_solver="full", random_state=seed).fit_transform(scores)
    return embedding


def write_cluster_graph(path: Path, embedding: np.ndarray, top_concept: np.ndarray, stats: Stats) -> Path:
    """A scatter of the embedded images coloured by their top concept; the legend gives each concept's
    prevalence and reliability (``cluster_graph``'s stats).

    Args:
        path: the PNG to write.
        embedding: (N, 2) from ``cluster_graph``.
        top_concept: (N,) each image's top concept (``top_concepts(local_importance, 1)[:, 0]``).
        stats: ``cluster_graph``'s per-concept stats (one per concept, in concept order).

    Returns:
        ``path``.
    """
    embedding, top_concept = np.asarray(embedding, dtype=np.float64), np.asarray(top_concept, dtype=int)
    if embedding.shape != (len(top_concept), 2):
        raise InputError(f"need embedding (N, 2), top_concept (N,): {embedding.shape}, {top_concept.shape}")
    colors = concept_colors(len(stats))
    fig = new_figure(7.2, 4.6)
    ax = add_axes(fig, 0.15, 0.15, 4.2, 4.1)
    for s in (s for s in stats if s["images"]):
        mask = top_concept == s["concept"]
        reliability = MISSING if s["reliability"] is None else f"{s['reliability']:.0%}"
        ax.scatter(embedding[mask, 0], embedding[mask, 1], s=28, color=colors[s["concept"]],
                   edgecolors="white", linewidths=0.5,
                   label=f"concept {s['concept']} · {s['prevalence']:.0%} · {reliability}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("Images by their concept-importance vectors (2-D embedding)", fontsize=9)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=7.5, frameon=False,
                       title="top concept · prevalence · reliability", title_fontsize=7.5, alignment="left")
    absent = [str(s["concept"]) for s in stats if not s["images"]]
    if absent:
        legend.set_title(f"{legend.get_title().get_text()}\n(never top: concept {', '.join(absent)})")
    return save(fig, Path(path))
