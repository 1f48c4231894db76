/* CLIP forward speed and memory: the saeflow half of bench/bench_clip.sh.
 *
 *   bench_clip --model DIR --inputs FILE --tower vision|text --what layer:-2|pooled|embeds
 *              [--tokens first|all|pooled] [--dtype f32|bf16] [--threads 2]
 *              [--warmup 1] [--iters 2] [--out FILE]
 *
 * FILE holds pixel_values (B,3,S,S) F32 or input_ids/attention_mask (B,T)
 * I32 (bench_clip_torch.py --make-inputs writes it). Prints one JSON line:
 * seconds per batch, items/s, load time, peak RSS (getrusage ru_maxrss).
 * --out writes the last batch's output (`out`, F32) for the error check. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/clip.h"
#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"
#include "bench_common.h"

static void die(const char *what) {
    fprintf(stderr, "bench_clip: %s: %s\n", what, sf_errmsg());
    exit(1);
}

int main(int argc, char **argv) {
    sf_kernels_fix_blas_core();
    const char *model = NULL, *inputs = NULL, *tower = "vision", *what = "layer:-2",
               *tokens = "first", *dtype = "f32", *out = NULL;
    int threads = 2, warmup = 1, iters = 2;
    static struct option opts[] = {
        {"model", 1, 0, 'm'},   {"inputs", 1, 0, 'i'}, {"tower", 1, 0, 't'},
        {"what", 1, 0, 'w'},    {"tokens", 1, 0, 'k'}, {"dtype", 1, 0, 'd'},
        {"threads", 1, 0, 'j'}, {"warmup", 1, 0, 'u'}, {"iters", 1, 0, 'n'},
        {"out", 1, 0, 'o'},     {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'i':
            inputs = optarg;
            break;
        case 't':
            tower = optarg;
            break;
        case 'w':
            what = optarg;
            break;
        case 'k':
            tokens = optarg;
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
        default:
            return 2;
        }
    }
    if (!model || !inputs) {
        fprintf(stderr, "usage: bench_clip --model DIR --inputs FILE [options] (see the source)\n");
        return 2;
    }
    int text = !strcmp(tower, "text");
    sf_clip_tokens tk = !strcmp(tokens, "all")      ? SF_CLIP_TOK_ALL
                        : !strcmp(tokens, "pooled") ? SF_CLIP_TOK_POOLED
                                                    : SF_CLIP_TOK_FIRST;
    sf_clip_request req;
    if (sf_clip_parse_request(what, tk, &req)) die("--what");
    sf_kernels_set_threads(threads);

    double t0 = sf_now();
    sf_clip_load_opts lo = {!strcmp(dtype, "bf16") ? SF_DT_BF16 : SF_DT_F32, !text, text};
    sf_clip *m = sf_clip_load(model, &lo);
    if (!m) die(model);
    double load_s = sf_now() - t0;

    sf_st in;
    if (sf_st_open(&in, inputs)) die(inputs);
    int64_t B, T = 0, n;
    float *px = NULL;
    int32_t *ids = NULL, *mask = NULL;
    if (!text) {
        const sf_tensor_info *t = sf_st_find(&in, "pixel_values");
        if (!t) die("inputs: no pixel_values");
        B = t->shape[0];
        px = malloc(t->nbytes);
        memcpy(px, t->data, t->nbytes);
    } else {
        const sf_tensor_info *t = sf_st_find(&in, "input_ids"),
                             *mk = sf_st_find(&in, "attention_mask");
        if (!t || !mk || t->dtype != SF_DT_I32) die("inputs: no I32 input_ids/attention_mask");
        B = t->shape[0], T = t->shape[1];
        ids = malloc(t->nbytes), mask = malloc(mk->nbytes);
        memcpy(ids, t->data, t->nbytes);
        memcpy(mask, mk->data, mk->nbytes);
    }
    if ((n = sf_clip_output_size(m, text, &req, (int)T)) < 0) die("request");
    float *y = malloc(sizeof(float) * (size_t)(B * n));
    double best = 1e30, total = 0, cpu = 0;
    for (int it = 0; it < warmup + iters; it++) {
        double s = sf_now(), c0 = bench_cpu_s();
        int rc = text ? sf_clip_text_forward(m, ids, mask, B, T, &req, y)
                      : sf_clip_vision_forward(m, px, B, &req, y);
        if (rc) die("forward");
        double e = sf_now() - s;
        if (it >= warmup) {
            total += e;
            cpu += bench_cpu_s() - c0;
            if (e < best) best = e;
        }
    }
    double per = total / iters;
    printf("{\"impl\": \"saeflow\", \"tower\": \"%s\", \"what\": \"%s\", \"tokens\": \"%s\", "
           "\"dtype\": \"%s\", "
           "\"threads\": %d, \"batch\": %lld, \"iters\": %d, \"sec_per_batch\": %.4f, "
           "\"best_sec\": %.4f, "
           "\"items_per_s\": %.4f, \"cpu_s_per_batch\": %.3f, \"load_s\": %.3f, \"peak_rss_mb\": "
           "%.1f, "
           "\"blas\": \"%s\"}\n",
           tower, what, tokens, dtype, threads, (long long)B, iters, per, best, (double)B / per,
           cpu / iters, load_s, bench_peak_rss_mb(), sf_kernels_blas_info());
    if (out) {
        sf_st_writer *w = sf_stw_new();
        int64_t shape[2] = {B, n};
        sf_stw_add(w, "out", SF_DT_F32, 2, shape, y);
        if (sf_stw_write(w, out)) die(out);
        sf_stw_free(w);
    }
    free(y), free(px), free(ids), free(mask);
    sf_st_close(&in);
    sf_clip_free(m);
    return 0;
}
