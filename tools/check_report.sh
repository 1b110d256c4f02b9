#!/bin/sh
# Renders an HTML report of `uflow test -o DIR` in headless Chromium and checks the page:
#   sh tools/check_report.sh                 makes a small report first (uflow demo, 1 epoch)
#   sh tools/check_report.sh REPORT.html     checks that report
# Checks: the file is self-contained (no script, no link or picture outside data: URIs; every
# inline PNG decodes); it has the three SVG curves, and they are drawn (their red, counted on a
# rendering of the page without its pictures, since the heat maps have red too); the heat-map
# overlays are shown (the blue of the jet colour map on the full rendering). Leaves the screenshot
# beside the report (REPORT.png). Installs Debian's chromium and python3-pil when missing, and uses
# Debian's python3 (/usr/bin/python3) that has that Pillow. make check-report runs it; so does .ci/run.
set -e
cd "$(dirname "$0")/.."
sh tools/install_deps.sh report
if [ $# -ge 1 ]; then
    report=$1
else
    make -s build/uflow
    dir=$(mktemp -d /tmp/uflow-report.XXXXXX)
    build/uflow demo -o "$dir" --epochs 1 > "$dir/demo.log" 2>&1 || { cat "$dir/demo.log"; exit 1; }
    report=$dir/report.html
fi
[ -f "$report" ] || { echo "check_report: $report: no such file" >&2; exit 1; }
exec /usr/bin/python3 - "$(realpath "$report")" <<'PY'
import base64, os, re, subprocess, sys, tempfile
from PIL import Image

def render(html_path, png_path):
    """Screenshot of the page in headless Chromium, 1200 px wide."""
    with tempfile.TemporaryDirectory(prefix="uflow-chromium.") as profile:
        r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--user-data-dir=" + profile, "--window-size=1200,3200",
                            "--screenshot=" + png_path, "file://" + html_path],
                           capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not os.path.exists(png_path):
        sys.exit("check_report: chromium failed on %s:\n%s" % (html_path, r.stderr[-2000:]))
    return Image.open(png_path).convert("RGB")

report = sys.argv[1]
shot = report[:-5] + ".png" if report.endswith(".html") else report + ".png"
html = open(report, encoding="utf-8").read()
fail = []
if re.search(r"<script", html, re.I): fail.append("has a <script>")
refs = re.findall(r'''(?:src|href)\s*=\s*["']([^"']*)''', html, re.I)
outside = [r for r in refs if not r.startswith("data:")]
if outside: fail.append("links outside the file: %s" % outside[:3])
pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
if any(not base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs):
    fail.append("an inline PNG does not decode")
if not pngs: fail.append("no inline overlay picture")
n_svg = html.count("<svg")
if n_svg != 3: fail.append("%d SVG plots instead of 3" % n_svg)

page = render(report, shot)
blue = sum(1 for r, g, b in page.getdata() if b > r + 40 and b > g + 40)
with tempfile.TemporaryDirectory(prefix="uflow-report.") as tmp:
    bare = os.path.join(tmp, "bare.html")
    open(bare, "w", encoding="utf-8").write(re.sub(r"<img [^>]*>", "", html))
    curves = render(bare, os.path.join(tmp, "bare.png"))
curve = sum(1 for r, g, b in curves.getdata() if abs(r - 214) < 20 and abs(g - 39) < 25 and abs(b - 40) < 25)
print("check_report: %s: %d bytes, %d SVG plots, %d inline PNGs; rendered %dx%d: %d pixels of the curves' red, "
      "%d blue heat-map pixels" % (report, len(html), n_svg, len(pngs), page.width, page.height, curve, blue))
if curve < 300: fail.append("the curves are not drawn (%d pixels of their colour)" % curve)
if blue < 5000 * min(len(pngs), 4): fail.append("the overlays are not shown (%d blue pixels)" % blue)
if fail: sys.exit("check_report: FAILED: " + "; ".join(fail))
print("check_report: ok, screenshot %s" % shot)
PY
