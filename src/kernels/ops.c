/* Element-wise and row-wise kernels: activations, norms, softmax, add.
 * All loops are written so GCC vectorizes them (plain float arithmetic and
 * `omp simd`); transcendental functions go through a polynomial exp instead
 * of libm, whose scalar expf/erff would cost more than a layer's GEMMs. */
#include <math.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

/* erf by Abramowitz & Stegun 7.1.26 refined: |error| < 1.5e-7 absolute,
 * which is below F32 resolution of gelu's 0.5 x (1 + erf) where it matters. */
static inline float erf_fast(float x) {
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = 1.0f - y * t * sf_expf_fast(-a * a);
    return x < 0 ? -y : y;
}

int sf_act_parse(const char *name, sf_act *out) {
    static const struct {
        const char *n;
        sf_act a;
    } map[] = {
        {"quick_gelu", SF_ACT_QUICK_GELU},
        {"gelu", SF_ACT_GELU},
        {"gelu_new", SF_ACT_GELU_TANH},
        {"gelu_pytorch_tanh", SF_ACT_GELU_TANH},
        {"gelu_fast", SF_ACT_GELU_TANH},
        {"silu", SF_ACT_SILU},
        {"swish", SF_ACT_SILU},
        {"relu", SF_ACT_RELU},
        {"linear", SF_ACT_IDENTITY},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(name, map[i].n)) {
            *out = map[i].a;
            return 0;
        }
    return -1;
}

const char *sf_act_name(sf_act a) {
    switch (a) {
    case SF_ACT_IDENTITY:
        return "identity";
    case SF_ACT_QUICK_GELU:
        return "quick_gelu";
    case SF_ACT_GELU:
        return "gelu";
    case SF_ACT_GELU_TANH:
        return "gelu_tanh";
    case SF_ACT_SILU:
        return "silu";
    case SF_ACT_RELU:
        return "relu";
    }
    return "?";
}

void sf_activation(float *x, size_t n, sf_act a) {
    // x (n) in place; chunks of 4096 so OpenMP splits evenly without false sharing
    const int64_t chunk = 4096, nch = (int64_t)((n + (size_t)chunk - 1) / (size_t)chunk);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t c = 0; c < nch; c++) {
        int64_t i0 = c * chunk, i1 = i0 + chunk < (int64_t)n ? i0 + chunk : (int64_t)n;
        float *v = x;
        switch (a) {
        case SF_ACT_IDENTITY:
            break;
        case SF_ACT_QUICK_GELU:
#pragma omp simd
            for (int64_t i = i0; i < i1; i++)
                v[i] = v[i] / (1.0f + sf_expf_fast(-1.702f * v[i]));
            break;
        case SF_ACT_SILU:
#pragma omp simd
            for (int64_t i = i0; i < i1; i++)
                v[i] = v[i] / (1.0f + sf_expf_fast(-v[i]));
            break;
        case SF_ACT_GELU:
#pragma omp simd
            for (int64_t i = i0; i < i1; i++)
                v[i] = 0.5f * v[i] * (1.0f + erf_fast(v[i] * 0.70710678118654752f));
            break;
        case SF_ACT_GELU_TANH:
#pragma omp simd
            for (int64_t i = i0; i < i1; i++) {
                float u = 0.7978845608028654f * (v[i] + 0.044715f * v[i] * v[i] * v[i]);
                /* 1 + tanh(u) = 2 - 2 / (1 + e^{2u}) = 2 / (1 + e^{-2u}) */
                v[i] = v[i] / (1.0f + sf_expf_fast(-2.0f * u));
            }
            break;
        case SF_ACT_RELU:
#pragma omp simd
            for (int64_t i = i0; i < i1; i++)
                v[i] = v[i] > 0 ? v[i] : 0.0f;
            break;
        }
    }
}

void sf_add(float *y, const float *x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

void sf_layernorm(const float *x, float *y, int64_t M, int64_t D, const float *gamma,
                  const float *beta, float eps) {
    // x, y (M, D): two passes per row (mean, then centred variance), as
    // stable as torch's Welford for the magnitudes seen in activations.
#pragma omp parallel for schedule(static) if (M * D > 32768)
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * D;
        float *yr = y + m * D;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < D; i++)
            s += xr[i];
        float mean = s / (float)D, v = 0;
#pragma omp simd reduction(+ : v)
        for (int64_t i = 0; i < D; i++)
            v += (xr[i] - mean) * (xr[i] - mean);
        float rstd = 1.0f / sqrtf(v / (float)D + eps);
        if (gamma && beta) {
#pragma omp simd
            for (int64_t i = 0; i < D; i++)
                yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
        } else if (gamma) {
#pragma omp simd
            for (int64_t i = 0; i < D; i++)
                yr[i] = (xr[i] - mean) * rstd * gamma[i];
        } else {
#pragma omp simd
            for (int64_t i = 0; i < D; i++)
                yr[i] = (xr[i] - mean) * rstd + (beta ? beta[i] : 0.0f);
        }
    }
}

void sf_rmsnorm(const float *x, float *y, int64_t M, int64_t D, const float *gamma, float eps) {
#pragma omp parallel for schedule(static) if (M * D > 32768)
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * D;
        float *yr = y + m * D;
        float ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < D; i++)
            ss += xr[i] * xr[i];
        float r = 1.0f / sqrtf(ss / (float)D + eps);
#pragma omp simd
        for (int64_t i = 0; i < D; i++)
            yr[i] = xr[i] * r * (gamma ? gamma[i] : 1.0f);
    }
}

void sf_softmax_row(float *x, int64_t N) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < N; i++)
        mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY) { /* fully masked: attend to nothing */
        memset(x, 0, (size_t)N * sizeof(float));
        return;
    }
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < N; i++) {
        float e = x[i] == -INFINITY ? 0.0f : sf_expf_fast(x[i] - mx);
        x[i] = e;
        s += e;
    }
    float inv = 1.0f / s;
#pragma omp simd
    for (int64_t i = 0; i < N; i++)
        x[i] *= inv;
}

void sf_softmax_rows(float *x, int64_t M, int64_t N) {
#pragma omp parallel for schedule(static) if (M * N > 32768)
    for (int64_t m = 0; m < M; m++)
        sf_softmax_row(x + m * N, N);
}
