/* Transformer-block kernels (FLUX, T5): RoPE, timestep embedding, per-head
 * RMSNorm, AdaLN modulation, gated residual, attention with a score bias and
 * query tiling. Each against a straightforward reference loop in double and,
 * where diffusers/torch define the result, against their values in
 * fixtures/kernels/transformer.safetensors (tools/make_kernel_fixtures.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h" /* sf_softmax_row, sf_blas_single_threaded */
#include "saeflow/safetensors.h"
#include "test.h"

static sf_rng rng;
static sf_st fx;

static float *randn(size_t n, float scale) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = sf_rng_normal(&rng) * scale;
    return x;
}

/* Fixture tensor (F32, zero-copy) with its element count. */
static const float *fget(const char *name, int64_t *numel) {
    const sf_tensor_info *ti = sf_st_find(&fx, name);
    if (!ti || ti->dtype != SF_DT_F32) {
        fprintf(stderr, "fixture tensor %s missing\n", name);
        exit(2);
    }
    if (numel) *numel = sf_tensor_numel(ti);
    return (const float *)ti->data;
}

/* max |a - b| / max(|b|, tiny) */
static double rel_err(const float *a, const double *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || d != d) md = d != d ? INFINITY : d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}
static double rel_err_f(const float *a, const float *b, size_t n) {
    double *bd = malloc(n * sizeof *bd);
    for (size_t i = 0; i < n; i++)
        bd[i] = b[i];
    double e = rel_err(a, bd, n);
    free(bd);
    return e;
}
/* Number of elements whose bits differ. */
static size_t ndiff(const float *a, const float *b, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += memcmp(a + i, b + i, sizeof(float)) != 0;
    return c;
}

