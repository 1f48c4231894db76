/* The int16 pre-filter's TopK against brute force: every row's selection
 * must be exactly the TopK of the F32 values sae_dot gives for all n latents
 * (same indices, same values, bit for bit), on inputs built to break a loose
 * bound: exact ties, near ties, rows with one dominant element, zero rows,
 * tiny and subnormal rows,
 * latents of very different scales, negative biases (fewer than k positive),
 * odd d and n not a multiple of 16. */
#include <math.h>
#include <string.h>

#include "sae/prefilter.h"
#include "sae/sae_internal.h"
#include "saeflow/sae.h"
#include "saeflow/sae_train.h"
#include "test.h"

static sf_rng rng;

/* 1 when the two selections hold the same (index, value) pairs */
static int same_sel(int32_t *ri, float *rv, int rc, int32_t *pi, float *pv, int pc) {
    sae_sort_pairs(ri, rv, rc);
    sae_sort_pairs(pi, pv, pc);
    int same = rc == pc;
    for (int u = 0; same && u < rc; u++)
        same = ri[u] == pi[u] && memcmp(&rv[u], &pv[u], sizeof(float)) == 0;
    return same;
}

/* Returns the number of rows whose TopK (or, with ak > 0, AuxK selection
 * among the dead latents: every third one, and latent 3) differs. */
static int check_model(sf_sae *s, const float *x, int B, int ak, double *cand_per_row) {
    const int n = s->n, d = s->d, k = s->k;
    sae_pf *pf = NULL;
    CHECK(sae_pf_prepare(&pf, s, B, 1) == 0);
    int32_t *c = malloc((size_t)B * n * sizeof(int32_t)), *pidx = malloc((size_t)B * k * 4),
            *pcnt = malloc((size_t)B * 4);
    float *pval = malloc((size_t)B * k * 4);
    uint8_t *dead = calloc((size_t)n, 1);
    int32_t *dl = malloc((size_t)n * 4), nd = 0;
    for (int j = 0; j < n; j++)
        if (j % 3 == 1 || j == 3) dead[j] = 1, dl[nd++] = j;
    const int aK = ak > 0 ? ak : 1;
    sae_pf_aux ax = {dead, ak, malloc((size_t)B * aK * 4), malloc((size_t)B * 4),
                     malloc((size_t)B * aK * 4)};
    int64_t ncand = 0;
    sae_pf_gemm(pf, &pf->th[0], x, B, c);
    sae_pf_select_chunk(pf, &pf->th[0], s, c, B, x, k, pidx, pval, pcnt, ak > 0 ? &ax : NULL,
                        &ncand);
    const int K = k > aK ? k : aK;
    int32_t *all = malloc((size_t)n * sizeof(int32_t)), *ri = malloc((size_t)K * 4),
            *pi = malloc((size_t)K * 4);
    float *v = malloc((size_t)n * sizeof(float)), *dv = malloc((size_t)n * sizeof(float)),
          *rv = malloc((size_t)K * 4), *pv = malloc((size_t)K * 4);
    for (int j = 0; j < n; j++)
        all[j] = j;
    int bad = 0;
    for (int r = 0; r < B; r++) {
        const float *xr = x + (size_t)r * d;
        for (int j = 0; j < n; j++)
            v[j] = sae_dot(s->W_enc + (size_t)j * d, xr, d) + s->b_enc[j];
        int rc = sae_topk_relu_list(all, v, n, k, ri, rv);
        int pc = pcnt[r];
        memcpy(pi, pidx + (size_t)r * k, (size_t)pc * 4);
        memcpy(pv, pval + (size_t)r * k, (size_t)pc * 4);
        int same = same_sel(ri, rv, rc, pi, pv, pc);
        if (same && ak > 0) {
            for (int u = 0; u < nd; u++)
                dv[u] = v[dl[u]];
            rc = sae_topk_relu_list(dl, dv, nd, ak, ri, rv);
            pc = ax.cnt[r];
            memcpy(pi, ax.idx + (size_t)r * ak, (size_t)pc * 4);
            memcpy(pv, ax.val + (size_t)r * ak, (size_t)pc * 4);
            same = same_sel(ri, rv, rc, pi, pv, pc);
        }
        if (!same && bad++ < 3) fprintf(stderr, "row %d differs (ak %d)\n", r, ak);
    }
    *cand_per_row = (double)ncand / B;
    free(c), free(pidx), free(pcnt), free(pval), free(all), free(ri), free(pi), free(v), free(rv),
        free(pv), free(dv), free(dead), free(dl), free(ax.idx), free(ax.cnt), free(ax.val);
    sae_pf_free(pf);
    return bad;
}

