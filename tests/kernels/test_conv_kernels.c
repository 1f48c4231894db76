/* Convolution kernels (conv.c) against double-precision loops written from
 * torch's definitions (Conv2d on NCHW, GroupNorm, nearest interpolation).
 * SAEFLOW_CONV_PROFILE=1 also times a VAE-sized conv (the layout note). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"
#include "test.h"

static sf_rng rng;

static float *randn(size_t n, float scale) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = sf_rng_normal(&rng) * scale;
    return x;
}

static double rel_err(const float *a, const double *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || d != d) md = d != d ? INFINITY : d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

/* torch Conv2d on NCHW: xn (B, C, H, W), w (O, C, k, k) -> out (B, O, Ho, Wo) */
static void ref_conv(const float *xn, int64_t B, int64_t C, int64_t H, int64_t W, const float *w,
                     const float *bias, int64_t O, int64_t k, int64_t s, const int64_t pad[4],
                     double *out, int64_t Ho, int64_t Wo) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double acc = bias ? bias[o] : 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t ky = 0; ky < k; ky++)
                            for (int64_t kx = 0; kx < k; kx++) {
                                int64_t iy = oy * s - pad[0] + ky, ix = ox * s - pad[1] + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)xn[((b * C + c) * H + iy) * W + ix] *
                                       w[((o * C + c) * k + ky) * k + kx];
                            }
                    out[((b * O + o) * Ho + oy) * Wo + ox] = acc;
                }
}

/* One conv case: x built NCHW, run NHWC, compared NCHW. */
static void conv_case(int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t k, int64_t s,
                      int64_t pt, int64_t pl, int64_t pb, int64_t pr, int with_bias, int bf16) {
    /* 3x3 stride 1 goes through Winograd by default: run im2col too */
    const char *env = getenv("SAEFLOW_CONV_WINOGRAD");
    char *saved = env ? strdup(env) : NULL;
    for (int route = 0; route < (k == 3 && s == 1 ? 2 : 1); route++) {
        setenv("SAEFLOW_CONV_WINOGRAD", route ? "0" : "1", 1);
        int64_t pad[4] = {pt, pl, pb, pr};
        int64_t Ho = sf_conv2d_out_size(H, k, s, pt, pb), Wo = sf_conv2d_out_size(W, k, s, pl, pr);
        float *xn = randn((size_t)(B * C * H * W), 1), *w = randn((size_t)(O * C * k * k), 0.3f);
        float *bias = with_bias ? randn((size_t)O, 1) : NULL;
        int64_t wshape[2] = {O, C * k * k};
        sf_weight sw;
        CHECK(sf_weight_make(&sw, bf16 ? SF_DT_BF16 : SF_DT_F32, SF_DT_F32, w, 2, wshape) == 0);
        if (bf16) /* the reference uses the weights the kernel sees */
            for (int64_t i = 0; i < O * C * k * k; i++)
                w[i] = sf_bf16_to_f32(((const uint16_t *)sw.data)[i]);
        sf_conv2d_w cw;
        CHECK(sf_conv2d_pack(&cw, &sw, O, C, k, s, bias) == 0);
        CHECK(cw.wino == (k == 3 && s == 1 && !route));
        float *x = malloc(sizeof(float) * (size_t)(B * H * W * C));
        sf_nchw_to_nhwc(xn, x, B, C, H * W);
        size_t ny = (size_t)(B * Ho * Wo * O);
        float *y = malloc(sizeof(float) * ny), *yn = malloc(sizeof(float) * ny);
        double *ref = malloc(sizeof(double) * ny);
        ref_conv(xn, B, C, H, W, w, bias, O, k, s, pad, ref, Ho, Wo);
        sf_conv2d(x, B, H, W, &cw, pad, y, 0);
        sf_nhwc_to_nchw(y, yn, B, O, Ho * Wo);
        CHECK_MSG(rel_err(yn, ref, ny) < 2e-6,
                  "conv B%lld C%lld %lldx%lld O%lld k%lld s%lld wino %d: %g", (long long)B,
                  (long long)C, (long long)H, (long long)W, (long long)O, (long long)k,
                  (long long)s, cw.wino, rel_err(yn, ref, ny));
        /* accumulate: y += conv(x) */
        sf_conv2d(x, B, H, W, &cw, pad, y, 1);
        sf_nhwc_to_nchw(y, yn, B, O, Ho * Wo);
        for (size_t i = 0; i < ny; i++)
            ref[i] *= 2;
        CHECK_MSG(rel_err(yn, ref, ny) < 2e-6, "conv accumulate: %g", rel_err(yn, ref, ny));
        sf_conv2d_free(&cw);
        sf_weight_free(&sw);
        free(xn), free(w), free(bias), free(x), free(y), free(yn), free(ref);
    }
    if (saved)
        setenv("SAEFLOW_CONV_WINOGRAD", saved, 1);
    else
        unsetenv("SAEFLOW_CONV_WINOGRAD");
    free(saved);
}

