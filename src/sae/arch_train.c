/* The training step of the architectures other than TopK: a driver of named
 * stages (sae_arch_grad at the end of the file reads as the list), each
 * architecture supplying its own pieces through its table (arch_<name>.c,
 * sae_arch_ops). Data flow in arch_internal.h; maths in
 * docs/architectures.md.
 *
 *   encode_chunks      xc = x - b_dec, P = xc W_enc^T            (sgemm per row chunk)
 *   activations        Z from P: ops->select (k archs, row lists) or
 *                      ops->forward_rows (dense; or straight into row lists)
 *   dense step         recon_grad (x_hat per prefix, dL/dx_hat), G = dL/dZ,
 *                      ops->dense_aux, ops->backward_rows -> dL/dP,
 *                      ops->dense_dead, dense_grads (GEMMs over latent blocks)
 *   sparse step        build_entries (CSR), decode_rows (sparse x_hat,
 *                      recon_grad, ops->row_aux, ops->entry_grads), auxk_entries,
 *                      latent_rows (sae_latent_grad_rows per latent +
 *                      ops->latent_grads)
 *   both               bdec_grad (sum dL/dx_hat - W_enc^T colsum dL/dP), finish_step
 * Every product runs on fixed row chunks / latent blocks, so results do not
 * depend on the thread count. */
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/dist.h"

#define ALB                                                                                        \
    512 /* latents per block in the reduction GEMMs (fixed: determinism; large                     \
         * enough that re-packing the (B, d) operand per block is amortised) */

/* Rows per block in forward_lists: their codes (LIST_ROWS x n floats) stay
 * in cache between the activation and the compress. */
#define LIST_ROWS 16

/* ------------------------------------------------------------- helpers -- */

int sae_param_of(const sf_sae *s, const float *data) {
    for (int i = 0; i < s->n_params; i++)
        if (s->params[i].data == data) return i;
    return -1;
}

void sae_gemm_nt(int m, int cols, int kk, const float *A, int lda, const float *Bm, int ldb,
                 float beta, float *C, int ldc) {
    sae_sgemm(0, 1, m, cols, kk, 1.0f, A, lda, Bm, ldb, beta, C, ldc);
}

void sae_gemm_nn(int m, int d, int kk, const float *A, int lda, const float *Bm, int ldb,
                 float beta, float *C, int ldc) {
    sae_sgemm(0, 0, m, d, kk, 1.0f, A, lda, Bm, ldb, beta, C, ldc);
}

void sae_gemm_tn(int cols, int d, int rows, const float *A, int lda, const float *Bm, int ldb,
                 float beta, float *C, int ldc) {
    sae_sgemm(1, 0, cols, d, rows, 1.0f, A, lda, Bm, ldb, beta, C, ldc);
}

sae_arch_rows sae_chunk_view(const sae_arch_state *a, int r0, int m, double *pen, int32_t *cnt) {
    const int n = a->s->n;
    const size_t off = (size_t)r0 * n;
    sae_arch_rows rw = {a->s,
                        a->o,
                        n,
                        m,
                        a->lm,
                        a->invB,
                        a->wn,
                        a->P + off,
                        a->Z + off,
                        a->G ? a->G + off : NULL,
                        a->H ? a->H + off : NULL,
                        a->A ? a->A + off : NULL,
                        a->GA ? a->GA + off : NULL,
                        a->E ? a->E + off : NULL,
                        pen,
                        cnt,
                        a->ex};
    return rw;
}

int32_t sae_row_entries(int n, const float *gate, const float *z, const float *p, const float *be,
                        const float *th, float half, int32_t *idx, float *val) {
    int32_t c = 0;
    int j = 0;
#ifdef __AVX512F__
    const __m512 zero = _mm512_setzero_ps(), hv = _mm512_set1_ps(half);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= n; j += 16) {
        __mmask16 m =
            _mm512_cmp_ps_mask(_mm512_loadu_ps(gate ? gate + j : z + j), zero, _CMP_GT_OQ);
        if (p) {
            __m512 u = _mm512_sub_ps(_mm512_add_ps(_mm512_loadu_ps(p + j), _mm512_loadu_ps(be + j)),
                                     _mm512_loadu_ps(th + j));
            m |= _mm512_cmp_ps_mask(_mm512_abs_ps(u), hv, _CMP_LT_OQ);
        }
        if (!m) continue;
        _mm512_mask_compressstoreu_epi32(idx + c, m, _mm512_add_epi32(_mm512_set1_epi32(j), iota));
        _mm512_mask_compressstoreu_ps(val + c, m, _mm512_loadu_ps(z + j));
        c += __builtin_popcount(m);
    }
#endif
    for (; j < n; j++)
        if ((gate ? gate[j] : z[j]) > 0 || (p && fabsf(p[j] + be[j] - th[j]) < half)) {
            idx[c] = j;
            val[c++] = z[j];
        }
    return c;
}

/* row b's sparse-step entries from codes z: the architecture's own rule, or
 * the active codes */
static int32_t entries_of(const sae_arch_state *a, int b, const float *z, int32_t *idx,
                          float *val) {
    if (a->ops->row_entries) return a->ops->row_entries(a, b, z, idx, val);
    return sae_row_entries(a->s->n, NULL, z, NULL, NULL, NULL, 0, idx, val);
}

/* ---------------------------------------------------------------- state -- */

