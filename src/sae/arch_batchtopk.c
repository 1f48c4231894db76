/* BatchTopK SAE (Bussmann, Leask, Nanda 2024, "BatchTopK sparse
 * autoencoders"): in training the k * B largest ReLU pre-activations of the
 * whole batch are kept (so k is a mean per row, rows vary); at inference a
 * single threshold theta replaces the batch: f = pi * 1[pi > theta], a
 * JumpReLU with one threshold for all latents. theta is an EMA (decay
 * --threshold_decay) of the smallest activation kept per training batch,
 * updated after each step (sae_batchtopk_after_step), saved as config key "threshold"
 * (and as a per-latent `threshold` tensor in the SAELens layout).
 * AuxK as TopK's (arch_train.c, auxk_entries). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/dist.h"

static int batchtopk_alloc(sf_sae *s) {
    sae_alloc_core(s);
    sae_add_linear_params(s);
    return 0;
}

static void batchtopk_config_write(const sf_sae *s, cJSON *cfg) {
    cJSON_AddNumberToObject(cfg, "threshold", s->threshold);
}

int sae_batchtopk_encode_row(const sf_sae *s, const float *pre, int cap, int32_t *ix, float *vl) {
    int c = 0;
    for (int j = 0; j < s->n && c < cap; j++) {
        float v = pre[j] + s->b_enc[j];
        if (v > 0 && v > s->threshold) {
            ix[c] = j;
            vl[c++] = v;
        }
    }
    return c;
}

int sae_rowlists_reserve(sae_rowlists *L, int B, int stride) {
    size_t want = (size_t)B * (size_t)stride;
    if (want > L->cap || !L->cnt) {
        sae_rowlists_free(L);
        L->ix = malloc((want ? want : 1) * sizeof(int32_t));
        L->vl = malloc((want ? want : 1) * sizeof(float));
        L->cnt = malloc((size_t)(B > 0 ? B : 1) * sizeof(int32_t));
        L->buf = malloc((want ? want : 1) * sizeof(float));
        if (!L->ix || !L->vl || !L->cnt || !L->buf) {
            sae_rowlists_free(L);
            return sf_error("out of memory for %d x %d code lists", B, stride);
        }
        L->cap = want;
    }
    L->stride = stride;
    return 0;
}

void sae_rowlists_free(sae_rowlists *L) {
    free(L->ix);
    free(L->vl);
    free(L->cnt);
    free(L->buf);
    L->buf = NULL;
    L->ix = NULL;
    L->vl = NULL;
    L->cnt = NULL;
    L->cap = 0;
}

/* Row values v = p + b >= t, latents ascending, into ix/vl; returns the
 * count, or cap + 1 once there are more than cap. */
static int collect_at_least(const float *p, const float *b, int n, float t, int cap, int32_t *ix,
                            float *vl) {
    int c = 0, j = 0;
#ifdef __AVX512F__
    const __m512 tv = _mm512_set1_ps(t);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(p + j), _mm512_loadu_ps(b + j));
        __mmask16 m = _mm512_cmp_ps_mask(v, tv, _CMP_GE_OQ);
        if (!m) continue;
        int h = __builtin_popcount(m);
        if (c + h > cap) return cap + 1;
        _mm512_mask_compressstoreu_ps(vl + c, m, v);
        _mm512_mask_compressstoreu_epi32(ix + c, m, _mm512_add_epi32(_mm512_set1_epi32(j), iota));
        c += h;
    }
#endif
    for (; j < n; j++) {
        float v = p[j] + b[j];
        if (!(v >= t)) continue;
        if (c == cap) return cap + 1;
        ix[c] = j;
        vl[c++] = v;
    }
    return c;
}

/* Every positive value of the batch (of all ranks) decides T: the rare case
 * where the candidate lists cannot prove it. Dense codes Z. kB: over all
 * ranks. */
