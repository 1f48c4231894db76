/* Element types of tensors, and the one set of conversions between them.
 *
 * The names and sizes are safetensors' ("F32", "BF16", "F8_E4M3", ...). Every
 * half-precision or 8-bit float widening and every F32 -> BF16/F16 rounding in
 * saeflow is defined here once; the bulk loops (sf_convert_to_f32,
 * sf_convert) are the vectorised paths the kernels and readers call.
 *
 * Float formats (bit layouts as in torch):
 * - BF16: the upper 16 bits of an IEEE F32. Widening is exact (a shift).
 * - F16: IEEE binary16 (5-bit exponent, 10-bit mantissa, subnormals).
 * - F8_E4M3 (torch.float8_e4m3fn): 4-bit exponent (bias 7), 3-bit mantissa,
 *   subnormals, no infinity; 0x7F / 0xFF are NaN; largest finite 448.
 * - F8_E5M2 (torch.float8_e5m2): IEEE-like, the upper byte of an F16.
 * Both F8 formats widen exactly to F32 and to BF16.
 * Narrowing (F32 -> BF16, F32 -> F16) rounds to nearest even; NaN stays a
 * (quiet) NaN, overflow becomes infinity. */
#ifndef SAEFLOW_DTYPE_H
#define SAEFLOW_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SF_DT_BOOL,
    SF_DT_U8,
    SF_DT_I8,
    SF_DT_U16,
    SF_DT_I16,
    SF_DT_F16,
    SF_DT_BF16,
    SF_DT_U32,
    SF_DT_I32,
    SF_DT_F32,
    SF_DT_U64,
    SF_DT_I64,
    SF_DT_F64,
    SF_DT_F8_E4M3,
    SF_DT_F8_E5M2,
    SF_DT_F8_E8M0, /* MX scale format: readable in a file, not convertible */
    SF_DT_C64,     /* complex64: readable in a file, not convertible */
    SF_DT_COUNT
} sf_dtype;

const char *sf_dtype_name(sf_dtype dt);          /* "F32", ...; "?" if out of range */
int sf_dtype_parse(const char *s, sf_dtype *dt); /* -1 if unknown */
size_t sf_dtype_size(sf_dtype dt);               /* bytes per element; 0 if out of range */
/* 1 for the dtypes that convert to F32: F32, F16, BF16, F64, F8_E4M3, F8_E5M2. */
int sf_dtype_is_float(sf_dtype dt);

/* ---- scalar conversions ---- */

/* BF16 -> F32 is exact: the 16 bits become the upper half of the float. */
static inline float sf_bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
uint16_t sf_f32_to_bf16(float f); /* round to nearest even */
float sf_f16_to_f32(uint16_t h);  /* exact */
uint16_t sf_f32_to_f16(float f);  /* round to nearest even */
float sf_f8e4m3_to_f32(uint8_t b);
float sf_f8e5m2_to_f32(uint8_t b);

/* ---- bulk conversions ---- */

/* n elements of a float dtype (sf_dtype_is_float) -> F32, on the calling
 * thread (vectorised; F16 uses F16C/AVX-512 instructions where the build has
 * them). src may be unaligned. -1 + sf_error for a non-float dtype. */
int sf_convert_to_f32(sf_dtype dt, const void *src, size_t n, float *dst);
/* n elements of a float dtype -> dst_dt (F32, BF16 or F16); same dtype is a
 * copy. Exact when the destination holds every value of the source (any
 * widening, F8 -> BF16), otherwise rounded once to nearest even, except
 * F16 <-> BF16 and F64 -> BF16/F16, which go through F32 (two roundings for
 * F64). Uses OpenMP threads for large n outside a parallel region. */
int sf_convert(sf_dtype dst_dt, void *dst, sf_dtype src_dt, const void *src, size_t n);

/* ---- shapes ---- */

/* "[2,3,4]" (also valid JSON); entries < 0 print as "*" (wildcards). A
 * buffer of SF_SHAPE_STR holds any shape of up to 8 dimensions (more are
 * cut short). Returns buf. */
#define SF_SHAPE_STR 256
char *sf_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif
