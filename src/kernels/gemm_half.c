/* sf_gemm_half: y (+)= x @ W^T with F32 activations and BF16/F16 weights,
 * the weights widened to F32 inside the GEMM's own packing step.
 *
 * Why a GEMM of our own. With BF16 weights, sf_linear used to widen a panel
 * of W to F32 scratch and hand it to sf_sgemm (oneDNN), which packs it
 * again: every weight crossed memory as 2 bytes read, 4 written, 4 read, 4
 * packed, as a phase of its own. In the FLUX transformer at batch 1 (bench_flux,
 * Intel Xeon, 2 threads) that widening was 10% of the CPU samples. Here the
 * packing step reads BF16 once and writes the packed F32 block that stays in
 * L2: the widening rides along with a copy every GEMM makes anyway. Measured
 * (docs/flux.md, forwards paired on the same machine minutes): the FLUX
 * forward at batch 1 runs 1.14x faster than the widen-then-sgemm route, and
 * as fast as with the weights widened to F32 at load.
 *
 * The loop nest is GotoBLAS / BLIS's (Goto & van de Geijn, "Anatomy of
 * High-Performance Matrix Multiplication", 2008), arranged so that tasks are
 * independent:
 *
 *   y (M, N) += x (M, K) @ W^T,  W (N, K) row-major, BF16 or F16
 *
 *   for m0 in M step MC:                       x blocks of <= 32 MB
 *     pack x[m0:m0+MC, :] -> Ap                MR-row micro-panels per K block,
 *                                              by all threads, shared
 *     for each task (a block of NB features; threads take them as they free up):
 *       for k0 in K step KC:
 *         pack W[n0:n0+NB, k0:k0+KC] -> Bp     NR-feature micro-panels, widened; L2
 *         for each x micro-panel (MR x KC)     L1
 *           for each W micro-panel (KC x NR)   streams from L2
 *             micro-kernel: an MR x NR tile of y in registers, KC rank-1 updates
 *
 * The micro-kernel keeps the tile in vector registers: NR output features
 * in the vector lanes (y rows are contiguous in n, so the tile is stored
 * with plain vector stores), MR rows of x broadcast one at a time.
 * AVX-512: MR 8 x NR 48 = 24 zmm accumulators (the shape of oneDNN's
 * AVX-512 sgemm kernel, 48 x 8, transposed; BLIS's 12 x 32 ran 3-6% slower
 * here, and 8 divides FLUX's 256-token streams); AVX2 + FMA: MR 6 x NR 16 =
 * 12 ymm (BLIS's Haswell).
 * W's micro-panels need W's columns (NR rows of W for each k): packing is a
 * transpose, done 16 x 16 (8 x 8) in registers after widening.
 *
 * Summation order: each output is one FMA chain over k = 0..K-1 in order,
 * added to y after each KC block, whatever M, N, the blocking or the thread
 * that owns it. So results do not depend on the thread count or on how
 * sf_linear splits the work (oneDNN's sgemm can move an ulp with its
 * blocking).
 *
 * Runtime dispatch: the kernels carry target attributes and are chosen by
 * CPUID, so a portable build (or the sanitizer build) runs the same code as
 * a -march=native one. Without AVX2 + FMA + F16C, sf_linear keeps its
 * widen-then-sgemm route. */
#include <cpuid.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

/* The x block in vector code: 16 (8) k at a time, the MR rows transposed in
 * registers with the rows past MR as zeros; columns past the last multiple
 * of 16 (8) by pack_x_cols. Packing x as plain C was 14% of the time the micro-kernel
 * took (M 4096, K 3072, N 1024, one thread): its stores land MR floats apart. */
typedef void (*pack_x_fn)(const float *x, int64_t ldx, int64_t rows, int64_t k0, int64_t kc,
                          float *Ap);

typedef void (*pack_w_fn)(const sf_weight *W, int64_t K, int64_t n0, int64_t nrows, int64_t k0,
                          int64_t kc, float *Bp);
