/* sf_sgemm: the project's one F32 GEMM, on the calling thread.
 *
 * Two backends behind one signature:
 * - oneDNN's dnnl_sgemm (SF_HAVE_DNNL). Its JIT AVX-512 kernels are the ones
 *   torch's CPU GEMMs come from; on the ViT-L/14 shapes (M = 2056,
 *   K x N = 1024 x 3072 / 1024 x 4096 / 4096 x 1024) they ran 10-20% faster
 *   than Debian's OpenBLAS 0.3.21 Cooperlake kernels here (docs/kernels.md).
 * - OpenBLAS cblas_sgemm otherwise (and always for the SAE code, whose
 *   trainer was tuned and measured on it).
 *
 * Threads: OpenMP owns all parallelism (see linear.c), so a GEMM never starts
 * threads of its own. OpenBLAS is pinned to one thread once; oneDNN asks
 * OpenMP how many threads it may use, which is 1 inside a parallel region and
 * omp_get_max_threads() outside, so outside one the limit is lowered to 1 for
 * the call. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

#ifdef SF_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

void sf_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = beta C, as BLAS defines it (beta = 0 clears, even NaN) */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++)
                C[m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
        return;
    }
#ifdef SF_HAVE_DNNL
    int outer = omp_in_parallel() ? 0 : omp_get_max_threads();
    if (outer > 1) omp_set_num_threads(1);
    /* Valid shapes cannot fail; a failure here would be a bug in the caller's
     * leading dimensions, so it is loud rather than silently wrong. */
    dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda,
                                  B, ldb, beta, C, ldc);
    if (outer > 1) omp_set_num_threads(outer);
    if (st != dnnl_success) {
        fprintf(stderr, "saeflow: dnnl_sgemm(M=%lld N=%lld K=%lld) failed: status %d\n",
                (long long)M, (long long)N, (long long)K, (int)st);
        abort();
    }
#else
    if (!omp_in_parallel()) sf_blas_single_threaded();
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                (int)ldb, beta, C, (int)ldc);
#endif
}

const char *sf_sgemm_backend(void) {
#ifdef SF_HAVE_DNNL
    static char buf[64];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "oneDNN %d.%d.%d sgemm", v->major, v->minor, v->patch);
    return buf;
#else
    return "OpenBLAS cblas_sgemm";
#endif
}

const char *sf_kernels_blas_info(void) {
    static char buf[256];
    const char *cfg = openblas_get_config();
    snprintf(
        buf, sizeof buf, "GEMM %s; %s; core %s; %d OpenMP threads (GEMM calls single-threaded)",
        sf_sgemm_backend(), cfg ? cfg : "OpenBLAS", openblas_get_corename(), omp_get_max_threads());
    return buf;
}
