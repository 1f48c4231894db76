/* Element types and their conversions: the one definition of each (see
 * include/saeflow/dtype.h). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "saeflow/common.h"
#include "saeflow/dtype.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[SF_DT_COUNT] = {
    [SF_DT_BOOL] = {"BOOL", 1},       [SF_DT_U8] = {"U8", 1},
    [SF_DT_I8] = {"I8", 1},           [SF_DT_U16] = {"U16", 2},
    [SF_DT_I16] = {"I16", 2},         [SF_DT_F16] = {"F16", 2},
    [SF_DT_BF16] = {"BF16", 2},       [SF_DT_U32] = {"U32", 4},
    [SF_DT_I32] = {"I32", 4},         [SF_DT_F32] = {"F32", 4},
    [SF_DT_U64] = {"U64", 8},         [SF_DT_I64] = {"I64", 8},
    [SF_DT_F64] = {"F64", 8},         [SF_DT_F8_E4M3] = {"F8_E4M3", 1},
    [SF_DT_F8_E5M2] = {"F8_E5M2", 1}, [SF_DT_F8_E8M0] = {"F8_E8M0", 1},
    [SF_DT_C64] = {"C64", 8},
};

const char *sf_dtype_name(sf_dtype dt) {
    return (unsigned)dt < SF_DT_COUNT ? dtypes[dt].name : "?";
}
size_t sf_dtype_size(sf_dtype dt) {
    return (unsigned)dt < SF_DT_COUNT ? dtypes[dt].size : 0;
}
int sf_dtype_parse(const char *s, sf_dtype *dt) {
    for (int i = 0; i < SF_DT_COUNT; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *dt = (sf_dtype)i;
            return 0;
        }
    return -1;
}
int sf_dtype_is_float(sf_dtype dt) {
    return dt == SF_DT_F32 || dt == SF_DT_F16 || dt == SF_DT_BF16 || dt == SF_DT_F64 ||
           dt == SF_DT_F8_E4M3 || dt == SF_DT_F8_E5M2;
}

char *sf_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t p = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && p + 24 < n; i++) {
        if (shape[i] < 0)
            p += (size_t)snprintf(buf + p, n - p, "%s*", i ? "," : "");
        else
            p += (size_t)snprintf(buf + p, n - p, "%s%lld", i ? "," : "", (long long)shape[i]);
    }
    if (p < n) snprintf(buf + p, n - p, "]");
    return buf;
}

/* ---- scalar conversions ---- */

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Inline so the bulk loops below vectorise; the public symbol wraps it. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1); /* round to nearest even */
    return (uint16_t)(u >> 16);
}
uint16_t sf_f32_to_bf16(float f) {
    return f32_to_bf16(f);
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf, or NaN made quiet (as F16C's vcvtph2ps does) */
        return u2f(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24, exact in F32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}
float sf_f16_to_f32(uint16_t h) {
    return f16_to_f32(h);
}

static inline uint16_t f32_to_f16(float f) {
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);  /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
    if (a < 0x38800000u) {                                  /* subnormal or zero */
        float v = u2f(a) * 0x1p24f;                         /* in units of 2^-24 */
        uint32_t m = (uint32_t)lrintf(v);                   /* nearest even */
        return (uint16_t)(sign | m);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}
uint16_t sf_f32_to_f16(float f) {
    return f32_to_f16(f);
}

/* E4M3FN: bias 7, no infinities, S.1111.111 is NaN. */
static inline float f8e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80) << 24, exp = (b >> 3) & 0xf, man = b & 7;
    if (exp == 15 && man == 7) return u2f(sign | 0x7fc00000u);
    if (exp == 0) { /* subnormal: man * 2^-9 */
        float v = (float)man * 0x1p-9f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 120) << 23) | (man << 20));
}
float sf_f8e4m3_to_f32(uint8_t b) {
    return f8e4m3_to_f32(b);
}
/* E5M2 is the upper byte of an F16 (same exponent, mantissa cut to 2 bits). */
float sf_f8e5m2_to_f32(uint8_t b) {
    return f16_to_f32((uint16_t)(b << 8));
}