typedef void (*ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int mr,
                       int nr, int add);

typedef struct {
    const char *name;
    int mr, nr;     /* micro-tile: x rows x weight rows (output features) */
    int64_t kc, nb; /* K block (x micro-panel MR x KC in L1); W block NB x KC in L2 */
    pack_x_fn pack_x;
    pack_w_fn pack_w;
    ukr_fn ukr;
} gemm_impl;

/* Ap[p][k][i] = x[m0 + p*MR + i][k0 + k], rows past M as zeros (their
 * products land in tile rows that are never stored). Here for one
 * micro-panel of r <= mr rows and columns [kb, kc): the K tail the vector
 * transposes leave. */
static void pack_x_cols(const float *x, int64_t ldx, int64_t r, int64_t k0, int64_t kb, int64_t kc,
                        int mr, float *dst) {
    for (int64_t k = kb; k < kc; k++)
        for (int64_t i = 0; i < mr; i++)
            dst[k * mr + i] = i < r ? x[i * ldx + k0 + k] : 0.0f;
}

/* Scalar packing of W columns [k0 + kb, k0 + kc) for one micro-panel: the
 * K tail the vector transposes leave. */
static void pack_w_tail(const sf_weight *W, int64_t K, int64_t n0, int64_t r, int64_t k0,
                        int64_t kb, int64_t kc, int nr, float *dst) {
    const uint16_t *w = (const uint16_t *)W->data;
    for (int64_t k = kb; k < kc; k++)
        for (int64_t j = 0; j < nr; j++) {
            float v = 0.0f;
            if (j < r) {
                uint16_t h = w[(n0 + j) * K + k0 + k];
                v = W->dtype == SF_DT_BF16 ? sf_bf16_to_f32(h) : sf_f16_to_f32(h);
            }
            dst[k * nr + j] = v;
        }
}

/* ---- AVX-512 ------------------------------------------------------------ */

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

AVX512_TARGET static inline __m512 widen16(const uint16_t *p, int bf16) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* r[i] = row i (16 lanes) -> r[j] = column j: four rounds of lane shuffles
 * (unpack ps, unpack pd, then 128-bit lanes twice). */
AVX512_TARGET static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* per group g of 4 rows: u[4g + j] holds columns j, 4+j, 8+j, 12+j */
    for (int g = 0; g < 4; g++) {
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]),
                c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
        r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
    }
}

/* Bp[p][k][j] = W[n0 + p*48 + j][k0 + k], rows past nrows as zeros. */
AVX512_TARGET static void pack_w_avx512(const sf_weight *W, int64_t K, int64_t n0, int64_t nrows,
                                        int64_t k0, int64_t kc, float *Bp) {
    enum { NR = 48 };
    const uint16_t *w = (const uint16_t *)W->data;
    const int bf16 = W->dtype == SF_DT_BF16;
    const int64_t kv = kc / 16 * 16;
    for (int64_t p = 0; p < nrows; p += NR) {
        int64_t r = nrows - p < NR ? nrows - p : NR;
        float *dst = Bp + p * kc;
        for (int h = 0; h < 3; h++) { /* three groups of 16 weight rows */
            __m512 v[16];
            for (int64_t k = 0; k < kv; k += 16) {
                for (int i = 0; i < 16; i++)
                    v[i] = h * 16 + i < r ? widen16(w + (n0 + p + h * 16 + i) * K + k0 + k, bf16)
                                          : _mm512_setzero_ps();
                transpose16(v);
                for (int j = 0; j < 16; j++)
                    _mm512_storeu_ps(dst + (k + j) * NR + h * 16, v[j]);
            }
        }
        pack_w_tail(W, K, n0 + p, r, k0, kv, kc, NR, dst);
    }
}

