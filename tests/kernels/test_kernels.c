/* Kernel layer against straightforward reference loops in double precision. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h" /* sf_gemm_half_force */
#include "test.h"

static sf_rng rng;

static float *randn(size_t n, float scale) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = sf_rng_normal(&rng) * scale;
    return x;
}

/* max |a - b| / max(|b|, tiny): the relative-error norm used throughout. */
static double rel_err(const float *a, const double *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || d != d) md = d != d ? INFINITY : d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

static void ref_linear(const float *x, int64_t M, int64_t K, const float *W, int64_t N,
                       const float *b, double *y) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = b ? b[n] : 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)x[m * K + k] * W[n * K + k];
            y[m * N + n] = s;
        }
}

TEST(weight_make_and_bf16) {
    float src[5] = {1.0f, -2.5f, 3.14159265f, 1.00390625f /* tie: 1 + 2^-8 */,
                    1.01171875f /* 1+3*2^-8 */};
    int64_t shape[1] = {5};
    sf_weight w;
    CHECK(sf_weight_make(&w, SF_DT_F32, SF_DT_F32, src, 1, shape) == 0);
    CHECK(w.data == (const void *)src && !w.owned); /* zero-copy */
    sf_weight_free(&w);
    CHECK(sf_weight_make(&w, SF_DT_BF16, SF_DT_F32, src, 1, shape) == 0);
    CHECK(w.owned != NULL && w.dtype == SF_DT_BF16);
    const uint16_t *h = w.data;
    CHECK(h[0] == 0x3f80 && h[1] == 0xc020);
    CHECK(h[3] == 0x3f80); /* ties to even: 1 + 2^-8 -> 1.0 */
    CHECK(h[4] == 0x3f82); /* 1 + 3*2^-8 -> 1 + 2^-6 (even) */
    float back[5];
    sf_weight_rows_f32(&w, 0, 1, back); /* 1-D: one "row" of one element */
    CHECK(back[0] == 1.0f);
    sf_weight w2;
    CHECK(sf_weight_make(&w2, SF_DT_F32, SF_DT_BF16, w.data, 1, shape) == 0);
    CHECK(((const float *)w2.data)[1] == -2.5f);
    CHECK_NEAR(((const float *)w2.data)[2], 3.140625, 0);
    sf_weight_free(&w2);
    sf_weight_free(&w);
    /* unaligned F32 source is copied, not aliased */
    unsigned char raw[4 * 5 + 1];
    memcpy(raw + 1, src, sizeof src);
    CHECK(sf_weight_make(&w, SF_DT_F32, SF_DT_F32, raw + 1, 1, shape) == 0);
    CHECK(w.owned != NULL && ((const float *)w.data)[2] == src[2]);
    sf_weight_free(&w);
    /* F16 storage exists now; integer storage or sources do not */
    CHECK(sf_weight_make(&w, SF_DT_I32, SF_DT_F32, src, 1, shape) == -1);
    CHECK(sf_weight_make(&w, SF_DT_F32, SF_DT_I32, src, 1, shape) == -1);
}

/* F16 storage: sf_linear equals F32 math (double reference) on the
 * F16-rounded weights, widened here by the scalar converter so the kernel's
 * vector path (F16C / AVX-512 where built) is checked against it. */
