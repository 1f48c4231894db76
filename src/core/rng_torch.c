/* torch's CPU randn: MT19937 + torch's uniform and Box-Muller steps, see
 * include/saeflow/torch_rng.h. Written from the algorithm's description (the
 * MT19937 reference, torch's TransformationHelper.h / DistributionsHelper.h /
 * cpu/DistributionTemplates.h, the Cephes F32 log and sin/cos polynomials
 * of avx_mathfun.h) and checked bit for bit against torch's output
 * (tests/core/test_torch_rng.c).
 *
 * Every F32 step is one rounded operation (or one fmaf where torch's
 * compiled kernel fuses a multiply-add) in the order torch's code does it;
 * the build does not contract a*b + c on its own (-std=c11), so the scalar
 * code here matches torch's vector code bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/torch_rng.h"

/* ---- MT19937 (32-bit), as std::mt19937 / at::mt19937 ---------------------- */

#define MT_N 624
#define MT_M 397

typedef struct {
    uint32_t st[MT_N];
    int next;
    /* torch's generator caches the sine half of a double Box-Muller pair */
    int has_gauss;
    double gauss;
} mt19937;

static void mt_seed(mt19937 *g, uint64_t seed) {
    g->st[0] = (uint32_t)(seed & 0xffffffffu);
    for (int j = 1; j < MT_N; j++)
        g->st[j] = 1812433253u * (g->st[j - 1] ^ (g->st[j - 1] >> 30)) + (uint32_t)j;
    g->next = MT_N; /* regenerate on first draw */
    g->has_gauss = 0;
}

