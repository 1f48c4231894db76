/* Minimal test harness: each tests/<concern>/test_*.c is one ctest test.
 *
 *   TEST(name) { CHECK(x); CHECK_NEAR(a, b, tol); }
 *   int main(void) { RUN(name); return test_summary(); }
 *
 * Failures print file:line and the values, and the run continues so one
 * report shows every broken check. */
#ifndef SAEFLOW_TEST_H
#define SAEFLOW_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

static int test_failures_ = 0, test_checks_ = 0, test_run_ = 0, test_failed_tests_ = 0;

#define TEST(name) static void name(void)
#define RUN(name)                                                                                  \
    do {                                                                                           \
        int before_ = test_failures_;                                                              \
        fprintf(stderr, "-- %s\n", #name);                                                         \
        name();                                                                                    \
        test_run_++;                                                                               \
        if (test_failures_ != before_) {                                                           \
            test_failed_tests_++;                                                                  \
            fprintf(stderr, "FAIL %s\n", #name);                                                   \
        }                                                                                          \
    } while (0)
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        test_checks_++;                                                                            \
        if (!(cond)) {                                                                             \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        test_checks_++;                                                                            \
        if (!(cond)) {                                                                             \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b);                                                 \
        test_checks_++;                                                                            \
        if (!(fabs(a_ - b_) <= (tol)) || a_ != a_ || b_ != b_) {                                   \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: %s = %.9g vs %s = %.9g (tol %g)\n", __FILE__, __LINE__, #a,    \
                    a_, #b, b_, (double)(tol));                                                    \
        }                                                                                          \
    } while (0)
#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        test_checks_++;                                                                            \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_ ? a_ : "(null)",   \
                    b_ ? b_ : "(null)");                                                           \
        }                                                                                          \
    } while (0)
/* Message of the last error contains `sub`. */
#define CHECK_ERR_HAS(sub)                                                                         \
    do {                                                                                           \
        const char *m_ = sf_errmsg();                                                              \
        test_checks_++;                                                                            \
        if (!m_ || !strstr(m_, (sub))) {                                                           \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,              \
                    m_ ? m_ : "(null)", (sub));                                                    \
        }                                                                                          \
    } while (0)

static inline int test_summary(void) {
    fprintf(stderr, "%d checks, %d failed, in %d tests (%d failed)\n", test_checks_, test_failures_,
            test_run_, test_failed_tests_);
    return test_failures_ ? 1 : 0;
}

/* Scratch directory for a test: build/tmp/<name>, created empty. */
static inline const char *test_tmpdir(const char *name) {
    static char buf[2048];
    char cmd[8400];
    /* SF_TEST_TMP: a second ctest entry of the same binary (run alongside
     * the first under ctest -j) gets folders of its own */
    const char *tag = getenv("SF_TEST_TMP");
    snprintf(buf, sizeof buf, "%s/tmp%s%s/%s", SF_BINARY_DIR, tag ? "-" : "", tag ? tag : "", name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create %s\n", buf);
        exit(2);
    }
    return buf;
}

/* Runs a shell command line with stderr merged into stdout. Returns the exit
 * code (-1 if it did not exit normally); the output goes to *out (malloc'd,
 * NUL-terminated) when out is non-NULL. */
static inline int test_run(const char *cmdline, char **out) {
    size_t len = strlen(cmdline) + 8;
    char *full = malloc(len);
    snprintf(full, len, "%s 2>&1", cmdline);
    FILE *p = popen(full, "r");
    free(full);
    if (!p) return -1;
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The output of the last test_sh call (NUL-terminated; replaced by the next). */
static char *test_sh_out;

/* test_run on a printf-formatted command line, its output kept in test_sh_out. */
static inline int test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int test_sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    free(test_sh_out);
    test_sh_out = NULL;
    return test_run(cmd, &test_sh_out);
}

/* A printf-formatted string in a static buffer (replaced by the next call):
 * command lines for test_run. */
static inline char *test_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *test_fmt(const char *fmt, ...) {
    static char buf[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

/* max |a - b| / max(|b|, 1e-30): the relative error the model tests compare
 * against their fixtures; a NaN in a - b makes it NaN (fails any bound). */
static inline double test_max_rel(const float *a, const float *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

static inline int test_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Byte-for-byte equality of two files (0 if either cannot be read). */
static inline int test_same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

#endif