TEST(conv2d_shapes) {
    conv_case(2, 3, 5, 7, 5, 3, 1, 1, 1, 1, 1, 1, 0);     /* odd sizes, padding 1 */
    conv_case(1, 4, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0);     /* 1x1 image: only the centre tap */
    conv_case(2, 6, 4, 3, 8, 1, 1, 0, 0, 0, 0, 1, 0);     /* 1x1: the direct GEMM */
    conv_case(1, 5, 6, 5, 4, 1, 1, 0, 0, 0, 0, 0, 0);     /* 1x1 without bias */
    conv_case(2, 3, 8, 6, 4, 3, 2, 0, 0, 1, 1, 1, 0);     /* encoder downsampler */
    conv_case(1, 3, 7, 9, 4, 3, 2, 0, 0, 1, 1, 1, 0);     /* ... odd input */
    conv_case(1, 2, 6, 6, 3, 5, 2, 2, 1, 0, 2, 1, 0);     /* other k, asymmetric pads */
    conv_case(1, 64, 40, 40, 32, 3, 1, 1, 1, 1, 1, 1, 0); /* 2 chunks, threads */
    conv_case(1, 16, 9, 11, 24, 3, 1, 1, 1, 1, 1, 1, 1);  /* BF16 storage */
    conv_case(2, 8, 63, 70, 8, 3, 1, 1, 1, 1, 1, 1, 0);   /* 4 Winograd chunks, odd H */
    conv_case(1, 4, 6, 7, 3, 3, 1, 0, 2, 1, 0, 1, 0);     /* stride 1, uneven pads */
}

TEST(conv2d_pack_errors) {
    float w[12] = {0};
    int64_t shape[2] = {2, 6};
    sf_weight sw;
    CHECK(sf_weight_make(&sw, SF_DT_F32, SF_DT_F32, w, 2, shape) == 0);
    sf_conv2d_w cw;
    CHECK(sf_conv2d_pack(&cw, &sw, 2, 3, 3, 1, NULL) == -1);
    CHECK_ERR_HAS("expected 2 x 3 x 3 x 3");
    CHECK(sf_conv2d_pack(&cw, &sw, 2, 6, 1, 1, NULL) == 0);
    sf_conv2d_free(&cw);
}

/* Conv outputs do not depend on the thread count: each chunk is one GEMM
 * of fixed shape on one thread. */
