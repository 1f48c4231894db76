/* Architectures other than TopK: parameters, config keys, inference, and the
 * shared dense training step (see arch_internal.h for the data flow and
 * docs/architectures.md for the maths). */
#include <cblas.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/prefilter.h"
#include "sae/sae_internal.h"

#define ALB                                                                                        \
    512 /* latents per block in the reduction GEMMs (fixed: determinism; large                     \
         * enough that re-packing the (B, d) operand per block is amortised) */

/* Below ~16 MFLOP a step runs on one thread: on a busy machine an OpenMP
 * barrier costs more than the work (results are the same either way). */
int sae_arch_par(size_t work) {
    return work >= ((size_t)1 << 23);
}

/* out[j] = sum_r M[r, j], rows ascending (in double), whatever the thread
 * count. Each thread owns a contiguous column range and walks the rows in
 * memory order: a walk down narrow column blocks strides by a whole row per
 * step, which the prefetchers do not follow past a page. */
void sae_colsum(const float *M, int rows, int cols, double *out, int par) {
#pragma omp parallel if (par)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int c0 = (int)((int64_t)cols * t / nt), c1 = (int)((int64_t)cols * (t + 1) / nt);
        for (int c = c0; c < c1; c++)
            out[c] = 0;
        for (int r = 0; r < rows; r++) {
            const float *m = M + (size_t)r * cols;
#pragma omp simd
            for (int c = c0; c < c1; c++)
                out[c] += m[c];
        }
    }
}

/* ------------------------------------------------------------ the model -- */

const sae_arch_ops *sae_arch_ops_of(sf_sae_arch a) {
    switch (a) {
    case SF_SAE_STANDARD:
        return &sae_standard_ops;
    case SF_SAE_GATED:
        return &sae_gated_ops;
    case SF_SAE_JUMPRELU:
        return &sae_jumprelu_ops;
    case SF_SAE_BATCHTOPK:
        return &sae_batchtopk_ops;
    case SF_SAE_MATRYOSHKA:
        return &sae_matryoshka_ops;
    default:
        return NULL;
    }
}

static int uses_k(sf_sae_arch a) {
    const sae_arch_ops *ops = sae_arch_ops_of(a);
    return ops && ops->k_select;
}

static void set_capacity(sf_sae *s) {
    /* thresholded codes have no per-row bound; TopK-selected ones have k */
    s->k = (s->arch == SF_SAE_MATRYOSHKA && !s->batch_select) ? s->k_sel : s->n;
}

void sae_arch_set_k(sf_sae *s, int k) {
    s->k_sel = uses_k(s->arch) ? k : 0;
    set_capacity(s);
}

float *sae_zalloc(size_t count) {
    float *p = sf_malloc_aligned(count * sizeof(float));
    memset(p, 0, count * sizeof(float));
    return p;
}

void sae_alloc_core(sf_sae *s) {
    const size_t nd = (size_t)s->n * s->d;
    s->W_enc = sae_zalloc(nd);
    s->W_decT = sae_zalloc(nd);
    s->b_enc = sae_zalloc((size_t)s->n);
    s->b_dec = sae_zalloc((size_t)s->d);
}

void sae_add_linear_params(sf_sae *s) {
    sae_add_param(s, "encoder.weight", s->W_enc, 2, s->n, s->d, 0, 1);
    sae_add_param(s, "encoder.bias", s->b_enc, 1, s->n, 1, 0, 1);
    sae_add_param(s, "decoder.weight", s->W_decT, 2, s->d, s->n, 1, 1);
    sae_add_param(s, "bias", s->b_dec, 1, s->d, 1, 0, 0);
}

int sae_arch_alloc(sf_sae *s) {
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (!ops) return sf_error("architecture %d not implemented", (int)s->arch);
    if (ops->k_select && (s->k_sel < 1 || s->k_sel > s->n))
        return sf_error("%s: k %d must be in [1, pages %d]", sf_sae_arch_name(s->arch), s->k_sel,
                        s->n);
    return ops->alloc(s); /* names and order as the reference's state_dict */
}

void sae_arch_init(sf_sae *s, uint64_t seed) {
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (ops && ops->init) ops->init(s, seed);
}

void sae_arch_config(const sf_sae *s, cJSON *cfg) {
    const char *drop[] = {"arch", "k", "threshold", "groups", "matryoshka_base"};
    for (int i = 0; i < 5; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, drop[i]);
    cJSON_AddStringToObject(cfg, "arch", sf_sae_arch_name(s->arch));
    if (uses_k(s->arch)) cJSON_AddNumberToObject(cfg, "k", s->k_sel);
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (ops && ops->config_write) ops->config_write(s, cfg);
}

int sae_arch_load_config(sf_sae *s, const cJSON *cfg, const char *path) {
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(cfg, "k");
    if (uses_k(s->arch)) {
        if (!k)
            return sf_error("%s: missing key 'k' (needed by %s)", path, sf_sae_arch_name(s->arch));
        if (!cJSON_IsNumber(k) || k->valuedouble != floor(k->valuedouble) || k->valuedouble < 1 ||
            k->valuedouble > 1e9)
            return sf_error("%s: key 'k' must be a positive integer", path);
        s->k_sel = (int)k->valuedouble;
    }
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(cfg, "threshold");
    if (th) {
        if (!cJSON_IsNumber(th) || !isfinite(th->valuedouble) || th->valuedouble < 0)
            return sf_error("%s: key 'threshold' must be a finite number >= 0", path);
        s->threshold = (float)th->valuedouble;
    }
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (ops && ops->config_read && ops->config_read(s, cfg, path)) return -1;
    set_capacity(s);
    return 0;
}

/* ------------------------------------------------------------ inference -- */

/* Every architecture's encoder (sf_sae_encode): chunked GEMM, then per row
 * TopK (topk; matryoshka over TopK) or the thresholded activation. */