sae_arch_state *sae_arch_state_new(sf_sae *s, const sf_sae_train_opts *o, int max_batch) {
    (void)o;
    const size_t B = (size_t)max_batch, n = (size_t)s->n, d = (size_t)s->d;
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    size_t bn;
    if (!ops) {
        sf_error("architecture %d has no training step here", (int)s->arch);
        return NULL;
    }
    if (sf_mul_size(B, n, &bn) || bn > ((size_t)1 << 33)) {
        sf_error("batch %zu x pages %zu is too large for the dense %s step", B, n,
                 sf_sae_arch_name(s->arch));
        return NULL;
    }
    sae_arch_state *a = sf_calloc(1, sizeof *a);
    a->s = s;
    a->ops = ops;
    a->maxB = max_batch;
    int gs[SF_SAE_MAX_GROUPS], ge[SF_SAE_MAX_GROUPS];
    const int ng = ops->prefixes ? ops->prefixes(s, gs, ge) : 1;
    a->xc = sf_malloc_aligned(B * d * sizeof(float));
    a->Xh = sf_malloc_aligned((size_t)ng * B * d * sizeof(float));
    a->P = sf_malloc_aligned(bn * sizeof(float));
    a->Z = sf_malloc_aligned(bn * sizeof(float));
    if (!ops->k_select) { /* the sparse step keeps only P and Z dense */
        a->G = sf_malloc_aligned(bn * sizeof(float));
        a->H = sf_malloc_aligned(bn * sizeof(float));
        a->Za = sf_malloc_aligned(bn * sizeof(float));
    }
    if (ops->dense_extra) {
        a->A = sf_malloc_aligned(bn * sizeof(float));
        a->GA = sf_malloc_aligned(bn * sizeof(float));
        a->E = sf_malloc_aligned(bn * sizeof(float));
    }
    a->Ra = sf_malloc_aligned(B * d * sizeof(float));
    a->Ta = sf_malloc_aligned(B * d * sizeof(float));
    a->rowst = sf_calloc(B * RS_N, sizeof(double));
    a->cs = sf_calloc(n, sizeof(double));
    a->cs2 = sf_calloc(n, sizeof(double));
    a->cs3 = sf_calloc(n, sizeof(double));
    a->csd = sf_calloc(d, sizeof(double));
    a->wn = sf_malloc(n * sizeof(float));
    a->ex = sf_malloc(n * sizeof(float));
    a->cnt = sf_calloc(n, sizeof(int32_t));
    a->rcnt = sf_calloc(B, sizeof(int32_t));
    a->lat_ss = sf_calloc(n, sizeof(double));
    return a;
}

static void sparse_free(sae_sparse_buf *b) {
    if (!b) return;
    void *ptrs[] = {b->rp,   b->idx,   b->val,   b->g,     b->arp,  b->aidx,  b->aval, b->ag,
                    b->loff, b->aloff, b->lent,  b->alent, b->erow, b->aerow, b->lrow, b->lval,
                    b->lg,   b->alrow, b->alval, b->alg,   b->grp,  b->h,     b->h2};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
    free(b);
}

void sae_arch_state_free(sae_arch_state *a) {
    if (!a) return;
    float *bufs[] = {a->xc, a->Xh, a->P, a->Z, a->G, a->H, a->A, a->GA, a->E, a->Za, a->Ra, a->Ta};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        sf_free_aligned(bufs[i]);
    free(a->rowst);
    free(a->cs);
    free(a->cs2);
    free(a->cs3);
    free(a->csd);
    free(a->wn);
    free(a->ex);
    sf_free_aligned(a->scratch);
    free(a->cnt);
    free(a->rcnt);
    free(a->lat_ss);
    sparse_free(a->sp);
    sae_rowlists_free(&a->rl);
    free(a);
}

const float *sae_arch_residual(const sae_arch_state *a) {
    return a->Xh;
}

void sae_arch_after_step(sae_arch_state *a, const sae_train_io *io) {
    if (a->ops->after_step) a->ops->after_step(a, io);
}

/* --------------------------------------------------------- shared stages -- */

/* xc = x - b_dec and P = xc W_enc^T per row chunk; *tg += GEMM seconds
 * (summed over threads). Fails naming the first non-finite row. */
static int encode_chunks(sae_arch_state *a, const float *x, double *tg) {
    const sf_sae *s = a->s;
    const int d = s->d, n = s->n, B = a->B, chunk = a->chunk;
    int bad_row = -1;
    double t = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : t) if (a->par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        int64_t bad = sae_center_rows(s, x + (size_t)r0 * d, m, a->xc + (size_t)r0 * d);
        if (bad >= 0) {
#pragma omp critical(sae_arch_bad)
            if (bad_row < 0 || r0 + bad < bad_row) bad_row = r0 + (int)bad;
        }
        double t1 = sf_now();
        sae_encoder_gemm(s, a->xc + (size_t)r0 * d, m, a->P + (size_t)r0 * n);
        t += sf_now() - t1;
    }
    *tg += t;
    if (bad_row >= 0) return sf_error("batch row %d: NaN or Inf in input", bad_row);
    return 0;
}

/* Row r's reconstruction gradient once its prefix reconstructions x_hat_g
 * are in Xh: the row stats (RS_SQ .. RS_XH2 of the full x_hat), Ra = x_hat
 * - x when aux is on, the loss over prefixes (returned, not yet / ng) and
 * Xh_g <- sum_{i >= g} rscale (x_hat_i - x) (suffix sums: dL/dx_hat of the
 * prefixes holding a latent of group g). One copy for both steps. */
static double recon_grad(sae_arch_state *a, const float *xr, int r, float rscale, int do_aux) {
    const int d = a->s->d, ng = a->ng;
    const size_t BD = (size_t)a->B * d;
    double *st = a->rowst + (size_t)r * RS_N;
    const float *xf = a->Xh + (size_t)(ng - 1) * BD + (size_t)r * d; /* full x_hat */
    double lsum = 0;
    sae_row_stats(xf, xr, d, st + RS_SQ); /* RS_SQ, RS_X2, RS_XXH, RS_XH2 */
    if (do_aux)
        for (int q = 0; q < d; q++)
            a->Ra[(size_t)r * d + q] = xf[q] - xr[q];
    /* the loss: mean over prefixes of ||x - x_hat_g||^2 */
    for (int g = 0; g < ng; g++) {
        float *xh = a->Xh + (size_t)g * BD + (size_t)r * d;
#pragma omp simd reduction(+ : lsum)
        for (int q = 0; q < d; q++) {
            double df = (double)xh[q] - xr[q];
            lsum += df * df;
            xh[q] = rscale * (xh[q] - xr[q]);
        }
    }
    for (int g = ng - 2; g >= 0; g--) {
        float *xh = a->Xh + (size_t)g * BD + (size_t)r * d;
        const float *nx = xh + BD;
        for (int q = 0; q < d; q++)
            xh[q] += nx[q];
    }
    return lsum;
}

/* gb_dec[q] = csd[q] - sum_j cs[j] W_enc[j, q], latents ascending per q:
 * b_dec enters through xc = x - b_dec, so dP/db_dec = -W_enc. Each thread
 * owns a contiguous range of q and walks W_enc by rows (as sae_colsum): a
 * walk down a narrow column block would stride a whole row per step. */
