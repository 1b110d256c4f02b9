#include "harness.h"

#include "core/tensor.h"

#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/wait.h>
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

int uf_test_uflow_path(char *prog, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", prog, cap - 16);
    if (n <= 0) return -1;
    prog[n] = '\0';
    char *slash = strrchr(prog, '/'); /* .../build[/variant]/tests/test_x -> .../build[/variant]/uflow */
    if (!slash) return -1;
    *slash = '\0';
    slash = strrchr(prog, '/');
    if (!slash) return -1;
    strcpy(slash, "/uflow");
    if (access(prog, X_OK) != 0) {
        fprintf(stderr, "  %s not built (run the tests with make run-tests)\n", prog);
        return -1;
    }
    return 0;
}

int uf_test_run_uflow_opts(const char *const *args, const char *out_path, const char *err_path,
                           uf_test_run_opts *opts) {
    if (opts) opts->term_signal = 0;
    char prog[4096];
    if (uf_test_uflow_path(prog, sizeof prog) != 0) return -1;
    if (opts && opts->program) snprintf(prog, sizeof prog, "%s", opts->program);
    const char *argv[64];
    int argc = 0;
    argv[argc++] = prog;
    for (; args[argc - 1] && argc < 63; argc++) argv[argc] = args[argc - 1];
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        if (o < 0 || e < 0) _exit(99);
        dup2(o, 1), dup2(e, 2);
        if (opts && opts->env)
            for (const char *const *kv = opts->env; *kv; kv++) putenv((char *)*kv);
        if (opts && opts->fsize_limit > 0) {
            struct rlimit rl = {(rlim_t)opts->fsize_limit, (rlim_t)opts->fsize_limit};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(97);
        }
        if (opts && opts->cwd && chdir(opts->cwd) != 0) _exit(95);
        if (opts && opts->unprivileged && geteuid() == 0)
            if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(96);
        execv(prog, (char *const *)argv);
        _exit(98);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid) return -1;
    if (opts) opts->max_rss_kb = ru.ru_maxrss;
    if (WIFSIGNALED(status) && opts) opts->term_signal = WTERMSIG(status);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int uf_test_run_uflow(const char *const *args, const char *out_path, const char *err_path) {
    return uf_test_run_uflow_opts(args, out_path, err_path, NULL);
}

char *uf_test_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

int uf_test_count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

int uf_test_copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    int rc = in && out ? 0 : -1;
    char buf[65536];
    size_t k;
    while (rc == 0 && (k = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, k, out) != k) rc = -1;
    if (in) fclose(in);
    if (out && fclose(out) != 0) rc = -1;
    return rc;
}

uint32_t uf_test_crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

void uf_test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot create %s", path);
    if (!f) return;
    if (n) CHECK(fwrite(data, 1, n, f) == n, "short write %s", path);
    CHECK(fclose(f) == 0, "cannot write %s", path);
}

int uf_test_files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) eq = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

int uf_test_count_lines(const char *text) {
    int n = 0;
    for (const char *c = text; c && *c; c++) n += *c == '\n';
    return n;
}

float *uf_test_abs_copy(const float *x, size_t n) {
    float *a = uf_alloc(4 * n);
    for (size_t i = 0; a && i < n; i++) a[i] = fabsf(x[i]);
    return a;
}