TEST(prefilter_exact) {
    const int shapes[][3] = {{97, 2050, 16}, {64, 1024, 8}, {130, 4096, 32}, {33, 517, 40}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int d = shapes[si][0], n = shapes[si][1], k = shapes[si][2], B = 61;
        sf_sae s;
        CHECK(sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 11 + si) == 0);
        /* latent scales over six decades, biases of both signs */
        for (int j = 0; j < n; j++) {
            float sc = powf(10.0f, (float)(j % 7) - 3.0f);
            for (int q = 0; q < d; q++)
                s.W_enc[(size_t)j * d + q] *= sc;
            s.b_enc[j] = (float)(sf_rng_normal(&rng) * 0.05 * sc);
        }
        /* exact ties: latent 5 duplicates latent 3 (rows and bias) */
        memcpy(s.W_enc + 5 * (size_t)d, s.W_enc + 3 * (size_t)d, (size_t)d * sizeof(float));
        s.b_enc[5] = s.b_enc[3];
        /* near ties: latent 9 is latent 7 nudged by one ulp in one weight */
        memcpy(s.W_enc + 9 * (size_t)d, s.W_enc + 7 * (size_t)d, (size_t)d * sizeof(float));
        s.W_enc[9 * (size_t)d] = nextafterf(s.W_enc[9 * (size_t)d], INFINITY);
        s.b_enc[9] = s.b_enc[7];
        float *x = malloc((size_t)B * d * sizeof(float));
        for (int i = 0; i < B * d; i++)
            x[i] = sf_rng_normal(&rng);
        memset(x, 0, (size_t)d * sizeof(float)); /* row 0: zero */
        x[1 * d + 2] = 1e4f;                     /* row 1: one dominant element */
        for (int q = 0; q < d; q++)              /* row 2: along latent 3 (= 5): they lead */
            x[2 * d + q] = s.W_enc[3 * (size_t)d + q] * 1e3f;
        for (int q = 0; q < d; q++) /* row 3: tiny values */
            x[3 * d + q] *= 1e-30f;
        for (int q = 0; q < d; q++) /* row 4: subnormal values */
            x[4 * d + q] *= 1e-40f;
        double cpr = 0;
        int bad = check_model(&s, x, B, 0, &cpr);
        CHECK_MSG(bad == 0, "d %d n %d k %d: %d rows differ", d, n, k, bad);
        /* AuxK among the dead latents: fewer than there are, and all of them */
        bad = check_model(&s, x, B, 3 * k, &cpr);
        CHECK_MSG(bad == 0, "AuxK 3k, d %d n %d k %d: %d rows differ", d, n, k, bad);
        bad = check_model(&s, x, B, n, &cpr);
        CHECK_MSG(bad == 0, "AuxK all dead, d %d n %d k %d: %d rows differ", d, n, k, bad);
        /* all-negative biases: fewer than k positive in most rows */
        for (int j = 0; j < n; j++)
            s.b_enc[j] = -fabsf(s.b_enc[j]) * 40.0f;
        bad = check_model(&s, x, B, 2 * k, &cpr);
        CHECK_MSG(bad == 0, "negative biases, d %d n %d k %d: %d rows differ", d, n, k, bad);
        /* a trained-like model: unit rows, small biases; the bound is tight */
        sf_sae_free(&s);
        CHECK(sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 99 + si) == 0);
        bad = check_model(&s, x, B, 0, &cpr);
        CHECK_MSG(bad == 0, "plain init: %d rows differ", bad);
        /* the bound is tight on ordinary rows (rows 0-4 above are built to be
         * hard: a subnormal row makes every latent a candidate) */
        bad = check_model(&s, x + 5 * (size_t)d, B - 5, 0, &cpr);
        CHECK(bad == 0);
        fprintf(stderr, "  d %d n %d k %d: %.1f F32 candidates per row\n", d, n, k, cpr);
        CHECK(cpr < 1.25 * k + 4);
        free(x);
        sf_sae_free(&s);
    }
}