TEST(linear_f16) {
    /* widening: every F16 bit pattern, through the bulk path (vector body and
     * tail) against the scalar one, NaNs included (both quiet them) */
    uint16_t *all = malloc(65537 * sizeof(uint16_t));
    for (uint32_t i = 0; i < 65537; i++)
        all[i] = (uint16_t)(i * 40503u); /* odd multiplier: a permutation, 65537 = tail */
    int64_t sall[2] = {1, 65537};
    sf_weight wa;
    CHECK(sf_weight_make(&wa, SF_DT_F16, SF_DT_F16, all, 2, sall) == 0);
    CHECK(wa.owned == NULL); /* zero-copy */
    float *wide = malloc(65537 * sizeof(float));
    sf_weight_rows_f32(&wa, 0, 1, wide);
    int bad = 0;
    for (int i = 0; i < 65537; i++) {
        float r = sf_f16_to_f32(all[i]);
        bad += memcmp(&r, &wide[i], 4) != 0;
    }
    CHECK_MSG(bad == 0, "%d F16 patterns widen differently", bad);
    free(wide), free(all);

    const int64_t M = 37, K = 70, N = 45;
    float *x = randn((size_t)(M * K), 1), *W = randn((size_t)(N * K), 0.2f),
          *b = randn((size_t)N, 1), *Wr = malloc(sizeof(float) * (size_t)(N * K)),
          *y = malloc(sizeof(float) * (size_t)(M * N));
    double *ref = malloc(sizeof(double) * (size_t)(M * N));
    int64_t shape[2] = {N, K};
    sf_weight wh;
    CHECK(sf_weight_make(&wh, SF_DT_F16, SF_DT_F32, W, 2, shape) == 0);
    CHECK(wh.dtype == SF_DT_F16 && wh.owned != NULL);
    const uint16_t *h = wh.data;
    for (int64_t i = 0; i < N * K; i++) {
        CHECK(h[i] == sf_f32_to_f16(W[i])); /* one rounding, nearest even */
        Wr[i] = sf_f16_to_f32(h[i]);
    }
    ref_linear(x, M, K, Wr, N, b, ref);
    sf_linear(x, M, K, &wh, b, y, N, 0);
    CHECK_MSG(rel_err(y, ref, (size_t)(M * N)) < 1e-6, "f16");
    /* F16 -> F16 keeps the bits; F16 -> F32 widens exactly */
    sf_weight w2;
    CHECK(sf_weight_make(&w2, SF_DT_F32, SF_DT_F16, wh.data, 2, shape) == 0);
    CHECK(memcmp(w2.data, Wr, sizeof(float) * (size_t)(N * K)) == 0);
    sf_weight_free(&w2);
    /* several panels on one thread (16 MB of scratch: 255 rows of K = 16400);
     * 12 rows: above the direct small-M route (linear_small_m) */
    sf_kernels_set_threads(1);
    const int64_t K2 = 16400, N2 = 300, M2 = 12;
    float *x2 = randn((size_t)(M2 * K2), 1), *W2 = randn((size_t)(N2 * K2), 0.01f);
    int64_t shape2[2] = {N2, K2};
    sf_weight wh2, wr2;
    CHECK(sf_weight_make(&wh2, SF_DT_F16, SF_DT_F32, W2, 2, shape2) == 0);
    CHECK(sf_weight_make(&wr2, SF_DT_F32, SF_DT_F16, wh2.data, 2, shape2) == 0);
    double *ref3 = malloc(sizeof(double) * (size_t)(M2 * N2));
    float *y3 = malloc(sizeof(float) * (size_t)(M2 * N2));
    ref_linear(x2, M2, K2, wr2.data, N2, NULL, ref3);
    sf_linear(x2, M2, K2, &wh2, NULL, y3, N2, 0);
    CHECK_MSG(rel_err(y3, ref3, (size_t)(M2 * N2)) < 1e-5, "f16 panels");
    sf_kernels_set_threads(2);
    sf_weight_free(&wh2), sf_weight_free(&wr2), sf_weight_free(&wh);
    free(x2), free(W2), free(ref3), free(y3);
    free(x), free(W), free(b), free(Wr), free(y), free(ref);
}

/* One BF16 (dt 0) or F16 (dt 1) linear of random x (M, K) and W (N, K)
 * with bias into y with row stride ldy = N + 3: against double math on the
 * rounded weights, padding columns untouched, accumulate (y += x W^T + b),
 * and, when `same_bits`, 1 and 2 threads bit for bit. */
static void check_half_linear(int64_t M, int64_t K, int64_t N, int dt, int same_bits,
                              const char *what) {
    const int64_t ldy = N + 3;
    const char *dn = dt ? "f16" : "bf16";
    float *x = randn((size_t)(M * K), 1), *W = randn((size_t)(N * K), 0.05f),
          *b = randn((size_t)N, 1);
    int64_t shape[2] = {N, K};
    sf_weight w, wr;
    sf_dtype sd = dt ? SF_DT_F16 : SF_DT_BF16;
    CHECK(sf_weight_make(&w, sd, SF_DT_F32, W, 2, shape) == 0);
    CHECK(sf_weight_make(&wr, SF_DT_F32, sd, w.data, 2, shape) == 0);
    double *ref = malloc(sizeof(double) * (size_t)(M * N));
    float *y1 = malloc(sizeof(float) * (size_t)(M * ldy)),
          *y2 = malloc(sizeof(float) * (size_t)(M * ldy)),
          *yc = malloc(sizeof(float) * (size_t)(M * N));
    ref_linear(x, M, K, wr.data, N, b, ref);
    for (int64_t i = 0; i < M * ldy; i++)
        y1[i] = y2[i] = 7.0f;
    sf_kernels_set_threads(1);
    sf_linear(x, M, K, &w, b, y1, ldy, 0);
    sf_kernels_set_threads(2);
    sf_linear(x, M, K, &w, b, y2, ldy, 0);
    if (same_bits)
        CHECK_MSG(memcmp(y1, y2, sizeof(float) * (size_t)(M * ldy)) == 0,
                  "%s %s M %lld K %lld N %lld: 1 vs 2 threads", what, dn, (long long)M,
                  (long long)K, (long long)N);
    for (int64_t m = 0; m < M; m++)
        memcpy(yc + m * N, y2 + m * ldy, sizeof(float) * (size_t)N);
    double e = rel_err(yc, ref, (size_t)(M * N));
    CHECK_MSG(e < 1e-6, "%s %s M %lld K %lld N %lld: %g", what, dn, (long long)M, (long long)K,
              (long long)N, e);
    int pad = 1;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = N; n < ldy; n++)
            pad &= y2[m * ldy + n] == 7.0f;
    CHECK_MSG(pad, "%s %s: padding columns written", what, dn);
    sf_linear(x, M, K, &w, b, y2, ldy, 1);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++)
            yc[m * N + n] = y2[m * ldy + n] / 2;
    CHECK_MSG(rel_err(yc, ref, (size_t)(M * N)) < 1e-6, "%s %s accumulate M %lld", what, dn,
              (long long)M);
    sf_weight_free(&w), sf_weight_free(&wr);
    free(x), free(W), free(b), free(ref), free(y1), free(y2), free(yc);
    sf_kernels_set_threads(0);
}