TEST(rope) {
    const char *names[2] = {"flux", "odd"};
    for (int c = 0; c < 2; c++) {
        char key[64];
        int64_t n_ids, n_cos, n_x;
#define K(s) (snprintf(key, sizeof key, "rope_%s_%s", names[c], s), key)
        const float *ids = fget(K("ids"), &n_ids), *cos_ref = fget(K("cos"), &n_cos),
                    *sin_ref = fget(K("sin"), NULL), *axf = fget(K("axes"), NULL),
                    *th = fget(K("theta"), NULL), *x = fget(K("x"), &n_x), *y = fget(K("y"), NULL);
#undef K
        const int n_axes = 3;
        int axes[3], Dh = 0;
        for (int a = 0; a < n_axes; a++)
            axes[a] = (int)axf[a], Dh += axes[a];
        const int64_t M = n_ids / n_axes, P = Dh / 2, B = 2, H = n_x / (B * M * Dh);
        CHECK(n_cos == M * Dh);
        float *cs = malloc(sizeof(float) * (size_t)(M * P)),
              *sn = malloc(sizeof(float) * (size_t)(M * P));
        sf_rope_table(ids, M, n_axes, axes, th[0], cs, sn);
        /* diffusers' tables repeat each pair's value twice: (M, Dh) */
        size_t bad = 0;
        double *ref_c = malloc(sizeof(double) * (size_t)(M * P)),
               *ref_s = malloc(sizeof(double) * (size_t)(M * P));
        for (int64_t m = 0; m < M; m++)
            for (int64_t i = 0; i < P; i++) {
                bad += cs[m * P + i] != cos_ref[m * Dh + 2 * i] ||
                       cs[m * P + i] != cos_ref[m * Dh + 2 * i + 1] ||
                       sn[m * P + i] != sin_ref[m * Dh + 2 * i] ||
                       sn[m * P + i] != sin_ref[m * Dh + 2 * i + 1];
                /* reference loop: axis of pair i, omega = theta^(-2j/d) */
                int a = 0, j = (int)i;
                while (j >= axes[a] / 2)
                    j -= axes[a] / 2, a++;
                double ang = (double)ids[m * n_axes + a] * pow(th[0], -2.0 * j / axes[a]);
                ref_c[m * P + i] = cos(ang), ref_s[m * P + i] = sin(ang);
            }
        CHECK_MSG(bad == 0, "%s: %zu table entries differ from diffusers", names[c], bad);
        CHECK(rel_err(cs, ref_c, (size_t)(M * P)) < 1e-7 &&
              rel_err(sn, ref_s, (size_t)(M * P)) < 1e-7);

        /* apply on (B*M rows of H*Dh) inside a wider buffer (stride ld):
         * diffusers' table rows are per position, so run each batch's M rows */
        const int64_t D = H * Dh, ld = D + 7;
        float *buf = malloc(sizeof(float) * (size_t)(B * M * ld)),
              *got = malloc(sizeof(float) * (size_t)(B * M * D));
        double *ref = malloc(sizeof(double) * (size_t)(B * M * D));
        for (int64_t r = 0; r < B * M; r++) {
            memcpy(buf + r * ld, x + r * D, sizeof(float) * (size_t)D);
            for (int64_t e = D; e < ld; e++)
                buf[r * ld + e] = 42.0f;
        }
        for (int64_t b = 0; b < B; b++)
            sf_rope_apply(buf + b * M * ld, M, ld, H, Dh, cs, sn);
        int tail_ok = 1;
        for (int64_t r = 0; r < B * M; r++) {
            memcpy(got + r * D, buf + r * ld, sizeof(float) * (size_t)D);
            for (int64_t e = D; e < ld; e++)
                tail_ok &= buf[r * ld + e] == 42.0f;
            int64_t m = r % M;
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < P; i++) {
                    const float *xs = x + r * D + h * Dh;
                    double c0 = cs[m * P + i], s0 = sn[m * P + i];
                    ref[r * D + h * Dh + 2 * i] = xs[2 * i] * c0 - (double)xs[2 * i + 1] * s0;
                    ref[r * D + h * Dh + 2 * i + 1] = xs[2 * i + 1] * c0 + (double)xs[2 * i] * s0;
                }
        }
        CHECK(tail_ok);
        size_t nd = ndiff(got, y, (size_t)(B * M * D));
        CHECK_MSG(nd == 0, "%s: %zu of %lld rotated values differ from diffusers (rel %g)",
                  names[c], nd, (long long)(B * M * D), rel_err_f(got, y, (size_t)(B * M * D)));
        CHECK(rel_err(got, ref, (size_t)(B * M * D)) < 2e-7);
        free(cs), free(sn), free(ref_c), free(ref_s), free(buf), free(got), free(ref);
    }
}

