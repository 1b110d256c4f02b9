"""`uflow watch` as a line would run it (tests/test_watch.sh): images copied into the folder
while the watcher runs (some written slowly in two parts, some renamed in whole), a kill -9 in the middle,
more images while it is down, a restart: every image has exactly one row in results.csv and results.jsonl,
equal to `uflow predict`'s (so none was read half-written), and its files. Then a torn last journal line
(a kill during the append) is cut and its image taken again; an unreadable file gets an error row.
Prints PASS / FAIL lines and "RESULT passed failed"."""
import csv
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from harness import check, demo_model, predict_files, raised, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UFLOW = os.environ.get("UFLOW_BIN", os.path.join(ROOT, "build", "uflow"))  # UFLOW_BIN: another build


def jsonl_rows(out):
    p = os.path.join(out, "results.jsonl")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def csv_rows(out):
    with open(os.path.join(out, "results.csv"), newline="") as f:
        return list(csv.DictReader(f))


def wait_rows(out, n, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(jsonl_rows(out)) >= n:
            return True
        time.sleep(0.05)
    return False


def start(model, src, out, *extra):
    return subprocess.Popen([UFLOW, "watch", "--model", model, "-o", out, "--threads", "1", "--settle-ms", "300",
                             src] + list(extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def copy_slowly(src, dst):
    """Two parts with a pause between: a reader that does not wait for the close reads half."""
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(0.4)
        f.write(data[len(data) // 2:])


def copy_renamed(src, dir_, name):
    tmp = os.path.join(dir_, "." + name + ".part")  # hidden: not taken
    shutil.copyfile(src, tmp)
    os.rename(tmp, os.path.join(dir_, name))


def main():
    T = tempfile.mkdtemp(prefix="uflow-watch.")
    try:
        model, data = demo_model(UFLOW, T)
        test = os.path.join(data, "test")
        cli = os.path.join(T, "cli")
        predict_files(UFLOW, model, cli, test)
        want = {}  # flat name -> predict's row
        for r in csv.DictReader(open(os.path.join(cli, "results.csv"), newline="")):
            rel = os.path.relpath(r["image"], test)
            want[rel.replace("/", "_")] = (r, os.path.join(test, rel))
        names = sorted(want)[:24]
        src, out = os.path.join(T, "in"), os.path.join(T, "out")
        os.makedirs(src)

        w = start(model, src, out)
        time.sleep(0.5)

        def feed(batch):
            for i, n in enumerate(batch):
                if i % 2:
                    copy_slowly(want[n][1], os.path.join(src, n))
                else:
                    copy_renamed(want[n][1], src, n)

        feeder = threading.Thread(target=feed, args=(names[:12],))
        feeder.start()
        check(wait_rows(out, 4), "first rows while images arrive")
        w.send_signal(signal.SIGKILL)
        w.wait()
        n_killed = len(jsonl_rows(out))
        feeder.join()
        feed(names[12:])  # while the watcher is down
        w = start(model, src, out)
        check(wait_rows(out, len(names)), "after the restart every image is taken (%d were done at the kill)" % n_killed)
        time.sleep(0.5)
        w.send_signal(signal.SIGTERM)
        check(w.wait(30) == 0, "SIGTERM: exit status 0")

        def verify(tag):
            rows, crows = jsonl_rows(out), csv_rows(out)
            got = [os.path.basename(r["image"]) for r in rows]
            check(sorted(got) == sorted(names) and len(set(got)) == len(got),
                  "%s: exactly one results.jsonl row per image (%d rows, %d images)" % (tag, len(got), len(names)))
            check(sorted(os.path.basename(r["image"]) for r in crows) == sorted(got),
                  "%s: results.csv has the same rows" % tag)
            bad = []
            for r in rows:
                n = os.path.basename(r["image"])
                p = want[n][0]
                if "error" in r or abs(r["score"] - float(p["score"])) > 1e-5 or \
                        r["detected_pixels"] != int(p["detected_pixels"]) or \
                        not os.path.exists(os.path.join(out, r["outputs"] + "_map.png")):
                    bad.append(n)
            check(not bad, "%s: every row equals predict's and has its files (none read half-written): %s" % (tag, bad))

        verify("after kill -9 and restart")
        # a kill during the append: a torn last line; its image is taken again, once
        with open(os.path.join(out, "results.jsonl"), "rb+") as f:
            data = f.read()
            lines = data.split(b"\n")[:-1]
            last = json.loads(lines[-1])
            f.seek(len(data) - len(lines[-1]) - 1)
            f.truncate()
            f.write(lines[-1][: len(lines[-1]) // 2])
        r = subprocess.run([UFLOW, "watch", "--model", model, "-o", out, "--threads", "1", "--settle-ms", "0", "--once",
                            src], capture_output=True, text=True)
        check(r.returncode == 0, "--once after a torn line: status 0 (%s)" % r.stderr.strip()[-200:])
        verify("after a torn journal line")
        check(os.path.basename(jsonl_rows(out)[-1]["image"]) == os.path.basename(last["image"]),
              "the torn line's image was taken again")
        # an unreadable file: a row with its error, once; the watcher goes on
        open(os.path.join(src, "zz_bad.png"), "wb").write(b"not an image at all")
        r = subprocess.run([UFLOW, "watch", "--model", model, "-o", out, "--threads", "1", "--settle-ms", "0", "--once",
                            src], capture_output=True, text=True)
        rows = jsonl_rows(out)
        badrows = [x for x in rows if os.path.basename(x["image"]) == "zz_bad.png"]
        check(r.returncode == 0 and len(badrows) == 1 and "error" in badrows[0] and "zz_bad.png" in badrows[0]["error"],
              "an unreadable file: one row with its error (%s)" % badrows)
        r = subprocess.run([UFLOW, "watch", "--model", model, "-o", out, "--once", os.path.join(T, "missing")],
                           capture_output=True, text=True)
        check(r.returncode == 1 and r.stderr.count("\n") == 1 and "missing" in r.stderr,
              "a missing folder: one line, status 1 (%s)" % r.stderr.strip())
    except Exception:
        raised("the test")
    finally:
        shutil.rmtree(T, ignore_errors=True)
    summary()


if __name__ == "__main__":
    main()