/* BF16/F16 weights with at most 4 rows of x: dot products straight from the
 * stored weights (linear.c), with a K that is not a multiple of the 64
 * partial sums; M 5 goes to the GEMM route for the same checks. */
TEST(linear_small_m) {
    for (int dt = 0; dt < 2; dt++)
        for (int64_t M = 1; M <= 5; M += 2)
            check_half_linear(M, 3000 + 37, 700, dt, M <= 4 || sf_gemm_half_isa(), "small M");
}

/* sf_gemm_half (gemm_half.c): BF16/F16 weights widened inside the GEMM's
 * packing, on every route this CPU has. Shapes cross each blocking edge: M
 * not a multiple of the micro-tile rows (8 / 6), N not a multiple of its
 * columns (48 / 16) nor of the W block (240 / 256), K past one and two K blocks
 * (384 / 256) with a tail that is no multiple of the 16 (8) k the packing
 * transposes at once, small N (rows split between threads), and an x too
 * large for one packed block (several M blocks). Every output is one
 * thread's sum in k order whatever the schedule, so 1 and 2 threads must
 * give the same bits. */
TEST(linear_half_gemm) {
    static const int64_t shapes[][3] = {/* M, K, N */
                                        {5, 17, 33},    {13, 400, 70}, {37, 785, 300},
                                        {100, 1000, 1}, {6, 16, 16},   {6000, 3000, 8}};
    static const char *isas[] = {"avx512", "avx2"};
    int routes = 0;
    for (int r = 0; r < 2; r++) {
        if (sf_gemm_half_force(isas[r])) continue;
        routes++;
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int dt = 0; dt < 2; dt++)
                if (s != 5 || !dt) /* the large case once per route */
                    check_half_linear(shapes[s][0], shapes[s][1], shapes[s][2], dt, 1, isas[r]);
    }
    sf_gemm_half_force(NULL);
    if (!routes) printf("   (no AVX2 on this CPU: sf_linear widens panels instead)\n");
}

TEST(linear_f32_bf16) {
    const int64_t M = 37, K = 70, N = 45, ldy = 50;
    float *x = randn((size_t)(M * K), 1), *W = randn((size_t)(N * K), 0.2f),
          *b = randn((size_t)N, 1);
    double *ref = malloc(sizeof(double) * (size_t)(M * N));
    float *y = calloc((size_t)(M * ldy), sizeof(float));
    int64_t shape[2] = {N, K};
    sf_weight w;
    CHECK(sf_weight_make(&w, SF_DT_F32, SF_DT_F32, W, 2, shape) == 0);

    ref_linear(x, M, K, W, N, b, ref);
    for (int64_t i = 0; i < M * ldy; i++)
        y[i] = 99.0f; /* padding columns must survive */
    sf_linear(x, M, K, &w, b, y, ldy, 0);
    float *yc = malloc(sizeof(float) * (size_t)(M * N));
    for (int64_t m = 0; m < M; m++)
        memcpy(yc + m * N, y + m * ldy, sizeof(float) * (size_t)N);
    CHECK_MSG(rel_err(yc, ref, (size_t)(M * N)) < 1e-6, "f32 bias");
    CHECK(y[N] == 99.0f && y[ldy - 1] == 99.0f);

    /* accumulate: y += x W^T (no bias) */
    sf_linear(x, M, K, &w, NULL, y, ldy, 1);
    ref_linear(x, M, K, W, N, NULL, ref + 0);
    double *ref2 = malloc(sizeof(double) * (size_t)(M * N));
    ref_linear(x, M, K, W, N, b, ref2);
    for (int64_t i = 0; i < M * N; i++)
        ref2[i] += ref[i];
    for (int64_t m = 0; m < M; m++)
        memcpy(yc + m * N, y + m * ldy, sizeof(float) * (size_t)N);
    CHECK_MSG(rel_err(yc, ref2, (size_t)(M * N)) < 1e-6, "accumulate");

    /* BF16 storage: equals F32 compute on the rounded weights */
    sf_weight wb, wr;
    CHECK(sf_weight_make(&wb, SF_DT_BF16, SF_DT_F32, W, 2, shape) == 0);
    CHECK(sf_weight_make(&wr, SF_DT_F32, SF_DT_BF16, wb.data, 2, shape) == 0);
    ref_linear(x, M, K, wr.data, N, b, ref);
    sf_linear(x, M, K, &wb, b, yc, N, 0);
    CHECK_MSG(rel_err(yc, ref, (size_t)(M * N)) < 1e-6, "bf16");
    /* BF16 in several panels: on one thread, 16 MB of F32 scratch holds 255
     * rows of K = 16400, so the 300 rows take two panels (256 + 44); 12 rows
     * of x, above the direct small-M route (linear_small_m). */
    sf_kernels_set_threads(1);
    const int64_t K2 = 16400, N2 = 300, M2 = 12;
    float *x2 = randn((size_t)(M2 * K2), 1), *W2 = randn((size_t)(N2 * K2), 0.01f);
    int64_t shape2[2] = {N2, K2};
    sf_weight wb2, wr2;
    CHECK(sf_weight_make(&wb2, SF_DT_BF16, SF_DT_F32, W2, 2, shape2) == 0);
    CHECK(sf_weight_make(&wr2, SF_DT_F32, SF_DT_BF16, wb2.data, 2, shape2) == 0);
    double *ref3 = malloc(sizeof(double) * (size_t)(M2 * N2));
    float *y3 = malloc(sizeof(float) * (size_t)(M2 * N2));
    ref_linear(x2, M2, K2, wr2.data, N2, NULL, ref3);
    sf_linear(x2, M2, K2, &wb2, NULL, y3, N2, 0);
    CHECK_MSG(rel_err(y3, ref3, (size_t)(M2 * N2)) < 1e-5, "bf16 panels");
    sf_kernels_set_threads(2);
    sf_weight_free(&wb2);
    sf_weight_free(&wr2);
    free(x2), free(W2), free(ref3), free(y3);
    sf_weight_free(&wb);
    sf_weight_free(&wr);
    sf_weight_free(&w);
    free(x), free(W), free(b), free(ref), free(ref2), free(y), free(yc);
}

