"""Reports and heatmaps: everything a person reads from a run.

Importing this package is cheap: matplotlib is imported only when something is drawn.
"""

from xaibench.report.colors import HeatmapStyle, choose_cmap, color_limits
from xaibench.report.heatmaps import render_heatmaps

__all__ = ["HeatmapStyle", "choose_cmap", "color_limits", "render_heatmaps"]
