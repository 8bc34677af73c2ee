"""The chart of ``xaibench bee report``: how often a learned policy picks each baseline family, per metric
(the BEE paper's RQ6: different metrics prefer different baselines). Families appear in the order the
CLI prints them, the legend stands beside the bars, and the title names the model and the input count."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from xaibench.report import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BAR_WIDTH = 0.8  # of the space between two metrics, shared by that metric's bars


def is_arm_chart(path: Path) -> bool:
    """Whether ``path`` is a chart that xaibench wrote (PNG, PDF or SVG metadata naming xaibench)."""
    return style.is_xaibench_figure(path)


def family_order(distributions: dict[str, dict[str, float]]) -> list[str]:
    """The families in the order the policies list them (the order the CLI prints), first seen first."""
    return list(dict.fromkeys(family for shares in distributions.values() for family in shares))


@style.with_style
def arm_figure(distributions: dict[str, dict[str, float]], model: str = "", samples: int | None = None) -> Figure:
    """Grouped bars, one group per metric (policy), one bar per family, the legend beside the plot."""
    families = family_order(distributions)
    metrics = list(distributions)
    width = BAR_WIDTH / max(len(families), 1)
    fig = style.new_figure(min(style.TEXT_WIDTH, 2.4 + 1.1 * len(metrics)) + 1.3, 3.0, layout="constrained")
    ax = fig.add_subplot()
    for i, family in enumerate(families):
        heights = [distributions[m].get(family, 0.0) for m in metrics]
        positions = [j + (i - (len(families) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(positions, heights, width=width, label=style.family_label(family), color=style.color(i),
               edgecolor="white", linewidth=0.5)
    ax.set_xticks(range(len(metrics)), [style.metric_label(m) for m in metrics])
    ax.set_xlabel("policy trained for metric")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability of choosing\nthe baseline family")
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    ax.legend(title="baseline family", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              frameon=False)
    facts = " · ".join(part for part in (model, f"{samples} inputs" if samples is not None else "") if part)
    title = "Learned baseline distribution per metric" + (f"\n{facts}" if facts else "")
    fig.suptitle(style.fit_text(title, fig.get_size_inches()[0] - 0.2))
    return fig


def write_arm_chart(distributions: dict[str, dict[str, float]], path: Path, *, model: str = "",
                    samples: int | None = None, fmt: str | None = None) -> Path:
    """Draw ``arm_figure`` and write it atomically to ``path`` (format: ``fmt``, else the suffix).

    Args:
        distributions: metric -> family -> mean choice probability over the data's contexts.
        model: the model's name for the title; samples: how many inputs the shares average over.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return style.save(arm_figure(distributions, model, samples), path, fmt)
