/* Row kernels of FLUX's (and T5's) transformer blocks that are not GEMMs:
 * per-head RMSNorm inside a fused q/k/v buffer, AdaLN modulation and the
 * gated residual add.
 *
 * Each mirrors one line of diffusers' transformer_flux.py and keeps torch's
 * F32 operation order (one rounding per torch op; the build does not contract
 * a*b + c into an FMA, see -std=c11), so the element-wise ones match torch
 * bit for bit; only the RMSNorm's sum of squares is accumulated in another
 * order than torch's reduction. Rows are split over OpenMP threads, each row
 * done by one thread in a fixed order (thread-count independent). */
#include <math.h>

#include "saeflow/kernels.h"

void sf_rmsnorm_heads(float *x, int64_t M, int64_t ld, int64_t H, int64_t Dh, const float *gamma,
                      float eps) {
    // x rows (M, ld), segments (M, H, Dh) from column 0, in place.
    // diffusers RMSNorm: var = x.float().pow(2).mean(-1); x = x * rsqrt(var + eps);
    // x = x * weight. The mean is an F32 sum / Dh like torch's for F32 input.
    const int64_t segs = M * H;
#pragma omp parallel for schedule(static) if (segs * Dh > 32768)
    for (int64_t sg = 0; sg < segs; sg++) {
        float *xs = x + (sg / H) * ld + (sg % H) * Dh;
        float ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < Dh; i++)
            ss += xs[i] * xs[i];
        float r = 1.0f / sqrtf(ss / (float)Dh + eps);
        if (gamma) {
#pragma omp simd
            for (int64_t i = 0; i < Dh; i++)
                xs[i] = (xs[i] * r) * gamma[i];
        } else {
#pragma omp simd
            for (int64_t i = 0; i < Dh; i++)
                xs[i] = xs[i] * r;
        }
    }
}

void sf_ada_modulate(float *y, const float *x, int64_t B, int64_t T, int64_t D, const float *shift,
                     const float *scale, int64_t ld_mod) {
    // x, y (B, T, D); shift_b, scale_b (D) at stride ld_mod.
    // diffusers: norm(x) * (1 + scale[:, None]) + shift[:, None]: three F32 ops.
    const int64_t rows = B * T;
#pragma omp parallel for schedule(static) if (rows * D > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / T;
        const float *sh = shift + b * ld_mod, *sc = scale + b * ld_mod, *xr = x + r * D;
        float *yr = y + r * D;
#pragma omp simd
        for (int64_t i = 0; i < D; i++) {
            float s1 = 1.0f + sc[i];
            float p = xr[i] * s1;
            yr[i] = p + sh[i];
        }
    }
}

void sf_gated_add(float *x, const float *y, int64_t ldy, int64_t B, int64_t T, int64_t D,
                  const float *gate, int64_t ld_mod) {
    // x (B, T, D) += gate_b (D) * y (B*T rows at stride ldy), as diffusers'
    // hidden_states = hidden_states + gate.unsqueeze(1) * attn_output.
    const int64_t rows = B * T;
#pragma omp parallel for schedule(static) if (rows * D > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate + (r / T) * ld_mod, *yr = y + r * ldy;
        float *xr = x + r * D;
#pragma omp simd
        for (int64_t i = 0; i < D; i++) {
            float p = g[i] * yr[i];
            xr[i] = xr[i] + p;
        }
    }
}
