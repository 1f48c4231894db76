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

static uint16_t f32_to_bf16_rne(float f) {
    union {
        float f;
        uint32_t u;
    } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    uint32_t lsb = (v.u >> 16) & 1u;
    return (uint16_t)((v.u + 0x7fffu + lsb) >> 16);
}

int sf_weight_make(sf_weight *w, sf_dtype want, sf_dtype src_dtype, const void *src, int ndim,
                   const int64_t *shape) {
    memset(w, 0, sizeof *w);
    if (ndim < 1 || ndim > 4) return sf_error("weight: rank %d not supported (1..4)", ndim);
    if ((want != SF_DT_F32 && want != SF_DT_BF16) ||
        (src_dtype != SF_DT_F32 && src_dtype != SF_DT_BF16))
        return sf_error("weight: dtype conversion %d -> %d not supported (F32 or BF16 only)",
                        (int)src_dtype, (int)want);
    w->dtype = want;
    w->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return sf_error("weight: negative dimension");
        w->shape[i] = shape[i];
        if (sf_mul_size(n, (size_t)shape[i], &n)) return sf_error("weight: size overflows");
    }
    size_t esz = want == SF_DT_F32 ? 4 : 2;
    if (want == src_dtype && ((uintptr_t)src % esz) == 0) {
        w->data = src; /* zero-copy: points into the caller's (mmapped) memory */
        return 0;
    }
    size_t bytes;
    if (sf_mul_size(n, esz, &bytes)) return sf_error("weight: size overflows");
    void *buf = sf_malloc_aligned(bytes ? bytes : 64);
    const unsigned char *s = src;
    if (want == src_dtype) {
        memcpy(buf, src, bytes);
    } else if (want == SF_DT_F32) { /* BF16 -> F32, exact */
        float *d = buf;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            d[i] = sf_bf16_bits_to_f32(h);
        }
    } else { /* F32 -> BF16, round to nearest even */
        uint16_t *d = buf;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, s + 4 * i, 4);
            d[i] = f32_to_bf16_rne(f);
        }
    }
    w->data = w->owned = buf;
    return 0;
}

void sf_weight_free(sf_weight *w) {
    if (w->owned) sf_free_aligned(w->owned);
    memset(w, 0, sizeof *w);
}

void sf_weight_rows_f32(const sf_weight *w, int64_t r0, int64_t nr, float *dst) {
    int64_t K = w->ndim >= 2 ? w->shape[1] : 1;
    if (w->dtype == SF_DT_F32) {
        memcpy(dst, (const float *)w->data + r0 * K, (size_t)(nr * K) * sizeof(float));
        return;
    }
    const uint16_t *src = (const uint16_t *)w->data + r0 * K;
    int64_t n = nr * K;
    /* Widening is one shift per element: it vectorizes to a few instructions
     * per 16 floats and runs at memory speed. */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        union {
            uint32_t u;
            float f;
        } v;
        v.u = (uint32_t)src[i] << 16;
        dst[i] = v.f;
    }
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
