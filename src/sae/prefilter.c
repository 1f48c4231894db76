/* Exact TopK through an int16 pre-filter.
 *
 * The TopK encoder needs, per row, the k largest of n pre-activations
 * v_j = w_j . xc + b_j (F32). Computing all n in F32 is the encoder GEMM, the
 * biggest cost of a training step. Instead:
 *   1. Quantise every row of W_enc and of xc to int16 (sf_quant16_row): for
 *      each row, v ~ s*q with a known residual norm.
 *   2. One int16 GEMM (twice the arithmetic rate of F32 on AVX512-VNNI) gives
 *      A_j = sx * sw_j * (qx . qw_j) + b_j for every latent.
 *   3. A proven bound R_j >= |fl32(v_j) - A_j| (below) gives lo_j = A_j - R_j
 *      and hi_j = A_j + R_j around the value the F32 path would compute.
 *   4. tau = the k-th largest lo (0 when fewer than k are positive). A latent
 *      can be in the TopK only if hi_j >= tau: the k latents with the largest
 *      lo all have v >= tau, so the k-th largest v is >= tau. Ties change
 *      nothing, since the test is >= and every winner has v >= that k-th value.
 *   5. The few candidates (about k plus those within 2R of the threshold) are
 *      computed in F32 (sae_dot), and the TopK is taken among them with the
 *      usual rule (largest first, ties to the lower index, ReLU).
 * So the result is the exact F32 TopK of sae_dot values; only the summation
 * order differs from the GEMM path (values agree to F32 rounding).
 *
 * The bound. With x = sx qx + dx and w = sw qw + dw (real arithmetic),
 *   x.w - sx sw (qx.qw) = dx.w + (sx qx).dw,
 * so |x.w - A + b| <= ||dx|| ||w|| + ||sx qx|| ||dw|| (Cauchy-Schwarz). The F32
 * dot product adds at most gamma_d ||x|| ||w|| (gamma_d = d u / (1 - d u),
 * u = 2^-24, any summation order),
 * adding b_j and forming A, lo and hi in float a few u (|A| + |b| + R), and
 * underflow at most (d + 8) 2^-149 (a row too small for a normal scale is
 * all residual: q = 0). R is
 * computed with every term rounded up and a 1e-3 relative margin, so float
 * rounding inside the bound itself cannot make it too small. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "saeflow/kernels.h"
#include "sae/prefilter.h"
#include "sae/sae_internal.h"

#define PF_U 5.9604644775390625e-08f /* 2^-24 */

void sae_pf_thread_init(sae_pf_thread *h, int n, int d, int max_rows) {
    memset(h, 0, sizeof *h);
    h->pa = sf_malloc_aligned((size_t)sf_i16_pack_a_size(max_rows, d) * sizeof(int32_t));
    h->q = sf_malloc((size_t)SF_I16_NR * d * sizeof(int16_t));
    h->xq = sf_malloc((size_t)max_rows * sizeof(sf_quant16));
    h->lo = sf_malloc((size_t)n * sizeof(float));
    h->hi = sf_malloc((size_t)n * sizeof(float));
    h->cj = sf_malloc((size_t)n * sizeof(int32_t));
    h->cl = sf_malloc((size_t)n * sizeof(float));
    h->ch = sf_malloc((size_t)n * sizeof(float));
    h->lm = sf_malloc((size_t)(n + 16) * sizeof(float));
    h->lcount = sf_malloc((size_t)(n + 1) * sizeof(int32_t));
    h->dl = sf_malloc((size_t)n * sizeof(int32_t));
    h->aj = sf_malloc((size_t)n * sizeof(int32_t));
}

void sae_pf_thread_free(sae_pf_thread *h) {
    sf_free_aligned(h->pa);
    free(h->q), free(h->xq), free(h->lo), free(h->hi), free(h->cj), free(h->cl), free(h->ch);
    free(h->lm), free(h->off), free(h->ent), free(h->env), free(h->erow), free(h->eord);
    free(h->lcount), free(h->eflag), free(h->dl), free(h->aj);
    memset(h, 0, sizeof *h);
}

void sae_pf_free(sae_pf *pf) {
    if (!pf) return;
    sf_free_aligned(pf->pw);
    free(pf->wn), free(pf->wr), free(pf->ws), free(pf->bu);
    for (int i = 0; i < pf->nthreads; i++)
        sae_pf_thread_free(&pf->th[i]);
    free(pf->th);
    free(pf);
}