TEST(timestep_embedding) {
    int64_t nt;
    const float *t = fget("temb_t", &nt);
    const struct {
        const char *name;
        int64_t dim;
        int flip;
        float shift, scale, maxp;
    } cs[2] = {{"temb_flux", 256, 1, 0.0f, 1.0f, 10000.0f},
               {"temb_other", 33, 0, 1.0f, 2.0f, 5000.0f}};
    for (int c = 0; c < 2; c++) {
        const int64_t dim = cs[c].dim, half = dim / 2;
        const float *want = fget(cs[c].name, NULL);
        float *got = malloc(sizeof(float) * (size_t)(nt * dim));
        double *ref = malloc(sizeof(double) * (size_t)(nt * dim));
        sf_timestep_embedding(t, nt, dim, cs[c].flip, cs[c].shift, cs[c].scale, cs[c].maxp, got);
        /* double reference of the formula, each element's |arg| and |exponent| */
        double *argv = malloc(sizeof(double) * (size_t)(nt * dim)),
               *expv = malloc(sizeof(double) * (size_t)(nt * dim));
        for (int64_t b = 0; b < nt; b++) {
            for (int64_t i = 0; i < half; i++) {
                double ex = -log((double)cs[c].maxp) * (double)i / ((double)half - cs[c].shift);
                double arg = cs[c].scale * (double)t[b] * exp(ex);
                ref[b * dim + (cs[c].flip ? half : 0) + i] = sin(arg);
                ref[b * dim + (cs[c].flip ? 0 : half) + i] = cos(arg);
                argv[b * dim + i] = argv[b * dim + half + i] = fabs(arg);
                expv[b * dim + i] = expv[b * dim + half + i] = fabs(ex);
            }
            if (dim & 1)
                ref[b * dim + dim - 1] = 0, argv[b * dim + dim - 1] = expv[b * dim + dim - 1] = 0;
        }
        /* Error budgets per element, derived (not fitted), u = 2^-24:
         * - vs the exact formula: the F32 exponent carries 3 roundings
         *   (-ln(max_period), * i, / denom): |d exponent| <= 3u |e|, which
         *   scales the frequency by as much; exp, t * f and scale * add u
         *   each; so |d arg| <= u |arg| (3|e| + 3), plus our sin/cos's u/2.
         * - vs torch: both compute the same exponent bits, but torch's F32
         *   exp (SLEEF expf_u10, <= 1 ulp; 2 of FLUX's 128 frequencies differ
         *   from the correctly rounded ones) and ours (<= 1/2 ulp) may be
         *   3u apart, and t * f may then round 2u further apart:
         *   |d arg| <= 5u |arg|, plus torch's sin/cos (<= 2u) and ours (u). */
        size_t bad_ref = 0, bad_torch = 0, nd = ndiff(got, want, (size_t)(nt * dim));
        double worst = 0;
        for (int64_t e = 0; e < nt * dim; e++) {
            const double u = 0x1p-24;
            double tol_ref = u * argv[e] * (3.0 * expv[e] + 3.0) + u;
            double tol_torch = u * (5.0 * argv[e] + 3.0);
            bad_ref += !(fabs(got[e] - ref[e]) <= tol_ref);
            bad_torch += !(fabs((double)got[e] - want[e]) <= tol_torch);
            worst = fmax(worst, fabs((double)got[e] - want[e]));
        }
        CHECK_MSG(bad_ref == 0, "%s: %zu values off the double formula", cs[c].name, bad_ref);
        CHECK_MSG(bad_torch == 0, "%s: %zu values off diffusers (max diff %g)", cs[c].name,
                  bad_torch, worst);
        fprintf(stderr, "   %s: %zu of %lld differ from torch's bits, max |diff| %g\n", cs[c].name,
                nd, (long long)(nt * dim), worst);
        free(expv);
        free(argv);
        free(got), free(ref);
    }
}

TEST(rmsnorm_heads) {
    int64_t n;
    const float *x = fget("rms_x", &n), *w = fget("rms_w", NULL), *y = fget("rms_y", NULL),
                *y0 = fget("rms_y_noaff", NULL);
    const int64_t H = 3, Dh = 16, D = H * Dh, M = n / D, ld = 3 * D + 5; /* q third of a qkv row */
    for (int aff = 0; aff < 2; aff++) {
        float *buf = malloc(sizeof(float) * (size_t)(M * ld)),
              *got = malloc(sizeof(float) * (size_t)(M * D));
        double *ref = malloc(sizeof(double) * (size_t)(M * D));
        for (int64_t m = 0; m < M; m++)
            for (int64_t e = 0; e < ld; e++)
                buf[m * ld + e] = e < D ? x[m * D + e] : -7.0f;
        sf_rmsnorm_heads(buf, M, ld, H, Dh, aff ? w : NULL, 1e-6f);
        int tail_ok = 1;
        for (int64_t m = 0; m < M; m++) {
            memcpy(got + m * D, buf + m * ld, sizeof(float) * (size_t)D);
            for (int64_t e = D; e < ld; e++)
                tail_ok &= buf[m * ld + e] == -7.0f;
            for (int64_t h = 0; h < H; h++) {
                double ss = 0;
                for (int64_t i = 0; i < Dh; i++)
                    ss += (double)x[m * D + h * Dh + i] * x[m * D + h * Dh + i];
                double r = 1.0 / sqrt(ss / Dh + 1e-6);
                for (int64_t i = 0; i < Dh; i++)
                    ref[m * D + h * Dh + i] = x[m * D + h * Dh + i] * r * (aff ? w[i] : 1.0);
            }
        }
        CHECK(tail_ok);
        /* a few F32 roundings: the sum of squares (another order than
         * torch's), the division, sqrt, reciprocal and two products */
        CHECK_MSG(rel_err(got, ref, (size_t)(M * D)) < 1e-6, "aff %d vs double: %g", aff,
                  rel_err(got, ref, (size_t)(M * D)));
        CHECK_MSG(rel_err_f(got, aff ? y : y0, (size_t)(M * D)) < 1e-6, "aff %d vs diffusers: %g",
                  aff, rel_err_f(got, aff ? y : y0, (size_t)(M * D)));
        free(buf), free(got), free(ref);
    }
}