TEST(norms) {
    const int64_t M = 9, D = 33;
    float *x = randn((size_t)(M * D), 3), *g = randn((size_t)D, 1), *bb = randn((size_t)D, 1);
    for (int64_t i = 0; i < M * D; i++)
        x[i] += 5.0f; /* a large mean tests the centring */
    float *y = malloc(sizeof(float) * (size_t)(M * D));
    double *r = malloc(sizeof(double) * (size_t)(M * D));
    for (int affine = 0; affine < 2; affine++) {
        sf_layernorm(x, y, M, D, affine ? g : NULL, affine ? bb : NULL, 1e-5f);
        for (int64_t m = 0; m < M; m++) {
            double mu = 0, var = 0;
            for (int64_t i = 0; i < D; i++)
                mu += x[m * D + i];
            mu /= D;
            for (int64_t i = 0; i < D; i++)
                var += (x[m * D + i] - mu) * (x[m * D + i] - mu);
            var /= D;
            for (int64_t i = 0; i < D; i++) {
                double t = (x[m * D + i] - mu) / sqrt(var + 1e-5);
                r[m * D + i] = affine ? t * g[i] + bb[i] : t;
            }
        }
        CHECK_MSG(rel_err(y, r, (size_t)(M * D)) < 1e-6, "layernorm affine=%d", affine);
    }
    sf_rmsnorm(x, y, M, D, g, 1e-6f);
    for (int64_t m = 0; m < M; m++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++)
            ss += (double)x[m * D + i] * x[m * D + i];
        for (int64_t i = 0; i < D; i++)
            r[m * D + i] = x[m * D + i] / sqrt(ss / D + 1e-6) * g[i];
    }
    CHECK_MSG(rel_err(y, r, (size_t)(M * D)) < 1e-6, "rmsnorm");
    /* in place */
    memcpy(y, x, sizeof(float) * (size_t)(M * D));
    sf_rmsnorm(y, y, M, D, g, 1e-6f);
    CHECK(rel_err(y, r, (size_t)(M * D)) < 1e-6);
    free(x), free(g), free(bb), free(y), free(r);
}

TEST(softmax_and_activations) {
    float x[3][4] = {
        {1, 2, 3, 4}, {1000, -INFINITY, 999, 1000}, {-INFINITY, -INFINITY, -INFINITY, -INFINITY}};
    sf_softmax_rows(&x[0][0], 3, 4);
    double e[4] = {exp(-3), exp(-2), exp(-1), 1}, s = e[0] + e[1] + e[2] + e[3];
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(x[0][i], e[i] / s, 1e-7);
    double s1 = 2 + exp(-1);
    CHECK_NEAR(x[1][0], 1 / s1, 1e-7);
    CHECK(x[1][1] == 0.0f);
    CHECK_NEAR(x[1][2], exp(-1) / s1, 1e-7);
    for (int i = 0; i < 4; i++)
        CHECK(x[2][i] == 0.0f);

    enum { n = 2001 };
    static float v[n];
    double worst[6] = {0};
    for (int a = SF_ACT_IDENTITY; a <= SF_ACT_RELU; a++) {
        for (int i = 0; i < n; i++)
            v[i] = -20.0f + 40.0f * (float)i / (n - 1);
        sf_activation(v, n, (sf_act)a);
        for (int i = 0; i < n; i++) {
            double t = (double)(-20.0f + 40.0f * (float)i / (n - 1));
            double r = t;
            switch ((sf_act)a) {
            case SF_ACT_IDENTITY:
                r = t;
                break;
            case SF_ACT_QUICK_GELU:
                r = t / (1 + exp(-1.702 * t));
                break;
            case SF_ACT_GELU:
                r = 0.5 * t * (1 + erf(t / sqrt(2.0)));
                break;
            case SF_ACT_GELU_TANH:
                r = 0.5 * t * (1 + tanh(sqrt(2 / M_PI) * (t + 0.044715 * t * t * t)));
                break;
            case SF_ACT_SILU:
                r = t / (1 + exp(-t));
                break;
            case SF_ACT_RELU:
                r = t > 0 ? t : 0;
                break;
            }
            /* absolute error relative to max(1, |x|): the activations are ~x or ~0 */
            double d = fabs(v[i] - r) / (fabs(t) > 1 ? fabs(t) : 1);
            if (d > worst[a]) worst[a] = d;
        }
        CHECK_MSG(worst[a] < 1e-6, "%s: worst %g", sf_act_name((sf_act)a), worst[a]);
    }
    sf_act act;
    CHECK(sf_act_parse("quick_gelu", &act) == 0 && act == SF_ACT_QUICK_GELU);
    CHECK(sf_act_parse("gelu", &act) == 0 && act == SF_ACT_GELU);
    CHECK(sf_act_parse("gelu_pytorch_tanh", &act) == 0 && act == SF_ACT_GELU_TANH);
    CHECK(sf_act_parse("mish", &act) == -1);

    float y[5] = {1, 2, 3, 4, 5}, z[5] = {1, 1, 1, 1, -5};
    sf_add(y, z, 5);
    CHECK(y[0] == 2 && y[4] == 0);
}