int sae_arch_encode(const sf_sae *s, const sae_pf *pf, const float *x, int64_t B,
                    sf_sae_codes *out) {
    const int d = s->d, n = s->n, cap = s->k;
    if (out->k != cap || out->B < B) return sf_error("encode: code buffer too small");
    const int64_t chunk = sae_chunk_rows(B, n);
    const int64_t nchunks = (B + chunk - 1) / chunk;
    const int rowtopk = sae_row_topk(s);
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    int64_t bad_row = -1;
    if (!rowtopk || (pf && (pf->n != n || pf->d != d))) pf = NULL;
        /* inside a parallel region (sf_sae_encoder_run_sliced) one thread per call */
#pragma omp parallel if (!omp_in_parallel() && sae_parallel_worth((size_t)B * n * d))
    {
        float *xc = sf_malloc_aligned((size_t)chunk * d * sizeof(float));
        float *pre = sf_malloc_aligned((size_t)chunk * n * sizeof(float));
        sae_pf_thread h; /* this worker's pre-filter scratch */
        if (pf) sae_pf_thread_init(&h, n, d, (int)chunk);
        int64_t ncand = 0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ci = 0; ci < nchunks; ci++) {
            int64_t r0 = ci * chunk, m = B - r0 < chunk ? B - r0 : chunk;
            int64_t bad = sae_center_rows(s, x + (size_t)r0 * d, m, xc);
            if (bad >= 0) {
#pragma omp critical(sae_arch_bad_row)
                if (bad_row < 0 || r0 + bad < bad_row) bad_row = r0 + bad;
            }
            if (pf) { /* exact TopK through the int16 pre-filter, sorted by index */
                sae_pf_gemm(pf, &h, xc, (int)m, (int32_t *)pre);
                sae_pf_select_chunk(pf, &h, s, (const int32_t *)pre, (int)m, xc, cap,
                                    out->idx + (size_t)r0 * cap, out->val + (size_t)r0 * cap,
                                    out->cnt + r0, NULL, &ncand);
                for (int64_t r = r0; r < r0 + m; r++)
                    sae_sort_pairs(out->idx + (size_t)r * cap, out->val + (size_t)r * cap,
                                   out->cnt[r]);
                continue;
            }
            sae_encoder_gemm(s, xc, (int)m, pre);
            for (int64_t r = 0; r < m; r++) {
                int32_t *ix = out->idx + (size_t)(r0 + r) * cap;
                float *vl = out->val + (size_t)(r0 + r) * cap;
                const float *pr = pre + (size_t)r * n;
                int c = 0;
                if (rowtopk) {
                    c = sae_topk_relu(pr, s->b_enc, n, cap, NULL, ix, vl);
                    sae_sort_pairs(ix, vl, c);
                } else {
                    c = ops->encode_row(s, pr, cap, ix, vl);
                }
                out->cnt[r0 + r] = c;
            }
        }
        sf_free_aligned(xc);
        sf_free_aligned(pre);
        if (pf) sae_pf_thread_free(&h);
    }
    if (bad_row >= 0) return sf_error("row %lld: NaN or Inf in input", (long long)bad_row);
    return 0;
}

/* ------------------------------------------------------------- training -- */

struct sae_arch_state {
    sf_sae *s;
    int maxB;
    float *xc;             /* (B, d) x - b_dec */
    float *Xh;             /* (ng, B, d) prefix reconstructions, then dL/dx_hat suffix sums */
    float *P, *Z, *G;      /* (B, n) */
    float *H, *A, *GA, *E; /* (B, n) per architecture (NULL where unused) */
    float *Za, *Ra, *Ta;   /* aux: (B, n), (B, d), (B, d) */
    double *rowst;         /* (B, 8) */
    double *cs, *cs2, *cs3, *csd; /* (n), (n), (n), (d) */
    float *wn;                    /* (n) decoder column norms */
    float *ex;                    /* (n) jumprelu exp(logthres), gated exp(r_mag), per step */
    int pred_sparse;              /* standard/jumprelu: last step was sparse (try it first) */
    float *scratch;               /* (T, LIST_ROWS, n) forward_lists: codes of a row block */
    int scratch_T;
    int32_t *cnt;    /* (n) rows where each latent fired */
    int32_t *rcnt;   /* (B) entries per row for the sparse step */
    double *lat_ss;  /* (n) */
    void *sp;        /* sparse step buffers (batchtopk, matryoshka) */
    sae_rowlists rl; /* k selections: codes per row (no dense Z) */
    float last_min;  /* batchtopk: smallest selected activation of the last batch */
    int have_min;
    int lastB;
};

enum { RS_SQ, RS_X2, RS_XXH, RS_XH2, RS_L1, RS_L0, RS_PEN, RS_AUX };

sae_arch_state *sae_arch_state_new(sf_sae *s, const sf_sae_train_opts *o, int max_batch) {
    (void)o;
    const size_t B = (size_t)max_batch, n = (size_t)s->n, d = (size_t)s->d;
    size_t bn;
    if (sf_mul_size(B, n, &bn) || bn > ((size_t)1 << 33)) {
        sf_error("batch %zu x pages %zu is too large for the dense %s step", B, n,
                 sf_sae_arch_name(s->arch));
        return NULL;
    }
    sae_arch_state *a = sf_calloc(1, sizeof *a);
    a->s = s;
    a->maxB = max_batch;
    const int ng = s->arch == SF_SAE_MATRYOSHKA ? s->n_groups : 1;
    a->xc = sf_malloc_aligned(B * d * sizeof(float));
    a->Xh = sf_malloc_aligned((size_t)ng * B * d * sizeof(float));
    a->P = sf_malloc_aligned(bn * sizeof(float));
    a->Z = sf_malloc_aligned(bn * sizeof(float));
    const int sparse = s->arch == SF_SAE_BATCHTOPK || s->arch == SF_SAE_MATRYOSHKA;
    if (!sparse) { /* the sparse step keeps only P and Z dense */
        a->G = sf_malloc_aligned(bn * sizeof(float));
        a->H = sf_malloc_aligned(bn * sizeof(float));
        a->Za = sf_malloc_aligned(bn * sizeof(float));
    }
    if (s->arch == SF_SAE_GATED) {
        a->A = sf_malloc_aligned(bn * sizeof(float));
        a->GA = sf_malloc_aligned(bn * sizeof(float));
        a->E = sf_malloc_aligned(bn * sizeof(float));
    }
    a->Ra = sf_malloc_aligned(B * d * sizeof(float));
    a->Ta = sf_malloc_aligned(B * d * sizeof(float));
    a->rowst = sf_calloc(B * 8, sizeof(double));
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

void sae_sparse_free(void *p);

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
    sae_sparse_free(a->sp);
    sae_rowlists_free(&a->rl);
    free(a);
}

const float *sae_arch_residual(const sae_arch_state *a) {
    return a->Xh;
}

void sae_arch_after_step(sae_arch_state *a, const sae_train_io *io) {
    sf_sae *s = a->s;
    const int bsel =
        s->arch == SF_SAE_BATCHTOPK || (s->arch == SF_SAE_MATRYOSHKA && s->batch_select);
    if (!bsel || !a->have_min) return;
    /* Inference threshold: EMA of the smallest activation BatchTopK kept
     * (Bussmann et al. 2024); the first step sets it. */
    const double dc = io->o->threshold_decay;
    if (io->steps <= 1 || s->threshold <= 0)
        s->threshold = a->last_min;
    else
        s->threshold = (float)(dc * s->threshold + (1.0 - dc) * a->last_min);
}

static int param_of(const sf_sae *s, const float *data) {
    for (int i = 0; i < s->n_params; i++)
        if (s->params[i].data == data) return i;
    return -1;
}

/* C (m, cols) (+)= A (m, kk) . B^T with B (cols, kk): row-chunk products. */
static inline void gemm_nt(int m, int cols, int kk, const float *A, int lda, const float *Bm,
                           int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, cols, kk, 1.0f, A, lda, Bm, ldb, beta,
                C, ldc);
}
/* C (m, d) (+)= A (m, kk) . B with B (kk, d). */
static inline void gemm_nn(int m, int d, int kk, const float *A, int lda, const float *Bm, int ldb,
                           float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, d, kk, 1.0f, A, lda, Bm, ldb, beta, C,
                ldc);
}
/* C (cols, d) (+)= A^T B with A (B, cols) at lda, B (B, d): reduction over rows. */
static inline void gemm_tn(int cols, int d, int rows, const float *A, int lda, const float *Bm,
                           int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, d, rows, 1.0f, A, lda, Bm, ldb, beta,
                C, ldc);
}

