/* Benchmark: saeflow's training step for every architecture against the
 * dense-GEMM bound, same shapes as bench_train (the TopK benchmark).
 *
 *   bench_arch [--threads 2] [--steps 3] [--arch NAME ...] [--shape d,n,k,B ...]
 *
 * The non-TopK architectures share one dense step (src/sae/arch_common.c):
 * its floor is the GEMMs a dense step needs, each 2*B*d*n FLOP: encoder
 * forward, decoder forward, dL/dZ, dL/dW_enc, dL/dW_dec (5; gated adds the
 * aux decoder forward and its dL/dA: 7). The bound printed is that many
 * full-size sgemm calls timed here on the same threads; step/bound near 1
 * means the step is GEMM-bound. Each timed step is followed by one timed
 * GEMM (pairs see the same machine load). "RESULT" lines feed
 * bench/run_bench_arch.sh, which adds the PyTorch ratio. Codes start dense
 * for standard/gated/jumprelu (fresh init, lmbda warmup) - the regime where
 * the dense bound is the target. */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/sae_arch.h"
#include "saeflow/sae_train.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run(sf_sae_arch arch, int bsel, int d, int n, int k, int B, int steps, int threads) {
    sf_sae s;
    if (sf_sae_init(&s, arch, d, n, k, 1)) return -1;
    if (arch == SF_SAE_MATRYOSHKA && sf_sae_set_matryoshka(&s, bsel, NULL, 0)) return -1;
    float *x = sf_malloc_aligned((size_t)B * d * sizeof(float));
    sf_rng r;
    sf_rng_seed(&r, 7);
    for (size_t i = 0; i < (size_t)B * d; i++) x[i] = sf_rng_normal(&r);
    sf_sae_train_opts o;
    sf_sae_train_opts_default(&o);
    o.lr = 3e-4;
    o.lr_warmup_steps = 0;
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    if (!t) return -1;
    sf_sae_metrics m;
    if (sf_sae_trainer_step(t, x, B, &m)) return -1;
    float *pre = sf_malloc_aligned((size_t)B * n * sizeof(float));
    double *ts = sf_malloc((size_t)steps * sizeof(double)), *gs = sf_malloc((size_t)steps * sizeof(double));
    for (int i = 0; i < steps; i++) {
        double t0 = sf_now();
        if (sf_sae_trainer_step(t, x, B, &m)) return -1;
        ts[i] = sf_now() - t0;
        openblas_set_num_threads(threads);
        t0 = sf_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n, d, 1.0f, x, d, s.W_enc, d, 0.0f, pre, n);
        gs[i] = sf_now() - t0;
        openblas_set_num_threads(1);
    }
    qsort(ts, (size_t)steps, sizeof(double), cmp_d);
    qsort(gs, (size_t)steps, sizeof(double), cmp_d);
    const int ngemm = arch == SF_SAE_TOPK ? 1 : arch == SF_SAE_GATED ? 7 : 5;
    const char *label = arch == SF_SAE_MATRYOSHKA && bsel ? "matryoshka-batchtopk" : sf_sae_arch_name(arch);
    double best = ts[0], g = gs[0];
    printf("%-22s d=%d n=%d k=%d B=%d: step best %.3f s (%.1f samples/s), L0 %.1f; GEMM %.3f s "
           "(%.0f GFLOP/s); step / (%d GEMMs) = %.2f\n",
           label, d, n, k, B, best, B / best, m.l0, g, 2.0 * B * d * n / g * 1e-9, ngemm, best / (ngemm * g));
    printf("RESULT arch=%s d=%d n=%d k=%d B=%d samples_per_s=%.3f l0=%.2f step_over_bound=%.4f gemms=%d\n",
           label, d, n, k, B, B / best, m.l0, best / (ngemm * g), ngemm);
    fflush(stdout);
    free(ts);
    free(gs);
    sf_free_aligned(pre);
    sf_free_aligned(x);
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
    return 0;
}

int main(int argc, char **argv) {
    sf_sae_blas_fixup();
    int threads = 2, steps = 3, nshapes = 0, narch = 0;
    int shapes[8][4];
    const char *archs[16];
    static const struct option opts[] = {{"threads", required_argument, 0, 't'}, {"steps", required_argument, 0, 's'},
                                         {"shape", required_argument, 0, 'S'},   {"arch", required_argument, 0, 'a'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 't') threads = atoi(optarg);
        else if (c == 's') steps = atoi(optarg);
        else if (c == 'a' && narch < 16) archs[narch++] = optarg;
        else if (c == 'S' && nshapes < 8) {
            int *sh = shapes[nshapes];
            if (sscanf(optarg, "%d,%d,%d,%d", &sh[0], &sh[1], &sh[2], &sh[3]) != 4) return 2;
            nshapes++;
        } else {
            printf("usage: bench_arch [--threads 2] [--steps 3] [--arch NAME]... [--shape d,n,k,B]...\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (threads < 1 || steps < 1) return 2;
    if (!nshapes) {
        int def[2][4] = {{1024, 4096, 32, 4096}, {3072, 12288, 64, 1024}};
        memcpy(shapes, def, sizeof def);
        nshapes = 2;
    }
    if (!narch) {
        static const char *all[] = {"standard", "gated", "jumprelu", "batchtopk", "matryoshka", "matryoshka-batchtopk"};
        for (int i = 0; i < 6; i++) archs[narch++] = all[i];
    }
    sf_sae_set_threads(threads);
    for (int i = 0; i < nshapes; i++)
        for (int a = 0; a < narch; a++) {
            sf_sae_arch arch;
            int bsel = !strcmp(archs[a], "matryoshka-batchtopk");
            if (bsel) arch = SF_SAE_MATRYOSHKA;
            else if (sf_sae_arch_parse(archs[a], &arch)) {
                fprintf(stderr, "bench_arch: %s\n", sf_errmsg());
                return 2;
            }
            if (run(arch, bsel, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], steps, threads)) {
                fprintf(stderr, "bench_arch: %s\n", sf_errmsg());
                return 1;
            }
        }
    return 0;
}
