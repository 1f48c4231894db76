/* Benchmark: one sf_sae_encoder_run call, the C side of bench/bench_python.py.
 *
 *   bench_encode CHECKPOINT INPUT.safetensors [--key activations] [--threads T] [--rounds R]
 *   bench_encode --init d,n,k --rows B [--threads T] [--rounds R]
 *
 * (the second form: a fresh TopK model, sf_sae_init seed 0, and B random rows,
 * no files; bench/bench_pic.sh runs it in builds with and without -fPIC and
 * linked against libsaeflow.so, as bench_encode_so).
 * Loads the checkpoint and the [B, d] input (copied to an aligned buffer, as a
 * numpy array is), builds the prepared encoder (what `saeflow encode` and the
 * Python binding's encode use), runs it once untimed, then R timed calls on
 * preallocated codes. Prints each call's milliseconds ("call_ms X") and a
 * RESULT line with the min and median. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "saeflow/sae.h"
#include "saeflow/safetensors.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    sf_kernels_fix_blas_core();
    int threads = 0, rounds = 5, c, d = 0, n = 0, k = 0;
    long long rows = 0;
    const char *key = "activations";
    static const struct option opts[] = {{"key", 1, 0, 'k'},    {"threads", 1, 0, 't'},
                                         {"rounds", 1, 0, 'R'}, {"init", 1, 0, 'i'},
                                         {"rows", 1, 0, 'r'},   {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'k')
            key = optarg;
        else if (c == 't')
            threads = atoi(optarg);
        else if (c == 'R')
            rounds = atoi(optarg);
        else if (c == 'i' && sscanf(optarg, "%d,%d,%d", &d, &n, &k) == 3)
            ;
        else if (c == 'r')
            rows = atoll(optarg);
        else
            return 2;
    }
    const int fresh = d > 0;
    if ((fresh ? argc - optind != 0 || rows < 1 : argc - optind != 2) || rounds < 1) {
        fprintf(stderr, "usage: bench_encode CHECKPOINT INPUT.safetensors [--key K] [--threads T] "
                        "[--rounds R]\n       bench_encode --init d,n,k --rows B [--threads T] "
                        "[--rounds R]\n");
        return 2;
    }
    sf_kernels_set_threads(threads);
    sf_sae s;
    sf_st f = {0};
    int64_t B = rows;
    float *x = NULL;
    if (fresh) {
        if (sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 0)) {
            fprintf(stderr, "bench_encode: %s\n", sf_errmsg());
            return 1;
        }
        /* rows of sums of uniforms: roughly normal, deterministic */
        x = sf_malloc_aligned((size_t)B * (size_t)d * sizeof(float));
        uint64_t r = 88172645463325252ull;
        for (size_t i = 0; i < (size_t)B * (size_t)d; i++) {
            float v = 0;
            for (int j = 0; j < 4; j++) {
                r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                v += (float)(r >> 40) / (float)(1 << 24) - 0.5f;
            }
            x[i] = v * 1.7320508f;
        }
    } else {
        if (sf_sae_load(&s, argv[optind]) || sf_st_open(&f, argv[optind + 1])) {
            fprintf(stderr, "bench_encode: %s\n", sf_errmsg());
            return 1;
        }
        const sf_tensor_info *t = sf_st_find(&f, key);
        if (!t || t->ndim != 2 || t->shape[1] != s.d) {
            fprintf(stderr, "bench_encode: %s: no [B, %d] tensor '%s'\n", argv[optind + 1], s.d,
                    key);
            return 1;
        }
        B = t->shape[0];
        x = sf_malloc_aligned((size_t)B * (size_t)s.d * sizeof(float));
        int64_t shape[2] = {B, s.d};
        if (sf_st_read_f32(&f, key, 2, shape, x)) {
            fprintf(stderr, "bench_encode: %s\n", sf_errmsg());
            return 1;
        }
        sf_st_close(&f);
    }
    sf_sae_encoder *e = sf_sae_encoder_new(&s);
    sf_sae_codes codes;
    sf_sae_codes_alloc(&codes, B, s.k);
    if (!e || sf_sae_encoder_run(e, x, B, &codes)) {
        fprintf(stderr, "bench_encode: %s\n", sf_errmsg());
        return 1;
    }
    double *ms = sf_malloc((size_t)rounds * sizeof(double));
    for (int r = 0; r < rounds; r++) {
        double t0 = sf_now();
        if (sf_sae_encoder_run(e, x, B, &codes)) return 1;
        ms[r] = (sf_now() - t0) * 1e3;
        printf("call_ms %.3f\n", ms[r]);
    }
    qsort(ms, (size_t)rounds, sizeof(double), cmp_double);
    printf("RESULT encode B=%lld d=%d n=%d k=%d threads=%d min_ms=%.3f median_ms=%.3f\n",
           (long long)B, s.d, s.n, s.k, threads, ms[0], ms[rounds / 2]);
    free(ms);
    sf_sae_codes_free(&codes);
    sf_sae_encoder_free(e);
    sf_free_aligned(x);
    sf_sae_free(&s);
    return 0;
}
