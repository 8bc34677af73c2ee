#!/usr/bin/env bash
# Regenerates the before/after pairs of issue 17 in this folder.
#   BEFORE=/path/to/old/xaibench AFTER=.venv/bin/xaibench bash docs/figures/make.sh WORKDIR
# BEFORE is an xaibench installed from the commit before issue 17 (e779330), AFTER this tree's. Needs
# Debian's chromium for the report screenshots and writes runs into WORKDIR (default: a temporary folder).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
M=$REPO/sample_models
WORK=${1:-$(mktemp -d)}
BEFORE=${BEFORE:?BEFORE=path to the old xaibench}
AFTER=${AFTER:-$REPO/.venv/bin/xaibench}
PY=$(dirname "$AFTER")/python
cd "$WORK"
for side in before after; do
  X=$BEFORE; [ "$side" = after ] && X=$AFTER
  $X explain "$M/shapes_cnn.pt" -m integrated_gradients --indices 0-14,61 --out "$side-shapes" --overwrite >/dev/null
  $X explain "$M/shapes_cnn.pt" -m gradcam --indices 0 --out "$side-gradcam" --overwrite >/dev/null
  $X explain "$M/breast_cancer_mlp.pt" -m integrated_gradients --indices 0-12,46,54,83 --out "$side-cancer" --overwrite >/dev/null
  $X explain "$M/mnist1d_cnn.pt" -m integrated_gradients --indices 0-2,16 --out "$side-mnist1d" --overwrite >/dev/null
  $X evaluate "$M/shapes_cnn.pt" --methods saliency,integrated_gradients,gradcam --metrics deletion,sparseness \
     -n 8 --out "$side-evaluate" --overwrite >/dev/null
  [ -d "$WORK/factors" ] || $X influence fit "$M/digits_cnn.pt" --out "$WORK/factors" >/dev/null
  $X influence self "$M/digits_cnn.pt" --factors "$WORK/factors" --top-k 3 --out "$side-self" --overwrite >/dev/null
  # the report's heatmap section: a copy of report.html whose style sheet hides the other sections
  sed 's#</head>#<style>section:not(\#heatmaps), nav {display:none}</style></head>#' \
     "$side-evaluate/report.html" > "$side-evaluate/.heatmaps-only.html"
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1500 \
     --screenshot="$WORK/$side-report.png" "file://$WORK/$side-evaluate/.heatmaps-only.html" 2>/dev/null
done
# bee report: the same shares through the old and the new chart code (docs/bee.md's numbers)
SHARES='{"deletion": {"zero": 0.82, "constant": 0.01, "uniform": 0.08, "gaussian": 0.01, "blur": 0.07},
 "insertion": {"zero": 0.03, "constant": 0.03, "uniform": 0.07, "gaussian": 0.06, "blur": 0.81}}'
"$(dirname "$BEFORE")/python" -c "import json, pathlib; from xaibench.report.arms import write_arm_chart as w; \
w(json.loads('''$SHARES'''), pathlib.Path('before-arms.png'))"
"$PY" -c "import json, pathlib; from xaibench.report.arms import write_arm_chart as w; \
w(json.loads('''$SHARES'''), pathlib.Path('after-arms.png'), model='digits_cnn', samples=64)"
copy() {  # copy(run-relative source, docs name): both sides, at most 1000 px wide and 300 KB
  for side in before after; do
    "$PY" - "$WORK/$side-$1" "$HERE/$2-$side.png" <<'PYEOF'
import sys
from PIL import Image
image = Image.open(sys.argv[1]).convert("RGB")
if image.width > 1000:
    image = image.resize((1000, round(image.height * 1000 / image.width)), Image.LANCZOS)
image.save(sys.argv[2], optimize=True)
if len(open(sys.argv[2], "rb").read()) > 290_000:  # noisy inputs: a 256-colour palette keeps it small
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(sys.argv[2], optimize=True)
PYEOF
  done
}
copy shapes/heatmaps/grid.png explain-grid
copy gradcam/heatmaps/sample_0000.png gradcam-sample
copy cancer/heatmaps/grid.png tabular-grid
copy cancer/heatmaps/sample_0046.png tabular-sample
copy mnist1d/heatmaps/sample_0000.png sequence-sample
copy mnist1d/heatmaps/grid.png sequence-grid
copy arms.png bee-arms
copy self/montage.png self-montage
copy report.png evaluate-report-heatmaps
