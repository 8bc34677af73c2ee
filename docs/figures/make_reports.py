"""Regenerates the before/after pairs of issue 17's comparison-report and concept points in this folder.

    BEFORE=/path/to/old/bin/xaibench .venv/bin/python docs/figures/make_reports.py [WORKDIR]

BEFORE is an xaibench installed from the commit before issue 17 (e779330), AFTER (default: this tree's
.venv/bin/xaibench) the current one. Runs the README's evaluate on breast_cancer_logreg, an evaluate of the
five methods on the shapes CNN with the curve metrics, and docs/concepts.md's concepts command, each on
both sides, into WORKDIR (kept, and reused when a run is already there); then takes the report charts out
of report.html, screenshots report sections with Debian's chromium (the heatmaps with the page's print
style sheet applied on screen, at A4 width) and writes NAME-before.png / NAME-after.png here.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODELS = REPO / "sample_models"
MAX_BYTES = 290 * 1024
RUNS = {
    "eval": ["evaluate", f"{MODELS}/breast_cancer_logreg.pt", "--methods",
             "saliency,integrated_gradients,kernel_shap,random", "--metrics",
             "deletion,insertion,faithfulness_correlation,infidelity,max_sensitivity,sparseness", "-n", "16"],
    "shapes": ["evaluate", f"{MODELS}/shapes_cnn.pt", "--methods",
               "saliency,integrated_gradients,gradcam,smoothgrad,random", "--metrics",
               "deletion,insertion,road,pixel_flipping", "-n", "16"],
    "circle": ["concepts", f"{MODELS}/shapes_cnn.pt", "--class", "circle", "-n", "16", "-k", "8"],
}


def run(work: Path, side: str, xaibench: str) -> dict[str, str]:
    """Each run of ``RUNS`` for one side (skipped when its folder exists); the concepts CLI output."""
    printed = {}
    for name, args in RUNS.items():
        out = work / f"{side}-{name}"
        log = work / f"{side}-{name}.log"
        if not out.exists():
            result = subprocess.run([xaibench, *args, "--out", str(out)], capture_output=True, text=True,
                                    check=True)
            log.write_text(result.stdout)
        printed[name] = log.read_text() if log.exists() else ""
    return printed


def chart(report: Path, alt: str) -> Image.Image:
    """The chart with this alt text, taken out of report.html."""
    page = report.read_text(encoding="utf-8")
    data = re.search(rf'alt="{re.escape(alt)}" src="data:image/png;base64,([^"]+)"', page).group(1)
    path = report.parent / f".{alt.replace(' ', '_')}.png"
    path.write_bytes(base64.b64decode(data))
    return Image.open(path)


def screenshot(work: Path, report: Path, sections: list[str], width: int, height: int, printed: bool = False,
               crop: int | None = None) -> Image.Image:
    """Chromium's screenshot of some sections of report.html ("h1": the title and run facts)."""
    page = report.read_text(encoding="utf-8")
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL).group(1)
    if printed:
        style = style.replace("@media print {", "@media all {")
    parts = []
    for section in sections:
        start = page.index("<h1>") if section == "h1" else page.index(f'<section id="{section}">')
        parts.append(page[start:page.index("</section>", start + (0 if section != "h1" else 5)) + 10])
    return shoot(work, f'<style>{style}</style><main>{"".join(parts)}</main>', width, height, crop)


def shoot(work: Path, body: str, width: int, height: int, crop: int | None = None) -> Image.Image:
    page = work / ".shot.html"
    page.write_text(f'<!doctype html><html><head><meta charset="utf-8"></head><body>{body}</body></html>')
    png = work / ".shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={png}", f"file://{page}"],
                   capture_output=True, check=True)
    image = Image.open(png)
    return image.crop((0, 0, width, crop)) if crop else image.copy()


def terminal(text: str) -> str:
    return (f'<pre style="margin:0;color:#e4e7ec;background:#1d2330;font:14px monospace;padding:14px;'
            f'white-space:pre-wrap;width:1000px">$ xaibench concepts sample_models/shapes_cnn.pt --class circle '
            f"-n 16 -k 8\n{html.escape(text)}</pre>")


def save(image: Image.Image, path: Path) -> None:
    """PNG under MAX_BYTES: as it is, else 256 colours, else shrunk until it fits."""
    image = image.convert("RGB")
    while True:
        image.save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            return
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            return
        image = image.resize((int(image.width * 0.85), int(image.height * 0.85)), Image.LANCZOS)


def pairs(work: Path, side: str, cli: dict[str, str]) -> dict[str, Image.Image]:
    ev, sh, ci = (work / f"{side}-{name}" for name in ("eval", "shapes", "circle"))
    concept_lines = "\n".join(line for line in cli["circle"].splitlines()[:2])
    return {
        "report-ranking": screenshot(work, ev / "report.html", ["ranking"], 1280, 400, crop=360),
        "report-curves": chart(ev / "report.html", "deletion curve"),
        "report-bands": chart(sh / "report.html", "insertion curve"),
        "report-legend": chart(sh / "report.html", "road curve"),
        "report-deletion-shapes": chart(sh / "report.html", "deletion curve"),
        "report-heatmaps-print": screenshot(work, sh / "report.html", ["heatmaps"], 794, 900, printed=True,
                                            crop=815 if side == "after" else 480),
        "concepts-maps": Image.open(ci / "maps.png"),
        "concepts-clusters": Image.open(ci / "clusters.png"),
        "concepts-importance": Image.open(ci / "importance.png"),
        "concepts-report": screenshot(work, ci / "report.html", ["h1", "importance"], 1000, 1000,
                                      crop=950 if side == "after" else 835),
        "concepts-cli": shoot(work, terminal(concept_lines), 1040, 130),
    }


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    sides = {"before": os.environ["BEFORE"], "after": os.environ.get("AFTER", str(REPO / ".venv/bin/xaibench"))}
    for side, xaibench in sides.items():
        for name, image in pairs(work, side, run(work, side, xaibench)).items():
            save(image, HERE / f"{name}-{side}.png")
    print(json.dumps(sorted(p.name for p in HERE.glob("*-before.png")), indent=1))


if __name__ == "__main__":
    main()
