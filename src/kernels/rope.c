/* Sinusoidal position signals of FLUX: rotary embeddings over N position
 * axes (diffusers FluxPosEmbed + apply_rotary_emb) and the timestep
 * embedding (get_timestep_embedding).
 *
 * The RoPE table is computed once per forward (M x Dh/2 angles in float64,
 * as diffusers does on CPU/CUDA), then applied to q and k of every block.
 * The apply step keeps diffusers' F32 operation order,
 *   out = x * cos + rotate(x) * sin, rotate(x)[2i] = -x[2i+1], [2i+1] = x[2i],
 * one rounding per product and per sum, so it matches torch bit for bit. */
#include <math.h>
#include <stdlib.h>

#include "saeflow/kernels.h"

void sf_rope_table(const float *ids, int64_t M, int n_axes, const int *axes_dim, double theta,
                   float *cos_out, float *sin_out) {
    // ids (M, n_axes) -> cos, sin (M, P) with P = sum(axes_dim) / 2 pairs.
    int64_t P = 0;
    for (int a = 0; a < n_axes; a++)
        P += axes_dim[a] / 2;
    if (P <= 0) return;
    /* Per pair: its axis and omega. get_1d_rotary_pos_embed:
     * freqs = 1 / theta ** (arange(0, d, 2) / d) in float64. */
    double *omega = sf_malloc(sizeof(double) * (size_t)P);
    int *axis = sf_malloc(sizeof(int) * (size_t)P);
    for (int a = 0, p = 0; a < n_axes; a++)
        for (int j = 0; j < axes_dim[a] / 2; j++, p++) {
            omega[p] = 1.0 / pow(theta, (double)(2 * j) / (double)axes_dim[a]);
            axis[p] = a;
        }
#pragma omp parallel for schedule(static) if (M * P > 16384)
    for (int64_t m = 0; m < M; m++)
        for (int64_t p = 0; p < P; p++) {
            /* outer(pos, freqs): the F32 position widened to float64 */
            double ang = (double)ids[m * n_axes + axis[p]] * omega[p];
            cos_out[m * P + p] = (float)cos(ang);
            sin_out[m * P + p] = (float)sin(ang);
        }
    free(omega);
    free(axis);
}

void sf_rope_apply(float *x, int64_t M, int64_t ld, int64_t H, int64_t Dh, const float *cos,
                   const float *sin) {
    // x rows (M, ld) holding H heads of Dh from column 0; cos, sin (M, Dh/2).
    const int64_t P = Dh / 2, segs = M * H;
#pragma omp parallel for schedule(static) if (segs * Dh > 32768)
    for (int64_t sg = 0; sg < segs; sg++) {
        const int64_t m = sg / H;
        float *xs = x + m * ld + (sg % H) * Dh;
        const float *c = cos + m * P, *s = sin + m * P;
#pragma omp simd
        for (int64_t i = 0; i < P; i++) {
            float x0 = xs[2 * i], x1 = xs[2 * i + 1];
            float a0 = x0 * c[i], b0 = -x1 * s[i];
            float a1 = x1 * c[i], b1 = x0 * s[i];
            xs[2 * i] = a0 + b0;
            xs[2 * i + 1] = a1 + b1;
        }
    }
}

void sf_timestep_embedding(const float *t, int64_t B, int64_t dim, int flip_sin_to_cos,
                           float downscale_freq_shift, float scale, float max_period, float *out) {
    // t (B) -> out (B, dim). torch's F32 steps, each rounded to F32:
    //   exponent = (-ln(max_period) * arange(half)) / (half - shift)
    //   emb = scale * (t * exp(exponent)); out = cat(sin, cos) (flipped: cos, sin)
    // exp/sin/cos are evaluated in double and rounded once (correctly rounded
    // but for rare ties; torch's SLEEF F32 versions promise <= 1 ulp).
    const int64_t half = dim / 2;
    const float neg_log = (float)-log((double)max_period);
    const float denom = (float)half - downscale_freq_shift;
    const int64_t s_off = flip_sin_to_cos ? half : 0, c_off = flip_sin_to_cos ? 0 : half;
#pragma omp parallel for schedule(static) if (B * dim > 65536)
    for (int64_t b = 0; b < B; b++) {
        float *o = out + b * dim;
        for (int64_t i = 0; i < half; i++) {
            float e = neg_log * (float)i;
            e = e / denom;
            float f = (float)exp((double)e);
            float arg = t[b] * f;
            arg = scale * arg;
            o[s_off + i] = (float)sin((double)arg);
            o[c_off + i] = (float)cos((double)arg);
        }
        if (dim & 1) o[dim - 1] = 0.0f;
    }
}
