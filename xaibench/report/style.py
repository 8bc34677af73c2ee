"""One figure style for every figure xaibench writes: fonts, sizes, colours, labels, file formats.

The API (small and stable; the figure modules use nothing else from here):

    with styled():                      # rcParams below, for everything drawn inside
        fig = new_figure(w, h)           # an Agg figure, no pyplot; layout="constrained" on request
        ...
        save(fig, path, fmt)             # atomic; png | pdf | svg; the suffix follows ``fmt``
    check_format(fmt)                   # InputError unless fmt is one of FORMATS
    figure_file(folder, stem, fmt)      # folder / f"{stem}.{fmt}"
    is_xaibench_figure(path)            # whether xaibench wrote the file (its metadata says so)
    PALETTE, color(i)                   # Okabe-Ito qualitative colours, i-th colour cycling
    DIVERGING_CMAP, SEQUENTIAL_CMAP     # colour maps for signed / unsigned values
    HELPS, HURTS, MARK                  # blue / vermillion for good / bad, MARK for flagged samples
    FONT, SMALL, TITLE                  # font sizes in points
    TEXT_WIDTH, COLUMN_WIDTH, DPI       # inches of an A4 text block and of one of its two columns
    method_label(name), metric_label(name, higher_is_better), concept_label(i), family_label(name)
    fit_text(text, width, points)       # text wrapped at spaces to fit ``width`` inches (titles never clip)

Colours are chosen for colour-blind readers: the qualitative palette is Okabe & Ito's (2008, "Color
Universal Design"), the diverging map ColorBrewer's RdBu (Harrower & Brewer, 2003, marked colour-blind
safe) and the sequential map viridis-family cividis (Nuñez et al., 2018, "Optimizing colormaps with
consideration for color vision deficiency", PLOS ONE). Nothing is told apart by colour alone: flagged
samples also get a dashed frame and a text mark. Labels are the registry names the CLI prints, so that a
method, metric or concept reads the same in the terminal, in figures and in reports.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from xaibench import __version__
from xaibench.core.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "pdf", "svg")
DEFAULT_FORMAT = "png"
DPI = 150  # raster output; vector output ignores it except for embedded images
TEXT_WIDTH = 6.3  # inches: A4's 16 cm text block
COLUMN_WIDTH = 3.3  # inches: one column of a two-column A4 page
FONT, SMALL, TITLE = 8.5, 7.0, 10.0  # points, at 100% size in print
SOFTWARE = "xaibench"  # what a figure's metadata names as its writer

# Okabe-Ito, yellow last (weak on white) and black left out (it is the text colour).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#F0E442")
DIVERGING_CMAP = "RdBu_r"  # negative blue, positive red, white at 0
SEQUENTIAL_CMAP = "cividis"
HELPS, HURTS = "#0072B2", "#D55E00"  # blue / vermillion: tell apart under every colour deficiency
MARK = "#D55E00"  # flagged samples (misclassified), always with a dashed frame and a text mark
NEUTRAL = "#333333"
MUTED = "#667085"

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs on every machine
    "font.size": FONT,
    "axes.titlesize": FONT,
    "axes.labelsize": FONT,
    "xtick.labelsize": SMALL,
    "ytick.labelsize": SMALL,
    "legend.fontsize": SMALL,
    "figure.titlesize": TITLE,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": SEQUENTIAL_CMAP,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,  # TrueType: text stays text in PDF editors
    "svg.fonttype": "path",  # glyphs as paths: the SVG looks the same without the font installed
    "svg.hashsalt": SOFTWARE,  # stable element ids: the same figure gives the same bytes
}


def rc() -> dict[str, Any]:
    """The rcParams of the style: ``RC`` plus the palette as colour cycle (a new dict)."""
    from cycler import cycler

    return {**RC, "axes.prop_cycle": cycler(color=list(PALETTE))}


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """Apply the style to everything drawn inside (matplotlib reads rcParams when an artist is made)."""
    import matplotlib

    with matplotlib.rc_context(rc()):
        yield


_F = TypeVar("_F", bound=Callable[..., Any])


def with_style(function: _F) -> _F:
    """Decorator: run ``function`` inside ``styled()``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with styled():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    """A ``width`` x ``height`` inch figure with its own Agg canvas (no pyplot, no global state).

    Args:
        layout: None for axes placed by hand, "constrained" to let matplotlib keep labels apart.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def check_format(fmt: str) -> str:
    """``fmt`` lower-cased when it is one of FORMATS; InputError otherwise."""
    value = str(fmt).lower()
    if value not in FORMATS:
        raise InputError(f"unknown figure format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return value


def figure_file(folder: Path, stem: str, fmt: str = DEFAULT_FORMAT) -> Path:
    """The file a figure named ``stem`` is written to in ``folder``."""
    return Path(folder) / f"{stem}.{check_format(fmt)}"


def _metadata(fmt: str) -> dict[str, Any]:
    """File metadata naming xaibench as the writer, without dates (same figure, same bytes)."""
    writer = f"{SOFTWARE} {__version__}"
    if fmt == "png":
        return {"Software": writer}
    if fmt == "pdf":
        return {"Creator": writer, "Producer": writer, "CreationDate": None}
    return {"Creator": writer, "Date": None}


def save(fig: Figure, path: Path, fmt: str | None = None) -> Path:
    """Write ``fig`` atomically (a temporary file, then a rename) and return the path written.

    Args:
        path: the destination; a figure suffix (.png, .pdf, .svg) is replaced by ``.fmt``, any other
            suffix is kept (``--out notes.chart`` writes that file).
        fmt: png, pdf or svg; None takes the format from ``path``'s suffix (png when it names none).
    """
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    fmt = check_format(fmt or (suffix if suffix in FORMATS else DEFAULT_FORMAT))
    if suffix in FORMATS:
        path = path.with_suffix(f".{fmt}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format=fmt, dpi=DPI, metadata=_metadata(fmt))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def is_xaibench_figure(path: Path) -> bool:
    """Whether ``path`` is a figure whose metadata names xaibench as its writer (PNG, PDF or SVG)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "png":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return image.format == "PNG" and str(image.info.get("Software", "")).startswith(SOFTWARE)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
            return False
    if fmt in ("pdf", "svg"):
        marker = {"pdf": f"/Creator ({SOFTWARE} ", "svg": f"<dc:title>{SOFTWARE} "}[fmt].encode()
        magic = {"pdf": b"%PDF", "svg": b"<?xml"}[fmt]
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(1 << 16)
            handle.seek(max(0, size - (1 << 16)))  # PDF writes its Info dictionary last
            tail = handle.read()
        return head.startswith(magic) and (marker in head or marker in tail)
    return False


