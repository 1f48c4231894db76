/* torch's CPU random normal numbers, reproduced bit for bit, so a seed gives
 * the same initial latents as diffusers on CPU
 * (torch.manual_seed(s); torch.randn(shape) or FluxPipeline(generator=
 * torch.Generator("cpu").manual_seed(s))).
 *
 * What torch does (ATen CPUGeneratorImpl + cpu/DistributionTemplates.h):
 * - manual_seed(s): a standard MT19937 seeded with the low 32 bits of s; the
 *   cached second Box-Muller value is dropped.
 * - randn of n >= 16 contiguous F32 values: n uniforms u = (r32 & (2^24-1))
 *   2^-24, then Box-Muller on blocks of 16 (values j and j+8 from
 *   u1 = 1 - u[j], u2 = u[j+8]: sqrt(-2 log u1) * (cos, sin)(2 pi u2)); when
 *   16 does not divide n, 16 fresh uniforms replace the last 16 and that
 *   block is transformed again.
 * - n < 16: one double normal per value (53-bit uniforms from two 32-bit
 *   draws, Box-Muller in double with log1p, the sine half cached for the
 *   next value), rounded to F32.
 * - The log/sin/cos of the n >= 16 path depend on torch's CPU kernel build:
 *   on the "AVX2" capability (x86 without AVX-512 dispatch) torch uses its
 *   avx_mathfun.h (Cephes polynomials in F32); on "DEFAULT" (ATEN_CPU_CAPABILITY
 *   =default, non-x86) and "AVX512" builds it uses libm's logf/cosf/sinf. The
 *   two agree to ~1 ulp, not bit for bit; torch.backends.cpu.get_cpu_capability()
 *   says which a given machine runs. */
#ifndef SAEFLOW_TORCH_RNG_H
#define SAEFLOW_TORCH_RNG_H

#include "saeflow/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SF_TORCH_RANDN_AVX2 = 0, /* torch's AVX2 kernels (the default here) */
    SF_TORCH_RANDN_LIBM = 1, /* torch's DEFAULT / AVX512 kernels (libm) */
} sf_torch_rng_kind;

/* out (n) = torch.manual_seed(seed); torch.randn(n) (any shape with n
 * elements, F32, CPU), as torch's AVX2 kernels compute it. */
void sf_torch_randn(uint64_t seed, float *out, int64_t n);
void sf_torch_randn_ex(uint64_t seed, float *out, int64_t n, sf_torch_rng_kind kind);
/* Parses "avx2" / "default" / "libm" / "avx512" (the last three: LIBM);
 * -1 if unknown. */
int sf_torch_rng_kind_parse(const char *s, sf_torch_rng_kind *out);

#ifdef __cplusplus
}
#endif
#endif