static void bdec_grad(const sf_sae *s, const double *csd, const double *cs, float *gbd, int par) {
    const int d = s->d, n = s->n;
#pragma omp parallel if (par)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int q0 = (int)((int64_t)d * t / nt), q1 = (int)((int64_t)d * (t + 1) / nt);
        double *acc = sf_malloc((size_t)(q1 > q0 ? q1 - q0 : 1) * sizeof(double));
        for (int q = q0; q < q1; q++)
            acc[q - q0] = csd[q];
        for (int j = 0; j < n; j++) {
            if (cs[j] == 0) continue;
            const double c = cs[j];
            const float *w = s->W_enc + (size_t)j * d;
#pragma omp simd
            for (int q = q0; q < q1; q++)
                acc[q - q0] -= c * w[q];
        }
        for (int q = q0; q < q1; q++)
            gbd[q] = (float)acc[q - q0];
        free(acc);
    }
}

/* dead[j] = latent j has not fired for bodycount samples; returns how many. */
static int mark_dead(const sae_train_io *io, int n, uint8_t *dead) {
    int ndead = 0;
    for (int j = 0; j < n; j++)
        ndead += dead[j] = io->since[j] >= io->o->bodycount;
    return ndead;
}

/* End of either step: the firing counts as offsets (the trainer's dead-latent
 * counters read them), the phase times, and the metrics from the per-row
 * stats. gss: the squared gradient norm. */
static void finish_step(const sae_arch_state *a, const sae_train_io *io, double aux_loss, int ndead,
                        double gss, double t0, double t1, double tg, sf_sae_metrics *met) {
    const int n = a->s->n, B = a->B;
    io->off[0] = 0;
    for (int j = 0; j < n; j++)
        io->off[j + 1] = io->off[j] + a->cnt[j];
    const double t3 = sf_now();
    io->tm->encode += t1 - t0;
    io->tm->gemm += tg / (a->par ? omp_get_max_threads() : 1);
    io->tm->backward += t3 - t1;
    if (!met) return;
    memset(met, 0, sizeof *met);
    double sq = 0, x2 = 0, l1 = 0, l0 = 0, cs = 0, pen = 0, rec = 0;
    for (int b = 0; b < B; b++) {
        const double *st = a->rowst + (size_t)b * RS_N;
        sq += st[RS_SQ];
        x2 += st[RS_X2];
        l1 += st[RS_L1];
        l0 += st[RS_L0];
        pen += st[RS_PEN];
        rec += st[RS_AUX];
        double den = sqrt(st[RS_X2] * st[RS_XH2]);
        cs += den > 0 ? st[RS_XXH] / den : 0;
    }
    int surv = 0;
    for (int j = 0; j < n; j++) {
        surv += a->cnt[j] > 0;
        double lg = log10((double)a->cnt[j] / B + 1e-6);
        int bin = (int)floor((lg + 6.0) / 0.5);
        if (bin < 0) bin = 0;
        if (bin >= SF_SAE_HIST_BINS) bin = SF_SAE_HIST_BINS - 1;
        met->hist[bin]++;
    }
    met->l2 = sq / B;
    /* rec: mean over prefixes (matryoshka) or recon + gated aux recon */
    met->auxk = aux_loss + (a->ops->aux_in_rec ? rec / B - met->l2 : 0);
    met->loss = rec / B + a->lm * pen / B + aux_loss;
    met->l2_normalised = x2 > 0 ? sq / x2 : 0;
    met->l1 = l1 / B;
    met->l0 = l0 / B;
    met->cossim = cs / B;
    met->alive = met->l0 / n;
    met->survival = (double)surv / n;
    met->dead = (double)ndead / n;
    met->grad_norm = sqrt(gss);
}

/* ---------------------------------------------------------- activations -- */

/* standard / jumprelu once the last step was sparse: the activation pass
 * runs per block of rows into a per-thread scratch and is compressed at once
 * into row lists (a->rl), so the dense (B, n) Z is neither written nor
 * scanned. Returns 1 when done; 0 when a row had more entries than its
 * list holds or the batch is not sparse after all - the caller then runs
 * the dense pass (P is untouched, so the result is the same). */
static int forward_lists(sae_arch_state *a) {
    const sf_sae *s = a->s;
    const int n = s->n, B = a->B;
    const int cap = n / 8 > 16 ? n / 8 : (n < 16 ? n : 16);
    sae_rowlists *L = &a->rl;
    if (sae_rowlists_reserve(L, B, cap)) return -1;
    const int T = omp_get_max_threads();
    if (a->scratch_T < T) {
        sf_free_aligned(a->scratch);
        a->scratch = sf_malloc_aligned((size_t)T * LIST_ROWS * n * sizeof(float));
        a->scratch_T = T;
    }
    int overflow = 0;
#pragma omp parallel for schedule(static) reduction(| : overflow) if (a->par)
    for (int r0 = 0; r0 < B; r0 += LIST_ROWS) {
        const int m = B - r0 < LIST_ROWS ? B - r0 : LIST_ROWS;
        float *zs = a->scratch + (size_t)omp_get_thread_num() * LIST_ROWS * n;
        double pen[LIST_ROWS];
        sae_arch_rows rw = sae_chunk_view(a, r0, m, pen, a->rcnt + r0);
        rw.Z = zs;
        a->ops->forward_rows(&rw);
        for (int i = 0; i < m; i++) {
            const int r = r0 + i;
            a->rowst[(size_t)r * RS_N + RS_PEN] = pen[i];
            if (a->rcnt[r] > cap) {
                overflow = 1;
                continue;
            }
            L->cnt[r] = entries_of(a, r, zs + (size_t)i * n, L->ix + (size_t)r * cap,
                                   L->vl + (size_t)r * cap);
        }
    }
    size_t nz = 0;
    for (int b = 0; b < B; b++)
        nz += (size_t)a->rcnt[b];
    if (overflow || nz * 16 > (size_t)B * n) return 0;
    L->thr = -INFINITY;
    L->valid = 1;
    return 1;
}

static int env_off(const char *name) {
    const char *e = getenv(name);
    return e && *e && atoi(e) == 0;
}

