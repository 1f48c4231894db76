/* Multi-head attention as two GEMMs per (batch, head, query block) plus a
 * stable softmax.
 *
 * Parallelism: the (batch, head, query block) tasks are independent, so
 * OpenMP hands them out to threads and each thread runs single-threaded
 * sgemm calls on strided views of q/k/v (no transposes or copies of the
 * heads); sf_sgemm itself always runs single-threaded (see linear.c).
 * Scores live in a per-thread scratch of (block, Tk) floats. While a whole
 * sequence's Tq x Tk scores fit in ATTN_TILE floats (1 MB: CLIP's 257 x 257,
 * FLUX at 256 px with 512 tokens) the block is the whole sequence, one task
 * per (batch, head) with the same two GEMM calls as an untiled kernel. Longer
 * sequences (FLUX at 1024 px: 4,352 tokens, a 76 MB score matrix per head)
 * are cut into blocks of ATTN_TILE / Tk query rows (multiples of 16), which
 * also gives threads work when B * H is small. Block boundaries depend only
 * on the shape, so results do not depend on the thread count. Ragged batches
 * (q_off/k_off) are the same loop with per-sequence row ranges: padding is
 * never computed. */
#include <math.h>
#include <omp.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

#define ATTN_TILE ((int64_t)1 << 18) /* score floats per thread before tiling */

void sf_attention(const sf_attn_shape *s, const float *q, const float *k, const float *v,
                  float *out) {
    const int64_t B = s->B, H = s->H, Dh = s->Dh;
    const int ragged = s->q_off && s->k_off;
    if (B <= 0 || H <= 0) return;
    /* Largest sequence lengths (scratch size) and the total work. */
    int64_t mq = 0, mk = 0;
    double work = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t tq = ragged ? s->q_off[b + 1] - s->q_off[b] : s->Tq;
        int64_t tk = ragged ? s->k_off[b + 1] - s->k_off[b] : s->Tk;
        mq = tq > mq ? tq : mq, mk = tk > mk ? tk : mk;
        work += (double)tq * (double)tk * (double)Dh * (double)H;
    }
    if (mq <= 0) return;
    const int64_t kcols = mk > 0 ? mk : 1;
    int64_t bq = mq; /* query rows per block */
    if (mq * kcols > ATTN_TILE) {
        bq = (ATTN_TILE / kcols) & ~(int64_t)15;
        if (bq < 16) bq = 16;
        if (bq > mq) bq = mq;
    }
    const int64_t nblk = (mq + bq - 1) / bq, tasks = B * H * nblk;
    /* bias (H, Tq, Tk): strides from the declared shape (see kernels.h) */
    const int64_t bias_ld = s->Tk, bias_lh = s->Tq * s->Tk;
    sf_blas_single_threaded();
    /* Tiny problems (test models, one-token layers) run on one thread: a
     * parallel region costs more than they do, and much more on a busy box. */
#pragma omp parallel if (tasks > 1 && work > 2e5)
    {
        float *S = sf_thread_scratch(SF_SCRATCH_ATTN, (size_t)(bq * kcols));
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            int64_t b = task / (H * nblk), h = (task / nblk) % H, i0 = (task % nblk) * bq;
            int64_t q0 = ragged ? s->q_off[b] : b * s->Tq, k0 = ragged ? s->k_off[b] : b * s->Tk;
            int64_t Tq = ragged ? s->q_off[b + 1] - q0 : s->Tq;
            int64_t Tk = ragged ? s->k_off[b + 1] - k0 : s->Tk;
            if (i0 >= Tq) continue;
            int64_t nq = Tq - i0 < bq ? Tq - i0 : bq; /* rows i0 .. i0+nq of this sequence */
            const float *qb = q + (q0 + i0) * s->ldq + h * Dh; // (nq, Dh) row stride ldq
            const float *kb = k + k0 * s->ldk + h * Dh;        // (Tk, Dh) row stride ldk
            const float *vb = v + k0 * s->ldv + h * Dh;        // (Tk, Dh) row stride ldv
            float *ob = out + (q0 + i0) * s->ldo + h * Dh;     // (nq, Dh) row stride ldo
            if (Tk <= 0) {
                for (int64_t i = 0; i < nq; i++)
                    for (int64_t d = 0; d < Dh; d++)
                        ob[i * s->ldo + d] = 0;
                continue;
            }
            // S (nq, Tk) = scale * Q K^T (+ bias)
            sf_sgemm(0, 1, nq, Tk, Dh, s->scale, qb, s->ldq, kb, s->ldk, 0.0f, S, Tk);
            const int32_t *km = s->key_mask ? s->key_mask + k0 : NULL;
            for (int64_t r = 0; r < nq; r++) {
                const int64_t i = i0 + r; /* query row within the sequence */
                float *row = S + r * Tk;
                if (s->bias) {
                    const float *br = s->bias + h * bias_lh + i * bias_ld;
#pragma omp simd
                    for (int64_t j = 0; j < Tk; j++)
                        row[j] += br[j];
                }
                if (s->causal)
                    for (int64_t j = i + (Tk - Tq) + 1; j < Tk; j++)
                        if (j >= 0) row[j] = -INFINITY;
                if (km)
                    for (int64_t j = 0; j < Tk; j++)
                        if (!km[j]) row[j] = -INFINITY;
                sf_softmax_row(row, Tk);
            }
            // O (nq, Dh) = P (nq, Tk) V (Tk, Dh)
            sf_sgemm(0, 0, nq, Dh, Tk, 1.0f, S, Tk, vb, s->ldv, 0.0f, ob, s->ldo);
        }
    }
}