/* Reference attention: q (B,Tq,ldq) etc. as in the header, in double. */
static void ref_attention(const sf_attn_shape *s, const float *q, const float *k, const float *v,
                          double *out) {
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < s->H; h++)
            for (int64_t i = 0; i < s->Tq; i++) {
                double sc[64], mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < s->Tk; j++) {
                    int ok = (!s->causal || j <= i + (s->Tk - s->Tq)) &&
                             (!s->key_mask || s->key_mask[b * s->Tk + j]);
                    double d = 0;
                    for (int64_t t = 0; t < s->Dh; t++)
                        d += (double)q[(b * s->Tq + i) * s->ldq + h * s->Dh + t] *
                             k[(b * s->Tk + j) * s->ldk + h * s->Dh + t];
                    sc[j] = ok ? d * s->scale : -INFINITY;
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int64_t j = 0; j < s->Tk; j++) {
                    sc[j] = sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                    sum += sc[j];
                }
                for (int64_t t = 0; t < s->Dh; t++) {
                    double o = 0;
                    for (int64_t j = 0; j < s->Tk; j++)
                        o += sc[j] * v[(b * s->Tk + j) * s->ldv + h * s->Dh + t];
                    out[(b * s->Tq + i) * s->H * s->Dh + h * s->Dh + t] = sum > 0 ? o / sum : 0;
                }
            }
}