TEST(adaln) {
    int64_t n;
    const float *x = fget("ada_x", &n), *mod = fget("ada_mod", NULL), *y = fget("ada_y", NULL),
                *wmod = fget("ada_modulated", NULL), *wgate = fget("ada_gated", NULL);
    const int64_t B = 2, T = 5, D = n / (B * T), ldm = 6 * D;
    float *got = malloc(sizeof(float) * (size_t)n);
    double *ref = malloc(sizeof(double) * (size_t)n);
    sf_ada_modulate(got, x, B, T, D, mod, mod + D, ldm);
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t i = 0; i < D; i++)
            ref[r * D + i] =
                x[r * D + i] * (1.0 + mod[(r / T) * ldm + D + i]) + mod[(r / T) * ldm + i];
    CHECK(ndiff(got, wmod, (size_t)n) == 0);
    CHECK(rel_err(got, ref, (size_t)n) < 3e-7);
    /* in place */
    memcpy(got, x, sizeof(float) * (size_t)n);
    sf_ada_modulate(got, got, B, T, D, mod, mod + D, ldm);
    CHECK(ndiff(got, wmod, (size_t)n) == 0);
    /* gated residual, y rows at a wider stride */
    const int64_t ldy = D + 3;
    float *yb = malloc(sizeof(float) * (size_t)(B * T * ldy));
    for (int64_t r = 0; r < B * T; r++)
        memcpy(yb + r * ldy, y + r * D, sizeof(float) * (size_t)D);
    memcpy(got, x, sizeof(float) * (size_t)n);
    sf_gated_add(got, yb, ldy, B, T, D, mod + 2 * D, ldm);
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t i = 0; i < D; i++)
            ref[r * D + i] = x[r * D + i] + (double)mod[(r / T) * ldm + 2 * D + i] * y[r * D + i];
    CHECK(ndiff(got, wgate, (size_t)n) == 0);
    CHECK(rel_err(got, ref, (size_t)n) < 3e-7);
    free(got), free(ref), free(yb);
}

/* Reference attention in double with bias: q (B,Tq,ldq) etc. as in kernels.h
 * (uniform layout), bias (H, Tq, Tk) or NULL. */
static void ref_attention(const sf_attn_shape *s, const float *q, const float *k, const float *v,
                          double *out) {
    double *sc = malloc(sizeof(double) * (size_t)s->Tk);
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < s->H; h++)
            for (int64_t i = 0; i < s->Tq; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < s->Tk; j++) {
                    int ok = (!s->causal || j <= i + (s->Tk - s->Tq)) &&
                             (!s->key_mask || s->key_mask[b * s->Tk + j]);
                    double d = 0;
                    for (int64_t t = 0; t < s->Dh; t++)
                        d += (double)q[(b * s->Tq + i) * s->ldq + h * s->Dh + t] *
                             k[(b * s->Tk + j) * s->ldk + h * s->Dh + t];
                    d *= s->scale;
                    if (s->bias) d += s->bias[(h * s->Tq + i) * s->Tk + j];
                    sc[j] = ok ? d : -INFINITY;
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
                    out[(b * s->Tq + i) * s->ldo + h * s->Dh + t] = sum > 0 ? o / sum : 0;
                }
            }
    free(sc);
}