/* Ghost grads (standard; Anthropic, January 2024): dead latents' exp(pre)
 * reconstruct e = x - x_hat, rescaled per row to half of ||e|| (scale
 * detached); the MSE is rescaled to the main MSE (factor detached). Ra holds
 * x_hat - x on entry. Fills Za (B, n), Ra = dL/dg_hat (B, d) and H = dL/dP;
 * returns the ghost loss. */
static double ghost_term(sae_arch_state *a, int B, const uint8_t *dead, int chunk, int par) {
    sf_sae *s = a->s;
    const int n = s->n, d = s->d;
    /* per-row sums, added in row order below: an OpenMP reduction over a
     * dynamic schedule would depend on which thread took which chunk */
    double *rs = sf_malloc((size_t)B * 2 * sizeof(double)), raw = 0, mse = 0;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        for (int r = r0; r < r0 + m; r++) {
            float *za = a->Za + (size_t)r * n;
            const float *pr = a->P + (size_t)r * n;
            for (int j = 0; j < n; j++) {
                float v = pr[j] + s->b_enc[j];
                za[j] = dead[j] ? expf(v < 20.0f ? v : 20.0f) : 0.0f; /* overflow guard */
            }
        }
        gemm_nn(m, d, n, a->Za + (size_t)r0 * n, n, s->W_decT, d, 0.0f, a->Ta + (size_t)r0 * d, d);
        for (int r = r0; r < r0 + m; r++) {
            float *h = a->Ta + (size_t)r * d, *rr = a->Ra + (size_t)r * d;
            double hh = 0, ee = 0;
            for (int q = 0; q < d; q++) {
                hh += (double)h[q] * h[q];
                ee += (double)rr[q] * rr[q];
            }
            float sb = hh > 0 ? (float)(sqrt(ee) / (2.0 * sqrt(hh))) : 0.0f;
            float *za = a->Za + (size_t)r * n;
            for (int j = 0; j < n; j++)
                za[j] *= sb;
            double acc = 0;
            for (int q = 0; q < d; q++) {
                rr[q] += sb * h[q]; /* g_hat - e */
                acc += (double)rr[q] * rr[q];
            }
            rs[2 * r] = acc;
            rs[2 * r + 1] = ee;
        }
    }
    for (int b = 0; b < B; b++) {
        raw += rs[2 * b];
        mse += rs[2 * b + 1];
    }
    free(rs);
    if (!(raw > 0) || !isfinite(raw)) {
        memset(a->Za, 0, (size_t)B * n * sizeof(float));
        memset(a->H, 0, (size_t)B * n * sizeof(float));
        memset(a->Ra, 0, (size_t)B * d * sizeof(float));
        return 0;
    }
    /* L = c * raw / B with c = mse / raw detached: value mse / B, gradient c * 2/B r */
    const float sc = (float)((mse / raw) * 2.0 / B);
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        for (size_t i = (size_t)r0 * d; i < (size_t)(r0 + m) * d; i++)
            a->Ra[i] *= sc;
        gemm_nt(m, n, d, a->Ra + (size_t)r0 * d, d, s->W_decT, d, 0.0f, a->H + (size_t)r0 * n, n);
        for (size_t i = (size_t)r0 * n; i < (size_t)(r0 + m) * n; i++) {
            /* d/dP of s_b exp(P + b): Za (the clamp region has zero slope) */
            size_t j = i % (size_t)n;
            float v = a->P[i] + s->b_enc[j];
            a->H[i] = (a->Za[i] > 0 && v < 20.0f) ? a->Za[i] * a->H[i] : 0.0f;
        }
    }
    return mse / B;
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

/* ------------------------------------------------- sparse step (k archs) -- */

/* batchtopk and matryoshka: codes have ~k nonzeros per row, so after the
 * encoder GEMM everything touches only the active (row, latent) pairs, as
 * the TopK trainer does: sparse prefix decode, dL/dz at the active slots,
 * then per latent (rows ascending, fixed order) the encoder/decoder
 * gradient rows. Dead latents (AuxK) add their own sparse entries. */
typedef struct {
    int32_t *rp, *idx; /* CSR over rows: rp (B + 1), idx (nnz) */
    float *val, *g;    /* (nnz) code, dL/dpre */
    size_t cap;
    int32_t *arp, *aidx; /* aux entries */
    float *aval, *ag;
    size_t acap;
    int32_t *loff, *aloff; /* (n + 1) per-latent offsets */
    int32_t *lent, *alent; /* entry ids sorted by latent, rows ascending */
    int32_t *erow, *aerow; /* row of each entry */
    int32_t *grp;          /* (n) group of each latent */
    float *h;              /* (nnz) jumprelu dL/dlogthres; gated dL/dgate per entry */
    float *h2;             /* (nnz) gated dL/dmag per entry */
    size_t hcap;
} sparse_buf;

static void sp_reserve(int32_t **i, float **v, float **g, int32_t **row, int32_t **lent,
                       size_t *cap, size_t want) {
    if (want <= *cap) return;
    *cap = want + want / 4 + 16;
    free(*i);
    free(*v);
    free(*g);
    free(*row);
    free(*lent);
    *i = sf_malloc(*cap * sizeof(int32_t));
    *v = sf_malloc(*cap * sizeof(float));
    *g = sf_malloc(*cap * sizeof(float));
    *row = sf_malloc(*cap * sizeof(int32_t));
    *lent = sf_malloc(*cap * sizeof(int32_t));
}