TEST(attention) {
    const int64_t B = 3, T = 7, H = 3, Dh = 5, D = H * Dh;
    /* fused qkv buffer (B, T, 3D), output with a wider stride */
    float *qkv = randn((size_t)(B * T * 3 * D), 1);
    int32_t mask[3 * 7] = {1, 1, 1, 1, 1, 0, 0, /**/ 1, 1, 1, 1, 1, 1, 1, /**/ 0, 1, 1, 0, 1, 1, 1};
    const int64_t ldo = D + 3;
    float *out = malloc(sizeof(float) * (size_t)(B * T * ldo)),
          *oc = malloc(sizeof(float) * (size_t)(B * T * D));
    double *ref = malloc(sizeof(double) * (size_t)(B * T * D));
    for (int variant = 0; variant < 4; variant++) {
        sf_attn_shape s = {.B = B,
                           .Tq = T,
                           .Tk = T,
                           .H = H,
                           .Dh = Dh,
                           .ldq = 3 * D,
                           .ldk = 3 * D,
                           .ldv = 3 * D,
                           .ldo = ldo,
                           .scale = 1.0f / sqrtf((float)Dh),
                           .causal = variant & 1,
                           .key_mask = (variant & 2) ? mask : NULL};
        sf_attention(&s, qkv, qkv + D, qkv + 2 * D, out);
        ref_attention(&s, qkv, qkv + D, qkv + 2 * D, ref);
        for (int64_t r = 0; r < B * T; r++)
            memcpy(oc + r * D, out + r * ldo, sizeof(float) * (size_t)D);
        CHECK_MSG(rel_err(oc, ref, (size_t)(B * T * D)) < 2e-6, "variant %d: %g", variant,
                  rel_err(oc, ref, (size_t)(B * T * D)));
    }
    /* causal + mask where the first key is padding: row 0 of batch 2 sees
     * nothing and must be zeros, not NaN */
    sf_attn_shape s = {.B = B,
                       .Tq = T,
                       .Tk = T,
                       .H = H,
                       .Dh = Dh,
                       .ldq = 3 * D,
                       .ldk = 3 * D,
                       .ldv = 3 * D,
                       .ldo = ldo,
                       .scale = 0.5f,
                       .causal = 1,
                       .key_mask = mask};
    sf_attention(&s, qkv, qkv + D, qkv + 2 * D, out);
    for (int64_t t = 0; t < D; t++)
        CHECK(out[(2 * T) * ldo + t] == 0.0f);
    /* Tq < Tk (a query suffix), separate buffers */
    const int64_t Tq = 2;
    float *q = randn((size_t)(B * Tq * D), 1);
    sf_attn_shape s2 = {.B = B,
                        .Tq = Tq,
                        .Tk = T,
                        .H = H,
                        .Dh = Dh,
                        .ldq = D,
                        .ldk = 3 * D,
                        .ldv = 3 * D,
                        .ldo = D,
                        .scale = 0.3f,
                        .causal = 1,
                        .key_mask = NULL};
    sf_attention(&s2, q, qkv + D, qkv + 2 * D, oc);
    ref_attention(&s2, q, qkv + D, qkv + 2 * D, ref);
    CHECK(rel_err(oc, ref, (size_t)(B * Tq * D)) < 2e-6);

    /* Ragged batch: sequences of 7, 3 and 5 rows packed back to back (15 rows
     * of the fused buffer), each against a one-sequence reference; then one
     * query row per sequence against its keys (the one-token layer's shape). */
    const int64_t off[4] = {0, 7, 10, 15}, qone[4] = {0, 1, 2, 3};
    int32_t pmask[15] = {1, 1, 1, 1, 1, 0, 0, /**/ 0, 1, 1, /**/ 1, 1, 0, 1, 1};
    for (int variant = 0; variant < 4; variant++) {
        sf_attn_shape r = {.B = 3,
                           .H = H,
                           .Dh = Dh,
                           .ldq = 3 * D,
                           .ldk = 3 * D,
                           .ldv = 3 * D,
                           .ldo = D,
                           .scale = 0.4f,
                           .causal = variant & 1,
                           .key_mask = (variant & 2) ? pmask : NULL,
                           .q_off = off,
                           .k_off = off};
        sf_attention(&r, qkv, qkv + D, qkv + 2 * D, oc);
        for (int64_t b = 0; b < 3; b++) {
            int64_t n = off[b + 1] - off[b];
            sf_attn_shape one = r;
            one.B = 1, one.Tq = n, one.Tk = n, one.q_off = one.k_off = NULL;
            one.key_mask = r.key_mask ? pmask + off[b] : NULL;
            const float *base = qkv + off[b] * 3 * D;
            ref_attention(&one, base, base + D, base + 2 * D, ref + off[b] * D);
        }
        CHECK_MSG(rel_err(oc, ref, (size_t)(15 * D)) < 2e-6, "ragged variant %d", variant);
        /* one query per sequence (separate q rows 0..2) against its keys */
        r.q_off = qone, r.ldq = D, r.causal = 0;
        sf_attention(&r, q, qkv + D, qkv + 2 * D, oc);
        for (int64_t b = 0; b < 3; b++) {
            int64_t n = off[b + 1] - off[b];
            sf_attn_shape one = r;
            one.B = 1, one.Tq = 1, one.Tk = n, one.q_off = one.k_off = NULL;
            one.key_mask = r.key_mask ? pmask + off[b] : NULL;
            const float *kb = qkv + off[b] * 3 * D;
            ref_attention(&one, q + b * D, kb + D, kb + 2 * D, ref + b * D);
        }
        CHECK_MSG(rel_err(oc, ref, (size_t)(3 * D)) < 2e-6, "one-token ragged variant %d", variant);
    }
    free(q), free(qkv), free(out), free(oc), free(ref);
}

TEST(patch_embed) {
    const int64_t B = 2, C = 3, Hh = 14, Ww = 11, p = 4, D = 6; /* 3x2 grid; ragged edges ignored */
    float *px = randn((size_t)(B * C * Hh * Ww), 1), *W = randn((size_t)(D * C * p * p), 0.3f),
          *bias = randn(D, 1);
    int64_t shape[2] = {D, C * p * p};
    sf_weight w;
    CHECK(sf_weight_make(&w, SF_DT_F32, SF_DT_F32, W, 2, shape) == 0);
    const int64_t gh = Hh / p, gw = Ww / p, G = gh * gw;
    float *out = malloc(sizeof(float) * (size_t)(B * G * D));
    double *ref = malloc(sizeof(double) * (size_t)(B * G * D));
    sf_patch_embed(px, B, C, Hh, Ww, p, &w, bias, out);
    for (int64_t b = 0; b < B; b++)
        for (int64_t gy = 0; gy < gh; gy++)
            for (int64_t gx = 0; gx < gw; gx++)
                for (int64_t d = 0; d < D; d++) {
                    double s = bias[d];
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t ky = 0; ky < p; ky++)
                            for (int64_t kx = 0; kx < p; kx++)
                                s += (double)W[((d * C + c) * p + ky) * p + kx] *
                                     px[((b * C + c) * Hh + gy * p + ky) * Ww + gx * p + kx];
                    ref[(b * G + gy * gw + gx) * D + d] = s;
                }
    CHECK(rel_err(out, ref, (size_t)(B * G * D)) < 1e-6);
    sf_weight_free(&w);
    free(px), free(W), free(bias), free(out), free(ref);
}