/* The codes of the batch from P: the selection of the k archs (row lists),
 * else the dense activation per row chunk (or straight into row lists when
 * the last step was sparse). Then whether this step runs sparse: always for
 * the k archs; for the others (where ops->sparse_ok) once at most 1/16 of
 * the codes are active (below that the scattered per-latent updates beat the
 * dense GEMMs). SAEFLOW_ARCH_SPARSE=1/0 forces it on/off, and
 * SAEFLOW_ARCH_LISTS=0 keeps the dense pass (tests, benchmarks). Returns
 * 1: sparse, 0: dense, -1: error. */
static int activations(sae_arch_state *a, const sf_sae_train_opts *o) {
    const sae_arch_ops *ops = a->ops;
    const int B = a->B, n = a->s->n, chunk = a->chunk;
    for (int b = 0; b < B; b++)
        a->rowst[(size_t)b * RS_N + RS_PEN] = 0;
    a->rl.valid = 0;
    if (ops->k_select) return ops->select(a) ? -1 : 1;
    const int sparse_ok = ops->sparse_ok && ops->sparse_ok(o);
    int lists = 0;
    if (a->pred_sparse && ops->lists && sparse_ok && !env_off("SAEFLOW_ARCH_SPARSE") &&
        !env_off("SAEFLOW_ARCH_LISTS")) {
        lists = forward_lists(a);
        if (lists < 0) return -1;
    }
#pragma omp parallel for schedule(dynamic, 1) if (a->par && !lists)
    for (int r0 = 0; r0 < (lists ? 0 : B); r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        double *pen = sf_malloc((size_t)m * sizeof(double)); /* chunks can be large */
        sae_arch_rows rw = sae_chunk_view(a, r0, m, pen, a->rcnt + r0);
        ops->forward_rows(&rw);
        for (int r = 0; r < m; r++)
            a->rowst[(size_t)(r0 + r) * RS_N + RS_PEN] = pen[r];
        free(pen);
    }
    if (!sparse_ok) return 0;
    const char *env = getenv("SAEFLOW_ARCH_SPARSE");
    int use_sparse;
    if (env && *env) {
        use_sparse = atoi(env) != 0;
    } else {
        size_t nz = 0; /* entries counted by the forward (gated: open gates) */
        for (int b = 0; b < B; b++)
            nz += (size_t)a->rcnt[b];
        use_sparse = nz * 16 <= (size_t)B * n;
    }
    a->pred_sparse = use_sparse;
    return use_sparse;
}

/* ----------------------------------------------------------- dense step -- */

/* Dense decode per row chunk: x_hat_g = b_dec + Z[:, <ge_g] W_decT, the
 * reconstruction gradient (recon_grad), L1 / L0 row stats, G = dL/dZ = sum_g
 * R_g W_decT^T, and the architecture's auxiliary term. *tg += GEMM time. */
static void dense_decode(sae_arch_state *a, const float *x, int do_aux, double *tg) {
    const sf_sae *s = a->s;
    const int d = s->d, n = s->n, B = a->B, chunk = a->chunk, ng = a->ng;
    const size_t BD = (size_t)B * d;
    const float rscale = 2.0f * a->invB / (float)ng;
    double t = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : t) if (a->par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        const size_t zo = (size_t)r0 * n, xo = (size_t)r0 * d;
        double t1 = sf_now();
        for (int g = 0; g < ng; g++) {
            float *xh = a->Xh + (size_t)g * BD + xo;
            for (int r = 0; r < m; r++)
                memcpy(xh + (size_t)r * d, g ? xh - BD + (size_t)r * d : s->b_dec,
                       (size_t)d * sizeof(float));
            sae_gemm_nn(m, d, a->ge[g] - a->gs[g], a->Z + zo + a->gs[g], n,
                        s->W_decT + (size_t)a->gs[g] * d, d, 1.0f, xh, d);
        }
        t += sf_now() - t1;
        for (int r = r0; r < r0 + m; r++) {
            const float *zr = a->Z + (size_t)r * n;
            double l1 = 0, l0 = 0;
            for (int j0 = 0; j0 < n; j0 += SAE_SUM_BLOCK) {
                const int j1 = j0 + SAE_SUM_BLOCK < n ? j0 + SAE_SUM_BLOCK : n;
                float b1 = 0, b0 = 0;
#pragma omp simd reduction(+ : b1, b0)
                for (int j = j0; j < j1; j++) {
                    b1 += fabsf(zr[j]);
                    b0 += zr[j] > 0 ? 1.0f : 0.0f;
                }
                l1 += b1;
                l0 += b0;
            }
            double lsum = recon_grad(a, x + (size_t)r * d, r, rscale, do_aux);
            double *st = a->rowst + (size_t)r * RS_N;
            st[RS_L1] = l1;
            st[RS_L0] = l0;
            st[RS_AUX] = lsum / ng;
        }
        double t2 = sf_now();
        for (int g = 0; g < ng; g++)
            sae_gemm_nt(m, a->ge[g] - a->gs[g], d, a->Xh + (size_t)g * BD + xo, d,
                        s->W_decT + (size_t)a->gs[g] * d, d, 0.0f, a->G + zo + a->gs[g], n);
        if (a->ops->dense_aux) a->ops->dense_aux(a, x, r0, m);
        t += sf_now() - t2;
    }
    *tg += t;
}

/* dL/dZ -> dL/dP per row chunk (ops->backward_rows). */
static void dense_backward(sae_arch_state *a) {
    const int B = a->B, chunk = a->chunk;
#pragma omp parallel for schedule(dynamic, 1) if (a->par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        sae_arch_rows rw = sae_chunk_view(a, r0, m, NULL, NULL);
        a->ops->backward_rows(&rw);
    }
}

/* The parameter gradients of the dense step: b_dec, the biases and the
 * architecture's own parameters (ops->dense_param_grads), then per block
 * of ALB latents gW_enc = G^T xc, gW_decT = Z^T (dL/dx_hat of the prefixes
 * holding each latent) (+ the dead term's Za^T Ra, + the L1 norm term),
 * and each latent's squared gradient norm. */