AVX512_TARGET static void pack_x_avx512(const float *x, int64_t ldx, int64_t rows, int64_t k0,
                                        int64_t kc, float *Ap) {
    enum { MR = 8 };
    const int64_t kv = kc / 16 * 16;
    for (int64_t p = 0; p < rows; p += MR) {
        int64_t r = rows - p < MR ? rows - p : MR;
        float *dst = Ap + p * kc;
        for (int64_t k = 0; k < kv; k += 16) {
            __m512 v[16];
            for (int i = 0; i < 16; i++)
                v[i] = i < r ? _mm512_loadu_ps(x + (p + i) * ldx + k0 + k) : _mm512_setzero_ps();
            transpose16(v);
            for (int j = 0; j < 16; j++)
                _mm512_mask_storeu_ps(dst + (k + j) * MR, 0x00ff, v[j]);
        }
    }
    if (kv < kc)
        for (int64_t p = 0; p < rows; p += MR) {
            int64_t r = rows - p < MR ? rows - p : MR;
            pack_x_cols(x + p * ldx, ldx, r, k0, kv, kc, MR, Ap + p * kc);
        }
}

/* y tile (mr x nr, row stride ldc) (+)= a micro-panel (kc x 8) . b micro-panel (kc x 48) */
AVX512_TARGET static void ukr_avx512(int64_t kc, const float *a, const float *b, float *c,
                                     int64_t ldc, int mr, int nr, int add) {
    const __m512 z = _mm512_setzero_ps();
    __m512 c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z, c20 = z, c21 = z, c22 = z, c30 = z,
           c31 = z, c32 = z, c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z, c60 = z, c61 = z,
           c62 = z, c70 = z, c71 = z, c72 = z;
    /* The y tile is fetched near the end of the loop, not before it: the
     * W micro-panel streaming through L1 during the loop (KC x 48 floats,
     * more than L1) would evict it again. */
    const int64_t kpf = kc > 48 ? kc - 48 : 0;
    for (int64_t k = 0; k < kc; k++) {
        if (k == kpf)
            for (int i = 0; i < mr; i++)
                for (int v = 0; v < 3; v++)
                    _mm_prefetch((const char *)(c + i * ldc + 16 * v), _MM_HINT_T0);
        /* W's micro-panel comes from L2, 192 bytes per k: ask 8 k ahead
         * (measured +3-7% single-threaded, M 256-4096, K 3072). Past the
         * panel's end this touches nothing: a prefetch never faults. */
        for (int v = 0; v < 3; v++)
            _mm_prefetch((const char *)(b + 48 * 8 + 16 * v), _MM_HINT_T0);
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32);
        __m512 ai;
#define ROW(i, x0, x1, x2)                                                                         \
    ai = _mm512_set1_ps(a[i]);                                                                     \
    x0 = _mm512_fmadd_ps(ai, b0, x0);                                                              \
    x1 = _mm512_fmadd_ps(ai, b1, x1);                                                              \
    x2 = _mm512_fmadd_ps(ai, b2, x2);
        ROW(0, c00, c01, c02) ROW(1, c10, c11, c12) ROW(2, c20, c21, c22) ROW(3, c30, c31, c32);
        ROW(4, c40, c41, c42) ROW(5, c50, c51, c52) ROW(6, c60, c61, c62) ROW(7, c70, c71, c72);
#undef ROW
        a += 8, b += 48;
    }
    __m512 acc[8][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},
                        {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};
    __mmask16 m[3];
    for (int v = 0; v < 3; v++) {
        int left = nr - 16 * v;
        m[v] = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < 3; v++) {
            float *ci = c + i * ldc + 16 * v;
            __m512 yv = acc[i][v];
            if (add) yv = _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], ci), yv);
            _mm512_mask_storeu_ps(ci, m[v], yv);
        }
}

/* ---- AVX2 + FMA --------------------------------------------------------- */

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

AVX2_TARGET static inline __m256 widen8(const uint16_t *p, int bf16) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