/* ---- bulk conversions ---- */

static inline uint16_t ld16(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

static void f16_to_f32_n(const unsigned char *s, size_t n, float *d) {
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + 2 * i))));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
#endif
    for (; i < n; i++)
        d[i] = f16_to_f32(ld16(s + 2 * i));
}

int sf_convert_to_f32(sf_dtype dt, const void *src, size_t n, float *dst) {
    const unsigned char *s = src;
    switch (dt) {
    case SF_DT_F32:
        memmove(dst, src, n * 4);
        return 0;
    case SF_DT_BF16:
        /* one shift per element: a few instructions per 16 floats, memory speed */
        for (size_t i = 0; i < n; i++)
            dst[i] = sf_bf16_to_f32(ld16(s + 2 * i));
        return 0;
    case SF_DT_F16:
        f16_to_f32_n(s, n, dst);
        return 0;
    case SF_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
        return 0;
    case SF_DT_F8_E4M3:
        for (size_t i = 0; i < n; i++)
            dst[i] = f8e4m3_to_f32(s[i]);
        return 0;
    case SF_DT_F8_E5M2:
        for (size_t i = 0; i < n; i++)
            dst[i] = f16_to_f32((uint16_t)(s[i] << 8));
        return 0;
    default:
        return sf_error("dtype %s is not a float type", sf_dtype_name(dt));
    }
}

/* One chunk of sf_convert, on the calling thread. */
static void convert_chunk(sf_dtype dd, unsigned char *d, sf_dtype sd, const unsigned char *s,
                          size_t n) {
    if (dd == sd) {
        memcpy(d, s, n * sf_dtype_size(sd));
        return;
    }
    if (dd == SF_DT_F32) {
        sf_convert_to_f32(sd, s, n, (float *)(void *)d);
        return;
    }
    if (sd == SF_DT_F32) {
        if (dd == SF_DT_BF16)
            for (size_t i = 0; i < n; i++) {
                float f;
                memcpy(&f, s + 4 * i, 4);
                uint16_t h = f32_to_bf16(f);
                memcpy(d + 2 * i, &h, 2);
            }
        else
            for (size_t i = 0; i < n; i++) {
                float f;
                memcpy(&f, s + 4 * i, 4);
                uint16_t h = f32_to_f16(f);
                memcpy(d + 2 * i, &h, 2);
            }
        return;
    }
    /* Through F32 in blocks small enough to stay in L1. */
    float tmp[1024];
    size_t ssz = sf_dtype_size(sd);
    for (size_t i = 0; i < n; i += 1024) {
        size_t m = n - i < 1024 ? n - i : 1024;
        sf_convert_to_f32(sd, s + i * ssz, m, tmp);
        convert_chunk(dd, d + 2 * i, SF_DT_F32, (const unsigned char *)tmp, m);
    }
}

int sf_convert(sf_dtype dst_dt, void *dst, sf_dtype src_dt, const void *src, size_t n) {
    if (!sf_dtype_is_float(src_dt))
        return sf_error("dtype %s is not a float type", sf_dtype_name(src_dt));
    if (dst_dt != SF_DT_F32 && dst_dt != SF_DT_BF16 && dst_dt != SF_DT_F16 && dst_dt != src_dt)
        return sf_error("cannot convert %s to %s (F32, BF16 or F16)", sf_dtype_name(src_dt),
                        sf_dtype_name(dst_dt));
    const size_t chunk = 1u << 16;
    size_t nchunks = (n + chunk - 1) / chunk, dsz = sf_dtype_size(dst_dt),
           ssz = sf_dtype_size(src_dt);
    unsigned char *d = dst;
    const unsigned char *s = src;
#pragma omp parallel for schedule(static) if (nchunks > 1 && !omp_in_parallel())
    for (size_t c = 0; c < nchunks; c++) {
        size_t i = c * chunk, m = n - i < chunk ? n - i : chunk;
        convert_chunk(dst_dt, d + i * dsz, src_dt, s + i * ssz, m);
    }
    return 0;
}
