#!/bin/sh
# The page of `uflow serve` (GET /) in headless Chromium, driven through ChromeDriver's WebDriver
# protocol (Python's standard library speaks it; no Selenium): a small model is trained (uflow demo,
# 1 epoch, 64x64), the service started with a token, the page opened, the token typed in, a test
# image picked in the page's file input; then the page must show the score and the overlay, checked
# on the screenshot (the blue of the jet colour map where the overlay is drawn, and the score text).
# Leaves the screenshot as $TMPDIR/uflow-serve-page.png. Installs Debian's chromium and
# chromium-driver when missing. make check-report runs it; so does .ci/run.
set -e
cd "$(dirname "$0")/.."
[ -n "${UFLOW_PAGE_NO_DEPS:-}" ] || sh tools/install_deps.sh report  # make test installed them already
make -s build/uflow
dir=$(mktemp -d /tmp/uflow-page.XXXXXX)
build/uflow demo -o "$dir/demo" --epochs 1 --size 64 --threads 1 > "$dir/demo.log" 2>&1 || { cat "$dir/demo.log"; exit 1; }
exec /usr/bin/python3 - "$dir" <<'PY'
import base64, io, json, os, shutil, signal, socket, subprocess, sys, time, urllib.request
from PIL import Image

d = sys.argv[1]
token = "page-check-token-0123456789"
open(os.path.join(d, "token"), "w").write(token + "\n")
srv = subprocess.Popen(["build/uflow", "serve", "--model", os.path.join(d, "demo", "model.safetensors"), "--port", "0",
                        "--token-file", os.path.join(d, "token")], stdout=subprocess.PIPE, text=True)
port = int(srv.stdout.readline().split(":")[2].split()[0])
s = socket.socket(); s.bind(("127.0.0.1", 0)); dport = s.getsockname()[1]; s.close()
drv = subprocess.Popen(["chromedriver", "--port=%d" % dport], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
W3C = "element-6066-11e4-a52e-4f735466cecf"

def wd(method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (dport, path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["value"]

fail = []
shot_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "uflow-serve-page.png")
try:
    for _ in range(100):  # chromedriver up
        try:
            wd("GET", "/status"); break
        except Exception:
            time.sleep(0.1)
    sid = wd("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,1000",
                 "--user-data-dir=" + os.path.join(d, "profile")]}}}})["sessionId"]
    wd("POST", "/session/%s/url" % sid, {"url": "http://127.0.0.1:%d/" % port})
    el = lambda css: wd("POST", "/session/%s/element" % sid, {"using": "css selector", "value": css})[W3C]
    wd("POST", "/session/%s/element/%s/value" % (sid, el("#token")), {"text": token})
    test = os.path.join(d, "demo", "data", "test", "hole")
    img = os.path.join(test, sorted(os.listdir(test))[0])
    wd("POST", "/session/%s/element/%s/value" % (sid, el("#file")), {"text": img})
    score = ""
    for _ in range(300):
        score = wd("POST", "/session/%s/execute/sync" % sid,
                   {"script": "return document.getElementById('score').textContent + '|' + "
                              "document.getElementById('error').textContent + '|' + "
                              "(document.getElementById('overlay').complete ? document.getElementById('overlay').naturalWidth : 0)",
                    "args": []})
        if score.split("|")[0] or score.split("|")[1]:
            if int(score.split("|")[2]) > 0: break
        time.sleep(0.1)
    sc, err, ow = score.split("|")
    if not sc.startswith("score "): fail.append("no score shown (error: %r)" % err)
    if int(ow) != 64: fail.append("the overlay picture is %s px wide, not the image's 64" % ow)
    shot = Image.open(io.BytesIO(base64.b64decode(wd("GET", "/session/%s/screenshot" % sid)))).convert("RGB")
    shot.save(shot_path)
    rect = wd("POST", "/session/%s/execute/sync" % sid, {"script":
        "const r = document.getElementById('overlay').getBoundingClientRect(); return [r.left, r.top, r.width, r.height];",
        "args": []})
    box = shot.crop(tuple(int(v) for v in (rect[0], rect[1], rect[0] + rect[2], rect[1] + rect[3])))
    # the jet colour map: saturated colours (channels far apart) over the whole picture, and the
    # defect's red end of the map somewhere (dark red to orange-red: the map's peak is smoothed)
    px = list(box.getdata())
    colour = sum(1 for p in px if max(p) - min(p) > 60)
    red = sum(1 for r, g, b in px if r > 120 and r - g > 50 and b < 60)
    print("check_serve_page: page at http://127.0.0.1:%d/, %s; overlay drawn at %dx%d px: %d saturated, %d red "
          "pixels; screenshot %s" % (port, sc, box.width, box.height, colour, red, shot_path))
    if box.width < 300 or box.height < 300 or colour < 0.8 * len(px) or red < 100:
        fail.append("the overlay is not shown (%d saturated, %d red of %d pixels)" % (colour, red, len(px)))
    wd("DELETE", "/session/%s" % sid)
finally:
    drv.terminate()
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait(60)
    if rc != 0: fail.append("the service exited with %s" % rc)
    shutil.rmtree(d, ignore_errors=True)
if fail: sys.exit("check_serve_page: FAILED: " + "; ".join(fail))
print("check_serve_page: ok")
PY
