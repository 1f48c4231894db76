/* Multi-head attention as two GEMMs per (batch, head) plus a stable softmax.
 *
 * Parallelism: the B*H (batch, head) pairs are independent, so OpenMP hands
 * them out to threads and each thread runs single-threaded sgemm calls on
 * strided views of q/k/v (no transposes or copies of the heads); sf_sgemm
 * itself always runs single-threaded (see linear.c).
 * The score matrix of one pair is Tq x Tk floats (257 x 257 for ViT-L/14,
 * 260 KB) in a per-thread scratch buffer. Ragged batches (q_off/k_off) are
 * the same loop with per-sequence row ranges: padding is never computed. */
#include <math.h>
#include <omp.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

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
    const int64_t pairs = B * H;
    sf_blas_single_threaded();
    /* Tiny problems (test models, one-token layers) run on one thread: a
     * parallel region costs more than they do, and much more on a busy box. */
#pragma omp parallel if (pairs > 1 && work > 2e5)
    {
        float *S = sf_malloc_aligned((size_t)(mq * (mk > 0 ? mk : 1)) * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < pairs; bh++) {
            int64_t b = bh / H, h = bh % H;
            int64_t q0 = ragged ? s->q_off[b] : b * s->Tq, k0 = ragged ? s->k_off[b] : b * s->Tk;
            int64_t Tq = ragged ? s->q_off[b + 1] - q0 : s->Tq;
            int64_t Tk = ragged ? s->k_off[b + 1] - k0 : s->Tk;
            if (Tq <= 0) continue;
            const float *qb = q + q0 * s->ldq + h * Dh; // (Tq, Dh) row stride ldq
            const float *kb = k + k0 * s->ldk + h * Dh; // (Tk, Dh) row stride ldk
            const float *vb = v + k0 * s->ldv + h * Dh; // (Tk, Dh) row stride ldv
            float *ob = out + q0 * s->ldo + h * Dh;     // (Tq, Dh) row stride ldo
            if (Tk <= 0) {
                for (int64_t i = 0; i < Tq; i++)
                    for (int64_t d = 0; d < Dh; d++)
                        ob[i * s->ldo + d] = 0;
                continue;
            }
            // S (Tq, Tk) = scale * Q K^T
            sf_sgemm(0, 1, Tq, Tk, Dh, s->scale, qb, s->ldq, kb, s->ldk, 0.0f, S, Tk);
            const int32_t *km = s->key_mask ? s->key_mask + k0 : NULL;
            for (int64_t i = 0; i < Tq; i++) {
                float *row = S + i * Tk;
                if (s->causal)
                    for (int64_t j = i + (Tk - Tq) + 1; j < Tk; j++)
                        if (j >= 0) row[j] = -INFINITY;
                if (km)
                    for (int64_t j = 0; j < Tk; j++)
                        if (!km[j]) row[j] = -INFINITY;
                sf_softmax_row(row, Tk);
            }
            // O (Tq, Dh) = P (Tq, Tk) V (Tk, Dh)
            sf_sgemm(0, 0, Tq, Dh, Tk, 1.0f, S, Tk, vb, s->ldv, 0.0f, ob, s->ldo);
        }
        sf_free_aligned(S);
    }
}
