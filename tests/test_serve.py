"""`uflow serve` as a client sees it, on loopback (tests/test_serve.sh): 8 concurrent clients x 25
requests, every answer 200 and equal to `uflow predict`'s row for the same image; hostile requests
(empty, truncated and garbage bodies, a decompression bomb, an oversized body, headers sent byte by
byte and never finished, unknown paths and methods, bad or missing tokens), each followed by a good
request that must succeed; the images asked for decode to predict's files; peak RSS bounded over
many requests; SIGTERM during load: the requests in flight get their answers, exit status 0.
Prints PASS / FAIL lines and "RESULT passed failed"."""
import base64
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib

from harness import check, demo_model, predict_files, run_test, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UFLOW = os.environ.get("UFLOW_BIN", os.path.join(ROOT, "build", "uflow"))  # UFLOW_BIN: another build
TOKEN = "s3cret-token-0123456789abcdef"


class Server:
    def __init__(self, model, *extra):
        self.p = subprocess.Popen([UFLOW, "serve", "--model", model, "--port", "0", "--threads", "1"] + list(extra),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError("serve did not start: %r %s" % (line, self.p.stderr.read()))
        self.port = int(line.split(":")[2].split()[0])

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        h.setdefault("Authorization", "Bearer " + TOKEN)
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data, dict(r.getheaders())

    def peak_rss_kib(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=60):
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return None


def cli_rows(path):
    with open(path, newline="") as f:
        return {os.path.basename(r["image"]): r for r in csv.DictReader(f)}


def same_row(j, row):
    return (abs(j["score"] - float(row["score"])) <= 1e-5 and j["anomalous"] == (row["anomalous"] in ("1", "true")) and
            j["detected_pixels"] == int(row["detected_pixels"]) and j["width"] == int(row["width"]) and
            j["height"] == int(row["height"]))


def test_load(srv, images, rows):
    """8 clients x 25 requests, all 200 and equal to predict's rows."""
    results, lock = [], threading.Lock()

    def client(k):
        for i in range(25):
            name = sorted(images)[(k * 25 + i) % len(images)]
            try:
                st, data, _ = srv.request("POST", "/predict", images[name])
                ok = st == 200 and same_row(json.loads(data), rows[name])
            except Exception as e:
                ok, st = False, repr(e)
            with lock:
                results.append((ok, st, name))

    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    bad = [r for r in results if not r[0]]
    check(len(results) == 200 and not bad, "8 clients x 25 requests: 200 and predict's row (%d bad: %s)" %
          (len(bad), bad[:3]))


def good(srv, img, what):
    st, data, _ = srv.request("POST", "/predict", img)
    check(st == 200 and "score" in json.loads(data), "after %s a good request succeeds (%d)" % (what, st))


def raw(srv, payload, wait=5.0):
    """Sends bytes on a fresh socket; returns what comes back before close or `wait`."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=wait)
    try:
        s.sendall(payload)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            out += d
        return out
    finally:
        s.close()


def png_bomb():
    """A valid PNG header announcing 60000 x 60000 gray pixels with a tiny IDAT."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 60001 * 50)) + chunk(b"IEND", b"")


def test_hostile(srv, img):
    cases = [("an empty body", b"", 400), ("a truncated body", img[: len(img) // 3], 400),
             ("a garbage body", os.urandom(5000), 400), ("a decompression bomb", png_bomb(), 400)]
    for what, body, want in cases:
        st, data, _ = srv.request("POST", "/predict", body)
        msg = json.loads(data).get("error", "")
        check(st == want and "request body" in msg or (what == "an empty body" and st == want),
              "%s: %d %s" % (what, st, msg[:80]))
        good(srv, img, what)
    # an oversized body announced by Content-Length: 413 from the headers, before any body is read
    out = raw(srv, ("POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" %
                    (TOKEN, 2 * 1024 * 1024 + 10)).encode(), wait=5)
    check(out.startswith(b"HTTP/1.1 413"), "an oversized body (Content-Length): 413 (%r)" % out[:20])
    good(srv, img, "an oversized body")
    # the same sent chunked (no length announced): read, dropped past --max-body, then 413
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    c.request("POST", "/predict", body=iter([b"\0" * 65536] * 40), headers={"Authorization": "Bearer " + TOKEN},
              encode_chunked=True)
    st = c.getresponse().status
    c.close()
    check(st == 413, "an oversized chunked body: 413 (%d)" % st)
    good(srv, img, "an oversized chunked body")
    # headers byte by byte, never finished: the service drops the connection after its timeout
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    t0 = time.time()
    try:
        for b in b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le":
            s.send(bytes([b]))
            time.sleep(0.01)
        try:
            d = s.recv(100)
        except (socket.timeout, ConnectionResetError):
            d = b""
    finally:
        s.close()
    check(time.time() - t0 < 9.5 and d == b"", "headers never finished: dropped after the timeout (%.1f s)" %
          (time.time() - t0))
    good(srv, img, "a slow client")
    for method, path, want in [("GET", "/nope", 404), ("DELETE", "/predict", 405), ("GET", "/predict", 405),
                               ("POST", "/health", 405), ("GET", "/../../etc/passwd", 404)]:
        st, _, _ = srv.request(method, path)
        check(st == want, "%s %s: %d (%d)" % (method, path, want, st))
    good(srv, img, "unknown paths and methods")
    for what, h in [("no token", {"Authorization": ""}), ("a wrong token", {"Authorization": "Bearer " + TOKEN[:-1] + "x"}),
                    ("a longer token", {"Authorization": "Bearer " + TOKEN + "x"}), ("basic auth", {"Authorization": "Basic eDp5"})]:
        st, _, hd = srv.request("POST", "/predict", img, headers=h)
        check(st == 401, "%s: 401 (%d)" % (what, st))
        st, _, _ = srv.request("GET", "/model", headers=h)
        check(st == 401, "%s on /model: 401 (%d)" % (what, st))
    st, data, _ = srv.request("GET", "/health", headers={"Authorization": ""})
    check(st == 200 and data == b"ok\n", "/health needs no token")
    out = raw(srv, b"GARBAGE\r\n\r\n", wait=3)
    check(out == b"" or out.startswith(b"HTTP/1.1 400"), "a garbage request line: 400 or closed (%r)" % out[:20])
    good(srv, img, "bad tokens and request lines")


def test_outputs_and_model(srv, img, name, cli):
    st, data, _ = srv.request("POST", "/predict?outputs=mask,map,overlay", img)
    j = json.loads(data)
    check(st == 200 and all(k in j for k in ("map_png", "mask_png", "overlay_png")), "outputs=mask,map,overlay")
    stem = os.path.splitext(name)[0]
    for k in ("mask", "map", "overlay"):
        png = base64.b64decode(j.get(k + "_png", ""))
        # the same pixels as predict's file, both decoded by the minimal PNG reader below
        got, want = png_pixels(png), png_pixels(open(os.path.join(cli, stem + "_" + k + ".png"), "rb").read())
        if k == "map":  # 16-bit levels: within one level (predict ran the image in a batch, AVX-512 Winograd
            # makes the last float digits depend on it: the 1e-5 of the rows is 0.66 level)
            n = len(got[4]) // 2
            a, b = struct.unpack(">%dH" % n, got[4]), struct.unpack(">%dH" % n, want[4])
            same = got[:4] == want[:4] and max(abs(x - y) for x, y in zip(a, b)) <= 1
        else:
            same = got == want
        check(same, "%s_png has the pixels of predict's %s_%s.png" % (k, stem, k))
    st, data, _ = srv.request("GET", "/model")
    m = json.loads(data)
    check(st == 200 and m.get("backbone") == "resnet18" and m.get("model_file", {}).get("calib_images") and
          m["model_file"].get("val_z2") and "/" not in data.decode(), "/model describes without paths")
    st, data, _ = srv.request("GET", "/metrics")
    t = data.decode()
    check(st == 200 and 'uflow_requests_total{code="200"}' in t and "uflow_predict_latency_seconds_bucket" in t and
          "uflow_queue_depth" in t and "uflow_images_per_second" in t, "/metrics in Prometheus text format")


def png_pixels(data):
    """The filtered-then-unfiltered rows of a non-interlaced PNG (enough to compare two encodings)."""
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        t, d = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if t == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", d)
        elif t == b"IDAT":
            idat += d
        pos += 12 + n
    w, h, depth, ctype = hdr[0], hdr[1], hdr[2], hdr[3]
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype] * depth // 8
    raw_ = zlib.decompress(idat)
    stride, rows, prev, i = w * bpp, [], bytearray(w * bpp), 0
    for _ in range(h):
        f, line = raw_[i], bytearray(raw_[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return (w, h, depth, ctype, b"".join(rows))


def test_memory(srv, img):
    """Peak RSS after 1,000 requests (good ones, bad ones, with images) within 4 MiB of after 100."""
    bodies = [(img, ""), (img[: len(img) // 2], ""), (img, "?outputs=mask,map,overlay"), (b"x" * 300, "")]
    for i in range(100):
        srv.request("POST", "/predict" + bodies[i % 4][1], bodies[i % 4][0])
    r100 = srv.peak_rss_kib()
    for i in range(900):
        srv.request("POST", "/predict" + bodies[i % 4][1], bodies[i % 4][0])
    r1000 = srv.peak_rss_kib()
    check(r1000 - r100 < 4 * 1024, "peak RSS after 1000 requests within 4 MiB of after 100 (%d -> %d KiB)" %
          (r100, r1000))


def test_queue_full(model, img):
    """One worker, no queue: of 12 requests at once some get 503 with Retry-After, the rest 200."""
    srv = Server(model, "--workers", "1", "--queue", "0")
    out, lock = [], threading.Lock()

    def client():
        st, _, h = srv.request("POST", "/predict", img)
        with lock:
            out.append((st, h.get("Retry-After")))

    ts = [threading.Thread(target=client) for _ in range(12)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    busy = [o for o in out if o[0] == 503]
    check(busy and all(o[1] == "1" for o in busy) and all(o[0] in (200, 503) for o in out),
          "queue full: 503 with Retry-After (%s)" % out)
    st, _, _ = srv.request("POST", "/predict", img)
    check(st == 200, "after a full queue a good request succeeds (%d)" % st)
    check(srv.stop() == 0, "stopped with status 0")


def test_body_budget(model, img):
    """Bodies held at once are bounded (max-body x (workers + queue + 4)): with 1 MiB bodies, 1 worker
    and no queue, five unfinished 900 KB uploads fill it; a sixth is read, dropped and answered 503."""
    srv = Server(model, "--workers", "1", "--queue", "0", "--max-body", "1")
    socks = []
    try:
        part = b"\0" * (900 * 1024)
        head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (len(part) + 1000)
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(head.encode() + part)
            socks.append(s)
        time.sleep(0.5)
        out = raw(srv, head.encode() + part + b"\0" * 1000, wait=5)
        check(out.startswith(b"HTTP/1.1 503") and b"too many large uploads" in out,
              "uploads past the memory budget: 503 (%r)" % out[:20])
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    st, _, _ = srv.request("POST", "/predict", img)
    check(st == 200, "after the uploads closed a good request succeeds (%d)" % st)
    check(srv.stop() == 0, "stopped with status 0")


def test_sigterm(model, img, rows, name):
    srv = Server(model, "--workers", "1", "--queue", "32")
    out, lock = [], threading.Lock()

    def client():
        try:
            st, data, _ = srv.request("POST", "/predict", img)
            ok = st == 200 and same_row(json.loads(data), rows[name])
        except Exception as e:
            ok, st = False, repr(e)
        with lock:
            out.append((ok, st))

    ts = [threading.Thread(target=client) for _ in range(6)]
    [t.start() for t in ts]
    time.sleep(0.3)
    rc = srv.stop(signal.SIGTERM)
    [t.join() for t in ts]
    bad = [o for o in out if not o[0]]
    check(rc == 0, "SIGTERM during load: exit status 0 (%s)" % rc)
    check(len(out) == 6 and not bad, "SIGTERM during load: the requests in flight got their answers (%s)" % bad)


def main():
    T = tempfile.mkdtemp(prefix="uflow-serve.")
    try:
        model, data = demo_model(UFLOW, T)
        test_dir = os.path.join(data, "test", "hole")
        cli = os.path.join(T, "cli")
        predict_files(UFLOW, model, cli, test_dir)
        rows = cli_rows(os.path.join(cli, "results.csv"))
        images = {n: open(os.path.join(test_dir, n), "rb").read() for n in sorted(os.listdir(test_dir))}
        tok = os.path.join(T, "token")
        with open(tok, "w") as f:
            f.write(TOKEN + "\n")
        srv = Server(model, "--workers", "2", "--queue", "64", "--max-body", "2", "--token-file", tok, "--timeout", "3")
        name = sorted(images)[0]
        try:
            run_test(test_load, srv, images, rows)
            run_test(test_hostile, srv, images[name])
            run_test(test_outputs_and_model, srv, images[name], name, cli)
            run_test(test_memory, srv, images[name])
        finally:
            rc = srv.stop()
            check(rc == 0, "stopped by SIGTERM with status 0 (%s)" % rc)
        run_test(test_queue_full, model, images[name])
        run_test(test_body_budget, model, images[name])
        run_test(test_sigterm, model, images[name], rows, name)
    finally:
        shutil.rmtree(T, ignore_errors=True)
    summary()


if __name__ == "__main__":
    main()
