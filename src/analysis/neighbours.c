/* Decoder-direction cosine neighbours: for each feature, the m features whose
 * decoder columns point most nearly the same way. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/analysis.h"
#include "saeflow/kernels.h"

/* a is better than b: higher cosine, or equal and lower index. */
static inline int better(float ca, int32_t ia, float cb, int32_t ib) {
    return ca > cb || (ca == cb && ia < ib);
}

void sf_decoder_neighbours(const float *W, int64_t n, int64_t d, int m, int32_t *nb_idx,
                           float *nb_cos) {
    for (int64_t i = 0; i < n * m; i++) {
        nb_idx[i] = -1;
        nb_cos[i] = 0.0f;
    }
    if (n <= 1 || m <= 0 || d <= 0) return;
    /* Wn (n, d): unit rows (zero rows stay zero, so their cosines are 0) */
    float *Wn = sf_malloc((size_t)n * (size_t)d * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t q = 0; q < d; q++)
            s += (double)W[i * d + q] * W[i * d + q];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (int64_t q = 0; q < d; q++)
            Wn[i * d + q] = W[i * d + q] * inv;
    }
    const int64_t bs = 64; /* rows per GEMM block: G (bs, n) stays small */
    const int64_t nblocks = (n + bs - 1) / bs;
#pragma omp parallel
    {
        float *G = sf_malloc((size_t)bs * (size_t)n * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < nblocks; blk++) {
            int64_t r0 = blk * bs, mb = n - r0 < bs ? n - r0 : bs;
            // G (mb, n) = Wn[r0:r0+mb] (mb, d) . Wn^T (d, n)
            sf_sgemm(0, 1, mb, n, d, 1.0f, Wn + r0 * d, d, Wn, d, 0.0f, G, n);
            for (int64_t r = 0; r < mb; r++) {
                int64_t i = r0 + r;
                int32_t *ix = nb_idx + i * m;
                float *cs = nb_cos + i * m;
                int cnt = 0;
                const float *g = G + r * n;
                for (int64_t j = 0; j < n; j++) {
                    if (j == i) continue;
                    float c = g[j];
                    if (cnt == m && !better(c, (int32_t)j, cs[m - 1], ix[m - 1])) continue;
                    /* insertion into the sorted list (m is small, ~10) */
                    int p = cnt < m ? cnt++ : m - 1;
                    while (p > 0 && better(c, (int32_t)j, cs[p - 1], ix[p - 1])) {
                        cs[p] = cs[p - 1];
                        ix[p] = ix[p - 1];
                        p--;
                    }
                    cs[p] = c;
                    ix[p] = (int32_t)j;
                }
            }
        }
        free(G);
    }
    free(Wn);
}