/* Wide rows (d 2048): the F32 candidates are computed in blocks of 128 rows
 * (their inputs fill ~1 MB), three blocks here. */
TEST(prefilter_row_blocks) {
    const int d = 2048, n = 1024, k = 32, B = 300;
    sf_sae s;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 5) == 0);
    float *x = malloc((size_t)B * d * sizeof(float));
    for (int i = 0; i < B * d; i++)
        x[i] = sf_rng_normal(&rng);
    double cpr = 0;
    int bad = check_model(&s, x, B, 0, &cpr);
    CHECK_MSG(bad == 0, "%d rows differ", bad);
    bad = check_model(&s, x, B, 40, &cpr);
    CHECK_MSG(bad == 0, "AuxK: %d rows differ", bad);
    free(x);
    sf_sae_free(&s);
}

/* Training through the pre-filter: AdamW re-quantises W_enc for the next
 * step; the result must be bit-identical to quantising afresh every step
 * (sf_sae_trainer_model_changed), with and without dead-latent resampling
 * (which rewrites W_enc rows after AdamW and must mark the copy stale), and
 * the pre-filter must have run. */
static void train_run(int fresh_each_step, int resample, sf_sae *s, sf_sae_timing *tm) {
    const int d = 48, n = 1024, k = 8, B = 100;
    CHECK(sf_sae_init(s, SF_SAE_TOPK, d, n, k, 5) == 0);
    sf_sae_train_opts o;
    sf_sae_train_opts_default(&o);
    o.lr = 1e-3;
    o.lr_warmup_steps = 0;
    if (resample) { /* dead after one batch, resampled every other step (and AuxK) */
        o.bodycount = B;
        o.resample_every = 2;
    }
    sf_sae_trainer *t = sf_sae_trainer_new(s, &o, B);
    sf_rng r;
    sf_rng_seed(&r, 3);
    float *x = malloc((size_t)B * d * sizeof(float));
    for (int step = 0; step < 6; step++) {
        for (int i = 0; i < B * d; i++)
            x[i] = sf_rng_normal(&r);
        if (fresh_each_step) sf_sae_trainer_model_changed(t);
        CHECK(sf_sae_trainer_step(t, x, B, NULL) == 0);
    }
    *tm = *sf_sae_trainer_timing(t);
    sf_sae_trainer_free(t);
    free(x);
}

TEST(prefilter_training_fused) {
    setenv("SAEFLOW_PREFILTER", "1", 1);
    for (int resample = 0; resample <= 1; resample++) {
        sf_sae a, b;
        sf_sae_timing ta, tb;
        train_run(0, resample, &a, &ta);
        train_run(1, resample, &b, &tb);
        CHECK(ta.pf_rows == 600 && tb.pf_rows == 600);
        CHECK(memcmp(a.W_enc, b.W_enc, (size_t)a.n * a.d * sizeof(float)) == 0);
        CHECK(memcmp(a.W_decT, b.W_decT, (size_t)a.n * a.d * sizeof(float)) == 0);
        CHECK(memcmp(a.b_enc, b.b_enc, (size_t)a.n * sizeof(float)) == 0);
        if (resample) { /* resampling did rewrite rows: differs from the plain run */
            sf_sae c;
            sf_sae_timing tc;
            train_run(0, 0, &c, &tc);
            CHECK(memcmp(a.W_enc, c.W_enc, (size_t)a.n * a.d * sizeof(float)) != 0);
            sf_sae_free(&c);
        }
        sf_sae_free(&a);
        sf_sae_free(&b);
    }
    unsetenv("SAEFLOW_PREFILTER");
}

