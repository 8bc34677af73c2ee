"""The strategic cluster graph of ``xaibench concepts`` (Fel et al., NeurIPS 2023).

Each image of the class is a point: its vector of concept importances embedded in 2-D, coloured by its
most important concept. A concept's prevalence is the share of images whose top concept it is, its
reliability the model's accuracy on those images: groups are the "strategies" the model uses for the
class, and an unreliable group is where it goes wrong.

When one concept is the top concept of every image (a class the model recognises by one concept) the
top concept says nothing, so the points are coloured by the first importance rank at which the images
differ (their second concept, say) and the title says so; when they never differ the graph is not
drawn (``write_cluster_graph`` returns None). scikit-learn and matplotlib are imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xaibench.core.errors import InputError
from xaibench.report import style
from xaibench.report.charts import MISSING
from xaibench.report.concepts import concept_colors, top_concepts

__all__ = ["cluster_graph", "cluster_stats", "embedding_name", "grouping", "write_cluster_graph"]

TSNE_MIN = 5  # below this many images the cluster graph uses PCA
ORDINALS = ("top", "second", "third")
Stats = list[dict[str, Any]]  # per concept: concept, images, prevalence, reliability


def cluster_graph(local_importance: np.ndarray, correct: np.ndarray, seed: int) -> tuple[np.ndarray, Stats]:
    """The strategic cluster graph's 2-D embedding and per-concept prevalence and reliability.

    Each image's concept-importance vector is embedded with scikit-learn's t-SNE (perplexity
    min(30, (N - 1) / 3), at least 2, which must stay below N; PCA initialisation) or, with fewer than
    ``TSNE_MIN`` images, with PCA; deterministic for the seed; NaN importances count as 0 there.

    Args:
        local_importance: (N, k) importance of each concept for each image.
        correct: (N,) whether the model's prediction on the image is right.
        seed: the embedding's random state.

    Returns:
        (embedding (N, 2), stats): stats has one dict per concept, in concept order, with "concept",
        "images" (how many images have it as their top concept), "prevalence" (that count / N) and
        "reliability" (the accuracy on those images; None when there are none).
    """
    scores, correct = _checked(local_importance, correct)
    embedding = _embed(np.nan_to_num(scores, nan=0.0), seed)
    return embedding, cluster_stats(top_concepts(scores, 1)[:, 0], correct, scores.shape[1])


def _checked(local_importance: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(local_importance, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.ndim != 2 or min(scores.shape) == 0 or correct.shape != scores.shape[:1]:
        raise InputError(f"need local_importance (N, k) and correct (N,): {scores.shape}, {correct.shape}")
    return scores, correct


def cluster_stats(top_concept: np.ndarray, correct: np.ndarray, k: int) -> Stats:
    """Per concept: images where it is the top concept, their share, and the accuracy on them."""
    counts = np.bincount(top_concept, minlength=k)
    hits = np.bincount(top_concept, weights=correct.astype(np.float64), minlength=k)
    return [{"concept": i, "images": int(counts[i]), "prevalence": float(counts[i] / len(top_concept)),
             "reliability": float(hits[i] / counts[i]) if counts[i] else None} for i in range(k)]


def grouping(local_importance: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(rank, each image's concept at that rank) for the first importance rank (0: the top concept)
    at which the images' concepts differ; None when every image ranks the concepts alike."""
    scores = np.asarray(local_importance, dtype=np.float64)
    ranked = top_concepts(scores, scores.shape[1])
    return next(((r, ranked[:, r]) for r in range(scores.shape[1]) if len(np.unique(ranked[:, r])) > 1), None)


def embedding_name(images: int) -> str:
    """The embedding ``cluster_graph`` uses for this many images."""
    return "t-SNE" if images >= TSNE_MIN else "PCA"


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


def _ordinal(rank: int) -> str:
    return ORDINALS[rank] if rank < len(ORDINALS) else f"{rank + 1}th"


@style.with_style
def write_cluster_graph(path: Path, embedding: np.ndarray, local_importance: np.ndarray, correct: np.ndarray,
                        importance: np.ndarray) -> Path | None:
    """A scatter of the embedded images coloured by their top concept (or, when one concept tops every
    image, by the first rank at which they differ: ``grouping``); the legend, below the axes, gives each
    group's size, share and reliability (the model's accuracy on it).

    Args:
        path: the file to write; its suffix (.png, .pdf or .svg) sets the format.
        embedding: (N, 2) from ``cluster_graph``.
        local_importance: (N, k) each image's concept importances.
        correct: (N,) whether the model's prediction on each image is right.
        importance: (k,) global importance: the concepts' colours (``concept_colors``).

    Returns:
        ``path``, or None (nothing written) when every image ranks the concepts alike.
    """
    scores, correct = _checked(local_importance, correct)
    embedding = np.asarray(embedding, dtype=np.float64)
    if embedding.shape != (len(scores), 2) or np.shape(importance) != scores.shape[1:]:
        raise InputError(f"need embedding (N, 2), local_importance (N, k), importance (k,): {embedding.shape}, "
                         f"{scores.shape}, {np.shape(importance)}")
    found = grouping(scores)
    if found is None:
        return None
    rank, group = found
    colors, n = concept_colors(importance), len(scores)
    fig = style.new_figure(style.TEXT_WIDTH, 5.4, layout="constrained")
    ax = fig.add_subplot()
    for s in (s for s in cluster_stats(group, correct, scores.shape[1]) if s["images"]):
        reliability = MISSING if s["reliability"] is None else f"{s['reliability']:.0%}"
        ax.scatter(*embedding[group == s["concept"]].T, s=30, color=colors[s["concept"]], edgecolors="white",
                   linewidths=0.5, label=f"{style.concept_label(s['concept'])}: {s['images']} images "
                                         f"({s['prevalence']:.0%}), reliability {reliability}")
    method = embedding_name(n)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(_title(scores, rank, n), loc="left")
    fig.legend(loc="outside lower center", ncols=2, frameon=False,
               title=f"colour: each image's {_ordinal(rank)} concept; reliability: the model's accuracy "
                     "on those images")
    return style.save(fig, Path(path))


def _title(scores: np.ndarray, rank: int, n: int) -> str:
    """What the points are and, when the top concepts do not differ, which concept they share."""
    if rank == 0:
        return f"{n} images by their concept importances, coloured by their top concept"
    shared = ", ".join(style.concept_label(c) for c in top_concepts(scores[:1], rank)[0])
    return (f"{n} images by their concept importances: all rank {shared} first,\n"
            f"so they are coloured by their {_ordinal(rank)} concept")