TEST(conv2d_threads) {
    const int64_t C = 32, H = 96, W = 80, O = 16; /* 1920 Winograd tiles: 4 chunks */
    float *x = randn((size_t)(H * W * C), 1), *w = randn((size_t)(O * C * 9), 0.2f);
    int64_t shape[2] = {O, C * 9}, pad[4] = {1, 1, 1, 1};
    sf_weight sw;
    sf_weight_make(&sw, SF_DT_F32, SF_DT_F32, w, 2, shape);
    sf_conv2d_w cw;
    CHECK(sf_conv2d_pack(&cw, &sw, O, C, 3, 1, NULL) == 0);
    float *y1 = malloc(sizeof(float) * (size_t)(H * W * O)),
          *y2 = malloc(sizeof(float) * (size_t)(H * W * O));
    sf_kernels_set_threads(1);
    sf_conv2d(x, 1, H, W, &cw, pad, y1, 0);
    sf_kernels_set_threads(2);
    sf_conv2d(x, 1, H, W, &cw, pad, y2, 0);
    CHECK(memcmp(y1, y2, sizeof(float) * (size_t)(H * W * O)) == 0);
    sf_conv2d_free(&cw);
    sf_weight_free(&sw);
    free(x), free(w), free(y1), free(y2);
}

static void ref_groupnorm(const float *x, double *y, int64_t B, int64_t HW, int64_t C, int64_t G,
                          const float *g, const float *bt, double eps, int silu) {
    int64_t cg = C / G;
    for (int64_t b = 0; b < B; b++)
        for (int64_t gi = 0; gi < G; gi++) {
            double mu = 0, var = 0, n = (double)(HW * cg);
            for (int64_t p = 0; p < HW; p++)
                for (int64_t c = gi * cg; c < (gi + 1) * cg; c++)
                    mu += x[(b * HW + p) * C + c];
            mu /= n;
            for (int64_t p = 0; p < HW; p++)
                for (int64_t c = gi * cg; c < (gi + 1) * cg; c++) {
                    double d = x[(b * HW + p) * C + c] - mu;
                    var += d * d;
                }
            var /= n;
            for (int64_t p = 0; p < HW; p++)
                for (int64_t c = gi * cg; c < (gi + 1) * cg; c++) {
                    double v = (x[(b * HW + p) * C + c] - mu) / sqrt(var + eps);
                    if (g) v = v * g[c] + bt[c];
                    if (silu) v = v / (1 + exp(-v));
                    y[(b * HW + p) * C + c] = v;
                }
        }
}

TEST(groupnorm) {
    const int64_t B = 2, HW = 300, C = 12, G = 4; /* HW > one statistics chunk */
    float *x = randn((size_t)(B * HW * C), 2), *g = randn((size_t)C, 1), *bt = randn((size_t)C, 1);
    for (int64_t i = 0; i < B * HW * C; i++)
        x[i] += (float)(i % C) - 3.0f; /* group means far from 0 test the variance */
    float *y = malloc(sizeof(float) * (size_t)(B * HW * C));
    double *r = malloc(sizeof(double) * (size_t)(B * HW * C));
    for (int affine = 0; affine < 2; affine++)
        for (int silu = 0; silu < 2; silu++) {
            sf_groupnorm(x, y, B, HW, C, G, affine ? g : NULL, affine ? bt : NULL, 1e-6f, silu);
            ref_groupnorm(x, r, B, HW, C, G, affine ? g : NULL, bt, 1e-6, silu);
            CHECK_MSG(rel_err(y, r, (size_t)(B * HW * C)) < 2e-6, "affine %d silu %d: %g", affine,
                      silu, rel_err(y, r, (size_t)(B * HW * C)));
        }
    /* in place, one group per channel and one group for all */
    for (int64_t gg = 1; gg <= C; gg += C - 1) {
        memcpy(y, x, sizeof(float) * (size_t)(B * HW * C));
        sf_groupnorm(y, y, B, HW, C, gg, g, bt, 1e-6f, 1);
        ref_groupnorm(x, r, B, HW, C, gg, g, bt, 1e-6, 1);
        CHECK_MSG(rel_err(y, r, (size_t)(B * HW * C)) < 2e-6, "G %lld in place", (long long)gg);
    }
    /* a constant group: var 0, output = beta up to the cancellation in
     * x a + (beta - mean a) with a = 1000 gamma, a few ulp of 5000 gamma;
     * torch's CPU GroupNorm uses the same form (measured: 3e-4 off beta for
     * this input, gamma ~ N(0, 1)). */
    for (int64_t i = 0; i < B * HW * C; i++)
        y[i] = 5.0f;
    sf_groupnorm(y, y, B, HW, C, G, g, bt, 1e-6f, 0);
    for (int64_t c = 0; c < C; c++)
        CHECK_NEAR(y[C + c], bt[c], 2 * fabs(5000.0 * g[c]) * 1.1920929e-7);
    free(x), free(g), free(bt), free(y), free(r);
}