TEST(attention_bias_torch) {
    int64_t nq, nk;
    const float *q = fget("attn_q", &nq), *k = fget("attn_k", &nk), *v = fget("attn_v", NULL),
                *bias = fget("attn_bias", NULL);
    const int64_t B = 2, H = 3, Dh = 8, D = H * Dh, Tq = nq / (B * D), Tk = nk / (B * D);
    float *out = malloc(sizeof(float) * (size_t)nq);
    double *ref = malloc(sizeof(double) * (size_t)nq);
    for (int c = 0; c < 2; c++) {
        sf_attn_shape s = {.B = B,
                           .Tq = Tq,
                           .Tk = Tk,
                           .H = H,
                           .Dh = Dh,
                           .ldq = D,
                           .ldk = D,
                           .ldv = D,
                           .ldo = D,
                           .scale = c ? 1.0f / sqrtf((float)Dh) : 1.0f,
                           .bias = bias};
        sf_attention(&s, q, k, v, out);
        ref_attention(&s, q, k, v, ref);
        const float *want = fget(c ? "attn_out_default" : "attn_out_scale1", NULL);
        CHECK_MSG(rel_err(out, ref, (size_t)nq) < 2e-6, "case %d vs double: %g", c,
                  rel_err(out, ref, (size_t)nq));
        CHECK_MSG(rel_err_f(out, want, (size_t)nq) < 2e-6, "case %d vs torch: %g", c,
                  rel_err_f(out, want, (size_t)nq));
    }
    free(out), free(ref);
}

/* Long sequences are cut into query blocks: against the double reference
 * with bias, causal and key masks, a fused qkv buffer and a wider output;
 * the same bits for 1 and 2 threads; ragged batches with bias. */