static void dense_grads(sae_arch_state *a, const sae_train_io *io, int do_aux) {
    sf_sae *s = a->s;
    const sf_sae_train_opts *o = io->o;
    const int d = s->d, n = s->n, B = a->B, par = a->par, ng = a->ng;
    const size_t BD = (size_t)B * d;
    const int iWe = sae_param_of(s, s->W_enc), iWd = sae_param_of(s, s->W_decT),
              ibd = sae_param_of(s, s->b_dec), ibe = sae_param_of(s, s->b_enc);
    float *gWe = io->gr[iWe], *gWd = io->gr[iWd], *gbd = io->gr[ibd], *gbe = io->gr[ibe];
    /* b_dec: sum_rows dL/dx_hat - W_enc^T colsum(dL/dP) (main path only, as TopK's AuxK) */
    sae_colsum(a->G, B, n, a->cs, par);
    sae_colsum(a->Xh, B, d, a->csd, par);
    bdec_grad(s, a->csd, a->cs, gbd, par);
    if (do_aux) {
        for (size_t i = 0; i < (size_t)B * n; i++)
            a->G[i] += a->H[i];
        sae_colsum(a->G, B, n, a->cs, par); /* encoder bias sees both */
    }
    if (a->ops->dense_param_grads)
        a->ops->dense_param_grads(a, io);
    else
        for (int j = 0; j < n; j++)
            gbe[j] = (float)a->cs[j];
    const int nblk = (n + ALB - 1) / ALB, l1n = a->ops->l1_norm;
    const double l1c = a->lm * a->invB;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int blk = 0; blk < nblk; blk++) {
        const int j0 = blk * ALB, j1 = j0 + ALB < n ? j0 + ALB : n, nb = j1 - j0;
        /* gW_enc[j0:j1] = G[:, j0:j1]^T xc */
        sae_gemm_tn(nb, d, B, a->G + j0, n, a->xc, d, 0.0f, gWe + (size_t)j0 * d, d);
        /* gW_decT[j] = Z[:, j]^T (dL/dx_hat of the prefixes holding j), per group piece */
        for (int g = 0; g < ng; g++) {
            int p0 = j0 > a->gs[g] ? j0 : a->gs[g], p1 = j1 < a->ge[g] ? j1 : a->ge[g];
            if (p0 >= p1) continue;
            sae_gemm_tn(p1 - p0, d, B, a->Z + p0, n, a->Xh + (size_t)g * BD, d, 0.0f,
                        gWd + (size_t)p0 * d, d);
        }
        if (do_aux) sae_gemm_tn(nb, d, B, a->Za + j0, n, a->Ra, d, 1.0f, gWd + (size_t)j0 * d, d);
        if (l1n)
            for (int j = j0; j < j1; j++) {
                /* d/dw_j of lmbda/B sum_b f_bj ||w_j|| = lmbda/B (sum_b f_bj) w_j / ||w_j|| */
                if (!(a->wn[j] > 0)) continue;
                float c = (float)(l1c * a->cs3[j] / a->wn[j]);
                float *gd = gWd + (size_t)j * d;
                const float *w = s->W_decT + (size_t)j * d;
                for (int q = 0; q < d; q++)
                    gd[q] += c * w[q];
            }
        for (int j = j0; j < j1; j++) {
            if (o->normalise) /* as TopK */
                sae_drop_along(gWd + (size_t)j * d, s->W_decT + (size_t)j * d, d);
            double ss = 0;
            for (int i = 0; i < s->n_params; i++) {
                if (!s->params[i].per_latent) continue;
                size_t w = s->params[i].numel / (size_t)n;
                const float *g = io->gr[i] + (size_t)j * w;
#pragma omp simd reduction(+ : ss)
                for (size_t q = 0; q < w; q++)
                    ss += (double)g[q] * g[q];
            }
            a->lat_ss[j] = ss;
        }
    }
    double gss = 0;
    for (int j = 0; j < n; j++)
        gss += a->lat_ss[j];
    for (int i = 0; i < s->n_params; i++) {
        if (s->params[i].per_latent) continue;
        for (size_t q = 0; q < s->params[i].numel; q++)
            gss += (double)io->gr[i][q] * io->gr[i][q];
    }
    *io->grad_ss = gss;
    memset(io->has_grad, 1, (size_t)n);
    /* firing counts -> off (the trainer's dead-latent counters read it) */
#pragma omp parallel if (par)
    { /* contiguous column ranges, rows in memory order (as sae_colsum) */
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int c0 = (int)((int64_t)n * t / nt), c1 = (int)((int64_t)n * (t + 1) / nt);
        int32_t *restrict cnt = a->cnt;
        for (int j = c0; j < c1; j++)
            cnt[j] = 0;
        for (int b = 0; b < B; b++) {
            const float *restrict z = a->Z + (size_t)b * n;
#pragma omp simd
            for (int j = c0; j < c1; j++)
                cnt[j] += z[j] > 0;
        }
    }
}

static int dense_step(sae_arch_state *a, const sae_train_io *io, const float *x,
                      sf_sae_metrics *met, double t0, double tg) {
    const int n = a->s->n;
    uint8_t *dead = sf_calloc((size_t)n, 1);
    const int ndead = mark_dead(io, n, dead);
    const int do_aux = a->ops->dense_dead && io->o->ghost_grads && ndead > 0;
    dense_decode(a, x, do_aux, &tg);
    double t1 = sf_now();
    if (a->ops->dense_l1) a->ops->dense_l1(a); /* before the backward overwrites the codes */
    dense_backward(a);
    double aux_loss = do_aux ? a->ops->dense_dead(a, dead) : 0;
    dense_grads(a, io, do_aux);
    finish_step(a, io, aux_loss, ndead, *io->grad_ss, t0, t1, tg, met);
    free(dead);
    return 0;
}

/* ---------------------------------------------------------- sparse step -- */

static void grow_i32(int32_t **p, size_t want) {
    free(*p);
    *p = sf_malloc(want * sizeof(int32_t));
}
static void grow_f32(float **p, size_t want) {
    free(*p);
    *p = sf_malloc(want * sizeof(float));
}

static void sp_reserve(int32_t **i, float **v, float **g, int32_t **row, int32_t **lent,
                       size_t *cap, size_t want) {
    if (want <= *cap) return;
    *cap = want + want / 4 + 16;
    grow_i32(i, *cap);
    grow_f32(v, *cap);
    grow_f32(g, *cap);
    grow_i32(row, *cap);
    grow_i32(lent, *cap);
}

/* counting sort of entries by latent; rows stay ascending within a latent */
static void by_latent(int n, size_t nnz, const int32_t *idx, int32_t *off, int32_t *lent) {
    memset(off, 0, (size_t)(n + 1) * sizeof(int32_t));
    for (size_t e = 0; e < nnz; e++)
        off[idx[e] + 1]++;
    for (int j = 0; j < n; j++)
        off[j + 1] += off[j];
    int32_t *cur = sf_malloc((size_t)n * sizeof(int32_t));
    memcpy(cur, off, (size_t)n * sizeof(int32_t));
    for (size_t e = 0; e < nnz; e++)
        lent[cur[idx[e]]++] = (int32_t)e;
    free(cur);
}