static void mt_twist(mt19937 *g) {
    for (int i = 0; i < MT_N; i++) {
        uint32_t y = (g->st[i] & 0x80000000u) | (g->st[(i + 1) % MT_N] & 0x7fffffffu);
        g->st[i] = g->st[(i + MT_M) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    g->next = 0;
}

static uint32_t mt_u32(mt19937 *g) {
    if (g->next >= MT_N) mt_twist(g);
    uint32_t y = g->st[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* F32 uniform in [0, 1): 24 random bits (at::uniform_real_distribution<float>) */
static float uniform_f32(mt19937 *g) {
    return (float)(mt_u32(g) & 0xffffffu) * 0x1p-24f;
}

/* F64 uniform: 53 bits of (first draw << 32 | second draw) */
static double uniform_f64(mt19937 *g) {
    uint64_t hi = mt_u32(g), lo = mt_u32(g);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * 0x1p-53;
}

/* at::normal_distribution<double>: Box-Muller in double, the sine cached */
static double normal_f64(mt19937 *g) {
    if (g->has_gauss) {
        g->has_gauss = 0;
        return g->gauss;
    }
    double u1 = uniform_f64(g), u2 = uniform_f64(g);
    double r = sqrt(-2.0 * log1p(-u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    g->gauss = r * sin(theta), g->has_gauss = 1;
    return r * cos(theta);
}

/* ---- F32 log and sin/cos as avx_mathfun.h computes them (Cephes) -------- */

static inline float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* log(x) for x > 0 (the inputs here are 1 - u, in [2^-24, 1]).
 * torch's build (GCC, -mfma, C++ so -ffp-contract=fast) fuses each product
 * into the add or subtract that uses it: a rounded product feeding only an
 * add/sub becomes one fmaf here, exactly where GCC's FMA pass puts them
 * (the first eligible product in statement order wins). */
static float cephes_logf(float x) {
    if (x < 0x1p-126f) x = 0x1p-126f; /* cut off denormals */
    uint32_t u = f_bits(x);
    float e = (float)((int32_t)(u >> 23) - 0x7f);
    x = bits_f((u & ~0x7f800000u) | f_bits(0.5f)); /* mantissa in [0.5, 1) */
    e = e + 1.0f;
    /* below sqrt(1/2): e -= 1, x = x + x - 1 (as x - 1 + x), else x - 1 */
    const int small = x < 0.707106781186547524f;
    float tmp = small ? x : 0.0f;
    x = x - 1.0f;
    e = e - (small ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, 1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, 2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, 3.3333331174E-1f);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f); /* y * z + e q1 */
    y = fmaf(-z, 0.5f, y);               /* y - z / 2 */
    x = x + y;
    x = fmaf(e, 0.693359375f, x); /* x + e q2 */
    return x;
}

static void cephes_sincosf(float x, float *s, float *c) {
    uint32_t sign_sin = f_bits(x) & 0x80000000u;
    x = fabsf(x);
    int32_t j = (int32_t)(x * 1.27323954473516f); /* 4/pi, truncated */
    j = (j + 1) & ~1;
    float y = (float)j;
    uint32_t swap_sin = (uint32_t)(j & 4) << 29;
    int poly_sin = (j & 2) == 0; /* the sine polynomial gives the sine */
    /* x - y pi/4 in three parts (extended precision modular arithmetic) */
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    sign_sin ^= swap_sin;
    float z = x * x;
    float yc = 2.443315711809948E-005f;
    yc = fmaf(yc, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f)); /* yc z^2 - z / 2 */
    yc = yc + 1.0f;
    float ys = -1.9515295891E-4f;
    ys = fmaf(ys, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    float sv = poly_sin ? ys : yc, cv = poly_sin ? yc : ys;
    *s = bits_f(f_bits(sv) ^ sign_sin);
    *c = bits_f(f_bits(cv) ^ sign_cos);
}

/* ---- Box-Muller on 16 uniforms, the two kernel builds ------------------- */

static void fill16_avx2(float *d) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j], u2 = d[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float theta = two_pi * u2;
        float s, c;
        cephes_sincosf(theta, &s, &c);
        d[j] = radius * c;
        d[j + 8] = radius * s;
    }
}

static void fill16_libm(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j], u2 = d[j + 8];
        float radius = sqrtf(-2.0f * logf(u1));
        /* 2.0f * pi<double> * u2 is evaluated in double, then stored as float */
        float theta = (float)(2.0 * 3.14159265358979323846 * (double)u2);
        d[j] = radius * cosf(theta);
        d[j + 8] = radius * sinf(theta);
    }
}

void sf_torch_randn_ex(uint64_t seed, float *out, int64_t n, sf_torch_rng_kind kind) {
    if (n <= 0) return;
    mt19937 *g = sf_malloc(sizeof *g);
    mt_seed(g, seed);
    if (n < 16) {
        for (int64_t i = 0; i < n; i++)
            out[i] = (float)normal_f64(g);
        free(g);
        return;
    }
    void (*fill16)(float *) = kind == SF_TORCH_RANDN_LIBM ? fill16_libm : fill16_avx2;
    /* all uniforms first (the generator is sequential), then the blocks */
    for (int64_t i = 0; i < n; i++)
        out[i] = uniform_f32(g);
    const int64_t nfull = n / 16;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < nfull; b++)
        fill16(out + 16 * b);
    if (n % 16) {
        float *d = out + n - 16;
        for (int i = 0; i < 16; i++)
            d[i] = uniform_f32(g);
        fill16(d);
    }
    free(g);
}

void sf_torch_randn(uint64_t seed, float *out, int64_t n) {
    sf_torch_randn_ex(seed, out, n, SF_TORCH_RANDN_AVX2);
}

int sf_torch_rng_kind_parse(const char *s, sf_torch_rng_kind *out) {
    if (!strcmp(s, "avx2")) {
        *out = SF_TORCH_RANDN_AVX2;
        return 0;
    }
    if (!strcmp(s, "default") || !strcmp(s, "libm") || !strcmp(s, "avx512")) {
        *out = SF_TORCH_RANDN_LIBM;
        return 0;
    }
    return -1;
}
