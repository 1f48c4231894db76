/* Shared by the benchmarks. */
#ifndef SAEFLOW_BENCH_COMMON_H
#define SAEFLOW_BENCH_COMMON_H

#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>

/* Peak resident set of this process so far, MB (ru_maxrss is KiB on Linux). */
static inline double bench_peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* CPU seconds of all this process's threads so far (user + system). */
static inline double bench_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* The GEMM bound the SAE benchmarks divide by: pre (B, n) = x (B, d) W^T,
 * W (n, d), run the way the training step runs its encoder GEMM: OpenMP
 * threads, each a single-threaded cblas_sgemm on its share of the rows.
 * Not OpenBLAS's own thread pool: its idle workers spin (sched_yield) for
 * about 0.1 s after every call, which slowed the step timed right after each
 * bound by several percent. */
static inline void bench_encoder_gemm(int B, int n, int d, const float *x, const float *W,
                                      float *pre) {
#pragma omp parallel
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int r0 = (int)((long long)B * t / nt), r1 = (int)((long long)B * (t + 1) / nt);
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, n, d, 1.0f,
                        x + (size_t)r0 * d, d, W, d, 0.0f, pre + (size_t)r0 * n, n);
    }
}

#endif