AVX2_TARGET static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* per group g of 4 rows: u[4g + j] holds columns j and 4+j */
    for (int g = 0; g < 2; g++) {
        __m256 a = t[4 * g], b = t[4 * g + 1], c = t[4 * g + 2], d = t[4 * g + 3];
        u[4 * g + 0] = _mm256_shuffle_ps(a, c, 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(a, c, 0xee);
        u[4 * g + 2] = _mm256_shuffle_ps(b, d, 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(b, d, 0xee);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

AVX2_TARGET static void pack_w_avx2(const sf_weight *W, int64_t K, int64_t n0, int64_t nrows,
                                    int64_t k0, int64_t kc, float *Bp) {
    enum { NR = 16 };
    const uint16_t *w = (const uint16_t *)W->data;
    const int bf16 = W->dtype == SF_DT_BF16;
    const int64_t kv = kc / 8 * 8;
    for (int64_t p = 0; p < nrows; p += NR) {
        int64_t r = nrows - p < NR ? nrows - p : NR;
        float *dst = Bp + p * kc;
        for (int h = 0; h < 2; h++) {
            __m256 v[8];
            for (int64_t k = 0; k < kv; k += 8) {
                for (int i = 0; i < 8; i++)
                    v[i] = h * 8 + i < r ? widen8(w + (n0 + p + h * 8 + i) * K + k0 + k, bf16)
                                         : _mm256_setzero_ps();
                transpose8(v);
                for (int j = 0; j < 8; j++)
                    _mm256_storeu_ps(dst + (k + j) * NR + h * 8, v[j]);
            }
        }
        pack_w_tail(W, K, n0 + p, r, k0, kv, kc, NR, dst);
    }
}

AVX2_TARGET static void pack_x_avx2(const float *x, int64_t ldx, int64_t rows, int64_t k0,
                                    int64_t kc, float *Ap) {
    enum { MR = 6 };
    const int64_t kv = kc / 8 * 8;
    const __m256i keep = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    for (int64_t p = 0; p < rows; p += MR) {
        int64_t r = rows - p < MR ? rows - p : MR;
        float *dst = Ap + p * kc;
        for (int64_t k = 0; k < kv; k += 8) {
            __m256 v[8];
            for (int i = 0; i < 8; i++)
                v[i] = i < r ? _mm256_loadu_ps(x + (p + i) * ldx + k0 + k) : _mm256_setzero_ps();
            transpose8(v);
            for (int j = 0; j < 8; j++)
                _mm256_maskstore_ps(dst + (k + j) * MR, keep, v[j]);
        }
    }
    if (kv < kc)
        for (int64_t p = 0; p < rows; p += MR) {
            int64_t r = rows - p < MR ? rows - p : MR;
            pack_x_cols(x + p * ldx, ldx, r, k0, kv, kc, MR, Ap + p * kc);
        }
}

AVX2_TARGET static void ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                                 int mr, int nr, int add) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), ai;
#define ROW(i, x0, x1)                                                                             \
    ai = _mm256_broadcast_ss(a + i);                                                               \
    x0 = _mm256_fmadd_ps(ai, b0, x0);                                                              \
    x1 = _mm256_fmadd_ps(ai, b1, x1);
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21);
        ROW(3, c30, c31) ROW(4, c40, c41) ROW(5, c50, c51);
#undef ROW
        a += 6, b += 16;
    }
    __m256 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (nr == 16) {
        for (int i = 0; i < mr; i++) {
            float *ci = c + i * ldc;
            __m256 y0 = acc[i][0], y1 = acc[i][1];
            if (add)
                y0 = _mm256_add_ps(_mm256_loadu_ps(ci), y0),
                y1 = _mm256_add_ps(_mm256_loadu_ps(ci + 8), y1);
            _mm256_storeu_ps(ci, y0);
            _mm256_storeu_ps(ci + 8, y1);
        }
        return;
    }
    for (int i = 0; i < mr; i++) { /* the N edge: through a buffer */
        float t[16], *ci = c + i * ldc;
        _mm256_storeu_ps(t, acc[i][0]);
        _mm256_storeu_ps(t + 8, acc[i][1]);
        for (int j = 0; j < nr; j++)
            ci[j] = add ? ci[j] + t[j] : t[j];
    }
}