TEST(attention_tiled) {
    const int64_t B = 2, T = 600, H = 2, Dh = 16, D = H * Dh, ldo = D + 1;
    float *qkv = randn((size_t)(B * T * 3 * D), 1), *bias = randn((size_t)(H * T * T), 1);
    int32_t *mask = malloc(sizeof(int32_t) * (size_t)(B * T));
    for (int64_t i = 0; i < B * T; i++)
        mask[i] = (i % 7) != 3;
    float *out = malloc(sizeof(float) * (size_t)(B * T * ldo)),
          *out2 = malloc(sizeof(float) * (size_t)(B * T * ldo));
    double *ref = malloc(sizeof(double) * (size_t)(B * T * ldo));
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
                           .scale = 0.25f,
                           .causal = variant & 1,
                           .key_mask = (variant & 2) ? mask : NULL,
                           .bias = variant ? bias : NULL};
        memset(out, 0, sizeof(float) * (size_t)(B * T * ldo));
        sf_kernels_set_threads(2);
        sf_attention(&s, qkv, qkv + D, qkv + 2 * D, out);
        ref_attention(&s, qkv, qkv + D, qkv + 2 * D, ref);
        double md = 0, mb = 1e-30;
        for (int64_t r = 0; r < B * T; r++)
            for (int64_t e = 0; e < D; e++) {
                md = fmax(md, fabs(out[r * ldo + e] - ref[r * ldo + e]));
                mb = fmax(mb, fabs(ref[r * ldo + e]));
            }
        CHECK_MSG(md / mb < 2e-6, "variant %d: %g", variant, md / mb);
        if (variant == 3) {
            memcpy(out2, out, sizeof(float) * (size_t)(B * T * ldo));
            sf_kernels_set_threads(1);
            memset(out, 0, sizeof(float) * (size_t)(B * T * ldo));
            sf_attention(&s, qkv, qkv + D, qkv + 2 * D, out);
            CHECK(memcmp(out, out2, sizeof(float) * (size_t)(B * T * ldo)) == 0);
            sf_kernels_set_threads(2);
        }
    }
    /* ragged: sequences of 600 and 450 rows packed; bias strides Tq = Tk = 600 */
    const int64_t off[3] = {0, 600, 1050};
    sf_attn_shape r = {.B = 2,
                       .Tq = T,
                       .Tk = T,
                       .H = H,
                       .Dh = Dh,
                       .ldq = 3 * D,
                       .ldk = 3 * D,
                       .ldv = 3 * D,
                       .ldo = ldo,
                       .scale = 0.25f,
                       .causal = 1,
                       .bias = bias,
                       .q_off = off,
                       .k_off = off};
    sf_attention(&r, qkv, qkv + D, qkv + 2 * D, out);
    for (int b = 0; b < 2; b++) {
        int64_t n = off[b + 1] - off[b];
        /* one-sequence reference with the (n, n) corner of the bias */
        float *bc = malloc(sizeof(float) * (size_t)(H * n * n));
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < n; i++)
                memcpy(bc + (h * n + i) * n, bias + (h * T + i) * T, sizeof(float) * (size_t)n);
        sf_attn_shape one = r;
        one.B = 1, one.Tq = n, one.Tk = n, one.q_off = one.k_off = NULL, one.bias = bc;
        const float *base = qkv + off[b] * 3 * D;
        ref_attention(&one, base, base + D, base + 2 * D, ref + off[b] * ldo);
        free(bc);
    }
    double md = 0, mb = 1e-30;
    for (int64_t rr = 0; rr < 1050; rr++)
        for (int64_t e = 0; e < D; e++) {
            md = fmax(md, fabs(out[rr * ldo + e] - ref[rr * ldo + e]));
            mb = fmax(mb, fabs(ref[rr * ldo + e]));
        }
    CHECK_MSG(md / mb < 2e-6, "ragged with bias: %g", md / mb);
    free(qkv), free(bias), free(mask), free(out), free(out2), free(ref);
}

/* While Tq x Tk fits one block, sf_attention makes the same calls as the
 * kernel before tiling (one S = scale Q K^T GEMM per (batch, head), masks,
 * softmax, one P V GEMM), so existing users (CLIP: 257 x 257 and 77 x 77)
 * keep their bits. The pre-tiling kernel, restated: */
static void untiled_attention(const sf_attn_shape *s, const float *q, const float *k,
                              const float *v, float *out) {
    sf_blas_single_threaded();
    float *S = malloc(sizeof(float) * (size_t)(s->Tq * s->Tk));
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < s->H; h++) {
            const float *qb = q + b * s->Tq * s->ldq + h * s->Dh;
            const float *kb = k + b * s->Tk * s->ldk + h * s->Dh;
            const float *vb = v + b * s->Tk * s->ldv + h * s->Dh;
            sf_sgemm(0, 1, s->Tq, s->Tk, s->Dh, s->scale, qb, s->ldq, kb, s->ldk, 0.0f, S, s->Tk);
            for (int64_t i = 0; i < s->Tq; i++) {
                float *row = S + i * s->Tk;
                if (s->causal)
                    for (int64_t j = i + (s->Tk - s->Tq) + 1; j < s->Tk; j++)
                        if (j >= 0) row[j] = -INFINITY;
                if (s->key_mask)
                    for (int64_t j = 0; j < s->Tk; j++)
                        if (!s->key_mask[b * s->Tk + j]) row[j] = -INFINITY;
                sf_softmax_row(row, s->Tk);
            }
            sf_sgemm(0, 0, s->Tq, s->Dh, s->Tk, 1.0f, S, s->Tk, vb, s->ldv, 0.0f,
                     out + b * s->Tq * s->ldo + h * s->Dh, s->ldo);
        }
    free(S);
}