/* row, code and dL/dpre of the entries in latent order (lent gathered):
 * the arrays sae_latent_grad_rows walks, as the TopK trainer's buckets */
static void gather_latent_order(size_t nnz, const int32_t *lent, const int32_t *erow,
                                const float *val, const float *g, int32_t *lrow, float *lval,
                                float *lg) {
    for (size_t u = 0; u < nnz; u++) {
        const int32_t e = lent[u];
        lrow[u] = erow[e];
        lval[u] = val[e];
        lg[u] = g[e];
    }
}

/* The CSR of the codes, latents ascending per row (the forward counted the
 * entries of each row in a->rcnt): from the selection's row lists, or from
 * the dense codes through ops->row_entries. */
static void build_entries(sae_arch_state *a) {
    const int n = a->s->n, B = a->B;
    if (!a->sp) a->sp = sf_calloc(1, sizeof(sae_sparse_buf));
    sae_sparse_buf *sp = a->sp;
    if (!sp->rp) {
        sp->rp = sf_malloc((size_t)(a->maxB + 1) * sizeof(int32_t));
        sp->arp = sf_malloc((size_t)(a->maxB + 1) * sizeof(int32_t));
        sp->loff = sf_malloc((size_t)(n + 1) * sizeof(int32_t));
        sp->aloff = sf_malloc((size_t)(n + 1) * sizeof(int32_t));
        sp->grp = sf_malloc((size_t)n * sizeof(int32_t));
    }
    for (int g = 0; g < a->ng; g++)
        for (int j = a->gs[g]; j < a->ge[g]; j++)
            sp->grp[j] = g;
    sp->rp[0] = 0;
    for (int b = 0; b < B; b++)
        sp->rp[b + 1] = sp->rp[b] + a->rcnt[b];
    const size_t nnz = (size_t)sp->rp[B];
    sp_reserve(&sp->idx, &sp->val, &sp->g, &sp->erow, &sp->lent, &sp->cap, nnz);
    if ((a->ops->entry_grads) && nnz > sp->hcap) {
        sp->hcap = sp->cap;
        grow_f32(&sp->h, sp->hcap);
        grow_f32(&sp->h2, sp->hcap);
    }
    if (a->rl.valid) { /* the selection's row lists: kept codes, then latents ascending */
        const sae_rowlists *L = &a->rl;
#pragma omp parallel for schedule(static) if (a->par)
        for (int b = 0; b < B; b++) {
            const int32_t *ix = L->ix + (size_t)b * L->stride;
            const float *vl = L->vl + (size_t)b * L->stride;
            int32_t e0 = sp->rp[b], e = e0;
            for (int u = 0; u < L->cnt[b]; u++)
                if (vl[u] >= L->thr) {
                    sp->idx[e] = ix[u];
                    sp->val[e] = vl[u];
                    sp->erow[e++] = b;
                }
            sae_sort_pairs(sp->idx + e0, sp->val + e0, e - e0);
        }
    } else {
#pragma omp parallel for schedule(static) if (a->par)
        for (int b = 0; b < B; b++) {
            const int32_t e0 = sp->rp[b];
            const int32_t e1 =
                e0 + entries_of(a, b, a->Z + (size_t)b * n, sp->idx + e0, sp->val + e0);
            for (int32_t e = e0; e < e1; e++)
                sp->erow[e] = b;
        }
    }
}

/* Per row: the sparse prefix decode, the reconstruction gradient, the
 * architecture's auxiliary row term, and dL/dpre at the row's entries
 * (ops->entry_grads; else dL/dz). */
static void decode_rows(sae_arch_state *a, const float *x, int do_aux) {
    const sf_sae *s = a->s;
    const int d = s->d, B = a->B, chunk = a->chunk, ng = a->ng;
    const size_t BD = (size_t)B * d;
    const float rscale = 2.0f * a->invB / (float)ng;
    sae_sparse_buf *sp = a->sp;
#pragma omp parallel for schedule(dynamic, 1) if (a->par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        for (int r = r0; r < r0 + m; r++) {
            const float *xr = x + (size_t)r * d;
            int32_t e = sp->rp[r], e1 = sp->rp[r + 1];
            for (int g = 0; g < ng; g++) {
                float *xh = a->Xh + (size_t)g * BD + (size_t)r * d;
                memcpy(xh, g ? xh - BD : s->b_dec, (size_t)d * sizeof(float));
                for (; e < e1 && sp->idx[e] < a->ge[g]; e++) {
                    const float *w = s->W_decT + (size_t)sp->idx[e] * d;
                    const float v = sp->val[e];
#pragma omp simd
                    for (int q = 0; q < d; q++)
                        xh[q] += v * w[q];
                }
            }
            double l1 = 0;
            for (int32_t u = sp->rp[r]; u < e1; u++)
                l1 += sp->val[u];
            double lsum = recon_grad(a, xr, r, rscale, do_aux);
            if (a->ops->row_aux) lsum += a->ops->row_aux(a, xr, r); /* ng = 1 */
            int l0r = 0;
            for (int32_t u = sp->rp[r]; u < e1; u++)
                l0r += sp->val[u] > 0;
            if (a->ops->entry_grads)
                a->ops->entry_grads(a, r);
            else
                for (int32_t u = sp->rp[r]; u < e1; u++)
                    sp->g[u] = sae_entry_gz(a, r, u);
            double *st = a->rowst + (size_t)r * RS_N;
            st[RS_L1] = l1;
            st[RS_L0] = (double)l0r; /* penalty (RS_PEN) was set by the forward */
            st[RS_AUX] = lsum / ng;
        }
    }
}

/* AuxK (the k archs, as TopK's): the aux_k largest pre-activations among dead
 * latents reconstruct e = x - x_hat; their entries in CSR (sp->arp..) with
 * dL/dpre; Ra = dL_aux/de_hat. Returns the aux loss; *annz the entries (0:
 * none used). */
