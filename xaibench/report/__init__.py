"""Reports and heatmaps: everything a person reads from a run.

Importing this package is cheap: matplotlib is imported only when something is drawn.

A library package: it uses models, data and ``xaibench.core`` and knows nothing of run directories,
jobs or the CLI (the layers are in ``xaibench.core``'s docstring).
"""

from xaibench.report.colors import HeatmapStyle, choose_cmap, color_limits
from xaibench.report.heatmaps import render_heatmaps

__all__ = ["HeatmapStyle", "choose_cmap", "color_limits", "render_heatmaps"]
