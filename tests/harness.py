"""The Python tests' side of tests/harness.h: PASS / FAIL lines, then one "RESULT passed failed"
line (tests/run_all.sh adds them up)."""
import os
import subprocess
import sys
import traceback

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("PASS " + what)
    else:
        failed += 1
        print("FAIL " + what)
    sys.stdout.flush()


def run_test(fn, *args):
    """fn(*args); an exception counts as one failure, with its traceback."""
    try:
        fn(*args)
    except Exception:
        raised(fn.__name__)


def raised(what):
    """Counts the exception being handled as one failure."""
    global failed
    failed += 1
    print("FAIL %s raised:\n%s" % (what, traceback.format_exc()))
    sys.stdout.flush()


def summary():
    print("RESULT %d %d" % (passed, failed))


def run_quiet(*args):
    """Runs a command, its output dropped; raises when it fails."""
    subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def demo_model(uflow_bin, tmp):
    """`uflow demo` at 64x64, 2 epochs, in tmp/demo: (model path, data folder)."""
    demo = os.path.join(tmp, "demo")
    run_quiet(uflow_bin, "demo", "-o", demo, "--epochs", "2", "--size", "64", "--threads", "1")
    return os.path.join(demo, "model.safetensors"), os.path.join(demo, "data")


def predict_files(uflow_bin, model, out, *inputs):
    """`uflow predict` (1 thread) of inputs into out."""
    run_quiet(uflow_bin, "predict", "--model", model, "-o", out, "--threads", "1", *inputs)