CHAR_EM = 0.62  # widest average DejaVu Sans character width, in ems (digits and lower case)


def fit_text(text: str, width: float, points: float = TITLE) -> str:
    """``text`` wrapped at spaces into lines that fit ``width`` inches at ``points`` (existing line
    breaks kept), so that a title never runs past the figure's edge."""
    import textwrap

    chars = max(8, int(width * 72 / (points * CHAR_EM)))
    return "\n".join(line for part in text.split("\n")
                     for line in (textwrap.wrap(part, chars, break_on_hyphens=False) or [""]))


def color(i: int) -> str:
    """The ``i``-th palette colour, cycling."""
    return PALETTE[i % len(PALETTE)]


def method_label(name: str) -> str:
    """A method as figures and reports name it: its registry name, as the CLI prints it."""
    return str(name)


def metric_label(name: str, higher_is_better: bool | None = None) -> str:
    """A metric's registry name with its direction arrow (↑ higher is better, ↓ lower is better)."""
    if higher_is_better is None:
        return str(name)
    return f"{name} {'↑' if higher_is_better else '↓'}"


def concept_label(index: int) -> str:
    """A concept as every figure and table names it: ``concept 3``."""
    return f"concept {int(index)}"


def family_label(name: str) -> str:
    """A BEE baseline family as the CLI prints it: its registry name."""
    return str(name)