TEST(thread_count_independent) {
    /* Row kernels give bit-identical results for 1 and 2 threads. */
    const int64_t M = 300, D = 257;
    float *x = randn((size_t)(M * D), 2), *y1 = malloc(sizeof(float) * (size_t)(M * D)),
          *y2 = malloc(sizeof(float) * (size_t)(M * D));
    sf_kernels_set_threads(1);
    sf_layernorm(x, y1, M, D, NULL, NULL, 1e-5f);
    sf_softmax_rows(y1, M, D);
    sf_activation(y1, (size_t)(M * D), SF_ACT_GELU);
    sf_kernels_set_threads(2);
    sf_layernorm(x, y2, M, D, NULL, NULL, 1e-5f);
    sf_softmax_rows(y2, M, D);
    sf_activation(y2, (size_t)(M * D), SF_ACT_GELU);
    CHECK(memcmp(y1, y2, sizeof(float) * (size_t)(M * D)) == 0);
    /* sf_linear is NOT bit-identical across thread counts: a thread's slice
     * of output features changes the GEMM's blocking, and both OpenBLAS and
     * oneDNN then round some outputs differently (measured: ~1e-7 relative).
     * So only the error is bounded here. */
    const int64_t N = 1000;
    float *W = randn((size_t)(N * D), 0.1f), *z1 = malloc(sizeof(float) * (size_t)(M * N)),
          *z2 = malloc(sizeof(float) * (size_t)(M * N));
    double *zr = malloc(sizeof(double) * (size_t)(M * N));
    int64_t shape[2] = {N, D};
    sf_weight w;
    CHECK(sf_weight_make(&w, SF_DT_F32, SF_DT_F32, W, 2, shape) == 0);
    ref_linear(x, M, D, W, N, NULL, zr);
    sf_kernels_set_threads(1);
    sf_linear(x, M, D, &w, NULL, z1, N, 0);
    sf_kernels_set_threads(2);
    sf_linear(x, M, D, &w, NULL, z2, N, 0);
    CHECK(rel_err(z1, zr, (size_t)(M * N)) < 1e-6 && rel_err(z2, zr, (size_t)(M * N)) < 1e-6);
    free(zr);
    sf_weight_free(&w);
    free(W), free(z1), free(z2);
    CHECK(sf_kernels_threads() == 2);
    CHECK(strstr(sf_kernels_blas_info(), "core") != NULL);
    free(x), free(y1), free(y2);
}

/* sf_sgemm (whichever backend is built in) against a double loop: all four
 * transpose cases, leading dimensions wider than the matrices, alpha/beta,
 * and calls from inside a parallel region (one GEMM per thread on half the
 * rows, the way the kernels use it). */
TEST(sgemm_backend) {
    const int64_t M = 37, N = 45, K = 131, pad = 3;
    float *A = randn((size_t)((M + pad) * (K + pad)), 1),
          *B = randn((size_t)((N + pad) * (K + pad)), 1);
    float *C0 = randn((size_t)(M * (N + pad)), 1);
    float *C = malloc(sizeof(float) * (size_t)(M * (N + pad)));
    float *C2 = malloc(sizeof(float) * (size_t)(M * (N + pad)));
    double *ref = malloc(sizeof(double) * (size_t)(M * N));
    float *got = malloc(sizeof(float) * (size_t)(M * N));
    const float alpha = 0.75f, beta = -0.5f;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* op(A) (M, K): A is (M, K) or (K, M); op(B) (K, N): B is (K, N) or (N, K) */
            int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double acc = 0;
                    for (int64_t k = 0; k < K; k++) {
                        double a = ta ? A[k * lda + m] : A[m * lda + k];
                        double b = tb ? B[n * ldb + k] : B[k * ldb + n];
                        acc += a * b;
                    }
                    ref[m * N + n] = alpha * acc + beta * (double)C0[m * ldc + n];
                }
            memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
            sf_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            for (int64_t m = 0; m < M; m++) {
                memcpy(got + m * N, C + m * ldc, sizeof(float) * (size_t)N);
                for (int64_t n = N; n < ldc; n++) /* padding columns untouched */
                    CHECK(C[m * ldc + n] == C0[m * ldc + n]);
            }
            CHECK(rel_err(got, ref, (size_t)(M * N)) < 1e-6);
            memcpy(C2, C0, sizeof(float) * (size_t)(M * ldc));
            sf_kernels_set_threads(2);
#pragma omp parallel num_threads(2)
            {
                /* each thread one half of the rows of C, as sf_linear splits */
                int t = omp_get_thread_num();
                int64_t m0 = t ? M / 2 : 0, m1 = t ? M : M / 2;
                const float *At = ta ? A + m0 : A + m0 * lda;
                sf_sgemm(ta, tb, m1 - m0, N, K, alpha, At, lda, B, ldb, beta, C2 + m0 * ldc, ldc);
            }
            for (int64_t m = 0; m < M; m++) {
                memcpy(got + m * N, C2 + m * ldc, sizeof(float) * (size_t)N);
                for (int64_t n = N; n < ldc; n++)
                    CHECK(C2[m * ldc + n] == C0[m * ldc + n]);
            }
            CHECK(rel_err(got, ref, (size_t)(M * N)) < 1e-6);
        }
    /* K == 0: C = beta * C, as BLAS defines it */
    memcpy(C, C0, sizeof(float) * (size_t)(M * (N + pad)));
    sf_sgemm(0, 1, M, N, 0, alpha, A, K, B, K, 0.0f, C, N + pad);
    CHECK(C[0] == 0.0f && C[(M - 1) * (N + pad) + N - 1] == 0.0f);
    CHECK(strlen(sf_sgemm_backend()) > 0);
    free(A), free(B), free(C0), free(C), free(C2), free(ref), free(got);
}

