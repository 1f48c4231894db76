/* FLUX transformer speed and memory: the saeflow half of bench/run_bench_flux.sh.
 *
 *   bench_flux --model DIR --inputs FILE [--dtype stored|f32|bf16] [--threads 2]
 *              [--warmup 1] [--iters 2] [--out FILE] [--hook output] [--stdin]
 *
 * FILE holds diffusers' forward arguments (bench_flux_torch.py --make-inputs).
 * Prints one JSON line: seconds per batch (median), tokens/s (image + text
 * tokens), GFLOP/s (24 D^2 flops per token per block run + attention), CPU
 * seconds per batch (user + sys: on a shared machine, flops / (cpu / threads)
 * estimates the rate an idle machine would give),
 * load time, peak RSS (getrusage ru_maxrss). --out writes the last output
 * (`out`, F32) for the error check against torch.
 * --stdin: after the warm-up print {"ready": 1}, then run one timed forward
 * per line read from stdin (at most 100), printing {"s": .., "cpu_s": ..}
 * after each, until EOF; then the summary line. run_bench_flux.sh drives this
 * side and torch's in turn, one forward each (bench_flux_torch.py --alternate). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/flux.h"
#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"
#include "bench_common.h"

static void die(const char *what) {
    fprintf(stderr, "bench_flux: %s: %s\n", what, sf_errmsg());
    exit(1);
}

static const float *get(const sf_st *st, const char *name, int64_t *d0, int64_t *d1) {
    const sf_tensor_info *t = sf_st_find(st, name);
    if (!t || t->dtype != SF_DT_F32) {
        sf_error("no F32 tensor '%s'", name);
        die("inputs");
    }
    if (d0) *d0 = t->shape[0];
    if (d1) *d1 = t->ndim > 1 ? t->shape[1] : 1;
    return t->data;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    sf_kernels_fix_blas_core();
    const char *model = NULL, *inputs = NULL, *dtype = "stored", *out = NULL, *hook = "output";
    int threads = 2, warmup = 1, iters = 2, from_stdin = 0;
    static struct option opts[] = {
        {"model", 1, 0, 'm'},  {"inputs", 1, 0, 'i'}, {"dtype", 1, 0, 'd'}, {"threads", 1, 0, 'j'},
        {"warmup", 1, 0, 'u'}, {"iters", 1, 0, 'n'},  {"out", 1, 0, 'o'},   {"hook", 1, 0, 'k'},
        {"stdin", 0, 0, 's'},  {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'i':
            inputs = optarg;
            break;
        case 'd':
            dtype = optarg;
            break;
        case 'j':
            threads = atoi(optarg);
            break;
        case 'u':
            warmup = atoi(optarg);
            break;
        case 'n':
            iters = atoi(optarg);
            break;
        case 'o':
            out = optarg;
            break;
        case 'k':
            hook = optarg;
            break;
        case 's':
            from_stdin = 1;
            break;
        default:
            return 2;
        }
    }
    if (!model || !inputs || iters < 1 || iters > 100) {
        fprintf(stderr, "usage: bench_flux --model DIR --inputs FILE [options] (see the source)\n");
        return 2;
    }
    sf_kernels_set_threads(threads);
    sf_flux_request req;
    if (sf_flux_parse_request(hook, &req)) die("--hook");

    double t0 = sf_now();
    sf_flux_load_opts lo = {0};
    lo.dtype = !strcmp(dtype, "f32") ? SF_DT_F32 : !strcmp(dtype, "bf16") ? SF_DT_BF16 : 0;
    lo.only = &req, lo.n_only = 1;
    sf_flux *m = sf_flux_load(model, &lo);
    if (!m) die(model);
    double load_s = sf_now() - t0;
    const sf_flux_config *cf = sf_flux_get_config(m);

    sf_st st;
    if (sf_st_open(&st, inputs)) die(inputs);
    sf_flux_inputs in = {0};
    in.img = get(&st, "hidden_states", &in.B, &in.N);
    in.txt = get(&st, "encoder_hidden_states", NULL, &in.T);
    in.pooled = get(&st, "pooled_projections", NULL, NULL);
    in.timestep = get(&st, "timestep", NULL, NULL);
    in.img_ids = get(&st, "img_ids", NULL, NULL);
    in.txt_ids = get(&st, "txt_ids", NULL, NULL);
    int64_t rows = sf_flux_request_rows(m, &req, in.N, in.T);
    if (rows < 0) die("--hook");
    int64_t width = sf_flux_request_width(m, &req);
    float *y = malloc(sizeof(float) * (size_t)(in.B * rows * width));
    double times[100], cpu = 0;
    for (int it = 0; it < warmup + (from_stdin ? 100 : iters); it++) {
        if (from_stdin && it == warmup) printf("{\"ready\": 1}\n"), fflush(stdout);
        if (from_stdin && it >= warmup) {
            char line[64];
            if (!fgets(line, sizeof line, stdin)) {
                iters = it - warmup;
                break;
            }
            iters = it - warmup + 1;
        }
        double s = sf_now(), c0 = bench_cpu_s();
        if (sf_flux_forward(m, &in, 1, &req, &y)) die("forward");
        if (it < warmup) continue;
        times[it - warmup] = sf_now() - s, cpu += bench_cpu_s() - c0;
        if (from_stdin)
            printf("{\"s\": %.4f, \"cpu_s\": %.3f}\n", times[it - warmup], bench_cpu_s() - c0),
                fflush(stdout);
    }
    if (iters < 1) {
        fprintf(stderr, "bench_flux: no timed forward\n");
        return 1;
    }
    qsort(times, (size_t)iters, sizeof *times, cmp_d);
    double per = times[iters / 2];
    /* flops of the blocks run: 24 D^2 per token per block (GEMMs; the AdaLN
     * modulations are per example) + 4 L^2 D per example per block (attention) */
    const double D = cf->dim, L = (double)(in.N + in.T);
    /* the blocks this hook runs (the forward stops after its block) */
    const int nblocks = req.site == SF_FLUX_OUTPUT   ? cf->num_layers + cf->num_single_layers
                        : req.site == SF_FLUX_DOUBLE ? req.block + 1
                                                     : cf->num_layers + req.block + 1;
    double flops = (double)in.B * nblocks * (24.0 * D * D * L + 4.0 * L * L * D);
    printf("{\"impl\": \"saeflow\", \"dtype\": \"%s\", \"threads\": %d, \"batch\": %lld, "
           "\"tokens\": %lld, \"s_per_batch\": %.4f, \"tokens_per_s\": %.2f, \"gflop_per_s\": "
           "%.1f, \"cpu_s_per_batch\": %.3f, \"load_s\": %.3f, \"peak_rss_mb\": %.1f, "
           "\"blas\": \"%s\"}\n",
           dtype, threads, (long long)in.B, (long long)(in.N + in.T), per, (double)in.B * L / per,
           flops / per * 1e-9, cpu / iters, load_s, bench_peak_rss_mb(), sf_kernels_blas_info());
    if (out) {
        sf_st_writer *w = sf_stw_new();
        int64_t shape[3] = {in.B, rows, width};
        sf_stw_add(w, "out", SF_DT_F32, 3, shape, y);
        if (sf_stw_write(w, out)) die(out);
        sf_stw_free(w);
    }
    free(y);
    sf_st_close(&st);
    sf_flux_free(m);
    return 0;
}