/* ---- driver ------------------------------------------------------------- */

static const gemm_impl impl_avx512 = {"avx512",      8,         48, 384, 240, pack_x_avx512,
                                      pack_w_avx512, ukr_avx512};
static const gemm_impl impl_avx2 = {"avx2", 6, 16, 256, 256, pack_x_avx2, pack_w_avx2, ukr_avx2};

static int has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

static int has_avx2(void) {
    __builtin_cpu_init();
    /* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports
     * does not know "f16c". */
    unsigned a, b, c, d;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

/* NULL isa: the best this CPU has, unless SAEFLOW_GEMM_HALF says otherwise
 * (avx512 | avx2 | off: for comparing routes in benchmarks). *ok = 0 when
 * the named route is not available here. */
static const gemm_impl *impl_pick(const char *isa, int *ok) {
    if (!isa) isa = getenv("SAEFLOW_GEMM_HALF");
    *ok = 1;
    if (isa && !strcmp(isa, "off")) return NULL;
    if (isa && !strcmp(isa, "avx2")) return has_avx2() ? &impl_avx2 : (*ok = 0, NULL);
    if (isa && !strcmp(isa, "avx512")) return has_avx512() ? &impl_avx512 : (*ok = 0, NULL);
    return has_avx512() ? &impl_avx512 : has_avx2() ? &impl_avx2 : NULL;
}

static const gemm_impl *g_impl;
static int g_impl_done;

static const gemm_impl *impl_current(void) {
    /* The same answer from every thread, so a benign race: all write the same pointer. */
    if (!__atomic_load_n(&g_impl_done, __ATOMIC_ACQUIRE)) {
        int ok;
        __atomic_store_n(&g_impl, impl_pick(NULL, &ok), __ATOMIC_RELAXED);
        __atomic_store_n(&g_impl_done, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&g_impl, __ATOMIC_RELAXED);
}

int sf_gemm_half_force(const char *isa) {
    int ok;
    const gemm_impl *g = impl_pick(isa, &ok);
    if (!ok) return -1;
    __atomic_store_n(&g_impl, g, __ATOMIC_RELAXED);
    __atomic_store_n(&g_impl_done, 1, __ATOMIC_RELEASE);
    return 0;
}

const char *sf_gemm_half_isa(void) {
    const gemm_impl *g = impl_current();
    return g ? g->name : NULL;
}

/* Floats of packed x per block (32 MB): all of x for FLUX at batch 1 (512
 * rows x K 15360 at most), so W is packed once per call there; larger x is
 * done in row blocks, each packing W again (negligible at those M). */
#define SF_HGEMM_X_FLOATS ((int64_t)8 << 20)

/* One task: output features [b0, b0 + cols) for the x rows [i0, i1) of the
 * packed block (multiples of MR; `rows` valid rows in the block), all of K. */
static void run_task(const gemm_impl *g, const float *Ap, int64_t rows, int64_t rows_pad, int64_t K,
                     int64_t KC, const sf_weight *W, const float *bias, int64_t b0, int64_t cols,
                     int64_t i0, int64_t i1, float *y, int64_t ldy, int add) {
    const int mr = g->mr, nr = g->nr;
    if (i1 > rows) i1 = rows;
    if (bias) { /* bias first, then accumulate onto it: one pass over y */
        for (int64_t i = i0; i < i1; i++) {
            float *yi = y + i * ldy + b0;
            for (int64_t j = 0; j < cols; j++)
                yi[j] = add ? yi[j] + bias[b0 + j] : bias[b0 + j];
        }
        add = 1;
    }
    const int64_t kc_max = K < KC ? K : KC;
    float *Bp = sf_thread_scratch(SF_SCRATCH_GEMM_W, (size_t)((cols + nr - 1) / nr * nr * kc_max));
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        int64_t kc = K - k0 < KC ? K - k0 : KC;
        g->pack_w(W, K, b0, cols, k0, kc, Bp);
        const float *Ak = Ap + k0 * rows_pad; /* this K block's micro-panels */
        for (int64_t i = i0; i < i1; i += mr) {
            int mi = i1 - i < mr ? (int)(i1 - i) : mr;
            const float *a = Ak + i * kc;
            float *yi = y + i * ldy + b0;
            for (int64_t j = 0; j < cols; j += nr) {
                g->ukr(kc, a, Bp + j * kc, yi + j, ldy, mi, cols - j < nr ? (int)(cols - j) : nr,
                       add || k0 > 0);
            }
        }
    }
}

void sf_gemm_half(const float *x, int64_t M, int64_t K, const sf_weight *W, const float *bias,
                  float *y, int64_t ldy, int add, int nt) {
    const gemm_impl *g = impl_current();
    const int64_t N = W->shape[0], mr = g->mr;
    const int64_t KC = g->kc, NB = g->nb;
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* y = bias (+ y) */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++)
                y[m * ldy + n] = (add ? y[m * ldy + n] : 0.0f) + (bias ? bias[n] : 0.0f);
        return;
    }
    int64_t mc = SF_HGEMM_X_FLOATS / K / mr * mr;
    if (mc < mr) mc = mr;
    if (mc > M) mc = M;
    const int64_t nblocks = (N + NB - 1) / NB;
    for (int64_t m0 = 0; m0 < M; m0 += mc) {
        const int64_t rows = M - m0 < mc ? M - m0 : mc, panels = (rows + mr - 1) / mr;
        const int64_t rows_pad = panels * mr, nq = (K + KC - 1) / KC;
        float *Ap = sf_thread_scratch(SF_SCRATCH_GEMM_X, (size_t)(rows_pad * K));
        /* Tasks: W blocks x row chunks. Rows are split only when there are too
         * few W blocks to go round (small N), since each chunk packs W again. */
        int64_t chunks = 1;
        if (nblocks < 4 * nt) {
            chunks = (4 * nt + nblocks - 1) / nblocks;
            if (chunks > panels) chunks = panels;
        }
        const int64_t per_chunk = (panels + chunks - 1) / chunks * mr, ntasks = nblocks * chunks;
        float *yb = y + m0 * ldy;
        const float *xb = x + m0 * K;
        /* 1. x packed once, shared: micro-panel p of K block q at
         *    Ap + k0 * rows_pad + p * MR * kc.
         * 2. Tasks handed out as threads free up: a thread slowed by the
         *    machine (another process, a busy sibling core) takes fewer,
         *    instead of the others waiting for it at the end. Which thread
         *    computes an output changes nothing in its bits. */
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
#pragma omp for collapse(2) schedule(static)
            for (int64_t q = 0; q < nq; q++)
                for (int64_t p = 0; p < panels; p++) {
                    int64_t k0 = q * KC, kc = K - k0 < KC ? K - k0 : KC, r0 = p * mr;
                    g->pack_x(xb + r0 * K, K, rows - r0 < mr ? rows - r0 : mr, k0, kc,
                              Ap + k0 * rows_pad + r0 * kc);
                }
#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < ntasks; t++) {
                int64_t bi = t / chunks, ci = t % chunks, b0 = bi * NB;
                run_task(g, Ap, rows, rows_pad, K, KC, W, bias, b0, N - b0 < NB ? N - b0 : NB,
                         ci * per_chunk, (ci + 1) * per_chunk, yb, ldy, add);
            }
        }
    }
}