int sae_pf_wanted(const sf_sae *s, int aux_k) {
    if (s->d > (1 << 20)) return 0; /* keeps the rounding bound (d u < 1/16) meaningful */
    const char *env = getenv("SAEFLOW_PREFILTER"); /* 0: never, 1: always (tests) */
    if (env && env[0] == '0') return 0;
    if (env && env[0] == '1') return 1;
    /* Pays off when the GEMM is large and the candidates few: with n / k
     * small the candidate set is a large share of the row anyway. AuxK's
     * ~aux_k extra F32 values per row are read latent by latent, far below
     * GEMM speed: measured slower than the F32 GEMM at aux_k = n/16, so only
     * while aux_k <= n/24. */
    return sf_i16_gemm_fast() && s->n >= 16 * s->k && s->n >= 1024 && s->d >= 64 &&
           (int64_t)aux_k * 24 <= s->n;
}

int sae_pf_alloc(sae_pf **ppf, const sf_sae *s, int max_rows, int nthreads) {
    sae_pf *pf = *ppf;
    const int n = s->n, d = s->d;
    if (pf && pf->n == n && pf->d == d && pf->nthreads >= nthreads && pf->max_rows >= max_rows)
        return 0;
    sae_pf_free(pf);
    pf = *ppf = sf_calloc(1, sizeof *pf);
    pf->n = n, pf->d = d, pf->nthreads = nthreads, pf->max_rows = max_rows;
    pf->pw = sf_malloc_aligned((size_t)sf_i16_pack_b_size(n, d) * sizeof(int16_t));
    pf->wn = sf_malloc((size_t)n * sizeof(float));
    pf->wr = sf_malloc((size_t)n * sizeof(float));
    pf->ws = sf_malloc((size_t)n * sizeof(float));
    pf->bu = sf_malloc((size_t)n * sizeof(float));
    /* group maxima: about 2k of them (see row_candidates). Fewer maxima give
     * a looser first threshold (a few more latents pass it; the exact one
     * follows from those), but a cheaper quickselect: 256 -> 64 values at
     * n 4096, k 32 took it from 6.3 to 2.6 ms per benchmark step. */
    int want = 2 * s->k > 32 ? 2 * s->k : 32;
    pf->group = (n / 16) / (want / 16 > 0 ? want / 16 : 1);
    pf->group = pf->group < 1 ? 1 : pf->group;
    pf->th = sf_calloc((size_t)(nthreads > 0 ? nthreads : 1), sizeof *pf->th);
    for (int i = 0; i < nthreads; i++)
        sae_pf_thread_init(&pf->th[i], n, d, max_rows);
    return 0;
}

int sae_pf_quant_panel(sae_pf *pf, const sf_sae *s, int64_t p, int16_t *q) {
    const int n = pf->n, d = pf->d;
    const int64_t kp = (d + 1) / 2;
    const int j0 = (int)(p * SF_I16_NR), nj = n - j0 < SF_I16_NR ? n - j0 : SF_I16_NR;
    int bad = 0;
    for (int j = j0; j < j0 + nj; j++) {
        sf_quant16 st;
        sf_quant16_row(s->W_enc + (size_t)j * d, d, q + (size_t)(j - j0) * d, &st);
        bad |= !isfinite(st.norm) || !isfinite(s->b_enc[j]);
        /* 1e-3 margin: covers float rounding in forming R itself */
        pf->wn[j] = st.norm * 1.001f;
        pf->wr[j] = st.resid * 1.001f;
        pf->ws[j] = st.scale;
        pf->bu[j] = 8.0f * PF_U * fabsf(s->b_enc[j]);
    }
    sf_i16_pack_b(q, nj, d, d, pf->pw + p * kp * SF_I16_NR * 2);
    return bad;
}

int sae_pf_prepare(sae_pf **ppf, const sf_sae *s, int max_rows, int nthreads) {
    sae_pf_alloc(ppf, s, max_rows, nthreads);
    sae_pf *pf = *ppf;
    const int64_t panels = (s->n + SF_I16_NR - 1) / SF_I16_NR;
    int bad = 0;
#pragma omp parallel if (sae_parallel_worth((size_t)s->n * s->d * 8)) reduction(| : bad)
    {
        int16_t *q = sf_malloc((size_t)SF_I16_NR * s->d * sizeof(int16_t));
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; p++)
            bad |= sae_pf_quant_panel(pf, s, p, q);
        free(q);
    }
    return bad ? -1 : 0;
}

