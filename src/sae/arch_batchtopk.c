/* BatchTopK SAE (Bussmann, Leask, Nanda 2024, "BatchTopK sparse
 * autoencoders"): in training the k * B largest ReLU pre-activations of the
 * whole batch are kept (so k is a mean per row, rows vary); at inference a
 * single threshold theta replaces the batch: f = pi * 1[pi > theta], a
 * JumpReLU with one threshold for all latents. theta is an EMA (decay
 * --threshold_decay) of the smallest activation kept per training batch,
 * updated after each step (arch_common.c), saved as config key "threshold"
 * (and as a per-latent `threshold` tensor in the SAELens layout).
 * AuxK as TopK's (arch_common.c, auxk_term). */
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"

/* k-th largest (1-based) of a[0..m), reorders a. */
static float kth_largest(float *a, int64_t m, int64_t k) {
    int64_t lo = 0, hi = m - 1, want = k - 1;
    while (lo < hi) {
        float piv = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > piv)
                i++;
            while (a[j] < piv)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[want];
}

float sae_batchtopk_select(const float *P, const float *b_enc, int B, int n, int64_t kB, float *Z,
                           int32_t *rowcnt, int par) {
    /* Candidates: each row's top c = 4k. The global threshold T from them is
     * exact unless a row filled all c slots at or above T (it may hide more):
     * then fall back to all positive values of the batch. */
    int64_t k = kB / B > 0 ? kB / B : 1;
    int c = (int)(4 * k < n ? 4 * k : n);
    int32_t *ix = malloc((size_t)B * c * sizeof(int32_t));
    float *vl = malloc((size_t)B * c * sizeof(float));
    int32_t *cnt = malloc((size_t)B * sizeof(int32_t));
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < B; b++)
        cnt[b] = sae_topk_relu(P + (size_t)b * n, b_enc, n, c, NULL, ix + (size_t)b * c,
                               vl + (size_t)b * c);
    int64_t total = 0;
    for (int b = 0; b < B; b++)
        total += cnt[b];
    float T = 0;
    int full = 0;
    float *buf = malloc((size_t)(total > 0 ? total : 1) * sizeof(float));
    for (int b = 0, w = 0; b < B; b++) {
        memcpy(buf + w, vl + (size_t)b * c, (size_t)cnt[b] * sizeof(float));
        w += cnt[b];
    }
    if (total <= kB) {
        for (int b = 0; b < B; b++)
            full |= cnt[b] == c;
        T = 0;
        for (int64_t i = 0; i < total; i++)
            T = (T == 0 || buf[i] < T) ? buf[i] : T;
    } else {
        T = kth_largest(buf, total, kB);
        for (int b = 0; b < B && !full; b++) {
            if (cnt[b] < c) continue;
            float mn = vl[(size_t)b * c];
            for (int u = 1; u < c; u++)
                mn = vl[(size_t)b * c + u] < mn ? vl[(size_t)b * c + u] : mn;
            full |= mn >= T;
        }
    }
    free(buf);
    if (full) {
        size_t m = 0;
        float *all = malloc((size_t)B * n * sizeof(float));
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++) {
                float v = P[(size_t)b * n + j] + b_enc[j];
                if (v > 0) all[m++] = v;
            }
        if ((int64_t)m <= kB) {
            T = 0;
            for (size_t i = 0; i < m; i++)
                T = (T == 0 || all[i] < T) ? all[i] : T;
        } else {
            T = kth_largest(all, (int64_t)m, kB);
        }
        free(all);
    }
    /* keep v >= T (ties at T all kept) */
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < B; b++) {
        const float *p = P + (size_t)b * n;
        float *z = Z + (size_t)b * n;
        int32_t c = 0;
        for (int j = 0; j < n; j++) {
            float v = p[j] + b_enc[j];
            int on = v > 0 && v >= T;
            z[j] = on ? v : 0.0f;
            c += on;
        }
        rowcnt[b] = c;
    }
    free(ix);
    free(vl);
    free(cnt);
    return T;
}
