/* Benchmark: `saeflow topk` throughput against the encoder GEMM bound.
 *
 *   bench_topk [--threads T] [--rows R] [--d 1024] [--n 4096] [--k 32] [--exe SAEFLOW] [--rounds 5]
 *
 * Prints rows/s of
 *   gemm      the encoder product alone, x (256, d) . W_enc^T -> (256, n) per
 *             slice, slices in parallel with single-threaded OpenBLAS (the
 *             schedule topk uses); also one big multi-threaded GEMM (M = 4096)
 *   encode    an sf_sae_encoder on the same slices (what topk uses: for large
 *             TopK models the int16 pre-filter, else GEMM + bias + ReLU +
 *             TopK); also sf_sae_encode (F32 GEMM) on all rows in one call
 *   topk-add  sf_topk_add_sparse of the codes alone
 *   pipeline  encode + add, what `saeflow topk` does per batch, in memory
 *   cli       `saeflow topk` end to end on a file (page-cached), if --exe or
 *             ./saeflow next to this binary exists
 * and the ratio of each to the GEMM-only rate, best of --rounds interleaved
 * rounds. One "RESULT" line at the end. */
#include <cblas.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/analysis.h"
#include "saeflow/kernels.h"
#include "saeflow/sae.h"
#include "saeflow/safetensors.h"

#define SLICE 256

