/* FLUX VAE decode speed: saeflow side of bench/bench_vae.sh.
 *
 *   bench_vae --model VAE_DIR --inputs IN.safetensors --threads T --iters N --out OUT.safetensors
 *
 * IN holds `latents` (B, 16, h, w) (the decoder's own input, already
 * unscaled); OUT gets `decoded` (B, 3, 8h, 8w) from the last run. Prints one
 * JSON line: seconds per decode (median of N after one warm-up), peak RSS. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/safetensors.h"
#include "saeflow/vae.h"
#include "kernels/internal.h"
#include "bench_common.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    sf_kernels_fix_blas_core();
    const char *model = NULL, *inputs = NULL, *out = NULL;
    int threads = 2, iters = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model"))
            model = argv[i + 1];
        else if (!strcmp(argv[i], "--inputs"))
            inputs = argv[i + 1];
        else if (!strcmp(argv[i], "--out"))
            out = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters"))
            iters = atoi(argv[i + 1]);
    }
    if (!model || !inputs || iters < 1) {
        fprintf(stderr,
                "usage: bench_vae --model DIR --inputs F --threads T --iters N [--out F]\n");
        return 2;
    }
    sf_kernels_set_threads(threads);
    sf_vae *v = sf_vae_load(model, NULL);
    sf_st st;
    if (!v || sf_st_open(&st, inputs)) {
        fprintf(stderr, "bench_vae: %s\n", sf_errmsg());
        return 1;
    }
    const sf_tensor_info *z = sf_st_find(&st, "latents");
    if (!z || z->dtype != SF_DT_F32 || z->ndim != 4) {
        fprintf(stderr, "bench_vae: %s: no F32 'latents' (B, C, h, w)\n", inputs);
        return 1;
    }
    const int64_t B = z->shape[0], h = z->shape[2], w = z->shape[3], s = sf_vae_scale(v);
    int64_t oshape[4] = {B, 3, h * s, w * s};
    float *dec = malloc(sizeof(float) * (size_t)(B * 3 * h * s * w * s));
    double *t = malloc(sizeof(double) * (size_t)iters);
    sf_vae_decode(v, z->data, B, h, w, dec); /* warm-up */
    for (int i = 0; i < iters; i++) {
        double t0 = omp_get_wtime();
        sf_vae_decode(v, z->data, B, h, w, dec);
        t[i] = omp_get_wtime() - t0;
    }
    if (getenv("SAEFLOW_CONV_PROFILE")) /* conv thread time, all runs */
        fprintf(stderr, "conv: im2col %.2f s, GEMM %.2f s (thread time, %d+1 decodes)\n",
                sf_conv_prof_im2col_s, sf_conv_prof_gemm_s, iters);
    qsort(t, (size_t)iters, sizeof *t, cmp);
    printf(
        "{\"impl\": \"saeflow\", \"s_per_decode\": %.3f, \"min_s\": %.3f, \"peak_rss_mb\": %.0f, "
        "\"threads\": %d, \"image\": \"%lldx%lld\", \"gemm\": \"%s\"}\n",
        t[iters / 2], t[0], bench_peak_rss_mb(), threads, (long long)(h * s), (long long)(w * s),
        sf_sgemm_backend());
    if (out) {
        sf_st_writer *wr = sf_stw_new();
        sf_stw_add(wr, "decoded", SF_DT_F32, 4, oshape, dec);
        if (sf_stw_write(wr, out)) fprintf(stderr, "bench_vae: %s\n", sf_errmsg());
        sf_stw_free(wr);
    }
    free(dec), free(t);
    sf_st_close(&st);
    sf_vae_free(v);
    return 0;
}
