/* T5 speed: the tokenizer per caption and the encoder forward, the C half of
 * bench/bench_t5.sh (bench_t5_torch.py is the torch half, same inputs).
 *
 *   bench_t5 tok TOKENIZER_JSON CAPTIONS_TXT MAXLEN ITERS
 *   bench_t5 model MODEL_DIR B T ITERS THREADS [OUT.safetensors]
 *
 * Prints one JSON line: seconds per caption / per batch (best of ITERS after
 * one warm-up). The model run feeds ids (b * 7919 + t * 104729) % vocab and
 * writes last_hidden_state to OUT for the error check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"
#include "saeflow/t5.h"
#include "saeflow/t5_tokenizer.h"

static int bench_tok(const char *json, const char *caps, int maxlen, int iters) {
    sf_t5_tokenizer *t = sf_t5_tokenizer_load(json);
    size_t len;
    char *txt = t ? sf_read_file(caps, &len) : NULL;
    if (!txt) {
        fprintf(stderr, "bench_t5: %s\n", sf_errmsg());
        return 1;
    }
    char **lines = NULL;
    int n = 0;
    for (char *p = txt, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            nl = p + strlen(p) - 1;
        else
            *nl = 0;
        lines = sf_realloc(lines, (size_t)(n + 1) * sizeof(char *));
        lines[n++] = p;
        if (!nl[1]) break;
    }
    int32_t *ids = sf_malloc((size_t)maxlen * sizeof(int32_t));
    double best = 1e30;
    long long total = 0;
    for (int it = 0; it <= iters; it++) {
        double t0 = sf_now();
        for (int i = 0; i < n; i++)
            total += sf_t5_tokenizer_encode(t, lines[i], maxlen, ids, NULL);
        double dt = sf_now() - t0;
        if (it && dt < best) best = dt;
    }
    printf(
        "{\"what\": \"tokenizer\", \"captions\": %d, \"s_per_caption\": %.3e, \"check\": %lld}\n",
        n, best / n, total);
    free(ids), free(lines), free(txt);
    sf_t5_tokenizer_free(t);
    return 0;
}

static int bench_model(const char *dir, int B, int T, int iters, int threads, const char *outp) {
    sf_kernels_set_threads(threads);
    sf_t5 *m = sf_t5_load(dir, SF_T5_AS_STORED);
    if (!m) {
        fprintf(stderr, "bench_t5: %s\n", sf_errmsg());
        return 1;
    }
    const sf_t5_config *c = sf_t5_config_of(m);
    int32_t *ids = sf_malloc((size_t)B * T * sizeof(int32_t));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            ids[b * T + t] =
                (int32_t)(((long long)b * 7919 + (long long)t * 104729) % c->vocab_size);
    float *out = sf_malloc((size_t)B * T * c->d_model * sizeof(float));
    sf_t5_request r = {SF_T5_LAST, 0};
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        double t0 = sf_now();
        if (sf_t5_forward(m, ids, NULL, B, T, &r, out)) {
            fprintf(stderr, "bench_t5: %s\n", sf_errmsg());
            return 1;
        }
        double dt = sf_now() - t0;
        if (it && dt < best) best = dt;
    }
    printf(
        "{\"what\": \"encoder\", \"B\": %d, \"T\": %d, \"threads\": %d, \"s_per_batch\": %.4f}\n",
        B, T, threads, best);
    if (outp) {
        sf_st_writer *w = sf_stw_new();
        const int64_t s[3] = {B, T, c->d_model};
        if (sf_stw_add(w, "last_hidden_state", SF_DT_F32, 3, s, out) || sf_stw_write(w, outp))
            fprintf(stderr, "bench_t5: %s\n", sf_errmsg());
        sf_stw_free(w);
    }
    free(ids), free(out);
    sf_t5_free(m);
    return 0;
}

int main(int argc, char **argv) {
    sf_kernels_fix_blas_core();
    if (argc == 6 && !strcmp(argv[1], "tok"))
        return bench_tok(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    if ((argc == 7 || argc == 8) && !strcmp(argv[1], "model"))
        return bench_model(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]),
                           argc == 8 ? argv[7] : NULL);
    fprintf(stderr, "usage: bench_t5 tok JSON CAPTIONS MAXLEN ITERS | bench_t5 model DIR B T ITERS "
                    "THREADS [OUT]\n");
    return 2;
}
