/* sf_weight storage, thread control, and the OpenBLAS core-type fix. */
#include <omp.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

int sf_weight_make(sf_weight *w, sf_dtype want, sf_dtype src_dtype, const void *src, int ndim,
                   const int64_t *shape) {
    memset(w, 0, sizeof *w);
    if (ndim < 1 || ndim > 4) return sf_error("weight: rank %d not supported (1..4)", ndim);
    if ((want != SF_DT_F32 && want != SF_DT_BF16 && want != SF_DT_F16) ||
        !sf_dtype_is_float(src_dtype))
        return sf_error("weight: dtype conversion %s -> %s not supported (to F32, BF16 or F16)",
                        sf_dtype_name(src_dtype), sf_dtype_name(want));
    w->dtype = want;
    w->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return sf_error("weight: negative dimension");
        w->shape[i] = shape[i];
        if (sf_mul_size(n, (size_t)shape[i], &n)) return sf_error("weight: size overflows");
    }
    size_t esz = sf_dtype_size(want);
    if (want == src_dtype && ((uintptr_t)src % esz) == 0) {
        w->data = src; /* zero-copy: points into the caller's (mmapped) memory */
        return 0;
    }
    size_t bytes;
    if (sf_mul_size(n, esz, &bytes)) return sf_error("weight: size overflows");
    void *buf = sf_malloc_aligned(bytes ? bytes : 64);
    sf_convert(want, buf, src_dtype, src, n); /* dtypes checked above */
    w->data = w->owned = buf;
    return 0;
}

void sf_weight_free(sf_weight *w) {
    if (w->owned) sf_free_aligned(w->owned);
    memset(w, 0, sizeof *w);
}

void sf_weight_rows_f32(const sf_weight *w, int64_t r0, int64_t nr, float *dst) {
    int64_t K = w->ndim >= 2 ? w->shape[1] : 1;
    const char *src = (const char *)w->data + (size_t)(r0 * K) * sf_dtype_size(w->dtype);
    sf_convert(SF_DT_F32, dst, w->dtype, src, (size_t)(nr * K));
}

/* ---- threads ----------------------------------------------------------- */

static int g_threads = 0, g_blas_single = 0;

void sf_blas_single_threaded(void) {
    if (!g_blas_single) { /* called outside parallel regions only */
        openblas_set_num_threads(1);
        g_blas_single = 1;
    }
}

void sf_kernels_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(1); /* OpenMP owns the threads, see linear.c */
    g_blas_single = 1;
}

int sf_kernels_threads(void) {
    return g_threads > 0 ? g_threads : omp_get_max_threads();
}

const char *sf_kernels_blas_info(void) {
    static char buf[256];
    const char *cfg = openblas_get_config();
    snprintf(
        buf, sizeof buf, "GEMM %s; %s; core %s; %d OpenMP threads (GEMM calls single-threaded)",
        sf_sgemm_backend(), cfg ? cfg : "OpenBLAS", openblas_get_corename(), omp_get_max_threads());
    return buf;
}

/* The best OpenBLAS x86-64 kernel set this CPU can run, or NULL. */
static const char *best_core(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        return "Cooperlake";
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void sf_kernels_fix_blas_core(void) {
    /* the user (or our own re-exec) chose; SAEFLOW_NO_REEXEC opts out */
    if (getenv("OPENBLAS_CORETYPE") || getenv("SAEFLOW_NO_REEXEC")) return;
    const char *best = best_core(), *cur = openblas_get_corename();
    if (!best || !cur || !strcasecmp(best, cur)) return;
    /* Only override OpenBLAS's generic fallbacks: a named modern core (Zen,
     * SkylakeX on a Cooperlake-capable CPU...) is a deliberate choice. */
    static const char *fallbacks[] = {"Prescott", "Core2",       "Penryn", "Dunnington",
                                      "Nehalem",  "Sandybridge", "Haswell"};
    int fallback = 0;
    for (size_t i = 0; i < sizeof fallbacks / sizeof *fallbacks; i++)
        if (!strcasecmp(cur, fallbacks[i])) fallback = 1;
    if (!fallback || (!strcasecmp(cur, "Haswell") && !strcmp(best, "Haswell"))) return;
    /* Rebuild argv from /proc/self/cmdline, so callers deep in a subcommand
     * need not carry the process's original argv around. */
    size_t len = 0;
    char *cmd = sf_read_file("/proc/self/cmdline", &len);
    if (!cmd || len == 0) {
        free(cmd);
        return;
    }
    int argc = 0;
    for (size_t i = 0; i < len; i++)
        if (cmd[i] == 0) argc++;
    if (cmd[len - 1] != 0) argc++; /* sf_read_file NUL-terminates the last one */
    char **argv = sf_calloc((size_t)argc + 1, sizeof *argv);
    int a = 0;
    for (size_t i = 0; i < len && a < argc; a++) {
        argv[a] = cmd + i;
        i += strlen(cmd + i) + 1;
    }
    argv[a] = NULL;
    setenv("OPENBLAS_CORETYPE", best, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow kernels, results are the same. */
    unsetenv("OPENBLAS_CORETYPE");
    free(argv);
    free(cmd);
}
