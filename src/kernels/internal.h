/* Helpers shared by the kernel sources; not part of the public API. */
#ifndef SAEFLOW_KERNELS_INTERNAL_H
#define SAEFLOW_KERNELS_INTERNAL_H

#include <stdint.h>

#include "saeflow/kernels.h"

/* exp(x) for float, relative error < 2e-7 on [-87, 88] (about 2 ulp):
 * x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 Taylor/minimax polynomial,
 * 2^n by building the exponent bits. Inputs are clamped, so the result is
 * finite for every input (e^-87.5 ~ 1e-38, e^88.3 ~ 2e38). */
static inline float sf_expf_fast(float x) {
    x = x < -87.5f ? -87.5f : (x > 88.3f ? 88.3f : x);
    /* n = round(x / ln2) by the 1.5 * 2^23 trick (no libm call, so the loop
     * vectorizes); valid because |x / ln2| < 2^22. */
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693145751953125f; /* ln2 high part, exact product */
    r = r - n * 1.428606765330187e-06f;   /* ln2 low part */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n: n sits in the low mantissa bits of t; move it into the exponent. */
    union {
        float f;
        int32_t i;
    } u = {t}, s;
    s.i = (u.i - 0x4B400000 + 127) << 23;
    return p * s.f;
}

/* Makes OpenBLAS single-threaded (once): OpenMP owns the threads. Call
 * outside parallel regions. */
void sf_blas_single_threaded(void);

/* Scratch of at least n floats (64-byte aligned, contents undefined) kept
 * for the calling thread's life: OpenMP's pool threads live as long as the
 * process, so a kernel's per-call buffers are allocated once, not on every
 * call. Fresh buffers cost a page fault and the zeroing of each new page on
 * every call: 5% of a BF16 FLUX forward for linear.c's widening panel;
 * 126k page faults per FLUX VAE decode at 256 px with conv.c's (kept, the
 * decode ran 1.12x faster). One slot per use that can be live at once on a
 * thread; a slot's buffer moves when it grows. */
enum {
    SF_SCRATCH_PANEL,  /* linear.c: a widened panel of W, or one weight row */
    SF_SCRATCH_GEMM_X, /* gemm_half.c: the packed x block (the calling thread's) */
    SF_SCRATCH_GEMM_W, /* gemm_half.c: the packed W block (each worker's) */
    SF_SCRATCH_CONV_A, /* conv.c: im2col columns, or Winograd's V */
    SF_SCRATCH_CONV_B, /* conv.c: Winograd's M */
    SF_SCRATCH_ATTN,   /* attention.c: a block of scores */
    SF_SCRATCH_SLOTS
};
float *sf_thread_scratch(int slot, size_t n);

/* y (M, N) (+)= x (M, K) @ W^T + bias for BF16/F16 W (N, K), widening W
 * inside the GEMM's packing (gemm_half.c), on nt OpenMP threads (1 inside a
 * parallel region). `add` keeps y's contents (a residual) and adds to them.
 * Each output's bits depend on neither nt nor the schedule. Only when
 * sf_gemm_half_isa() is not NULL: the CPU has AVX2 + FMA + F16C (or
 * AVX-512) and SAEFLOW_GEMM_HALF is not "off". */
const char *sf_gemm_half_isa(void);
/* Tests: use the route "avx512", "avx2" or "off" (NULL: detect again).
 * -1 when this CPU lacks it. Not while other threads run sf_linear. */
int sf_gemm_half_force(const char *isa);
void sf_gemm_half(const float *x, int64_t M, int64_t K, const sf_weight *W, const float *bias,
                  float *y, int64_t ldy, int add, int nt);

/* Stable softmax of one row in place; -inf entries get probability 0, an
 * all -inf row becomes zeros. */
void sf_softmax_row(float *x, int64_t N);

/* Seconds spent in conv2d's im2col and GEMMs, summed over threads, counted
 * only when SAEFLOW_CONV_PROFILE is set (the layout measurement in conv.c). */
extern double sf_conv_prof_im2col_s, sf_conv_prof_gemm_s;

#endif