void sae_pf_gemm(const sae_pf *pf, sae_pf_thread *h, const float *xc, int m, int32_t *c) {
    const int d = pf->d;
    const int64_t kp = (d + 1) / 2;
    for (int r0 = 0; r0 < m; r0 += SF_I16_MR) {
        const int nr = m - r0 < SF_I16_MR ? m - r0 : SF_I16_MR;
        for (int r = 0; r < nr; r++)
            sf_quant16_row(xc + (size_t)(r0 + r) * d, d, h->q + (size_t)r * d, &h->xq[r0 + r]);
        sf_i16_pack_a(h->q, nr, d, d, h->pa + (int64_t)(r0 / SF_I16_MR) * kp * SF_I16_MR);
    }
    sf_i16_gemm_packed(m, pf->n, d, h->pa, pf->pw, c, pf->n);
}

/* Compacts the j in [j0, n) with hi[j] >= t into cj (with lo and hi). */
static int collect(const float *lo, const float *hi, int n, float t, int32_t *cj, float *cl,
                   float *ch) {
    int nc = 0, j = 0;
#ifdef __AVX512F__
    const __m512 vt = _mm512_set1_ps(t);
    __m512i jv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= n; j += 16) {
        __m512 h = _mm512_loadu_ps(hi + j);
        __mmask16 mk = _mm512_cmp_ps_mask(h, vt, _CMP_GE_OQ);
        if (mk) {
            _mm512_mask_compressstoreu_epi32(cj + nc, mk, jv);
            _mm512_mask_compressstoreu_ps(cl + nc, mk, _mm512_loadu_ps(lo + j));
            _mm512_mask_compressstoreu_ps(ch + nc, mk, h);
            nc += __builtin_popcount(mk);
        }
        jv = _mm512_add_epi32(jv, _mm512_set1_epi32(16));
    }
#endif
    for (; j < n; j++)
        if (hi[j] >= t) cj[nc] = j, cl[nc] = lo[j], ch[nc++] = hi[j];
    return nc;
}

/* Latent j's bounds for a row (its int32 product c, scale sx, per-row
 * bound terms alpha, beta, eta): returns lo, stores hi. */
static inline float bounds(const sae_pf *pf, const float *b, int32_t c, int j, float sx,
                           float alpha, float beta, float eta, float *hi) {
    float a = (float)c * pf->ws[j] * sx;
    float R = alpha * pf->wn[j] + beta * pf->wr[j] + 8.0f * PF_U * fabsf(a) + pf->bu[j] + eta;
    *hi = a + b[j] + R;
    return a + b[j] - R;
}

/* The candidates of row r of the chunk (latents whose F32 value may be in
 * its TopK), ascending, into cj; returns how many. With ak > 0 also those of
 * the AuxK selection (the ak largest among the nd dead latents dl[]) into
 * aj, their count in *na. */
