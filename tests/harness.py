"""The Python tests' side of tests/harness.h: PASS / FAIL lines, then one "RESULT passed failed"
line (tests/run_all.sh adds them up)."""
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