TEST(attention_one_block_unchanged) {
    const int64_t shapes[2][4] = {{2, 257, 16, 64}, {3, 77, 12, 64}}; /* B, T, H, Dh */
    for (int c = 0; c < 2; c++) {
        const int64_t B = shapes[c][0], T = shapes[c][1], H = shapes[c][2], Dh = shapes[c][3],
                      D = H * Dh;
        float *qkv = randn((size_t)(B * T * 3 * D), 1),
              *o1 = malloc(sizeof(float) * (size_t)(B * T * D)),
              *o2 = malloc(sizeof(float) * (size_t)(B * T * D));
        int32_t *mask = malloc(sizeof(int32_t) * (size_t)(B * T));
        for (int64_t i = 0; i < B * T; i++)
            mask[i] = (i % T) < T - 5 * (i / T);
        sf_attn_shape s = {.B = B,
                           .Tq = T,
                           .Tk = T,
                           .H = H,
                           .Dh = Dh,
                           .ldq = 3 * D,
                           .ldk = 3 * D,
                           .ldv = 3 * D,
                           .ldo = D,
                           .scale = 0.125f,
                           .causal = c == 1,
                           .key_mask = c == 1 ? mask : NULL};
        sf_kernels_set_threads(2);
        sf_attention(&s, qkv, qkv + D, qkv + 2 * D, o1);
        untiled_attention(&s, qkv, qkv + D, qkv + 2 * D, o2);
        CHECK_MSG(memcmp(o1, o2, sizeof(float) * (size_t)(B * T * D)) == 0, "shape %d changed", c);
        free(qkv), free(o1), free(o2), free(mask);
    }
}

/* Per-head RMSNorm then RoPE on q and k inside a fused qkv buffer (2H heads
 * of each row): the same bits for 1 and 2 threads. */
TEST(thread_independent_rows) {
    /* 300 rows x 8 heads x 32: large enough for the parallel regions */
    const int64_t M = 300, H = 4, Dh = 32, ld = 3 * H * Dh;
    float *x = randn((size_t)(M * ld), 2), *a = malloc(sizeof(float) * (size_t)(M * ld)),
          *b = malloc(sizeof(float) * (size_t)(M * ld)), *w = randn((size_t)Dh, 1);
    static float ids[300 * 3], cs[300 * 16], sn[300 * 16];
    int axes[3] = {8, 12, 12};
    for (int64_t m = 0; m < M; m++)
        ids[m * 3] = 0, ids[m * 3 + 1] = (float)(m / 20), ids[m * 3 + 2] = (float)(m % 20);
    sf_rope_table(ids, M, 3, axes, 10000.0, cs, sn);
    for (int th = 1; th <= 2; th++) {
        float *y = th == 1 ? a : b;
        sf_kernels_set_threads(th);
        memcpy(y, x, sizeof(float) * (size_t)(M * ld));
        sf_rmsnorm_heads(y, M, ld, 2 * H, Dh, w, 1e-6f);
        sf_rope_apply(y, M, ld, 2 * H, Dh, cs, sn);
    }
    CHECK(memcmp(a, b, sizeof(float) * (size_t)(M * ld)) == 0);
    free(x), free(a), free(b), free(w);
}

int main(void) {
    sf_rng_seed(&rng, 1234);
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures/kernels/transformer.safetensors", SF_SOURCE_DIR);
    if (sf_st_open(&fx, path) != 0) {
        fprintf(stderr, "%s\n", sf_errmsg());
        return 2;
    }
    RUN(rope);
    RUN(timestep_embedding);
    RUN(rmsnorm_heads);
    RUN(adaln);
    RUN(attention_bias_torch);
    RUN(attention_tiled);
    RUN(attention_one_block_unchanged);
    RUN(thread_independent_rows);
    sf_st_close(&fx);
    return test_summary();
}
