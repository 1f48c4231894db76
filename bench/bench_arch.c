/* Benchmark: saeflow's training step for every architecture against the
 * dense-GEMM bound, same shapes as bench_train (the TopK benchmark).
 *
 *   bench_arch [--sparse] [--threads 2] [--steps 3] [--arch NAME ...] [--shape d,n,k,B ...]
 *
 * The non-TopK architectures share one dense step (src/sae/arch_train.c):
 * its floor is the GEMMs a dense step needs, each 2*B*d*n FLOP: encoder
 * forward, decoder forward, dL/dZ, dL/dW_enc, dL/dW_dec (5; gated adds the
 * aux decoder forward and its dL/dA: 7). The bound printed is that many
 * full-size sgemm calls timed here on the same threads; step/bound near 1
 * means the step is GEMM-bound. Each timed step is followed by one timed
 * GEMM (pairs see the same machine load; RESULT reports the median of the
 * per-pair ratios, as bench_train). "RESULT" lines feed
 * bench/run_bench_arch.sh, which adds the PyTorch ratio. Codes start dense
 * for standard/gated/jumprelu (fresh init) - the regime where the dense bound
 * is the target; --sparse shifts their biases so ~k latents per row fire
 * (a trained SAE's regime), where standard, gated and jumprelu take the sparse step
 * and the bound is the one encoder GEMM. batchtopk and matryoshka are always
 * sparse (bound: 1 GEMM). */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "saeflow/kernels.h"
#include "saeflow/sae_arch.h"
#include "saeflow/sae_train.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_f_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* --sparse: shift the encoder biases (gated: gate_bias; jumprelu: thresholds)
 * so that about k latents per row fire, the regime of a trained L1/JumpReLU
 * SAE; the cut comes from a 1/16 sample of the batch's pre-activations. */
static void make_sparse(sf_sae *s, const float *x, int B, int k, float *pre) {
    const int d = s->d, n = s->n;
    bench_encoder_gemm(B, n, d, x, s->W_enc, pre);
    size_t m = (size_t)B * n / 16;
    float *smp = sf_malloc(m * sizeof(float));
    for (size_t i = 0; i < m; i++)
        smp[i] = pre[i * 16];
    qsort(smp, m, sizeof(float), cmp_f_desc);
    float T = smp[(size_t)k * m / n];
    free(smp);
    if (s->arch == SF_SAE_JUMPRELU)
        for (int j = 0; j < n; j++)
            s->logthres[j] = logf(T > 1e-6f ? T : 1e-6f);
    else
        for (int j = 0; j < n; j++)
            s->b_enc[j] = -T;
}

static int sparse_flag = 0;