int main(int argc, char **argv) {
    sf_kernels_fix_blas_core();
    int threads = 0, d = 1024, n = 4096, k = 32, rounds = 5;
    long long rows = 16384;
    char exe[4096] = "";
    static const struct option opts[] = {
        {"threads", 1, 0, 't'}, {"rows", 1, 0, 'r'}, {"d", 1, 0, 'd'},      {"n", 1, 0, 'n'},
        {"k", 1, 0, 'k'},       {"exe", 1, 0, 'e'},  {"rounds", 1, 0, 'R'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            threads = atoi(optarg);
            break;
        case 'r':
            rows = atoll(optarg);
            break;
        case 'd':
            d = atoi(optarg);
            break;
        case 'n':
            n = atoi(optarg);
            break;
        case 'k':
            k = atoi(optarg);
            break;
        case 'e':
            snprintf(exe, sizeof exe, "%s", optarg);
            break;
        case 'R':
            rounds = atoi(optarg);
            break;
        default:
            fprintf(
                stderr,
                "usage: bench_topk [--threads T] [--rows R] [--d D] [--n N] [--k K] [--exe P]\n");
            return 2;
        }
    }
    if (!exe[0]) { /* saeflow next to this binary (both live in the build folder) */
        char self[4000];
        ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
        if (l > 0) {
            self[l] = 0;
            char *sl = strrchr(self, '/');
            if (sl) *sl = 0;
            snprintf(exe, sizeof exe, "%s/saeflow", self);
        }
    }
    sf_kernels_set_threads(threads);
    omp_set_max_active_levels(1);
    int T = omp_get_max_threads();
    rows = (rows + SLICE - 1) / SLICE * SLICE;
    printf("bench_topk: d=%d n=%d k=%d rows=%lld threads=%d OpenBLAS core %s\n", d, n, k, rows, T,
           sf_sae_blas_core());

    sf_sae s;
    if (sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 1)) {
        fprintf(stderr, "%s\n", sf_errmsg());
        return 1;
    }
    float *x = sf_malloc_aligned((size_t)rows * d * sizeof(float)); // (rows, d)
    sf_rng r;
    sf_rng_seed(&r, 3);
    for (size_t i = 0; i < (size_t)rows * d; i++)
        x[i] = sf_rng_normal(&r);
    const int64_t ns = rows / SLICE;

    /* Rounds interleave all measurements and each keeps its best time, so
     * that other load on a shared machine hits every variant alike. */
    double best_gemm = 1e30, best_big = 1e30, best_enc = 1e30, best_enc1 = 1e30, best_add = 1e30,
           best_cli = 1e30;
    sf_sae_codes codes;
    sf_sae_codes_alloc(&codes, rows, k);
    char dir[] = "/tmp/bench_topk_XXXXXX", clicmd[20000] = "";
    int have_cli = 0;
    if (access(exe, X_OK) == 0 && mkdtemp(dir)) {
        char ck[4200], acts[4200], out[4200];
        snprintf(ck, sizeof ck, "%s/sae", dir);
        snprintf(acts, sizeof acts, "%s/acts.safetensors", dir);
        snprintf(out, sizeof out, "%s/topk.safetensors", dir);
        sf_st_writer *w = sf_stw_new();
        int64_t shp[2] = {rows, d};
        sf_stw_add(w, "activations", SF_DT_F32, 2, shp, x);
        have_cli = sf_sae_save(&s, ck) == 0 && sf_stw_write(w, acts) == 0;
        sf_stw_free(w);
        snprintf(clicmd, sizeof clicmd,
                 "'%s' topk --checkpoint '%s' --acts '%s' --out '%s' --threads %d --quiet", exe, ck,
                 acts, out, threads);
    }
    /* what cmd_topk encodes with: prepared once, the int16 pre-filter for
     * large TopK models */
    sf_sae_encoder *enc = sf_sae_encoder_new(&s);
    const int M = rows < 4096 ? (int)rows : 4096;
    float *bigpre = sf_malloc_aligned((size_t)M * n * sizeof(float));
    for (int round = 0; round < rounds; round++) {
        /* gemm: slices in parallel, single-threaded BLAS each */
        {
            double t0 = sf_now();
#pragma omp parallel
            {
                float *pre = sf_malloc_aligned((size_t)SLICE * n * sizeof(float));
#pragma omp for schedule(dynamic, 1)
                for (int64_t i = 0; i < ns; i++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, SLICE, n, d, 1.0f,
                                x + i * SLICE * d, d, s.W_enc, d, 0.0f, pre, n);
                sf_free_aligned(pre);
            }
            double dt = sf_now() - t0;
            if (dt < best_gemm) best_gemm = dt;
        }
        /* one big GEMM with OpenBLAS's own threads, for reference */
        {
            openblas_set_num_threads(T);
            double t0 = sf_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n, d, 1.0f, x, d, s.W_enc, d,
                        0.0f, bigpre, n);
            double dt = sf_now() - t0;
            if (dt < best_big) best_big = dt;
            openblas_set_num_threads(1);
        }
        /* encode on slices, then add; same schedule as cmd_topk */
        {
            double t0 = sf_now();
#pragma omp parallel for schedule(dynamic, 1)
            for (int64_t i = 0; i < ns; i++) {
                sf_sae_codes v = {SLICE, k, codes.idx + i * SLICE * k, codes.val + i * SLICE * k,
                                  codes.cnt + i * SLICE};
                if (sf_sae_encoder_run(enc, x + i * SLICE * d, SLICE, &v))
                    fprintf(stderr, "encode: %s\n", sf_errmsg());
            }
            double dt = sf_now() - t0;
            if (dt < best_enc) best_enc = dt;
            /* the same rows in one sf_sae_encode call (F32 GEMM; its own chunking
             * and threads) */
            t0 = sf_now();
            if (sf_sae_encode(&s, x, rows, &codes)) fprintf(stderr, "encode: %s\n", sf_errmsg());
            dt = sf_now() - t0;
            if (dt < best_enc1) best_enc1 = dt;
            sf_topk tk;
            sf_topk_init(&tk, n, 16);
            t0 = sf_now();
            for (int64_t b0 = 0; b0 < rows; b0 += 4096) {
                int64_t m = rows - b0 < 4096 ? rows - b0 : 4096;
                if (sf_topk_add_sparse(&tk, m, k, codes.idx + b0 * k, codes.val + b0 * k,
                                       codes.cnt + b0, b0, NULL))
                    fprintf(stderr, "add: %s\n", sf_errmsg());
            }
            dt = sf_now() - t0;
            if (dt < best_add) best_add = dt;
            sf_topk_free(&tk);
        }
        /* the real command on files */
        if (have_cli) {
            double t0 = sf_now();
            if (system(clicmd) != 0) have_cli = 0;
            double dt = sf_now() - t0;
            if (have_cli && dt < best_cli) best_cli = dt;
        }
    }
    sf_free_aligned(bigpre);
    if (dir[strlen(dir) - 1] != 'X') {
        char rm[8192];
        snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
        if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    double gemm_rate = rows / best_gemm, big_rate = M / best_big;
    double enc_rate = rows / best_enc, add_rate = rows / best_add;
    double pipe_rate = rows / (best_enc + best_add);
    double cli_rate = have_cli ? rows / best_cli : 0;

    printf("  %-34s %10.0f rows/s\n", "gemm (256-row slices, 1 BLAS thr)", gemm_rate);
    printf("  %-34s %10.0f rows/s  (x%.2f of slices)\n", "gemm (M=4096, OpenBLAS threads)",
           big_rate, big_rate / gemm_rate);
    printf("  %-34s %10.0f rows/s  (%.2f of gemm)\n", "encoder (prepared, 256-row slices)",
           enc_rate, enc_rate / gemm_rate);
    printf("  %-34s %10.0f rows/s  (%.2f of gemm)\n", "sf_sae_encode (F32 GEMM, one call)",
           rows / best_enc1, rows / best_enc1 / gemm_rate);
    printf("  %-34s %10.0f rows/s\n", "topk add (N=16)", add_rate);
    printf("  %-34s %10.0f rows/s  (%.2f of gemm)\n", "pipeline (encode + add)", pipe_rate,
           pipe_rate / gemm_rate);
    if (cli_rate > 0)
        printf("  %-34s %10.0f rows/s  (%.2f of gemm; load + file read included)\n",
               "saeflow topk (end to end)", cli_rate, cli_rate / gemm_rate);
    printf("RESULT d=%d n=%d k=%d threads=%d gemm=%.0f encode=%.0f add=%.0f pipeline=%.0f cli=%.0f "
           "ratio=%.3f\n",
           d, n, k, T, gemm_rate, enc_rate, add_rate, pipe_rate, cli_rate,
           (cli_rate > 0 ? cli_rate : pipe_rate) / gemm_rate);
    sf_sae_encoder_free(enc);
    sf_sae_codes_free(&codes);
    sf_free_aligned(x);
    sf_sae_free(&s);
    return 0;
}