static int row_candidates(const sae_pf *pf, sae_pf_thread *h, const sf_sae *s, const int32_t *crow,
                          int r, int k, int32_t *cj, const int32_t *dl, int nd, int ak, int32_t *aj,
                          int *na) {
    *na = 0;
    const int n = pf->n, d = pf->d;
    const sf_quant16 *xq = &h->xq[r];
    if (!isfinite(xq->norm)) return 0; /* NaN/Inf row: the caller reports it */
    const float sx = xq->scale;
    /* gamma_{d+8} = (d+8)u / (1 - (d+8)u) bounds the F32 dot product's error
     * relative to sum |x_i w_i| <= ||x|| ||w||, for any summation order */
    const double du = (double)(d + 8) * PF_U;
    const float alpha = (xq->resid + (float)(du / (1.0 - du)) * xq->norm) * 1.001f;
    const float beta = xq->qnorm * 1.001f;
    /* what subnormal products can lose beyond gamma: (d + 8) 2^-149; none in
     * an all-zero row, whose products are exact zeros */
    const float eta = xq->norm > 0 ? ldexpf((float)(d + 8), -149) : 0.0f;
    const float *b = s->b_enc;
    float *lo = h->lo, *hi = h->hi, *lm = h->lm;
    /* Bounds, and the maximum lower bound of each lane over groups of G
     * blocks of 16: distinct elements, so the k-th largest of those maxima
     * is <= the k-th largest lo (tau) and a safe first threshold. */
    const int G = pf->group, nb = n / 16;
    int nm = 0;
    for (int b0 = 0; b0 < nb; b0 += G) {
        float mx[16];
        for (int u = 0; u < 16; u++)
            mx[u] = -INFINITY;
        for (int bb = b0; bb < b0 + G && bb < nb; bb++) {
            const int j0 = bb * 16;
#pragma omp simd
            for (int u = 0; u < 16; u++) {
                const int j = j0 + u;
                float l = bounds(pf, b, crow[j], j, sx, alpha, beta, eta, &hi[j]);
                lo[j] = l;
                mx[u] = l > mx[u] ? l : mx[u];
            }
        }
        for (int u = 0; u < 16; u++)
            lm[nm++] = mx[u];
    }
    for (int j = nb * 16; j < n; j++) {
        lo[j] = bounds(pf, b, crow[j], j, sx, alpha, beta, eta, &hi[j]);
        lm[nm++] = lo[j];
    }
    float t0 = nm >= k ? sae_kth_largest(lm, nm, k) : 0.0f;
    /* candidates for the first threshold (hi > 0 for ReLU)... */
    float *cl = h->cl, *ch = h->ch;
    int nc = collect(lo, hi, n, t0 > 0 ? t0 : FLT_TRUE_MIN, cj, cl, ch);
    /* ...hold every latent with lo >= t0, so tau, the k-th largest lo, is the
     * k-th largest lo among them; then keep hi >= tau. */
    int npos = 0;
    for (int u = 0; u < nc; u++)
        if (cl[u] > 0) lm[npos++] = cl[u];
    const float tau = npos >= k ? sae_kth_largest(lm, npos, k) : 0.0f;
    const float t = tau > 0 ? tau : FLT_TRUE_MIN;
    int m = 0;
    for (int u = 0; u < nc; u++)
        if (ch[u] >= t) cj[m++] = cj[u];
    if (ak > 0) { /* the same argument over the dead latents only */
        int np = 0;
        for (int u = 0; u < nd; u++)
            if (lo[dl[u]] > 0) lm[np++] = lo[dl[u]];
        const float ta = np >= ak ? sae_kth_largest(lm, np, ak) : 0.0f;
        const float tt = ta > 0 ? ta : FLT_TRUE_MIN;
        int a = 0;
        for (int u = 0; u < nd; u++)
            if (hi[dl[u]] >= tt) aj[a++] = dl[u];
        *na = a;
    }
    return m;
}