/* sf_sae_encoder through the pre-filter: the brute-force F32 TopK, sorted,
 * whether the rows come in one call or in slices from parallel threads. */
TEST(prefilter_encoder) {
    setenv("SAEFLOW_PREFILTER", "1", 1);
    const int d = 80, n = 2048, k = 24, B = 300;
    sf_sae s;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 77) == 0);
    for (int q = 0; q < d; q++)
        s.b_dec[q] = 0.1f * (float)(q % 5);
    float *x = malloc((size_t)B * d * sizeof(float)), *xc = malloc((size_t)d * sizeof(float));
    for (int i = 0; i < B * d; i++)
        x[i] = sf_rng_normal(&rng);
    sf_sae_codes c, c2;
    sf_sae_codes_alloc(&c, B, k);
    sf_sae_codes_alloc(&c2, B, k);
    sf_sae_encoder *e = sf_sae_encoder_new(&s);
    CHECK(sf_sae_encoder_run(e, x, B, &c) == 0);
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < B / 30; i++) { /* slices of 30 rows, several threads */
        sf_sae_codes v = {30, k, c2.idx + (size_t)i * 30 * k, c2.val + (size_t)i * 30 * k,
                          c2.cnt + i * 30};
        CHECK(sf_sae_encoder_run(e, x + (size_t)i * 30 * d, 30, &v) == 0);
    }
    CHECK(memcmp(c.cnt, c2.cnt, (size_t)B * 4) == 0);
    int32_t *all = malloc((size_t)n * 4), ri[24];
    float *v = malloc((size_t)n * 4), rv[24];
    for (int j = 0; j < n; j++)
        all[j] = j;
    int bad = 0, bad2 = 0;
    for (int r = 0; r < B; r++) {
        for (int q = 0; q < d; q++)
            xc[q] = x[(size_t)r * d + q] - s.b_dec[q];
        for (int j = 0; j < n; j++)
            v[j] = sae_dot(s.W_enc + (size_t)j * d, xc, d) + s.b_enc[j];
        int rc = sae_topk_relu_list(all, v, n, k, ri, rv);
        sae_sort_pairs(ri, rv, rc);
        int same = rc == c.cnt[r];
        for (int u = 0; same && u < rc; u++)
            same = ri[u] == c.idx[(size_t)r * k + u] &&
                   memcmp(&rv[u], &c.val[(size_t)r * k + u], 4) == 0;
        bad += !same;
        bad2 += memcmp(c.idx + (size_t)r * k, c2.idx + (size_t)r * k, (size_t)c.cnt[r] * 4) ||
                memcmp(c.val + (size_t)r * k, c2.val + (size_t)r * k, (size_t)c.cnt[r] * 4);
    }
    CHECK_MSG(bad == 0, "%d rows differ from brute force", bad);
    CHECK_MSG(bad2 == 0, "%d rows differ between one call and slices", bad2);
    sf_sae_encoder_free(e);
    sf_sae_codes_free(&c);
    sf_sae_codes_free(&c2);
    free(x), free(xc), free(all), free(v);
    sf_sae_free(&s);
    unsetenv("SAEFLOW_PREFILTER");
}

int main(void) {
    sf_rng_seed(&rng, 2024);
    RUN(prefilter_exact);
    RUN(prefilter_row_blocks);
    RUN(prefilter_training_fused);
    RUN(prefilter_encoder);
    return test_summary();
}
