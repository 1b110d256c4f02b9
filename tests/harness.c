#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int uf_test_check_failures;
static int g_passed, g_failed;
static char g_tmpdir[256];

void uf_test_run(const char *name, void (*fn)(void)) {
    int before = uf_test_check_failures;
    fn();
    if (uf_test_check_failures == before) {
        g_passed++;
        printf("PASS %s\n", name);
    } else {
        g_failed++;
        printf("FAIL %s\n", name);
    }
    fflush(stdout);
}

static void remove_tmpdir(void) {
    if (!g_tmpdir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmpdir);
}

const char *uf_test_tmpdir(void) {
    if (!g_tmpdir[0]) {
        snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/uflow-test-XXXXXX");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(remove_tmpdir);
    }
    return g_tmpdir;
}

const char *uf_test_path(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", uf_test_tmpdir(), name);
    return buf;
}

int uf_test_summary(void) {
    printf("RESULT %d %d\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