static double auxk_entries(sae_arch_state *a, const sf_sae_train_opts *o, const uint8_t *dead,
                           int ak, size_t *annz) {
    const sf_sae *s = a->s;
    const int d = s->d, n = s->n, B = a->B, chunk = a->chunk;
    sae_sparse_buf *sp = a->sp;
    double aux_loss = 0;
    sp_reserve(&sp->aidx, &sp->aval, &sp->ag, &sp->aerow, &sp->alent, &sp->acap, (size_t)B * ak);
    sae_colsum(a->Ra, B, d, a->csd, a->par);
    double e2 = 0, me2 = 0, r2 = 0;
    for (int b = 0; b < B; b++)
        e2 += a->rowst[(size_t)b * RS_N + RS_SQ];
    int32_t *acnt = sf_malloc((size_t)B * sizeof(int32_t));
    double *rr2 = sf_malloc((size_t)B * sizeof(double)); /* per row: fixed-order sum */
#pragma omp parallel for schedule(dynamic, 1) if (a->par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        for (int r = r0; r < r0 + m; r++) {
            int32_t *ix = sp->aidx + (size_t)r * ak;
            float *vl = sp->aval + (size_t)r * ak;
            int c = acnt[r] = sae_topk_relu(a->P + (size_t)r * n, s->b_enc, n, ak, dead, ix, vl);
            sae_sort_pairs(ix, vl, c);
            float *rr = a->Ra + (size_t)r * d;
            for (int u = 0; u < c; u++) {
                const float *w = s->W_decT + (size_t)ix[u] * d;
#pragma omp simd
                for (int q = 0; q < d; q++)
                    rr[q] += vl[u] * w[q];
            }
            double acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int q = 0; q < d; q++)
                acc += (double)rr[q] * rr[q];
            rr2[r] = acc;
        }
    }
    for (int b = 0; b < B; b++)
        r2 += rr2[b];
    free(rr2);
    /* sum_b ||e_b - mean e||^2 = sum_b ||e_b||^2 - B ||mean e||^2 over the
     * global batch under MPI (R ranks x B rows; docs/mpi.md): e2, r2 and the
     * column sums of e are summed over ranks first. The aux gradient is
     * scaled by R because the ranks' gradients are averaged (the main loss
     * is a mean over rows, the aux loss a ratio of sums), as TopK's. */
    const int R = sf_dist_size();
    double Bg = B, gscale = 1;
    if (R > 1) {
        double *red = sf_malloc(((size_t)d + 2) * sizeof(double));
        memcpy(red, a->csd, (size_t)d * sizeof(double));
        red[d] = e2, red[d + 1] = r2;
        if (sf_dist_allreduce_sum_f64(red, (size_t)d + 2)) sf_dist_abort(1, sf_errmsg());
        memcpy(a->csd, red, (size_t)d * sizeof(double));
        e2 = red[d], r2 = red[d + 1], Bg = (double)B * R, gscale = R;
        free(red);
    }
    for (int q = 0; q < d; q++)
        me2 += (a->csd[q] / Bg) * (a->csd[q] / Bg);
    const double D = e2 - Bg * me2;
    /* compact the (B, ak) slots into CSR order */
    sp->arp[0] = 0;
    for (int b = 0; b < B; b++) {
        int32_t base = sp->arp[b];
        for (int u = 0; u < acnt[b]; u++) {
            sp->aidx[base + u] = sp->aidx[(size_t)b * ak + u];
            sp->aval[base + u] = sp->aval[(size_t)b * ak + u];
            sp->aerow[base + u] = b;
        }
        sp->arp[b + 1] = base + acnt[b];
    }
    free(acnt);
    *annz = (size_t)sp->arp[B];
    if (D > 0 && isfinite(D) && isfinite(r2)) {
        aux_loss = o->auxk_coef * r2 / D;
        const float sc = (float)(gscale * 2.0 * o->auxk_coef / D);
#pragma omp parallel for schedule(static) if (a->par)
        for (int b = 0; b < B; b++) {
            float *rr = a->Ra + (size_t)b * d;
            for (int q = 0; q < d; q++)
                rr[q] *= sc;
            for (int32_t u = sp->arp[b]; u < sp->arp[b + 1]; u++)
                sp->ag[u] = sae_dot(s->W_decT + (size_t)sp->aidx[u] * d, rr, d);
        }
    } else {
        *annz = 0;
    }
    return aux_loss;
}

/* Per latent, from its entries in latent order: the encoder and decoder
 * gradient rows (sae_latent_grad_rows, the TopK trainer's), the encoder
 * bias and the architecture's own parameters (ops->latent_grads), the
 * firing count; a->cs = the main path's dL/dpre sums (for b_dec). */