/* The int16 GEMM against a plain int64 loop, on ragged shapes (rows not a
 * multiple of 12, columns not of 32, odd K), including values at the int16
 * extremes; and the quantizer's norm and residual claims. */
TEST(i16_gemm_and_quant) {
    const int64_t shapes[][3] = {{1, 1, 1},     {13, 33, 7},   {12, 32, 64},
                                 {25, 70, 129}, {40, 96, 300}, {30, 40, 1001}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t m = shapes[si][0], n = shapes[si][1], K = shapes[si][2];
        int16_t *a = malloc((size_t)(m * K) * 2), *b = malloc((size_t)(n * K) * 2);
        for (int64_t i = 0; i < m * K; i++)
            a[i] = (int16_t)((int32_t)sf_rng_below(&rng, 2001) - 1000);
        for (int64_t i = 0; i < n * K; i++)
            b[i] = (int16_t)((int32_t)sf_rng_below(&rng, 2001) - 1000);
        a[0] = -32767, b[0] = 32767; /* extremes in the first pair */
        int32_t *pa = sf_malloc_aligned((size_t)sf_i16_pack_a_size(m, K) * 4);
        int16_t *pb = sf_malloc_aligned((size_t)sf_i16_pack_b_size(n, K) * 2);
        int32_t *c = malloc((size_t)(m * (n + 3)) * 4);
        sf_i16_pack_a(a, m, K, K, pa);
        sf_i16_pack_b(b, n, K, K, pb);
        sf_i16_gemm_packed(m, n, K, pa, pb, c, n + 3);
        int bad = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                int64_t s = 0;
                for (int64_t q = 0; q < K; q++)
                    s += (int64_t)a[i * K + q] * b[j * K + q];
                bad += c[i * (n + 3) + j] != (int32_t)s;
            }
        CHECK_MSG(bad == 0, "shape %lld x %lld x %lld: %d wrong", (long long)m, (long long)n,
                  (long long)K, bad);
        free(a), free(b), free(c), sf_free_aligned(pa), sf_free_aligned(pb);
    }
    /* quantizer: ||q|| bound, reconstruction residual, and the dot bound */
    for (int rep = 0; rep < 50; rep++) {
        const int K = 1 + (int)sf_rng_below(&rng, 600);
        float *x = malloc((size_t)K * 4), *w = malloc((size_t)K * 4);
        for (int i = 0; i < K; i++) {
            x[i] = sf_rng_normal(&rng) * (rep % 7 == 0 && i == 3 ? 1000.0f : 1.0f);
            w[i] = sf_rng_normal(&rng) * 0.01f;
        }
        int16_t *qx = malloc((size_t)K * 2), *qw = malloc((size_t)K * 2);
        sf_quant16 sx, sw;
        sf_quant16_row(x, K, qx, &sx);
        sf_quant16_row(w, K, qw, &sw);
        double qq = 0, qxn = 0, exact = 0;
        for (int i = 0; i < K; i++) {
            qq += (double)qx[i] * qw[i];
            qxn += (double)qx[i] * qx[i];
            exact += (double)x[i] * w[i];
        }
        CHECK(sqrt(qxn) < SF_I16_QNORM);
        double approx = (double)sx.scale * sw.scale * qq;
        double bound = (double)sx.resid * sw.norm + (double)sx.qnorm * sw.resid;
        CHECK_MSG(fabs(exact - approx) <= bound, "K %d: |%g - %g| > %g", K, exact, approx, bound);
        /* the bound is tight enough to be useful: ~1e-4 of |x||w| */
        CHECK(bound < 1e-3 * (double)sx.norm * sw.norm);
        free(x), free(w), free(qx), free(qw);
    }
    float zero[5] = {0};
    int16_t qz[5];
    sf_quant16 sz;
    sf_quant16_row(zero, 5, qz, &sz);
    CHECK(sz.scale == 0 && sz.norm == 0 && sz.resid == 0 && qz[4] == 0);
}

int main(void) {
    sf_rng_seed(&rng, 1234);
    RUN(weight_make_and_bf16);
    RUN(linear_f32_bf16);
    RUN(linear_small_m);
    RUN(linear_half_gemm);
    RUN(linear_f16);
    RUN(norms);
    RUN(softmax_and_activations);
    RUN(attention);
    RUN(patch_embed);
    RUN(thread_count_independent);
    RUN(i16_gemm_and_quant);
    RUN(sgemm_backend);
    return test_summary();
}