static int run(sf_sae_arch arch, int bsel, int d, int n, int k, int B, int steps) {
    sf_sae s;
    if (sf_sae_init(&s, arch, d, n, k, 1)) return -1;
    if (arch == SF_SAE_MATRYOSHKA && sf_sae_set_matryoshka(&s, bsel, NULL, 0)) return -1;
    float *x = sf_malloc_aligned((size_t)B * d * sizeof(float));
    sf_rng r;
    sf_rng_seed(&r, 7);
    for (size_t i = 0; i < (size_t)B * d; i++)
        x[i] = sf_rng_normal(&r);
    float *pre = sf_malloc_aligned((size_t)B * n * sizeof(float));
    if (sparse_flag && (arch == SF_SAE_STANDARD || arch == SF_SAE_GATED || arch == SF_SAE_JUMPRELU))
        make_sparse(&s, x, B, k, pre);
    sf_sae_train_opts o;
    sf_sae_train_opts_default(&o);
    o.lr = 3e-4;
    o.lr_warmup_steps = 0;
    o.lmbda_warmup_steps = 0;
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    if (!t) return -1;
    sf_sae_metrics m;
    if (sf_sae_trainer_step(t, x, B, &m)) return -1;
    const sf_sae_timing tb = *sf_sae_trainer_timing(t);
    double *ts = sf_malloc((size_t)steps * sizeof(double)),
           *gs = sf_malloc((size_t)steps * sizeof(double));
    for (int i = 0; i < steps; i++) {
        double t0 = sf_now();
        if (sf_sae_trainer_step(t, x, B, &m)) return -1;
        ts[i] = sf_now() - t0;
        t0 = sf_now();
        bench_encoder_gemm(B, n, d, x, s.W_enc, pre);
        gs[i] = sf_now() - t0;
    }
    /* step / GEMM per adjacent pair, then the median: both halves of a pair
     * see the same machine, so a noisy neighbour moves the ratio far less
     * than it moves best-step / best-GEMM taken from different moments */
    double *pr = sf_malloc((size_t)steps * sizeof(double));
    for (int i = 0; i < steps; i++)
        pr[i] = ts[i] / gs[i];
    qsort(pr, (size_t)steps, sizeof(double), cmp_d);
    const double pair_med = steps % 2 ? pr[steps / 2] : 0.5 * (pr[steps / 2 - 1] + pr[steps / 2]);
    free(pr);
    qsort(ts, (size_t)steps, sizeof(double), cmp_d);
    qsort(gs, (size_t)steps, sizeof(double), cmp_d);
    /* the bound: 5 dense GEMMs (gated 7); a sparse step's floor is the one
     * encoder GEMM, so report against that when the step ran sparse */
    const int sparse_step =
        arch == SF_SAE_BATCHTOPK || arch == SF_SAE_MATRYOSHKA ||
        ((arch == SF_SAE_STANDARD || arch == SF_SAE_JUMPRELU || arch == SF_SAE_GATED) &&
         m.l0 * 16 <= n);
    const int ngemm = sparse_step ? 1 : arch == SF_SAE_GATED ? 7 : 5;
    const char *label =
        arch == SF_SAE_MATRYOSHKA && bsel ? "matryoshka-batchtopk" : sf_sae_arch_name(arch);
    double best = ts[0], g = gs[0];
    printf("%-22s d=%d n=%d k=%d B=%d: step best %.3f s (%.1f samples/s), L0 %.1f; GEMM %.3f s "
           "(%.0f GFLOP/s); step / (%d GEMMs) = %.2f best/best, %.2f median of adjacent pairs\n",
           label, d, n, k, B, best, B / best, m.l0, g, 2.0 * B * d * n / g * 1e-9, ngemm,
           best / (ngemm * g), pair_med / ngemm);
    const sf_sae_timing *tm = sf_sae_trainer_timing(t);
    double ge = tm->gemm - tb.gemm, fw = tm->encode - tb.encode - ge,
           bw = tm->backward - tb.backward, ad = tm->adam - tb.adam, tot = ge + fw + bw + ad;
    if (tot > 0)
        printf(
            "  phases: encoder GEMM %.0f%%, rest of forward %.0f%%, backward %.0f%%, adam %.0f%%\n",
            100 * ge / tot, 100 * fw / tot, 100 * bw / tot, 100 * ad / tot);
    printf("RESULT arch=%s d=%d n=%d k=%d B=%d samples_per_s=%.3f l0=%.2f step_over_bound=%.4f "
           "gemms=%d\n",
           label, d, n, k, B, B / best, m.l0, pair_med / ngemm, ngemm);
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
    sf_kernels_fix_blas_core();
    int threads = 2, steps = 3, nshapes = 0, narch = 0;
    int shapes[8][4];
    const char *archs[16];
    static const struct option opts[] = {{"sparse", no_argument, 0, 'p'},
                                         {"threads", required_argument, 0, 't'},
                                         {"steps", required_argument, 0, 's'},
                                         {"shape", required_argument, 0, 'S'},
                                         {"arch", required_argument, 0, 'a'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'p')
            sparse_flag = 1;
        else if (c == 't')
            threads = atoi(optarg);
        else if (c == 's')
            steps = atoi(optarg);
        else if (c == 'a' && narch < 16)
            archs[narch++] = optarg;
        else if (c == 'S' && nshapes < 8) {
            int *sh = shapes[nshapes];
            if (sscanf(optarg, "%d,%d,%d,%d", &sh[0], &sh[1], &sh[2], &sh[3]) != 4) return 2;
            nshapes++;
        } else {
            printf("usage: bench_arch [--sparse] [--threads 2] [--steps 3] [--arch NAME]... "
                   "[--shape d,n,k,B]...\n");
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
        static const char *all[] = {"standard",  "gated",      "jumprelu",
                                    "batchtopk", "matryoshka", "matryoshka-batchtopk"};
        for (int i = 0; i < 6; i++)
            archs[narch++] = all[i];
    }
    sf_kernels_set_threads(threads);
    for (int i = 0; i < nshapes; i++)
        for (int a = 0; a < narch; a++) {
            sf_sae_arch arch;
            int bsel = !strcmp(archs[a], "matryoshka-batchtopk");
            if (bsel)
                arch = SF_SAE_MATRYOSHKA;
            else if (sf_sae_arch_parse(archs[a], &arch)) {
                fprintf(stderr, "bench_arch: %s\n", sf_errmsg());
                return 2;
            }
            if (run(arch, bsel, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], steps)) {
                fprintf(stderr, "bench_arch: %s\n", sf_errmsg());
                return 1;
            }
        }
    return 0;
}
