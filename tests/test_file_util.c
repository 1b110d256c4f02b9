/* Atomic file writing and file hashing. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "harness.h"
#include "io/atomic_file.h"
#include "io/file_hash.h"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_sha256_known_vectors(void) {
    char hex[65];
    const char *p = uf_test_path("abc.txt");
    CHECK(uf_write_file_atomic(p, "abc", 3) == UF_OK, "%s", uf_last_error());
    CHECK(uf_sha256_file(p, hex) == UF_OK, "%s", uf_last_error());
    /* FIPS 180-2 test vector for "abc". */
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "%s", hex);
    CHECK(uf_write_file_atomic(p, "", 0) == UF_OK, "%s", uf_last_error());
    CHECK(uf_sha256_file(p, hex) == UF_OK, "%s", uf_last_error());
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "%s", hex);
    CHECK(uf_sha256_file(uf_test_path("missing"), hex) == UF_ERR, "missing file must fail");
    CHECK(strstr(uf_last_error(), "missing") != NULL, "%s", uf_last_error());
}

static void test_atomic_replace_and_failure(void) {
    const char *p = uf_test_path("atomic.txt");
    CHECK(uf_write_file_atomic(p, "old", 3) == UF_OK, "%s", uf_last_error());
    uf_atomic_file af;
    CHECK(uf_atomic_begin(&af, p) == UF_OK, "%s", uf_last_error());
    uf_atomic_write(&af, "new content", 11);
    CHECK(!strcmp(slurp(p), "old"), "destination changed before commit");
    uf_atomic_abort(&af);
    CHECK(!strcmp(slurp(p), "old"), "abort must keep the old file");
    CHECK(uf_test_count_temp_files(uf_test_tmpdir()) == 0, "temp file left behind");
    CHECK(uf_write_file_atomic(p, "new", 3) == UF_OK, "%s", uf_last_error());
    CHECK(!strcmp(slurp(p), "new"), "commit must replace");
    CHECK(uf_write_file_atomic("/nonexistent-dir/x.txt", "x", 1) == UF_ERR, "must fail");
    CHECK(strstr(uf_last_error(), "/nonexistent-dir/x.txt") != NULL, "%s", uf_last_error());
}

int main(void) {
    UF_TEST(test_sha256_known_vectors);
    UF_TEST(test_atomic_replace_and_failure);
    return uf_test_summary();
}
