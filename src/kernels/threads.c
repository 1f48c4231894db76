/* Thread control: the one setter for every OpenMP region and BLAS call.
 *
 * OpenMP owns all parallelism; OpenBLAS is kept single-threaded (GEMMs are
 * split over OpenMP threads by their callers, see linear.c). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

static int g_threads = 0, g_blas_single = 0;

void sf_blas_single_threaded(void) {
    if (!g_blas_single) { /* called outside parallel regions only */
        openblas_set_num_threads(1);
        g_blas_single = 1;
    }
}

/* OpenMP's own default: OMP_NUM_THREADS's first entry where set, else every
 * core. Read from the environment so that 0 means the same thing after an
 * earlier call set another count. */
static int default_threads(void) {
    const char *e = getenv("OMP_NUM_THREADS");
    long v = e ? strtol(e, NULL, 10) : 0;
    return v > 0 && v < 100000 ? (int)v : omp_get_num_procs();
}

void sf_kernels_set_threads(int n) {
    if (n <= 0) n = default_threads();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(1); /* OpenMP owns the threads, see linear.c */
    g_blas_single = 1;
}

static _Thread_local float *tl_buf[SF_SCRATCH_SLOTS];
static _Thread_local size_t tl_len[SF_SCRATCH_SLOTS];

float *sf_thread_scratch(int slot, size_t n) {
    if (n > tl_len[slot]) {
        sf_free_aligned(tl_buf[slot]); /* free first: old and new never both resident */
        tl_buf[slot] = sf_malloc_aligned(n * sizeof(float));
        tl_len[slot] = n;
    }
    return tl_buf[slot];
}

int sf_kernels_threads(void) {
    return g_threads > 0 ? g_threads : omp_get_max_threads();
}