static void latent_rows(sae_arch_state *a, const sae_train_io *io, size_t annz) {
    sf_sae *s = a->s;
    const int d = s->d, n = s->n, B = a->B;
    const size_t BD = (size_t)B * d;
    sae_sparse_buf *sp = a->sp;
    const size_t nnz = (size_t)sp->rp[B];
    by_latent(n, nnz, sp->idx, sp->loff, sp->lent);
    if (nnz > sp->lcap) {
        sp->lcap = sp->cap;
        grow_i32(&sp->lrow, sp->lcap);
        grow_f32(&sp->lval, sp->lcap);
        grow_f32(&sp->lg, sp->lcap);
    }
    gather_latent_order(nnz, sp->lent, sp->erow, sp->val, sp->g, sp->lrow, sp->lval, sp->lg);
    if (annz) {
        by_latent(n, annz, sp->aidx, sp->aloff, sp->alent);
        if (annz > sp->alcap) {
            sp->alcap = sp->acap;
            grow_i32(&sp->alrow, sp->alcap);
            grow_f32(&sp->alval, sp->alcap);
            grow_f32(&sp->alg, sp->alcap);
        }
        gather_latent_order(annz, sp->alent, sp->aerow, sp->aval, sp->ag, sp->alrow, sp->alval,
                            sp->alg);
    }
    const int iWe = sae_param_of(s, s->W_enc), iWd = sae_param_of(s, s->W_decT),
              ibe = sae_param_of(s, s->b_enc);
    float *gWe = io->gr[iWe], *gWd = io->gr[iWd], *gbe = io->gr[ibe];
    /* gradient rows summed in a per-thread buffer, written once (as TopK's) */
    const int dpad = (d + 15) / 16 * 16, stream = (size_t)n * d >= io->stream_min;
    float *rowbuf = sf_malloc_aligned((size_t)omp_get_max_threads() * 2 * dpad * sizeof(float));
    const sae_arch_ops *ops = a->ops;
#pragma omp parallel if (a->par)
    {
        float *const rbuf = rowbuf + (size_t)omp_get_thread_num() * 2 * dpad;
#pragma omp for schedule(dynamic, 16)
        for (int j = 0; j < n; j++) {
            const int32_t e0 = sp->loff[j], e1 = sp->loff[j + 1];
            const int32_t a0 = annz ? sp->aloff[j] : 0, a1 = annz ? sp->aloff[j + 1] : 0;
            float *restrict ge_ = rbuf, *restrict gd = rbuf + dpad;
            int fired = 0;
            for (int32_t u = e0; u < e1; u++)
                fired += sp->lval[u] > 0;
            a->cnt[j] = fired;
            if (e0 == e1 && a0 == a1) {
                if (io->has_grad[j]) {
                    memset(ge_, 0, (size_t)d * sizeof(float));
                    sae_store_row(gWe + (size_t)j * d, ge_, d, stream);
                    sae_store_row(gWd + (size_t)j * d, ge_, d, stream);
                }
                io->has_grad[j] = 0;
                /* no entries: every 1-D per-latent gradient is 0 */
                for (int i = 0; i < s->n_params; i++)
                    if (s->params[i].per_latent && s->params[i].numel == (size_t)n)
                        io->gr[i][j] = 0;
                a->cs[j] = 0;
                a->lat_ss[j] = 0;
                continue;
            }
            io->has_grad[j] = 1;
            memset(ge_, 0, (size_t)d * sizeof(float));
            memset(gd, 0, (size_t)d * sizeof(float));
            const float sg =
                sae_latent_grad_rows(ge_, gd, d, a->xc, a->Xh + (size_t)sp->grp[j] * BD,
                                     sp->lrow + e0, sp->lval + e0, sp->lg + e0, e1 - e0);
            const float sga = sae_latent_grad_rows(ge_, gd, d, a->xc, a->Ra, sp->alrow + a0,
                                                   sp->alval + a0, sp->alg + a0, a1 - a0);
            a->cs[j] = sg; /* main path only reaches b_dec (as TopK's AuxK) */
            double ss;
            if (ops->latent_grads) {
                ss = ops->latent_grads(a, io, j, e0, e1, sg, sga, gd);
            } else {
                gbe[j] = sg + sga;
                ss = (double)gbe[j] * gbe[j];
            }
            a->lat_ss[j] =
                sae_latent_rows_done(ge_, gd, s->W_decT + (size_t)j * d, io->o->normalise, d,
                                     gWe + (size_t)j * d, gWd + (size_t)j * d, stream, ss);
        }
        sae_store_fence();
    }
    sf_free_aligned(rowbuf);
}

/* batchtopk and matryoshka always, standard / jumprelu / gated once their
 * codes are sparse: everything after the encoder GEMM touches only the
 * active (row, latent) pairs, as the TopK trainer does. */
static int sparse_step(sae_arch_state *a, const sae_train_io *io, const float *x,
                       sf_sae_metrics *met, double t0, double tg) {
    sf_sae *s = a->s;
    const sf_sae_train_opts *o = io->o;
    const int d = s->d, n = s->n, B = a->B;
    build_entries(a);
    uint8_t *dead = sf_calloc((size_t)n, 1);
    const int ndead = mark_dead(io, n, dead);
    const int do_aux = a->ops->k_select && o->auxk_coef > 0 && o->aux_k > 0 && ndead > 0;
    const int ak = do_aux ? (o->aux_k < ndead ? o->aux_k : ndead) : 0;
    decode_rows(a, x, do_aux);
    double t1 = sf_now();
    size_t annz = 0;
    double aux_loss = do_aux ? auxk_entries(a, o, dead, ak, &annz) : 0;
    latent_rows(a, io, annz);
    /* b_dec: sum_rows dL/dx_hat - W_enc^T cs */
    float *gbd = io->gr[sae_param_of(s, s->b_dec)];
    sae_colsum(a->Xh, B, d, a->csd, a->par);
    bdec_grad(s, a->csd, a->cs, gbd, a->par);
    double gss = 0;
    for (int j = 0; j < n; j++)
        gss += a->lat_ss[j];
    for (int q = 0; q < d; q++)
        gss += (double)gbd[q] * gbd[q];
    *io->grad_ss = gss;
    finish_step(a, io, aux_loss, ndead, gss, t0, t1, tg, met);
    free(dead);
    return 0;
}

/* ----------------------------------------------------------- the driver -- */

int sae_arch_grad(sae_arch_state *a, const sae_train_io *io, const float *x, int B,
                  sf_sae_metrics *met) {
    sf_sae *s = a->s;
    const sf_sae_train_opts *o = io->o;
    const int d = s->d, n = s->n;
    double t0 = sf_now(), tg = 0;
    /* this step's constants */
    a->o = o;
    a->B = B;
    a->par = sae_arch_par((size_t)B * n * d);
    a->chunk = sae_chunk_rows(B, n);
    a->invB = 1.0f / (float)B;
    a->lm = o->lmbda;
    if (o->lmbda_warmup_steps > 0 && io->steps < o->lmbda_warmup_steps)
        a->lm *= (double)io->steps / (double)o->lmbda_warmup_steps;
    a->ng = 1;
    a->gs[0] = 0;
    a->ge[0] = n;
    if (a->ops->prefixes) a->ng = a->ops->prefixes(s, a->gs, a->ge);
    if (a->ops->l1_norm) { /* decoder column norms (the L1 weighting) */
#pragma omp parallel for schedule(static) if (a->par)
        for (int j = 0; j < n; j++) {
            const float *w = s->W_decT + (size_t)j * d;
            double ss = 0;
#pragma omp simd reduction(+ : ss)
            for (int q = 0; q < d; q++)
                ss += (double)w[q] * w[q];
            a->wn[j] = (float)sqrt(ss);
        }
    }
    if (a->ops->step_begin) a->ops->step_begin(a);

    if (encode_chunks(a, x, &tg)) return -1;
    const int sparse = activations(a, o);
    if (sparse < 0) return -1;
    return sparse ? sparse_step(a, io, x, met, t0, tg) : dense_step(a, io, x, met, t0, tg);
}
