/* Benchmark: saeflow's TopK training step against the encoder GEMM bound.
 *
 *   bench_train [--threads 2] [--steps 5] [--shape d,n,k,B ...]
 *
 * For each shape: a fresh model and a random batch; one untimed step, then
 * `steps` timed steps, each followed by one cblas_sgemm of the full encoder
 * product (B, d) x (d, n) on the same threads (bench_common.h), so that every
 * step/GEMM pair sees about the same load on a shared machine. Prints the best
 * and median step, the best GEMM, the median step/GEMM pair ratio and the time
 * share of each phase. One line per shape starts with "RESULT" for
 * bench/run_bench_train.sh to parse.
 * Run it through bench/run_bench_train.sh to get the PyTorch ratio. */
#include <cblas.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "saeflow/kernels.h"
#include "saeflow/sae_train.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* CPU seconds of this process (all threads): steadier than wall time when
 * other jobs share the cores. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int run_shape(int d, int n, int k, int B, int steps, int threads) {
    sf_sae s;
    if (sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 1)) return -1;
    float *x = sf_malloc_aligned((size_t)B * d * sizeof(float));
    sf_rng r;
    sf_rng_seed(&r, 7);
    for (size_t i = 0; i < (size_t)B * d; i++)
        x[i] = sf_rng_normal(&r);
    sf_sae_train_opts o;
    sf_sae_train_opts_default(&o);
    o.lr = 3e-4;
    o.lr_warmup_steps = 0;
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    sf_sae_metrics m;
    if (sf_sae_trainer_step(t, x, B, &m)) return -1; /* warm-up: page in buffers */
    sf_sae_timing t_before = *sf_sae_trainer_timing(t);
    /* Steps and full-size GEMMs alternate, so each step/GEMM pair sees about
     * the same machine load (this matters on a shared machine); the figures
     * are the best step, the best GEMM and the median of the pair ratios. */
    float *pre = sf_malloc_aligned((size_t)B * n * sizeof(float));
    double *ts = sf_malloc((size_t)steps * sizeof(double));
    double *gs = sf_malloc((size_t)steps * sizeof(double));
    double *ratio = sf_malloc((size_t)steps * sizeof(double));
    double sum_step = 0;
    double cpu_best = 1e30;
    for (int i = 0; i < steps; i++) {
        double c0 = cpu_now(), t0 = sf_now();
        if (sf_sae_trainer_step(t, x, B, &m)) return -1;
        ts[i] = sf_now() - t0;
        double c1 = cpu_now() - c0;
        if (c1 < cpu_best) cpu_best = c1;
        sum_step += ts[i];
        /* the bound: one full-size encoder GEMM (bench_common.h) */
        t0 = sf_now();
        bench_encoder_gemm(B, n, d, x, s.W_enc, pre);
        gs[i] = sf_now() - t0;
        ratio[i] = ts[i] / gs[i];
    }
    const sf_sae_timing *tm = sf_sae_trainer_timing(t);
    double enc = tm->encode - t_before.encode, gemm_in = tm->gemm - t_before.gemm,
           aux = tm->aux - t_before.aux, bwd = tm->backward - t_before.backward,
           adam = tm->adam - t_before.adam;
    double tot = enc + aux + bwd + adam;
    qsort(ts, (size_t)steps, sizeof(double), cmp_d);
    qsort(gs, (size_t)steps, sizeof(double), cmp_d);
    qsort(ratio, (size_t)steps, sizeof(double), cmp_d);
    double best = ts[0], med = ts[steps / 2], g = gs[0], rmed = ratio[steps / 2];
    (void)sum_step;
    double gflops = 2.0 * B * d * n / g * 1e-9;
    printf("shape d=%d n=%d k=%d B=%d (threads %d, BLAS core %s)\n", d, n, k, B, threads,
           sf_sae_blas_core());
    printf("  step best %.4f s, median %.4f s -> %.1f samples/s (best), %.1f (median)\n", best, med,
           B / best, B / med);
    printf("  encoder GEMM alone: best %.4f s (%.1f GFLOP/s); step/GEMM: %.3f (best/best), %.3f "
           "(median of adjacent pairs)\n",
           g, gflops, best / g, rmed);
    printf("  phases: encoder GEMM %.1f%%, select+decode+dz %.1f%%, colsums+auxk %.1f%%, sparse "
           "backward "
           "%.1f%%, adam %.1f%%\n",
           100 * gemm_in / tot, 100 * (enc - gemm_in) / tot, 100 * aux / tot, 100 * bwd / tot,
           100 * adam / tot);
    if (tm->pf_rows > t_before.pf_rows)
        printf("  int16 pre-filter: %.1f F32 candidates per row for k=%d\n",
               (double)(tm->pf_cands - t_before.pf_cands) /
                   (double)(tm->pf_rows - t_before.pf_rows),
               k);
    else
        printf("  int16 pre-filter: off (F32 encoder GEMM)\n");
    printf("RESULT d=%d n=%d k=%d B=%d samples_per_s=%.3f median_samples_per_s=%.3f "
           "step_over_gemm=%.4f adam_share=%.4f gemm_gflops=%.2f cpu_s_per_step=%.4f\n",
           d, n, k, B, B / best, B / med, rmed, adam / tot, gflops, cpu_best);
    fflush(stdout);
    free(ts);
    free(gs);
    free(ratio);
    sf_free_aligned(pre);
    sf_free_aligned(x);
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
    return 0;
}

int main(int argc, char **argv) {
    sf_kernels_fix_blas_core();
    int threads = 2, steps = 5;
    int shapes[16][4], nshapes = 0;
    static const struct option opts[] = {{"threads", required_argument, 0, 't'},
                                         {"steps", required_argument, 0, 's'},
                                         {"shape", required_argument, 0, 'S'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 't')
            threads = atoi(optarg);
        else if (c == 's')
            steps = atoi(optarg);
        else if (c == 'S' && nshapes < 16) {
            int *sh = shapes[nshapes];
            if (sscanf(optarg, "%d,%d,%d,%d", &sh[0], &sh[1], &sh[2], &sh[3]) != 4) {
                fprintf(stderr, "bench_train: --shape wants d,n,k,B\n");
                return 2;
            }
            nshapes++;
        } else {
            printf("usage: bench_train [--threads 2] [--steps 5] [--shape d,n,k,B]...\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (threads < 1 || steps < 1) return 2;
    if (!nshapes) {
        int def[2][4] = {{1024, 4096, 32, 4096}, {3072, 12288, 64, 1024}};
        memcpy(shapes, def, sizeof def);
        nshapes = 2;
    }
    sf_kernels_set_threads(threads);
    for (int i = 0; i < nshapes; i++)
        if (run_shape(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], steps, threads)) {
            fprintf(stderr, "bench_train: %s\n", sf_errmsg());
            return 1;
        }
    return 0;
}
