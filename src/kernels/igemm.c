/* Integer GEMM on int16 operands with int32 results, and the quantizer that
 * feeds it.
 *
 * Why: an exact F32 answer can often be found with far less F32 work. The
 * TopK SAE trainer only needs the k largest of n pre-activations per row; an
 * int16 product with a proven error bound finds a small candidate set that
 * surely holds them, and only the candidates are computed in F32 (see
 * src/sae/prefilter.c). On AVX512-VNNI, vpdpwssd does 32 int16 multiply-adds
 * per instruction at the F32 FMA's issue rate, 16: twice the arithmetic.
 *
 * C (m, n) int32 = A (m, K) int16 . B (n, K)^T, both row-major, K even after
 * padding. Operands are packed once:
 *   A: panels of SF_I16_MR rows; for each pair p of K, the MR rows' int16
 *      pairs (a[r][2p], a[r][2p+1]) as one int32 each -> [K/2][MR] int32.
 *   B: panels of SF_I16_NR rows; for each pair p, NR lanes of
 *      (b[j][2p], b[j][2p+1]) -> [K/2][NR][2] int16, two zmm per pair.
 * The micro-kernel keeps an MR x NR tile of int32 sums in 24 registers,
 * broadcasts one A pair and multiplies it into two B vectors. Integer sums
 * are exact: the only way to be wrong is overflow, which the quantizer rules
 * out (||q_a|| ||q_b|| < 2^31 bounds every partial sum by Cauchy-Schwarz,
 * and wrap-around arithmetic makes the final sum exact anyway).
 *
 * Without AVX512-VNNI (a generic build) the same packed layout runs through
 * a scalar loop: slow, but the results are the same integers. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SF_I16_VNNI 1
#else
#define SF_I16_VNNI 0
#endif

int sf_i16_gemm_fast(void) {
    return SF_I16_VNNI;
}

int64_t sf_i16_pack_a_size(int64_t m, int64_t K) {
    int64_t mp = (m + SF_I16_MR - 1) / SF_I16_MR * SF_I16_MR, kp = (K + 1) / 2;
    return mp * kp; /* int32 elements */
}

int64_t sf_i16_pack_b_size(int64_t n, int64_t K) {
    int64_t np = (n + SF_I16_NR - 1) / SF_I16_NR * SF_I16_NR, kp = (K + 1) / 2;
    return np * kp * 2; /* int16 elements */
}

/* A row's k-th int16 pair as one int32 (little-endian: low half first); a
 * missing last element (odd K) reads as 0. */
static inline int32_t pair_at(const int16_t *row, int64_t p, int64_t K) {
    uint16_t lo = (uint16_t)row[2 * p], hi = 2 * p + 1 < K ? (uint16_t)row[2 * p + 1] : 0;
    return (int32_t)((uint32_t)lo | (uint32_t)hi << 16);
}

/* dst[p * R + r] = pair p of row r, for R rows (missing rows: 0). Both packs
 * are this transpose of int32 pairs. The loop runs over p outside, so the
 * writes are contiguous and the reads walk R rows side by side (R cache
 * lines, in L1); memcpy reads the pairs without breaking aliasing rules. */
static void pack_pairs(const int16_t *src, int64_t rows, int64_t K, int64_t ld, int R,
                       int32_t *dst) {
    const int64_t kp = (K + 1) / 2, full = K / 2;
    const int nr = rows < R ? (int)rows : R;
    int64_t p = 0;
#if SF_I16_VNNI
    /* full panels with even rows: gather the 16 rows' pairs per vector */
    if (nr == R && R % 16 == 0 && ld % 2 == 0 && ld / 2 < (1 << 26)) {
        const int32_t *s32 = (const int32_t *)(const void *)src;
        const __m512i step = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32((int)(ld / 2)));
        for (; p < full; p++)
            for (int r0 = 0; r0 < R; r0 += 16)
                _mm512_storeu_si512(dst + p * R + r0,
                                    _mm512_i32gather_epi32(step, s32 + r0 * (ld / 2) + p, 4));
    }
#endif
    for (; p < full; p++) {
        int32_t *out = dst + p * R;
        for (int r = 0; r < nr; r++)
            memcpy(&out[r], src + r * ld + 2 * p, sizeof(int32_t));
        for (int r = nr; r < R; r++)
            out[r] = 0;
    }
    if (full < kp)
        for (int r = 0; r < R; r++)
            dst[full * R + r] = r < nr ? pair_at(src + r * ld, full, K) : 0;
}

void sf_i16_pack_a(const int16_t *a, int64_t m, int64_t K, int64_t lda, int32_t *pa) {
    const int64_t kp = (K + 1) / 2;
    for (int64_t r0 = 0; r0 < m; r0 += SF_I16_MR)
        pack_pairs(a + r0 * lda, m - r0, K, lda, SF_I16_MR, pa + (r0 / SF_I16_MR) * kp * SF_I16_MR);
}