void sae_pf_select_chunk(const sae_pf *pf, sae_pf_thread *h, const sf_sae *s, const int32_t *c,
                         int m, const float *xc, int k, int32_t *idx, float *val, int32_t *cnt,
                         const sae_pf_aux *aux, int64_t *ncand) {
    const int n = pf->n, d = pf->d;
    const int ak = aux ? aux->ak : 0;
    int nd = 0;
    if (ak > 0) /* the dead latents, ascending */
        for (int j = 0; j < n; j++)
            if (aux->dead[j]) h->dl[nd++] = j;
    /* 1. every row's candidates, as CSR (row r: ent[off[r] .. off[r+1])),
     * TopK and AuxK candidates merged; eflag bit 0: TopK, bit 1: AuxK */
    if (h->off_cap < m + 1) {
        free(h->off);
        h->off = sf_malloc((size_t)(m + 1) * sizeof(int32_t));
        h->off_cap = m + 1;
    }
    int32_t *off = h->off;
    off[0] = 0;
    for (int r = 0; r < m; r++) {
        if (h->ent_cap - off[r] < n) { /* room for a whole row */
            h->ent_cap = off[r] + n + h->ent_cap;
            h->ent = sf_realloc(h->ent, (size_t)h->ent_cap * sizeof(int32_t));
            h->env = sf_realloc(h->env, (size_t)h->ent_cap * sizeof(float));
            h->erow = sf_realloc(h->erow, (size_t)h->ent_cap * sizeof(int32_t));
            h->eord = sf_realloc(h->eord, (size_t)h->ent_cap * sizeof(int32_t));
            h->eflag = sf_realloc(h->eflag, (size_t)h->ent_cap);
        }
        int32_t *e = h->ent + off[r];
        uint8_t *f = h->eflag + off[r];
        int na = 0;
        const int nm =
            row_candidates(pf, h, s, c + (size_t)r * n, r, k, h->cj, h->dl, nd, ak, h->aj, &na);
        int u = 0, v = 0, w = 0; /* merge the two ascending lists */
        while (u < nm || v < na) {
            if (v >= na || (u < nm && h->cj[u] < h->aj[v]))
                e[w] = h->cj[u++], f[w++] = 1;
            else if (u >= nm || h->aj[v] < h->cj[u])
                e[w] = h->aj[v++], f[w++] = 2;
            else
                e[w] = h->cj[u++], f[w++] = 3, v++;
        }
        off[r + 1] = off[r] + w;
    }
    const int ne = off[m];
    *ncand += ne;
    /* 2. F32 values latent by latent: each candidate W_enc row is read once
     * for all the rows of a block that need it. Blocks of rows whose inputs
     * fit in ~1 MB (L2) when a latent then still serves about two of their
     * rows (n 4096, k 32, d 1024: 256 rows); else the whole chunk, whose
     * rows come from L3 (W_enc's from memory once it outgrows the caches).
     * Counting sort of a block's entries by latent, rows ascending within a
     * latent. */
    int rb = (int)((1 << 20) / ((int64_t)d * (int64_t)sizeof(float)));
    if ((int64_t)rb * (ne / (m > 0 ? m : 1)) < 2 * (int64_t)n) rb = m;
    if (rb < 1) rb = 1;
    int32_t *lc = h->lcount; /* (n + 1) */
    const float *b = s->b_enc;
    for (int r0 = 0; r0 < m; r0 += rb) {
        const int r1 = r0 + rb < m ? r0 + rb : m, eb = off[r0], ee = off[r1];
        memset(lc, 0, (size_t)(n + 1) * sizeof(int32_t));
        for (int r = r0; r < r1; r++)
            for (int e = off[r]; e < off[r + 1]; e++) {
                lc[h->ent[e] + 1]++;
                h->erow[e] = r;
            }
        for (int j = 0; j < n; j++)
            lc[j + 1] += lc[j];
        for (int e = eb; e < ee; e++)
            h->eord[eb + lc[h->ent[e]]++] = e; /* lc[j] now ends latent j's range */
        int e0 = eb;
        while (e0 < ee) {
            const int j = h->ent[h->eord[e0]];
            int e1 = e0 + 1;
            while (e1 < ee && h->ent[h->eord[e1]] == j)
                e1++;
            const float *w = s->W_enc + (size_t)j * d;
            int e = e0;
            /* sae_dot4(rows, w) == sae_dot(w, row) bit for bit (a*b == b*a) */
            for (; e + 4 <= e1; e += 4) {
                const float *x4[4];
                for (int v = 0; v < 4; v++)
                    x4[v] = xc + (size_t)h->erow[h->eord[e + v]] * d;
                float o4[4];
                sae_dot4(x4, w, d, o4);
                for (int v = 0; v < 4; v++)
                    h->env[h->eord[e + v]] = o4[v] + b[j];
            }
            for (; e < e1; e++)
                h->env[h->eord[e]] = sae_dot(w, xc + (size_t)h->erow[h->eord[e]] * d, d) + b[j];
            e0 = e1;
        }
    }
    /* 3. each row's TopK (and AuxK) among its candidates */
    for (int r = 0; r < m; r++) {
        int nm = 0, na = 0;
        int32_t *mj = h->cj, *aj = h->aj;
        float *mv = h->cl, *av = h->ch;
        for (int e = off[r]; e < off[r + 1]; e++) {
            if (h->eflag[e] & 1) mj[nm] = h->ent[e], mv[nm++] = h->env[e];
            if (h->eflag[e] & 2) aj[na] = h->ent[e], av[na++] = h->env[e];
        }
        cnt[r] = sae_topk_relu_list(mj, mv, nm, k, idx + (size_t)r * k, val + (size_t)r * k);
        if (ak > 0)
            aux->cnt[r] = sae_topk_relu_list(aj, av, na, ak, aux->idx + (size_t)r * ak,
                                             aux->val + (size_t)r * ak);
    }
}