void sae_sparse_free(void *p) {
    sparse_buf *b = p;
    if (!b) return;
    void *ptrs[] = {b->rp,   b->idx,   b->val,  b->g,     b->arp,  b->aidx,
                    b->aval, b->ag,    b->loff, b->aloff, b->lent, b->alent,
                    b->erow, b->aerow, b->grp,  b->h,     b->h2};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
    free(b);
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

/* The sparse step's entries of one row, latents ascending, into idx/val
 * (val = the code): j with gate[j] > 0 (gated: open gates), else z[j] > 0,
 * plus for jumprelu (p non-NULL) |p[j] + be[j] - th[j]| < half (inside the
 * STE window: threshold gradient only). Returns the count. The forward
 * counted the same set. */
static int32_t row_entries(int n, const float *gate, const float *z, const float *p,
                           const float *be, const float *th, float half, int32_t *idx, float *val) {
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

/* End of either step: the firing counts as offsets (the trainer's dead-latent
 * counters read them), the phase times, and the metrics from the per-row
 * stats. gss: the squared gradient norm. */
static void finish_step(const sae_arch_state *a, const sae_train_io *io, int B, double lm,
                        double aux_loss, int ndead, double gss, double t0, double t1, double tg,
                        int par, sf_sae_metrics *met) {
    const int n = a->s->n;
    io->off[0] = 0;
    for (int j = 0; j < n; j++)
        io->off[j + 1] = io->off[j] + a->cnt[j];
    const double t3 = sf_now();
    io->tm->encode += t1 - t0;
    io->tm->gemm += tg / (par ? omp_get_max_threads() : 1);
    io->tm->backward += t3 - t1;
    if (!met) return;
    memset(met, 0, sizeof *met);
    double sq = 0, x2 = 0, l1 = 0, l0 = 0, cs = 0, pen = 0, rec = 0;
    for (int b = 0; b < B; b++) {
        const double *st = a->rowst + (size_t)b * 8;
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
    met->auxk = aux_loss + (a->s->arch == SF_SAE_GATED ? rec / B - met->l2 : 0);
    met->loss = rec / B + lm * pen / B + aux_loss;
    met->l2_normalised = x2 > 0 ? sq / x2 : 0;
    met->l1 = l1 / B;
    met->l0 = l0 / B;
    met->cossim = cs / B;
    met->alive = met->l0 / n;
    met->survival = (double)surv / n;
    met->dead = (double)ndead / n;
    met->grad_norm = sqrt(gss);
}

/* Also standard and jumprelu once their codes are sparse (sae_arch_grad
 * decides): entries are the active latents, plus for jumprelu the inactive
 * ones inside the STE window (they carry threshold gradient only). */
static int sparse_step(sae_arch_state *a, const sae_train_io *io, const float *x, int B,
                       sf_sae_metrics *met, int par, int chunk, int ng, const int *gs,
                       const int *ge, double t0, double tg, double lm) {
    sf_sae *s = a->s;
    const sf_sae_train_opts *o = io->o;
    const int d = s->d, n = s->n, arch = s->arch;
    const int jr = arch == SF_SAE_JUMPRELU, gt = arch == SF_SAE_GATED;
    const float eps = (float)o->bandwidth, half = 0.5f * eps;
    const size_t BD = (size_t)B * d;
    const float invB = 1.0f / (float)B, rscale = 2.0f * invB / (float)ng;
    if (!a->sp) a->sp = sf_calloc(1, sizeof(sparse_buf));
    sparse_buf *sp = a->sp;
    if (!sp->rp) {
        sp->rp = sf_malloc((size_t)(a->maxB + 1) * sizeof(int32_t));
        sp->arp = sf_malloc((size_t)(a->maxB + 1) * sizeof(int32_t));
        sp->loff = sf_malloc((size_t)(n + 1) * sizeof(int32_t));
        sp->aloff = sf_malloc((size_t)(n + 1) * sizeof(int32_t));
        sp->grp = sf_malloc((size_t)n * sizeof(int32_t));
    }
    for (int g = 0; g < ng; g++)
        for (int j = gs[g]; j < ge[g]; j++)
            sp->grp[j] = g;
    /* ---- CSR of Z (ascending latents per row); the forward counted the
     * entries of each row (a->rcnt) ---- */
    sp->rp[0] = 0;
    for (int b = 0; b < B; b++)
        sp->rp[b + 1] = sp->rp[b] + a->rcnt[b];
    const size_t nnz = (size_t)sp->rp[B];
    sp_reserve(&sp->idx, &sp->val, &sp->g, &sp->erow, &sp->lent, &sp->cap, nnz);
    if ((jr || gt) && nnz > sp->hcap) {
        free(sp->h);
        free(sp->h2);
        sp->hcap = sp->cap;
        sp->h = sf_malloc(sp->hcap * sizeof(float));
        sp->h2 = sf_malloc(sp->hcap * sizeof(float));
    }
    if (a->rl.valid) { /* the selection's row lists: kept codes, then latents ascending */
        const sae_rowlists *L = &a->rl;
#pragma omp parallel for schedule(static) if (par)
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
#pragma omp parallel for schedule(static) if (par)
        for (int b = 0; b < B; b++) {
            const size_t o = (size_t)b * n;
            const int32_t e0 = sp->rp[b];
            const int32_t e1 =
                e0 + row_entries(n, gt ? a->A + o : NULL, a->Z + o, jr ? a->P + o : NULL, s->b_enc,
                                 a->ex, half, sp->idx + e0, sp->val + e0);
            for (int32_t e = e0; e < e1; e++)
                sp->erow[e] = b;
        }
    }
    /* dead latents -> AuxK */
    uint8_t *dead = sf_calloc((size_t)n, 1);
    int ndead = 0;
    for (int j = 0; j < n; j++)
        ndead += dead[j] = io->since[j] >= o->bodycount;
    const int do_aux = (arch == SF_SAE_BATCHTOPK || arch == SF_SAE_MATRYOSHKA) &&
                       o->auxk_coef > 0 && o->aux_k > 0 && ndead > 0;
    const float l1c = (float)(lm / B), l0c = (float)(lm / B) / eps;
    const int ak = do_aux ? (o->aux_k < ndead ? o->aux_k : ndead) : 0;
    /* ---- decode prefixes, stats, dL/dx_hat suffix sums, dL/dz ---- */
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        for (int r = r0; r < r0 + m; r++) {
            const float *xr = x + (size_t)r * d;
            int32_t e = sp->rp[r], e1 = sp->rp[r + 1];
            for (int g = 0; g < ng; g++) {
                float *xh = a->Xh + (size_t)g * BD + (size_t)r * d;
                memcpy(xh, g ? xh - BD : s->b_dec, (size_t)d * sizeof(float));
                for (; e < e1 && sp->idx[e] < ge[g]; e++) {
                    const float *w = s->W_decT + (size_t)sp->idx[e] * d;
                    const float v = sp->val[e];
#pragma omp simd
                    for (int q = 0; q < d; q++)
                        xh[q] += v * w[q];
                }
            }
            double *st = a->rowst + (size_t)r * 8;
            const float *xf = a->Xh + (size_t)(ng - 1) * BD + (size_t)r * d;
            double sq = 0, x2 = 0, xxh = 0, xh2 = 0, l1 = 0, lsum = 0;
            /* omp simd: vector partial sums in an order fixed at compile
             * time, as in the TopK trainer */
#pragma omp simd reduction(+ : sq, x2, xxh, xh2)
            for (int q = 0; q < d; q++) {
                double xh = xf[q], xv = xr[q], df = xh - xv;
                sq += df * df;
                x2 += xv * xv;
                xxh += xv * xh;
                xh2 += xh * xh;
            }
            for (int32_t u = sp->rp[r]; u < e1; u++)
                l1 += sp->val[u];
            if (do_aux)
                for (int q = 0; q < d; q++)
                    a->Ra[(size_t)r * d + q] = xf[q] - xr[q];
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
            if (gt) {
                /* aux: ReLU(gate) through the frozen decoder -> Ta = 2/B (x_aux - x) */
                float *ta = a->Ta + (size_t)r * d;
                memcpy(ta, s->b_dec, (size_t)d * sizeof(float));
                for (int32_t u = sp->rp[r]; u < e1; u++) {
                    const float av = a->A[(size_t)r * n + sp->idx[u]];
                    const float *w = s->W_decT + (size_t)sp->idx[u] * d;
#pragma omp simd
                    for (int q = 0; q < d; q++)
                        ta[q] += av * w[q];
                }
                double acc = 0;
                for (int q = 0; q < d; q++) {
                    double df = (double)ta[q] - xr[q];
                    acc += df * df;
                    ta[q] = 2.0f * invB * (ta[q] - xr[q]);
                }
                lsum += acc; /* ng = 1: RS_AUX = recon + aux recon */
            }
            int l0r = 0;
            for (int32_t u = sp->rp[r]; u < e1; u++) {
                const int j = sp->idx[u];
                const float gz = sae_dot(s->W_decT + (size_t)j * d,
                                         a->Xh + (size_t)sp->grp[j] * BD + (size_t)r * d, d);
                const int on = sp->val[u] > 0;
                l0r += on;
                if (arch == SF_SAE_STANDARD) {
                    sp->g[u] = gz + l1c * a->wn[j]; /* dL/dpre incl. the L1 x norm term */
                } else if (gt) {
                    const float er = expf(s->r_mag[j]), pre = a->P[(size_t)r * n + j];
                    const float ga = sae_dot(s->W_decT + (size_t)j * d, a->Ta + (size_t)r * d, d);
                    const float gm = er * pre + s->b_mag[j] > 0 ? gz : 0.0f;
                    const float gg = ga + l1c * a->wn[j];
                    sp->h[u] = gg;
                    sp->h2[u] = gm;
                    sp->g[u] = gg + er * gm;
                } else if (jr) {
                    const float t = a->ex[j], v = a->P[(size_t)r * n + j] + s->b_enc[j];
                    sp->h[u] = fabsf(v - t) < half ? t * (-(t / eps) * gz - l0c) : 0.0f;
                    sp->g[u] = on ? gz : 0.0f;
                } else {
                    sp->g[u] = gz;
                }
            }
            st[RS_SQ] = sq;
            st[RS_X2] = x2;
            st[RS_XXH] = xxh;
            st[RS_XH2] = xh2;
            st[RS_L1] = l1;
            st[RS_L0] = (double)l0r; /* penalty (RS_PEN) was set by the forward */
            st[RS_AUX] = lsum / ng;
        }
    }
    double t1 = sf_now();
    /* ---- AuxK: sparse entries among dead latents ---- */
    double aux_loss = 0;
    size_t annz = 0;
    if (do_aux) {
        sp_reserve(&sp->aidx, &sp->aval, &sp->ag, &sp->aerow, &sp->alent, &sp->acap,
                   (size_t)B * ak);
        sae_colsum(a->Ra, B, d, a->csd, par);
        double e2 = 0, me2 = 0, r2 = 0;
        for (int b = 0; b < B; b++)
            e2 += a->rowst[(size_t)b * 8 + RS_SQ];
        for (int q = 0; q < d; q++)
            me2 += (a->csd[q] / B) * (a->csd[q] / B);
        const double D = e2 - (double)B * me2;
        int32_t *acnt = sf_malloc((size_t)B * sizeof(int32_t));
        double *rr2 = sf_malloc((size_t)B * sizeof(double)); /* per row: fixed-order sum */
#pragma omp parallel for schedule(dynamic, 1) if (par)
        for (int r0 = 0; r0 < B; r0 += chunk) {
            int m = B - r0 < chunk ? B - r0 : chunk;
            for (int r = r0; r < r0 + m; r++) {
                int32_t *ix = sp->aidx + (size_t)r * ak;
                float *vl = sp->aval + (size_t)r * ak;
                int c = acnt[r] =
                    sae_topk_relu(a->P + (size_t)r * n, s->b_enc, n, ak, dead, ix, vl);
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
        annz = (size_t)sp->arp[B];
        if (D > 0 && isfinite(D) && isfinite(r2)) {
            aux_loss = o->auxk_coef * r2 / D;
            const float sc = (float)(2.0 * o->auxk_coef / D);
#pragma omp parallel for schedule(static) if (par)
            for (int b = 0; b < B; b++) {
                float *rr = a->Ra + (size_t)b * d;
                for (int q = 0; q < d; q++)
                    rr[q] *= sc;
                for (int32_t u = sp->arp[b]; u < sp->arp[b + 1]; u++)
                    sp->ag[u] = sae_dot(s->W_decT + (size_t)sp->aidx[u] * d, rr, d);
            }
        } else {
            annz = 0;
        }
    }
    /* ---- per latent ---- */
    by_latent(n, nnz, sp->idx, sp->loff, sp->lent);
    if (annz) by_latent(n, annz, sp->aidx, sp->aloff, sp->alent);
    const int iWe = param_of(s, s->W_enc), iWd = param_of(s, s->W_decT),
              ibd = param_of(s, s->b_dec), ibe = param_of(s, s->b_enc);
    float *gWe = io->gr[iWe], *gWd = io->gr[iWd], *gbd = io->gr[ibd], *gbe = io->gr[ibe];
    /* gradient rows summed in a per-thread buffer, written once (as TopK's) */
    const int dpad = (d + 15) / 16 * 16, stream = (size_t)n * d >= io->stream_min;
    float *rowbuf = sf_malloc_aligned((size_t)omp_get_max_threads() * 2 * dpad * sizeof(float));
#pragma omp parallel if (par)
    {
        float *const rbuf = rowbuf + (size_t)omp_get_thread_num() * 2 * dpad;
#pragma omp for schedule(dynamic, 16)
        for (int j = 0; j < n; j++) {
            const int32_t e0 = sp->loff[j], e1 = sp->loff[j + 1];
            const int32_t a0 = annz ? sp->aloff[j] : 0, a1 = annz ? sp->aloff[j + 1] : 0;
            float *restrict ge_ = rbuf, *restrict gd = rbuf + dpad;
            int fired = 0;
            for (int32_t u = e0; u < e1; u++)
                fired += sp->val[sp->lent[u]] > 0;
            a->cnt[j] = fired;
            if (jr) {
                float gth = 0;
                for (int32_t u = e0; u < e1; u++)
                    gth += sp->h[sp->lent[u]];
                io->gr[param_of(s, s->logthres)][j] = gth;
            }
            float gate_g = 0, mag_g = 0, rmag_g = 0;
            if (gt) {
                for (int32_t u = e0; u < e1; u++) {
                    const int32_t e = sp->lent[u];
                    gate_g += sp->h[e];
                    mag_g += sp->h2[e];
                    rmag_g += sp->h2[e] * a->P[(size_t)sp->erow[e] * n + j];
                }
                io->gr[param_of(s, s->b_mag)][j] = mag_g;
                io->gr[param_of(s, s->r_mag)][j] = expf(s->r_mag[j]) * rmag_g;
            }
            if (e0 == e1 && a0 == a1) {
                if (io->has_grad[j]) {
                    memset(ge_, 0, (size_t)d * sizeof(float));
                    sae_store_row(gWe + (size_t)j * d, ge_, d, stream);
                    sae_store_row(gWd + (size_t)j * d, ge_, d, stream);
                }
                io->has_grad[j] = 0;
                gbe[j] = 0;
                a->cs[j] = 0;
                a->lat_ss[j] = 0;
                continue;
            }
            io->has_grad[j] = 1;
            memset(ge_, 0, (size_t)d * sizeof(float));
            memset(gd, 0, (size_t)d * sizeof(float));
            const float *S = a->Xh + (size_t)sp->grp[j] * BD;
            float sg = 0, sga = 0;
            for (int32_t u = e0; u < e1; u++) {
                const int32_t e = sp->lent[u], row = sp->erow[e];
                const float g = sp->g[e], z = sp->val[e];
                const float *xr = a->xc + (size_t)row * d, *rr = S + (size_t)row * d;
#pragma omp simd
                for (int q = 0; q < d; q++) {
                    ge_[q] += g * xr[q];
                    gd[q] += z * rr[q];
                }
                sg += g;
            }
            for (int32_t u = a0; u < a1; u++) {
                const int32_t e = sp->alent[u], row = sp->aerow[e];
                const float g = sp->ag[e], z = sp->aval[e];
                const float *xr = a->xc + (size_t)row * d, *rr = a->Ra + (size_t)row * d;
#pragma omp simd
                for (int q = 0; q < d; q++) {
                    ge_[q] += g * xr[q];
                    gd[q] += z * rr[q];
                }
                sga += g;
            }
            gbe[j] = gt ? gate_g : sg + sga;
            a->cs[j] = sg; /* main path only reaches b_dec (as TopK's AuxK) */
            if ((arch == SF_SAE_STANDARD || gt) && a->wn[j] > 0) {
                /* d/dw_j of lmbda/B sum_b f_bj ||w_j|| (gated: f = ReLU(gate)) */
                float fs = 0;
                for (int32_t u = e0; u < e1; u++) {
                    const int32_t e = sp->lent[u];
                    fs += gt ? a->A[(size_t)sp->erow[e] * n + j] : sp->val[e];
                }
                const float c = l1c * fs / a->wn[j];
                const float *w = s->W_decT + (size_t)j * d;
                for (int q = 0; q < d; q++)
                    gd[q] += c * w[q];
            }
            double ss = (double)gbe[j] * gbe[j];
            if (jr)
                ss += (double)io->gr[param_of(s, s->logthres)][j] *
                      io->gr[param_of(s, s->logthres)][j];
            if (gt)
                ss += (double)mag_g * mag_g +
                      (double)io->gr[param_of(s, s->r_mag)][j] * io->gr[param_of(s, s->r_mag)][j];
            a->lat_ss[j] =
                sae_latent_rows_done(ge_, gd, s->W_decT + (size_t)j * d, o->normalise, d,
                                     gWe + (size_t)j * d, gWd + (size_t)j * d, stream, ss);
        }
        sae_store_fence();
    }
    sf_free_aligned(rowbuf);
    /* b_dec: sum_rows dL/dx_hat - W_enc^T cs */
    sae_colsum(a->Xh, B, d, a->csd, par);
    bdec_grad(s, a->csd, a->cs, gbd, par);
    double gss = 0;
    for (int j = 0; j < n; j++)
        gss += a->lat_ss[j];
    for (int q = 0; q < d; q++)
        gss += (double)gbd[q] * gbd[q];
    *io->grad_ss = gss;
    finish_step(a, io, B, lm, aux_loss, ndead, gss, t0, t1, tg, par, met);
    free(dead);
    return 0;
}

/* The per-architecture functions' view of rows [r0, r0 + m) of the batch. */
static sae_arch_rows chunk_rows(const sae_arch_state *a, const sf_sae_train_opts *o, int r0, int m,
                                double lm, float invB, double *pen, int32_t *cnt) {
    const int n = a->s->n;
    const size_t off = (size_t)r0 * n;
    sae_arch_rows rw = {a->s,
                        o,
                        n,
                        m,
                        lm,
                        invB,
                        a->wn,
                        a->P + off,
                        a->Z + off,
                        a->G + off,
                        a->H + off,
                        a->A ? a->A + off : NULL,
                        a->GA ? a->GA + off : NULL,
                        a->E ? a->E + off : NULL,
                        pen,
                        cnt,
                        a->ex};
    return rw;
}

/* Rows per block in forward_lists: their codes (LIST_ROWS x n floats) stay
 * in cache between the activation and the compress. */
#define LIST_ROWS 16

/* standard / jumprelu once the last step was sparse: the activation pass
 * runs per block of rows into a per-thread scratch and is compressed at once
 * into row lists (a->rl), so the dense (B, n) Z is neither written nor
 * scanned. Returns 1 when done; 0 when a row had more entries than its
 * list holds or the batch is not sparse after all - the caller then runs
 * the dense pass (P is untouched, so the result is the same). */
static int forward_lists(sae_arch_state *a, const sf_sae_train_opts *o, int B, double lm,
                         float invB, int par) {
    const sf_sae *s = a->s;
    const int n = s->n, jr = s->arch == SF_SAE_JUMPRELU;
    const int cap = n / 8 > 16 ? n / 8 : (n < 16 ? n : 16);
    const float half = 0.5f * (float)o->bandwidth;
    sae_rowlists *L = &a->rl;
    if (sae_rowlists_reserve(L, B, cap)) return -1;
    const int T = omp_get_max_threads();
    if (a->scratch_T < T) {
        sf_free_aligned(a->scratch);
        a->scratch = sf_malloc_aligned((size_t)T * LIST_ROWS * n * sizeof(float));
        a->scratch_T = T;
    }
    int overflow = 0;
#pragma omp parallel for schedule(static) reduction(| : overflow) if (par)
    for (int r0 = 0; r0 < B; r0 += LIST_ROWS) {
        const int m = B - r0 < LIST_ROWS ? B - r0 : LIST_ROWS;
        float *zs = a->scratch + (size_t)omp_get_thread_num() * LIST_ROWS * n;
        double pen[LIST_ROWS];
        sae_arch_rows rw = {s,    o,    n,    m,    lm,   invB, a->wn, a->P + (size_t)r0 * n,
                            zs,   NULL, NULL, NULL, NULL, NULL, pen,   a->rcnt + r0,
                            a->ex};
        if (jr)
            sae_jumprelu_forward(&rw);
        else
            sae_standard_forward(&rw);
        for (int i = 0; i < m; i++) {
            const int r = r0 + i;
            a->rowst[(size_t)r * 8 + RS_PEN] = pen[i];
            if (a->rcnt[r] > cap) {
                overflow = 1;
                continue;
            }
            L->cnt[r] =
                row_entries(n, NULL, zs + (size_t)i * n, jr ? a->P + (size_t)r * n : NULL, s->b_enc,
                            a->ex, half, L->ix + (size_t)r * cap, L->vl + (size_t)r * cap);
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

int sae_arch_grad(sae_arch_state *a, const sae_train_io *io, const float *x, int B,
                  sf_sae_metrics *met) {
    sf_sae *s = a->s;
    const sf_sae_train_opts *o = io->o;
    const int d = s->d, n = s->n, arch = s->arch;
    const int par = sae_arch_par((size_t)B * n * d);
    const int chunk = sae_chunk_rows(B, n);
    const float invB = 1.0f / (float)B;
    a->lastB = B;
    double t0 = sf_now(), tg = 0;

    double lm = o->lmbda;
    if (o->lmbda_warmup_steps > 0 && io->steps < o->lmbda_warmup_steps)
        lm *= (double)io->steps / (double)o->lmbda_warmup_steps;
        /* decoder column norms (the L1 weighting of standard and gated) */
#pragma omp parallel for schedule(static) if (par &&                                               \
                                              (arch == SF_SAE_STANDARD || arch == SF_SAE_GATED))
    for (int j = 0; j < (arch == SF_SAE_STANDARD || arch == SF_SAE_GATED ? n : 0); j++) {
        const float *w = s->W_decT + (size_t)j * d;
        double ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int q = 0; q < d; q++)
            ss += (double)w[q] * w[q];
        a->wn[j] = (float)sqrt(ss);
    }
    if (arch == SF_SAE_JUMPRELU || arch == SF_SAE_GATED)
        for (int j = 0; j < n; j++)
            a->ex[j] = expf(arch == SF_SAE_JUMPRELU ? s->logthres[j] : s->r_mag[j]);
    /* nested prefixes [gs[g], ge[g]) (one group = all latents unless matryoshka) */
    int ng = 1, gs[SF_SAE_MAX_GROUPS], ge[SF_SAE_MAX_GROUPS];
    gs[0] = 0;
    ge[0] = n;
    if (arch == SF_SAE_MATRYOSHKA) {
        ng = s->n_groups;
        for (int g = 0, e = 0; g < ng; g++) {
            gs[g] = e;
            e += s->groups[g];
            ge[g] = e;
        }
    }
    const size_t BD = (size_t)B * d;

    /* ---- forward: xc, P = xc W_enc^T ---- */
    int bad_row = -1;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : tg) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        int64_t bad = sae_center_rows(s, x + (size_t)r0 * d, m, a->xc + (size_t)r0 * d);
        if (bad >= 0) {
#pragma omp critical(sae_arch_bad)
            if (bad_row < 0 || r0 + bad < bad_row) bad_row = r0 + (int)bad;
        }
        double t1 = sf_now();
        sae_encoder_gemm(s, a->xc + (size_t)r0 * d, m, a->P + (size_t)r0 * n);
        tg += sf_now() - t1;
    }
    if (bad_row >= 0) return sf_error("batch row %d: NaN or Inf in input", bad_row);

    /* ---- activations ---- */
    const int bsel = arch == SF_SAE_BATCHTOPK || (arch == SF_SAE_MATRYOSHKA && s->batch_select);
    for (int b = 0; b < B; b++)
        a->rowst[(size_t)b * 8 + RS_PEN] = 0;
    a->rl.valid = 0;
    if (bsel) {
        if (sae_batchtopk_select(a->P, s->b_enc, B, n, (int64_t)s->k_sel * B, a->Z, a->rcnt, &a->rl,
                                 a->have_min ? a->last_min : 0, &a->last_min, par))
            return -1;
        a->have_min = a->last_min > 0;
    } else if (arch == SF_SAE_MATRYOSHKA) { /* over TopK: row lists, no dense Z */
        sae_rowlists *L = &a->rl;
        const int k = s->k_sel;
        if (sae_rowlists_reserve(L, B, k)) return -1;
#pragma omp parallel for schedule(static) if (par)
        for (int r = 0; r < B; r++)
            a->rcnt[r] = L->cnt[r] = sae_topk_relu(a->P + (size_t)r * n, s->b_enc, n, k, NULL,
                                                   L->ix + (size_t)r * k, L->vl + (size_t)r * k);
        L->thr = -INFINITY;
        L->valid = 1;
    } else {
        /* standard / jumprelu whose last step was sparse: try without dense Z */
        const char *env = getenv("SAEFLOW_ARCH_SPARSE");
        int lists = 0;
        const char *lenv = getenv("SAEFLOW_ARCH_LISTS"); /* 0: never (tests) */
        if (a->pred_sparse && !(env && *env && atoi(env) == 0) &&
            !(lenv && *lenv && atoi(lenv) == 0) &&
            ((arch == SF_SAE_STANDARD && !o->ghost_grads) || arch == SF_SAE_JUMPRELU)) {
            lists = forward_lists(a, o, B, lm, invB, par);
            if (lists < 0) return -1;
        }
#pragma omp parallel for schedule(dynamic, 1) if (par && !lists)
        for (int r0 = 0; r0 < (lists ? 0 : B); r0 += chunk) {
            int m = B - r0 < chunk ? B - r0 : chunk;
            double *pen = sf_malloc((size_t)m * sizeof(double)); /* chunks can be large */
            sae_arch_rows rw = chunk_rows(a, o, r0, m, lm, invB, pen, a->rcnt + r0);
            switch (arch) {
            case SF_SAE_STANDARD:
                sae_standard_forward(&rw);
                break;
            case SF_SAE_GATED:
                sae_gated_forward(&rw);
                break;
            case SF_SAE_JUMPRELU:
                sae_jumprelu_forward(&rw);
                break;
            default:
                break;
            }
            if (arch == SF_SAE_STANDARD || arch == SF_SAE_GATED || arch == SF_SAE_JUMPRELU)
                for (int r = 0; r < m; r++)
                    a->rowst[(size_t)(r0 + r) * 8 + RS_PEN] = pen[r];
            free(pen);
        }
    }

    /* Sparse step for the k architectures always; for standard (without
     * ghost grads) and jumprelu once at most 1/16 of the codes are active
     * (below that the scattered per-latent updates beat the dense GEMMs).
     * SAEFLOW_ARCH_SPARSE=1/0 forces it on/off (tests, benchmarks). */
    int use_sparse = arch == SF_SAE_BATCHTOPK || arch == SF_SAE_MATRYOSHKA;
    if ((arch == SF_SAE_STANDARD && !o->ghost_grads) || arch == SF_SAE_JUMPRELU ||
        arch == SF_SAE_GATED) {
        const char *env = getenv("SAEFLOW_ARCH_SPARSE");
        if (env && *env) {
            use_sparse = atoi(env) != 0;
        } else {
            size_t nz = 0; /* entries counted by the forward (gated: open gates) */
            for (int b = 0; b < B; b++)
                nz += (size_t)a->rcnt[b];
            use_sparse = nz * 16 <= (size_t)B * n;
        }
        a->pred_sparse = use_sparse;
    }
    if (use_sparse) return sparse_step(a, io, x, B, met, par, chunk, ng, gs, ge, t0, tg, lm);

    /* ---- decode prefixes, stats, dL/dx_hat, dL/dZ ---- */
    const int ghost_on = arch == SF_SAE_STANDARD && o->ghost_grads;
    uint8_t *dead = sf_calloc((size_t)n, 1);
    int ndead = 0;
    for (int j = 0; j < n; j++)
        ndead += dead[j] = io->since[j] >= o->bodycount;
    const int do_aux = ghost_on && ndead > 0;
    const float rscale = 2.0f * invB / (float)ng;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : tg) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        const size_t zo = (size_t)r0 * n, xo = (size_t)r0 * d;
        double t1 = sf_now();
        for (int g = 0; g < ng; g++) {
            float *xh = a->Xh + (size_t)g * BD + xo;
            for (int r = 0; r < m; r++)
                memcpy(xh + (size_t)r * d, g ? xh - BD + (size_t)r * d : s->b_dec,
                       (size_t)d * sizeof(float));
            gemm_nn(m, d, ge[g] - gs[g], a->Z + zo + gs[g], n, s->W_decT + (size_t)gs[g] * d, d,
                    1.0f, xh, d);
        }
        tg += sf_now() - t1;
        for (int r = r0; r < r0 + m; r++) {
            const float *xr = x + (size_t)r * d, *zr = a->Z + (size_t)r * n;
            double *st = a->rowst + (size_t)r * 8;
            double sq = 0, x2 = 0, xxh = 0, xh2 = 0, l1 = 0, l0 = 0;
            const float *xf = a->Xh + (size_t)(ng - 1) * BD + (size_t)r * d; /* full x_hat */
            /* omp simd: partial sums in an order fixed at compile time */
#pragma omp simd reduction(+ : sq, x2, xxh, xh2)
            for (int q = 0; q < d; q++) {
                double xh = xf[q], xv = xr[q], df = xh - xv;
                sq += df * df;
                x2 += xv * xv;
                xxh += xv * xh;
                xh2 += xh * xh;
            }
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
            if (do_aux)
                for (int q = 0; q < d; q++)
                    a->Ra[(size_t)r * d + q] = xf[q] - xr[q];
            /* the loss: mean over prefixes of ||x - x_hat_g||^2 */
            double lsum = 0;
            for (int g = 0; g < ng; g++) {
                float *xh = a->Xh + (size_t)g * BD + (size_t)r * d;
#pragma omp simd reduction(+ : lsum)
                for (int q = 0; q < d; q++) {
                    double df = (double)xh[q] - xr[q];
                    lsum += df * df;
                    xh[q] = rscale * (xh[q] - xr[q]);
                }
            }
            /* suffix sums: Xh_g <- sum_{i >= g} dL/dx_hat_i */
            for (int g = ng - 2; g >= 0; g--) {
                float *xh = a->Xh + (size_t)g * BD + (size_t)r * d;
                const float *nx = xh + BD;
                for (int q = 0; q < d; q++)
                    xh[q] += nx[q];
            }
            st[RS_SQ] = sq;
            st[RS_X2] = x2;
            st[RS_XXH] = xxh;
            st[RS_XH2] = xh2;
            st[RS_L1] = l1;
            st[RS_L0] = l0;
            st[RS_AUX] = lsum / ng;
        }
        double t2 = sf_now();
        for (int g = 0; g < ng; g++)
            gemm_nt(m, ge[g] - gs[g], d, a->Xh + (size_t)g * BD + xo, d,
                    s->W_decT + (size_t)gs[g] * d, d, 0.0f, a->G + zo + gs[g], n);
        if (arch == SF_SAE_GATED) {
            /* aux: x_hat_aux = ReLU(gate) W_dec + b_dec through a frozen decoder copy */
            float *ta = a->Ta + xo;
            for (int r = 0; r < m; r++)
                memcpy(ta + (size_t)r * d, s->b_dec, (size_t)d * sizeof(float));
            gemm_nn(m, d, n, a->A + zo, n, s->W_decT, d, 1.0f, ta, d);
            for (int r = r0; r < r0 + m; r++) {
                float *t = a->Ta + (size_t)r * d;
                const float *xr = x + (size_t)r * d;
                double acc = 0;
#pragma omp simd reduction(+ : acc)
                for (int q = 0; q < d; q++) {
                    double df = (double)t[q] - xr[q];
                    acc += df * df;
                    t[q] = 2.0f * invB * (t[q] - xr[q]);
                }
                a->rowst[(size_t)r * 8 + RS_AUX] += acc; /* gated: recon + aux recon */
            }
            gemm_nt(m, n, d, ta, d, s->W_decT, d, 0.0f, a->GA + zo, n);
        }
        tg += sf_now() - t2;
    }
    double t1 = sf_now();

    /* ---- L1 weights before the backward overwrites them ---- */
    if (arch == SF_SAE_STANDARD) sae_colsum(a->Z, B, n, a->cs3, par);
    if (arch == SF_SAE_GATED) sae_colsum(a->A, B, n, a->cs3, par);

        /* ---- backward to dL/dP ---- */
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        size_t off = (size_t)r0 * n;
        sae_arch_rows rw = chunk_rows(a, o, r0, m, lm, invB, NULL, NULL);
        switch (arch) {
        case SF_SAE_STANDARD:
            sae_standard_backward(&rw);
            break;
        case SF_SAE_GATED:
            sae_gated_backward(&rw);
            break;
        case SF_SAE_JUMPRELU:
            sae_jumprelu_backward(&rw);
            break;
        default:
            for (size_t i = off; i < off + (size_t)m * n; i++)
                if (!(a->Z[i] > 0)) a->G[i] = 0;
        }
    }

    /* ---- ghost grads: Za, Ra, H = dL_ghost/dP ---- */
    double aux_loss = 0;
    if (do_aux) aux_loss = ghost_term(a, B, dead, chunk, par);

    /* ---- parameter gradients ---- */
    const int iWe = param_of(s, s->W_enc), iWd = param_of(s, s->W_decT),
              ibd = param_of(s, s->b_dec), ibe = param_of(s, s->b_enc);
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
    switch (arch) {
    case SF_SAE_GATED: {
        /* backward left: G = dL/dP, H = dL/dmag, A = dL/dgate, E = dL/dmag * P */
        const int ir = param_of(s, s->r_mag), im = param_of(s, s->b_mag);
        sae_colsum(a->A, B, n, a->cs, par);
        for (int j = 0; j < n; j++)
            gbe[j] = (float)a->cs[j];
        sae_colsum(a->H, B, n, a->cs2, par);
        for (int j = 0; j < n; j++)
            io->gr[im][j] = (float)a->cs2[j];
        sae_colsum(a->E, B, n, a->cs2, par);
        for (int j = 0; j < n; j++)
            io->gr[ir][j] = (float)(expf(s->r_mag[j]) * a->cs2[j]);
        break;
    }
    case SF_SAE_JUMPRELU: {
        const int it = param_of(s, s->logthres);
        for (int j = 0; j < n; j++)
            gbe[j] = (float)a->cs[j];
        sae_colsum(a->H, B, n, a->cs2, par);
        for (int j = 0; j < n; j++)
            io->gr[it][j] = (float)a->cs2[j];
        break;
    }
    default:
        for (int j = 0; j < n; j++)
            gbe[j] = (float)a->cs[j];
    }
    const int nblk = (n + ALB - 1) / ALB;
    const double l1c = lm * invB;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int blk = 0; blk < nblk; blk++) {
        const int j0 = blk * ALB, j1 = j0 + ALB < n ? j0 + ALB : n, nb = j1 - j0;
        /* gW_enc[j0:j1] = G[:, j0:j1]^T xc */
        gemm_tn(nb, d, B, a->G + j0, n, a->xc, d, 0.0f, gWe + (size_t)j0 * d, d);
        /* gW_decT[j] = Z[:, j]^T (dL/dx_hat of the prefixes holding j), per group piece */
        for (int g = 0; g < ng; g++) {
            int p0 = j0 > gs[g] ? j0 : gs[g], p1 = j1 < ge[g] ? j1 : ge[g];
            if (p0 >= p1) continue;
            gemm_tn(p1 - p0, d, B, a->Z + p0, n, a->Xh + (size_t)g * BD, d, 0.0f,
                    gWd + (size_t)p0 * d, d);
        }
        if (do_aux) gemm_tn(nb, d, B, a->Za + j0, n, a->Ra, d, 1.0f, gWd + (size_t)j0 * d, d);
        if (arch == SF_SAE_STANDARD || arch == SF_SAE_GATED)
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
        const int j0 = (int)((int64_t)n * t / nt), j1 = (int)((int64_t)n * (t + 1) / nt);
        int32_t *restrict cnt = a->cnt;
        for (int j = j0; j < j1; j++)
            cnt[j] = 0;
        for (int b = 0; b < B; b++) {
            const float *restrict z = a->Z + (size_t)b * n;
#pragma omp simd
            for (int j = j0; j < j1; j++)
                cnt[j] += z[j] > 0;
        }
    }
    finish_step(a, io, B, lm, aux_loss, ndead, *io->grad_ss, t0, t1, tg, par, met);
    free(dead);
    return 0;
}