TEST(upsample_and_layout) {
    const int64_t B = 2, H = 3, W = 5, C = 7;
    float *x = randn((size_t)(B * H * W * C), 1);
    float *y = malloc(sizeof(float) * (size_t)(B * 4 * H * W * C));
    sf_upsample_nearest2x(x, y, B, H, W, C);
    int bad = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < 2 * H; i++)
            for (int64_t j = 0; j < 2 * W; j++)
                for (int64_t c = 0; c < C; c++)
                    bad += y[((b * 2 * H + i) * 2 * W + j) * C + c] !=
                           x[((b * H + i / 2) * W + j / 2) * C + c];
    CHECK(bad == 0);
    float *n = malloc(sizeof(float) * (size_t)(B * H * W * C)),
          *back = malloc(sizeof(float) * (size_t)(B * H * W * C));
    sf_nhwc_to_nchw(x, n, B, C, H * W);
    CHECK(n[(1 * C + 2) * H * W + 4] == x[(1 * H * W + 4) * C + 2]);
    sf_nchw_to_nhwc(n, back, B, C, H * W);
    CHECK(memcmp(back, x, sizeof(float) * (size_t)(B * H * W * C)) == 0);
    free(x), free(y), free(n), free(back);
}

/* The measurement behind the NHWC choice in conv.c: share of a VAE-sized 3x3
 * conv spent in im2col. Only with SAEFLOW_CONV_PROFILE set. */
static void profile_case(int64_t C, int64_t H, int64_t W, int64_t O) {
    float *x = randn((size_t)(H * W * C), 1), *w = randn((size_t)(O * C * 9), 0.05f);
    int64_t shape[2] = {O, C * 9}, pad[4] = {1, 1, 1, 1};
    sf_weight sw;
    sf_weight_make(&sw, SF_DT_F32, SF_DT_F32, w, 2, shape);
    sf_conv2d_w cw;
    sf_conv2d_pack(&cw, &sw, O, C, 3, 1, NULL);
    float *y = malloc(sizeof(float) * (size_t)(H * W * O));
    sf_conv2d(x, 1, H, W, &cw, pad, y, 0); /* warm-up */
    sf_conv_prof_im2col_s = sf_conv_prof_gemm_s = 0;
    double t0 = omp_get_wtime();
    sf_conv2d(x, 1, H, W, &cw, pad, y, 0);
    double t = omp_get_wtime() - t0;
    fprintf(stderr,
            "conv 3x3 %lld->%lld at %lldx%lld, %d threads: %.1f ms (%.1f GFLOP/s); "
            "im2col %.1f%% of thread time\n",
            (long long)C, (long long)O, (long long)H, (long long)W, omp_get_max_threads(), t * 1e3,
            2.0 * H * W * O * C * 9 / t * 1e-9,
            100 * sf_conv_prof_im2col_s / (sf_conv_prof_im2col_s + sf_conv_prof_gemm_s));
    sf_conv2d_free(&cw);
    sf_weight_free(&sw);
    free(x), free(w), free(y);
}

TEST(conv2d_profile) {
    if (!getenv("SAEFLOW_CONV_PROFILE")) return;
    profile_case(128, 256, 256, 128); /* the VAE decoder's last block at 256 px */
    profile_case(512, 64, 64, 512);   /* its first up block */
}

int main(void) {
    sf_rng_seed(&rng, 4321);
    RUN(conv2d_shapes);
    RUN(conv2d_pack_errors);
    RUN(conv2d_threads);
    RUN(groupnorm);
    RUN(upsample_and_layout);
    RUN(conv2d_profile);
    return test_summary();
}