void sf_i16_pack_b(const int16_t *b, int64_t n, int64_t K, int64_t ldb, int16_t *pb) {
    const int64_t kp = (K + 1) / 2;
    for (int64_t j0 = 0; j0 < n; j0 += SF_I16_NR) /* [kp][NR] pairs == [kp][NR][2] int16 */
        pack_pairs(b + j0 * ldb, n - j0, K, ldb, SF_I16_NR,
                   (int32_t *)(void *)(pb + (j0 / SF_I16_NR) * kp * SF_I16_NR * 2));
}

#if SF_I16_VNNI
/* gcc keeps 24 accumulators in registers only when each vpdpwssd is its own
 * asm statement: with the intrinsic, the tied accumulator operand made it
 * spill every tile to the stack (measured: half the issue rate). */
#define SF_DP(acc, a, b) __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#define SF_REP12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)

/* tile (MR, NR) int32, row stride ldt = A panel . B panel over kp pairs */
static void kernel_12x32(int64_t kp, const int32_t *pa, const int16_t *pb, int32_t *tile,
                         int64_t ldt) {
#define SF_DECL(i) __m512i c##i##0 = _mm512_setzero_si512(), c##i##1 = _mm512_setzero_si512();
    SF_REP12(SF_DECL)
    for (int64_t p = 0; p < kp; p++) {
        __m512i b0 = _mm512_load_si512(pb + p * 64), b1 = _mm512_load_si512(pb + p * 64 + 32);
        const int32_t *a = pa + p * SF_I16_MR;
#define SF_ROW(i)                                                                                  \
    {                                                                                              \
        __m512i ai = _mm512_set1_epi32(a[i]);                                                      \
        SF_DP(c##i##0, ai, b0);                                                                    \
        SF_DP(c##i##1, ai, b1);                                                                    \
    }
        SF_REP12(SF_ROW)
    }
#define SF_STORE(i)                                                                                \
    _mm512_storeu_si512(tile + i * ldt, c##i##0);                                                  \
    _mm512_storeu_si512(tile + i * ldt + 16, c##i##1);
    SF_REP12(SF_STORE)
#undef SF_DECL
#undef SF_ROW
#undef SF_STORE
}
#else
static void kernel_12x32(int64_t kp, const int32_t *pa, const int16_t *pb, int32_t *tile,
                         int64_t ldt) {
    for (int r = 0; r < SF_I16_MR; r++)
        for (int j = 0; j < SF_I16_NR; j++) {
            /* int64 then wrap: the same value the wrapping vector sum gives */
            int64_t s = 0;
            for (int64_t p = 0; p < kp; p++) {
                uint32_t av = (uint32_t)pa[p * SF_I16_MR + r];
                int16_t a0 = (int16_t)(av & 0xffff), a1 = (int16_t)(av >> 16);
                const int16_t *bv = pb + (p * SF_I16_NR + j) * 2;
                s += (int64_t)a0 * bv[0] + (int64_t)a1 * bv[1];
            }
            tile[r * ldt + j] = (int32_t)(uint32_t)(uint64_t)s;
        }
}
#endif

void sf_i16_gemm_packed(int64_t m, int64_t n, int64_t K, const int32_t *pa, const int16_t *pb,
                        int32_t *c, int64_t ldc) {
    const int64_t kp = (K + 1) / 2;
    const int64_t mtiles = (m + SF_I16_MR - 1) / SF_I16_MR;
    /* Rows in blocks whose packed A stays in L2 while every B panel streams
     * past it once; each B panel is then reused by all row tiles of the
     * block. B is the big operand (W_enc: 75 MB at 12288 x 3072), so fewer,
     * larger blocks mean fewer passes over it: use 3/4 of L2, split evenly. */
    static int64_t l2 = 0;
    if (!l2) {
        long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
        l2 = v > (1 << 18) && v < (1L << 26) ? v : (1 << 20);
    }
    const int64_t tile_bytes = kp * SF_I16_MR * 4, panel_bytes = kp * SF_I16_NR * 4;
    int64_t mb = (l2 * 3 / 4 - panel_bytes) / tile_bytes;
    if (mb < 1) mb = 1;
    const int64_t nblocks = (mtiles + mb - 1) / mb;
    mb = (mtiles + nblocks - 1) / nblocks;
    int32_t edge[SF_I16_MR * SF_I16_NR];
    for (int64_t t0 = 0; t0 < mtiles; t0 += mb) {
        int64_t t1 = t0 + mb < mtiles ? t0 + mb : mtiles;
        for (int64_t j0 = 0; j0 < n; j0 += SF_I16_NR) {
            const int16_t *bp = pb + (j0 / SF_I16_NR) * kp * SF_I16_NR * 2;
            const int64_t nj = n - j0 < SF_I16_NR ? n - j0 : SF_I16_NR;
            for (int64_t t = t0; t < t1; t++) {
                const int64_t r0 = t * SF_I16_MR;
                const int64_t nr = m - r0 < SF_I16_MR ? m - r0 : SF_I16_MR;
                const int32_t *ap = pa + t * kp * SF_I16_MR;
                if (nr == SF_I16_MR && nj == SF_I16_NR) {
                    kernel_12x32(kp, ap, bp, c + r0 * ldc + j0, ldc);
                } else { /* ragged edge: full tile into scratch, copy the valid part */
                    kernel_12x32(kp, ap, bp, edge, SF_I16_NR);
                    for (int64_t r = 0; r < nr; r++)
                        memcpy(c + (r0 + r) * ldc + j0, edge + r * SF_I16_NR,
                               (size_t)nj * sizeof(int32_t));
                }
            }
        }
    }
}

void sf_quant16_row(const float *v, int64_t K, int16_t *q, sf_quant16 *out) {
    double ss = 0;
    float mx = 0;
#pragma omp simd reduction(+ : ss) reduction(max : mx)
    for (int64_t i = 0; i < K; i++) {
        ss += (double)v[i] * v[i];
        mx = fabsf(v[i]) > mx ? fabsf(v[i]) : mx;
    }
    const double nrm = sqrt(ss);
    out->norm = (float)(nrm * (1.0 + 1e-6));
    /* A zero row, a row so small that its scale would be subnormal (q = 0
     * and the whole row is the residual: still a valid bound), or garbage
     * (the caller checks norm). */
    if (!(nrm > 1e-30) || !isfinite(nrm)) {
        memset(q, 0, (size_t)K * sizeof(int16_t));
        out->scale = 0;
        out->qnorm = 0;
        out->resid = out->norm;
        return;
    }
    /* ||v / s|| <= target, and rounding adds at most sqrt(K)/2 to the norm,
     * so ||q|| < SF_I16_QNORM and two such rows have |q.q'| < 2^31; and no
     * |v_i / s| may pass 32767 (a row with one dominant element). */
    const double target = SF_I16_QNORM - 0.5 * sqrt((double)K) - 2.0;
    double s0 = nrm / target;
    if (mx / s0 > 32000.0) s0 = mx / 32000.0;
    const float s = (float)s0, inv = (float)(1.0 / s0); /* s: the scale the bound uses */
    double q2 = 0, r2 = 0;
    int64_t i = 0;
#if SF_I16_VNNI
    /* gcc leaves the loop below scalar (the int16 store and the double sums) */
    __m512d aq = _mm512_setzero_pd(), ar = _mm512_setzero_pd();
    const __m512 vinv = _mm512_set1_ps(inv), vs = _mm512_set1_ps(s), lim = _mm512_set1_ps(32767.0f);
    for (; i + 16 <= K; i += 16) {
        __m512 x = _mm512_loadu_ps(v + i);
        __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(x, vinv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        t = _mm512_min_ps(_mm512_max_ps(t, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
        _mm256_storeu_si256((__m256i *)(void *)(q + i),
                            _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(t)));
        __m512 e = _mm512_fnmadd_ps(vs, t, x);
        __m512d t0 = _mm512_cvtps_pd(_mm512_castps512_ps256(t)),
                t1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(t, 1)),
                e0 = _mm512_cvtps_pd(_mm512_castps512_ps256(e)),
                e1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1));
        aq = _mm512_fmadd_pd(t0, t0, _mm512_fmadd_pd(t1, t1, aq));
        ar = _mm512_fmadd_pd(e0, e0, _mm512_fmadd_pd(e1, e1, ar));
    }
    q2 = _mm512_reduce_add_pd(aq);
    r2 = _mm512_reduce_add_pd(ar);
#endif
    for (; i < K; i++) {
        /* round to nearest by the 1.5 * 2^23 trick (|v_i * inv| < 32100) */
        float t = (v[i] * inv + 12582912.0f) - 12582912.0f;
        t = t > 32767.0f ? 32767.0f : (t < -32767.0f ? -32767.0f : t);
        q[i] = (int16_t)t;
        float e = v[i] - s * t; /* float residual; its rounding is covered below */
        q2 += (double)t * t;
        r2 += (double)e * e;
    }
    /* The bound is computed from these as if exact: round the norms up a
     * little so float rounding here can only widen it. e_i carries at most
     * 2u (|v_i| + |s t_i|) of rounding, so ||e_true|| <= ||e|| + 2u (||v|| +
     * ||s q||). */
    const double up = 1.0 + 1e-6, u2 = 2.0 * 5.9604644775390625e-08;
    const double qn = sqrt(q2) * s;
    out->scale = s;
    out->qnorm = (float)(qn * up);
    out->resid = (float)((sqrt(r2) + u2 * (nrm + qn)) * up);
}
