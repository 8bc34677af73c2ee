"""The chart of ``xaibench bee report``: how often a learned policy picks each baseline family, per metric
(the BEE paper's RQ6: different metrics prefer different baselines)."""

from __future__ import annotations

import os
from pathlib import Path

from xaibench import __version__

CHART_DPI = 110
SOFTWARE = "xaibench"  # the PNG's Software text chunk: what proves a chart is ours to replace


def is_arm_chart(path: Path) -> bool:
    """Whether ``path`` is a PNG that xaibench wrote (its Software chunk names xaibench)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and str(image.info.get("Software", "")).startswith(SOFTWARE)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return False


def write_arm_chart(distributions: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars, one group per metric (policy), one bar per family; written atomically as PNG.

    Args:
        distributions: metric -> family -> mean choice probability over the data's contexts.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    families = sorted({family for shares in distributions.values() for family in shares})
    metrics = list(distributions)
    width = 0.8 / max(len(families), 1)
    fig = Figure(figsize=(max(4.0, 1.4 * len(metrics) + 2.0), 3.2), dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, family in enumerate(families):
        heights = [distributions[m].get(family, 0.0) for m in metrics]
        positions = [j + (i - (len(families) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(positions, heights, width=width, label=family, color=f"C{i % 10}")
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability of choosing the family")
    ax.set_title("Learned baseline distribution per metric")
    ax.legend(fontsize=8, ncols=min(len(families), 5), loc="upper center", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": f"{SOFTWARE} {__version__}"})
    os.replace(tmp, path)
    return path