static int dense_fallback(const float *P, const float *b_enc, int B, int n, int64_t kB, float *Z,
                          int32_t *rowcnt, float *thr, int par) {
    size_t m = 0;
    float *pos = malloc((size_t)B * n * sizeof(float)), *all = NULL;
    if (!pos) return sf_error("out of memory for the batch-wide selection (%d x %d)", B, n);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n; j++) {
            float v = P[(size_t)b * n + j] + b_enc[j];
            if (v > 0) pos[m++] = v;
        }
    if (sf_dist_size() > 1) { /* the global batch's values (1 process: pos itself) */
        int rc = sf_dist_allgather_f32(pos, m, &all, &m);
        free(pos);
        if (rc) return -1;
        pos = all;
    }
    float T = 0;
    if ((int64_t)m <= kB) {
        for (size_t i = 0; i < m; i++)
            T = (T == 0 || pos[i] < T) ? pos[i] : T;
    } else {
        T = sae_kth_largest(pos, (int64_t)m, kB);
    }
    free(pos);
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < B; b++) {
        const float *p = P + (size_t)b * n;
        float *z = Z + (size_t)b * n;
        int32_t cb = 0;
        for (int j = 0; j < n; j++) {
            float v = p[j] + b_enc[j];
            int on = v > 0 && v >= T;
            z[j] = on ? v : 0.0f;
            cb += on;
        }
        rowcnt[b] = cb;
    }
    *thr = T;
    return 0;
}

/* The global threshold from the candidates `vals` (all rows' top lists,
 * `total` of them): the kB-th largest, or the smallest when there are no
 * more than kB. *full is set when a row filled all c slots at or above T, so
 * it may hide more values >= T and the caller must fall back to all values. */
static float candidate_threshold(float *vals, int64_t total, int64_t kB, const int32_t *cnt,
                                 const float *vl, int B, int c, int *full) {
    float T = 0;
    *full = 0;
    if (total <= kB) {
        for (int b = 0; b < B; b++)
            *full |= cnt[b] == c;
        for (int64_t i = 0; i < total; i++)
            T = (T == 0 || vals[i] < T) ? vals[i] : T;
        return T;
    }
    T = sae_kth_largest(vals, total, kB);
    for (int b = 0; b < B && !*full; b++) {
        if (cnt[b] < c) continue;
        float mn = vl[(size_t)b * c];
        for (int u = 1; u < c; u++)
            mn = vl[(size_t)b * c + u] < mn ? vl[(size_t)b * c + u] : mn;
        *full |= mn >= T;
    }
    return T;
}

/* Keep each row's candidates v >= T (ties at T all kept): every such value is
 * a candidate, so the row lists hold the codes. */
static void keep_candidates(const float *vl, const int32_t *cnt, int B, int c, float T,
                            int32_t *rowcnt, sae_rowlists *L, float *thr) {
    for (int b = 0; b < B; b++) {
        int32_t m = 0;
        const float *v = vl + (size_t)b * c;
        for (int u = 0; u < cnt[b]; u++)
            m += v[u] >= T;
        rowcnt[b] = m;
    }
    L->thr = *thr = T;
    L->valid = 1;
}

/* Under MPI (docs/mpi.md): each rank holds B of the R B rows. Every row's
 * candidates (its top c) are the same whichever rank holds it, so T, the
 * kB R-th largest of the union of all ranks' candidates (gathered), is the
 * one process's T exactly (a k-th largest does not depend on order), as is
 * the "a full row may hide more" test (OR over ranks) and the fallback.
 * The hint is not used: it only saves time on one process. */
static int select_dist(const float *P, const float *b_enc, int B, int n, int64_t kB, float *Z,
                       int32_t *rowcnt, sae_rowlists *L, float *thr, int par) {
    const int64_t k = kB / B > 0 ? kB / B : 1, kBg = kB * sf_dist_size();
    const int c = (int)(4 * k < n ? 4 * k : n);
    L->valid = 0;
    if (sae_rowlists_reserve(L, B, c)) return -1;
    int32_t *ix = L->ix, *cnt = L->cnt;
    float *vl = L->vl, *buf = L->buf;
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < B; b++)
        cnt[b] = sae_topk_relu(P + (size_t)b * n, b_enc, n, c, NULL, ix + (size_t)b * c,
                               vl + (size_t)b * c);
    size_t w = 0;
    for (int b = 0; b < B; b++) {
        memcpy(buf + w, vl + (size_t)b * c, (size_t)cnt[b] * sizeof(float));
        w += (size_t)cnt[b];
    }
    float *all = NULL;
    size_t total = 0;
    if (sf_dist_allgather_f32(buf, w, &all, &total)) return -1;
    int f;
    float T = candidate_threshold(all, (int64_t)total, kBg, cnt, vl, B, c, &f);
    free(all);
    unsigned char full = (unsigned char)f;
    if (sf_dist_allreduce_max_u8(&full, 1)) return -1;
    if (full) return dense_fallback(P, b_enc, B, n, kBg, Z, rowcnt, thr, par);
    keep_candidates(vl, cnt, B, c, T, rowcnt, L, thr);
    return 0;
}

