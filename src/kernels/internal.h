/* Helpers shared by the kernel sources; not part of the public API. */
#ifndef SAEFLOW_KERNELS_INTERNAL_H
#define SAEFLOW_KERNELS_INTERNAL_H

#include <stdint.h>

/* exp(x) for float, relative error < 2e-7 on [-87, 88] (about 2 ulp):
 * x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 Taylor/minimax polynomial,
 * 2^n by building the exponent bits. Inputs are clamped, so the result is
 * finite for every input (e^-87.5 ~ 1e-38, e^88.3 ~ 2e38). */
static inline float sf_expf_fast(float x) {
    x = x < -87.5f ? -87.5f : (x > 88.3f ? 88.3f : x);
    float n = __builtin_roundf(x * 1.44269504088896341f);
    float r = x - n * 0.693145751953125f;   /* ln2 high part, exact product */
    r = r - n * 1.428606765330187e-06f;     /* ln2 low part */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } s;
    s.i = ((int32_t)n + 127) << 23;
    return p * s.f;
}

/* Stable softmax of one row in place; -inf entries get probability 0, an
 * all -inf row becomes zeros. */
void sf_softmax_row(float *x, int64_t N);

#endif