int sae_batchtopk_select(const float *P, const float *b_enc, int B, int n, int64_t kB, float *Z,
                         int32_t *rowcnt, sae_rowlists *L, float hint, float *thr, int par) {
    /* Candidates: each row's top c = 4k. The global threshold T from them is
     * exact unless a row filled all c slots at or above T (it may hide more):
     * then fall back to all positive values of the batch.
     * With a hint (last batch's T; it moves slowly) the candidates are first
     * every value >= 3/4 of it, one compare per value instead of a heap per
     * row. A row with more than c such values takes its heap top c instead.
     * If at least kB values were collected, T >= the cut, so every value
     * left out is below T (or sits in a heap row, which the "full" test
     * below covers): the same T and codes as without the hint. */
    if (sf_dist_size() > 1) return select_dist(P, b_enc, B, n, kB, Z, rowcnt, L, thr, par);
    int64_t k = kB / B > 0 ? kB / B : 1;
    const int c = (int)(4 * k < n ? 4 * k : n);
    L->valid = 0;
    if (sae_rowlists_reserve(L, B, c)) return -1;
    int32_t *ix = L->ix, *cnt = L->cnt;
    float *vl = L->vl;
    int64_t total = 0;
    if (hint > 0 && isfinite(hint)) {
        const float cut = 0.75f * hint;
#pragma omp parallel for schedule(static) if (par)
        for (int b = 0; b < B; b++) {
            const float *p = P + (size_t)b * n;
            int32_t *ib = ix + (size_t)b * c;
            float *vb = vl + (size_t)b * c;
            cnt[b] = collect_at_least(p, b_enc, n, cut, c, ib, vb);
            if (cnt[b] > c) cnt[b] = sae_topk_relu(p, b_enc, n, c, NULL, ib, vb);
        }
        for (int b = 0; b < B; b++)
            total += cnt[b];
        if (total < kB) total = -1; /* cut too high: no proof, redo below */
    }
    if (total <= 0) {
#pragma omp parallel for schedule(static) if (par)
        for (int b = 0; b < B; b++)
            cnt[b] = sae_topk_relu(P + (size_t)b * n, b_enc, n, c, NULL, ix + (size_t)b * c,
                                   vl + (size_t)b * c);
        total = 0;
        for (int b = 0; b < B; b++)
            total += cnt[b];
    }
    float *buf = L->buf; /* kept across steps: a fresh 2 MB+ block page-faults every step */
    for (int b = 0, w = 0; b < B; b++) {
        memcpy(buf + w, vl + (size_t)b * c, (size_t)cnt[b] * sizeof(float));
        w += cnt[b];
    }
    int full;
    float T = candidate_threshold(buf, total, kB, cnt, vl, B, c, &full);
    if (full) return dense_fallback(P, b_enc, B, n, kB, Z, rowcnt, thr, par);
    keep_candidates(vl, cnt, B, c, T, rowcnt, L, thr);
    return 0;
}

/* ---------------------------------------------------------------- training -- */

int sae_batchtopk_stage(sae_arch_state *a) {
    const sf_sae *s = a->s;
    if (sae_batchtopk_select(a->P, s->b_enc, a->B, s->n, (int64_t)s->k_sel * a->B, a->Z, a->rcnt,
                             &a->rl, a->have_min ? a->last_min : 0, &a->last_min, a->par))
        return -1;
    a->have_min = a->last_min > 0;
    return 0;
}

void sae_batchtopk_after_step(sae_arch_state *a, const sae_train_io *io) {
    sf_sae *s = a->s;
    if (!a->have_min) return;
    /* Inference threshold: EMA of the smallest activation BatchTopK kept
     * (Bussmann et al. 2024); the first step sets it. */
    const double dc = io->o->threshold_decay;
    if (io->steps <= 1 || s->threshold <= 0)
        s->threshold = a->last_min;
    else
        s->threshold = (float)(dc * s->threshold + (1.0 - dc) * a->last_min);
}

const sae_arch_ops sae_batchtopk_ops = {
    .k_select = 1,
    .alloc = batchtopk_alloc,
    .config_write = batchtopk_config_write,
    .encode_row = sae_batchtopk_encode_row,
    .select = sae_batchtopk_stage,
    .after_step = sae_batchtopk_after_step,
};
