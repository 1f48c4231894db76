/* SAE architectures other than TopK, and the dead-latent remedies: the hooks
 * that sae.c (model, checkpoints, encode) and sae_train.c (trainer) call.
 * docs/architectures.md has the formulas.
 *
 * Each architecture is a table of functions (sae_arch_ops, below) in its own
 * file arch_<name>.c: parameters, config keys, inference, and its pieces of
 * the training step. arch_common.c dispatches the model hooks; arch_train.c
 * runs the step as named stages and calls the architecture's pieces.
 *
 * Training engine (arch_train.c): the new architectures share one dense
 * step, because L1 / JumpReLU / gated codes are dense early in training and
 * a GEMM is then the fastest way to touch every (row, latent) pair:
 *   xc = x - b_dec                   (B, d)
 *   P  = xc W_enc^T                  (B, n)   sgemm, no bias
 *   Z  = act(P)                      (B, n)   per architecture (arch_*.c)
 *   x_hat_g = b_dec + Z[:, <m_g] W_decT[<m_g]   per nested prefix m_g (one
 *                                              prefix = n unless matryoshka)
 *   gZ = sum_g R_g W_decT^T          (B, n)   R_g: dL/dx_hat of prefixes >= g
 *   G  = dL/dP                       (B, n)   per architecture
 *   gW_enc = G^T xc, gW_decT = Z^T R + (L1 norm term), gb_dec = sum R - W_enc^T colsum(G)
 * Every product runs on fixed row chunks / latent blocks, so results do not
 * depend on the thread count. batchtopk and matryoshka (codes always ~k per
 * row), and standard / gated / jumprelu once at most 1/16 of their codes are
 * active, take a sparse step instead after the encoder GEMM (sparse_step in
 * arch_train.c): sparse prefix decode, dL/dz at active slots only, and
 * per-latent gradient rows from the entries bucketed by latent, as the TopK
 * trainer does. */
#ifndef SAEFLOW_ARCH_INTERNAL_H
#define SAEFLOW_ARCH_INTERNAL_H

#include <cjson/cJSON.h>

#include "saeflow/sae.h"
#include "saeflow/sae_train.h"
#include "sae/sae_internal.h"

/* ---- model hooks (sae.c) ---- */
/* k from the caller -> s->k_sel (batchtopk, matryoshka) and s->k = code capacity. */
void sae_arch_set_k(sf_sae *s, int k);
/* Allocates and registers the parameters of s->arch (not TopK). */
int sae_arch_alloc(sf_sae *s);
/* Architecture-specific init after the shared one (W_enc uniform, W_decT = W_enc unit rows). */
void sae_arch_init(sf_sae *s, uint64_t seed);
/* Writes the architecture's keys into a config object ("arch", "k", "groups"...). */
void sae_arch_config(const sf_sae *s, cJSON *cfg);
/* Reads them back (k optional where it has no meaning); errors name `path`. */
int sae_arch_load_config(sf_sae *s, const cJSON *cfg, const char *path);
/* x (B, d) -> codes, per architecture; codes hold up to s->k per row. */
struct sae_pf_s;
/* pf: W_enc quantised for the int16 pre-filter (prefilter.h), or NULL for the
 * F32 GEMM; only TopK-style row selections use it. */
int sae_arch_encode(const sf_sae *s, const struct sae_pf_s *pf, const float *x, int64_t B,
                    sf_sae_codes *out);

/* Shared by the allocators: zeroed W_enc, W_decT, b_enc, b_dec; and the
 * four parameters in the reference's order for the architectures whose
 * state_dict is encoder.weight, encoder.bias, decoder.weight, bias. */
float *sae_zalloc(size_t count);
void sae_alloc_core(sf_sae *s);
void sae_add_linear_params(sf_sae *s);

/* Folds (resample.c). sae_needs_fold: s has an input scale, or is a standard
 * or gated SAE with a nonzero decoder column off unit norm. sae_folded_copy:
 * a copy with both folded, what every layout saves. sae_fold_norms: for each
 * latent j with c = ||w_j|| != 1, W_enc[j], b_enc[j] (and gated mag_bias[j])
 * times c, w_j / c: codes times c, reconstructions unchanged; a zero column
 * is left alone, or with zero_too its encoder row and bias are zeroed (what
 * SAELens's rescale_acts_by_decoder_norm computes: code 0). */
int sae_needs_fold(const sf_sae *s);
int sae_folded_copy(sf_sae *f, const sf_sae *s);
void sae_fold_norms(sf_sae *s, int zero_too);
/* formats.c: a directory in the SAELens or sparsify layout (no config.json),
 * and loading it (sf_sae_load calls these, so every command reads them). */
int sae_is_foreign(const char *dir);
int sae_load_foreign(sf_sae *s, const char *dir);
/* Deep copy of a model (params, config). */
int sae_copy(sf_sae *dst, const sf_sae *src);

/* ---- trainer hooks (sae_train.c) ---- */
typedef struct {
    sf_sae *s;
    const sf_sae_train_opts *o;
    float **gr, **m1, **m2; /* per param: gradient, Adam moments */
    uint8_t *has_grad;      /* (n) 1: latent's gradient rows are valid */
    int32_t *off;           /* (n + 1): off[j+1] - off[j] = rows where latent j fired */
    int64_t *since;         /* (n) samples since each latent last fired */
    double *grad_ss;        /* squared global gradient norm (for clipping) */
    int64_t steps;          /* optimiser steps taken so far */
    sf_sae_timing *tm;
    size_t stream_min; /* write gradient matrices of at least this many floats streaming */
} sae_train_io;

typedef struct sae_arch_state sae_arch_state;
sae_arch_state *sae_arch_state_new(sf_sae *s, const sf_sae_train_opts *o, int max_batch);
void sae_arch_state_free(sae_arch_state *a);
int sae_arch_grad(sae_arch_state *a, const sae_train_io *io, const float *x, int B,
                  sf_sae_metrics *m);
/* After the optimiser step (batchtopk threshold EMA). */
void sae_arch_after_step(sae_arch_state *a, const sae_train_io *io);
/* (B, d) rows proportional to x_hat - x of the last batch (for resampling). */
const float *sae_arch_residual(const sae_arch_state *a);

/* Dead-latent resampling (resample.c): latents with since >= bodycount get
 * encoder/decoder rows from the batch rows with the largest squared error
 * (sampled with probability proportional to it), encoder bias 0, and their
 * Adam moments reset. x (B, d), resid (B, d) ~ x_hat - x. */
int sae_resample(const sae_train_io *io, const float *x, const float *resid, int B);
/* The same, drawing from `pool` rows sampled from D (seeded by the step) and
 * scored with the current model: the paper's larger pool. */
int sae_resample_pool(const sae_train_io *io, const sf_sae_data *D, int64_t pool);

/* ---- per-architecture math (arch_<name>.c), called by arch_train.c ---- */
/* Row chunk context handed to the per-architecture functions. */
typedef struct {
    const sf_sae *s;
    const sf_sae_train_opts *o;
    int n, m;        /* latents, rows in this chunk */
    double lmbda;    /* lmbda after warmup, for this step */
    float inv_B;     /* 1 / batch rows (loss is a mean over rows) */
    const float *wn; /* (n) decoder column norms */
    const float *P;  /* (m, n) pre-activations without bias */
    float *Z;        /* (m, n) decoder coefficients */
    float *G;        /* (m, n) in: dL/dZ from the reconstruction; out: dL/dP */
    float *H;        /* (m, n) scratch: gated dL/d mag, jumprelu dL/d logthres */
    float *A;        /* (m, n) gated: ReLU(gate) (aux + L1); standard: L1 weights */
    const float *GA; /* (m, n) gated: dL/dA from the aux reconstruction */
    float *E;        /* (m, n) gated: dL/d mag * P (for r_mag) */
    double *pen;     /* per row sparsity penalty (out, (m)) */
    int32_t *cnt;    /* per row entries of the sparse step (out, (m)): active
                      * latents (gated: open gates; jumprelu: + STE window) */
    const float *ex; /* (n) once per step: jumprelu exp(logthres), gated exp(r_mag) */
} sae_arch_rows;

/* Row sums in the activation passes: float lanes over blocks of this many
 * latents, blocks added in double. gcc 12 vectorises no loop that mixes a
 * compare-select with a double (or int) reduction, and these passes touch
 * every (row, latent) pair of a dense step. */
#define SAE_SUM_BLOCK 256

/* standard (arch_standard.c) */
void sae_standard_forward(sae_arch_rows *r);
void sae_standard_backward(sae_arch_rows *r);
/* gated (arch_gated.c) */
void sae_gated_forward(sae_arch_rows *r);
void sae_gated_backward(sae_arch_rows *r);
/* jumprelu (arch_jumprelu.c) */
void sae_jumprelu_forward(sae_arch_rows *r);
void sae_jumprelu_backward(sae_arch_rows *r);
/* Per-row code lists from the k selections (batchtopk; matryoshka over
 * TopK): row b's candidates are ix/vl[b * stride .. + cnt[b]), and its codes
 * are those with vl >= thr. The sparse step builds its CSR from them, so
 * these archs never write or scan a dense (B, n) code matrix. valid = 0: the
 * selection wrote dense Z instead (batchtopk's rare exact fallback). */
typedef struct {
    int32_t *ix, *cnt; /* (B * stride), (B) */
    float *vl;         /* (B * stride) */
    float *buf;        /* (B * stride) batchtopk: the candidates, for the k-th largest */
    int stride;
    size_t cap; /* slots allocated */
    float thr;
    int valid;
} sae_rowlists;

/* Makes room for B rows of `stride` slots; returns 0 or -1 (out of memory). */
int sae_rowlists_reserve(sae_rowlists *L, int B, int stride);
void sae_rowlists_free(sae_rowlists *L);

/* batchtopk (arch_batchtopk.c): selection over the whole batch. P (B, n),
 * b_enc (n) -> the codes as row lists in L (or, in the rare case the lists
 * cannot prove the threshold, dense Z with L->valid = 0); rowcnt[b] = codes
 * of row b; *thr = the smallest selected value (for the EMA). hint: the
 * last batch's value (<= 0: none); it only speeds the search up. 0 or -1. */
int sae_batchtopk_select(const float *P, const float *b_enc, int B, int n, int64_t kB, float *Z,
                         int32_t *rowcnt, sae_rowlists *L, float hint, float *thr, int par);

/* ---- the training engine's state (arch_train.c), shared with the
 * architectures' hooks ---- */
enum { RS_SQ, RS_X2, RS_XXH, RS_XH2, RS_L1, RS_L0, RS_PEN, RS_AUX, RS_N };

/* Entries of the sparse step: the active (row, latent) pairs as CSR over
 * rows, then sorted by latent for the per-latent gradient rows; the AuxK
 * entries the same way. */
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
    int32_t *lrow;         /* (nnz) rows, in latent order (lent gathered) */
    float *lval, *lg;      /* (nnz) code and dL/dpre, in latent order */
    int32_t *alrow;        /* the same for the aux entries */
    float *alval, *alg;
    size_t lcap, alcap;
    int32_t *grp; /* (n) group of each latent */
    float *h;     /* (nnz) jumprelu dL/dlogthres; gated dL/dgate per entry */
    float *h2;    /* (nnz) gated dL/dmag per entry */
    size_t hcap;
} sae_sparse_buf;

struct sae_arch_state {
    sf_sae *s;
    const struct sae_arch_ops *ops;
    int maxB;
    float *xc;             /* (B, d) x - b_dec */
    float *Xh;             /* (ng, B, d) prefix reconstructions, then dL/dx_hat suffix sums */
    float *P, *Z, *G;      /* (B, n) */
    float *H, *A, *GA, *E; /* (B, n) per architecture (NULL where unused) */
    float *Za, *Ra, *Ta;   /* aux: (B, n), (B, d), (B, d) */
    double *rowst;         /* (B, RS_N) */
    double *cs, *cs2, *cs3, *csd; /* (n), (n), (n), (d) */
    float *wn;                    /* (n) decoder column norms */
    float *ex;                    /* (n) jumprelu exp(logthres), gated exp(r_mag), per step */
    int pred_sparse;              /* standard/jumprelu: last step was sparse (try it first) */
    float *scratch;               /* (T, LIST_ROWS, n) forward_lists: codes of a row block */
    int scratch_T;
    int32_t *cnt;       /* (n) rows where each latent fired */
    int32_t *rcnt;      /* (B) entries per row for the sparse step */
    double *lat_ss;     /* (n) */
    sae_sparse_buf *sp; /* sparse step buffers */
    sae_rowlists rl;    /* k selections: codes per row (no dense Z) */
    float last_min;     /* batchtopk: smallest selected activation of the last batch */
    int have_min;
    /* this step */
    const sf_sae_train_opts *o;
    int B, par, chunk;
    double lm;                                            /* lmbda after warmup */
    float invB;                                           /* 1 / B */
    int ng, gs[SF_SAE_MAX_GROUPS], ge[SF_SAE_MAX_GROUPS]; /* nested prefixes [gs, ge) */
};

/* ---- one table per architecture (arch_<name>.c) ---- */
typedef struct sae_arch_ops {
    /* k picks the codes (batchtopk, matryoshka): k is the selection count
     * (s->k_sel), AuxK applies, and training always takes the sparse step */
    int k_select;
    /* model: parameters in the reference's state_dict order; init after the
     * shared one (NULL: none); config keys after "arch" and "k" (NULL: none) */
    int (*alloc)(sf_sae *s);
    void (*init)(sf_sae *s, uint64_t seed);
    void (*config_write)(const sf_sae *s, cJSON *cfg);
    int (*config_read)(sf_sae *s, const cJSON *cfg, const char *path);
    /* inference: the codes of one row from its biasless pre-activations,
     * latents ascending, at most cap; returns the count */
    int (*encode_row)(const sf_sae *s, const float *pre, int cap, int32_t *ix, float *vl);

    /* ---- training (arch_train.c runs the stages; NULL: not used) ---- */
    int l1_norm;     /* L1 penalty weighted by decoder column norms: a->wn each step */
    int dense_extra; /* A, GA, E (B, n) buffers (gated) */
    int lists;       /* forward straight into row lists once sparse (standard, jumprelu) */
    int aux_in_rec;  /* RS_AUX holds recon + aux recon (gated): metrics' auxk */
    /* nested prefixes [gs[g], ge[g]) of the dictionary; NULL: one, all latents */
    int (*prefixes)(const sf_sae *s, int *gs, int *ge);
    /* once per step, first: a->ex (jumprelu exp(logthres), gated exp(r_mag)) */
    void (*step_begin)(sae_arch_state *a);
    /* k_select: the batch's codes from P as row lists a->rl (counts a->rcnt) */
    int (*select)(sae_arch_state *a);
    /* dense codes: rows of P -> Z (+ pen, cnt); dL/dZ -> dL/dP */
    void (*forward_rows)(sae_arch_rows *r);
    void (*backward_rows)(sae_arch_rows *r);
    /* whether the sparse step may run once the codes are sparse */
    int (*sparse_ok)(const sf_sae_train_opts *o);
    /* sparse step: row b's entries, latents ascending (idx, val = code),
     * from dense Z (or the code scratch z of forward_lists); returns the count */
    int32_t (*row_entries)(const sae_arch_state *a, int b, const float *z, int32_t *idx,
                           float *val);
    /* dense step, per row chunk after the reconstruction gradient: the
     * auxiliary term (gated); adds its loss to RS_AUX */
    void (*dense_aux)(sae_arch_state *a, const float *x, int r0, int m);
    /* dense step, before the backward overwrites the codes: a->cs3 = column
     * sums of the L1 weights (standard Z, gated ReLU(gate)) */
    void (*dense_l1)(sae_arch_state *a);
    /* dense step: the dead-latent term (standard's ghost grads) when
     * o->ghost_grads: fills Za, Ra, H; returns its loss */
    double (*dense_dead)(sae_arch_state *a, const uint8_t *dead);
    /* dense step: encoder bias and the architecture's own parameters from
     * column sums (a->cs = colsum dL/dP on entry); NULL: gb_enc = cs */
    void (*dense_param_grads)(sae_arch_state *a, const sae_train_io *io);
    /* sparse step, per row after its reconstruction gradient: the
     * auxiliary reconstruction of row r (gated); returns its loss */
    double (*row_aux)(sae_arch_state *a, const float *x, int r);
    /* sparse step: dL/dpre of row r's entries (sp->g, and sp->h, sp->h2);
     * NULL: the reconstruction gradient alone */
    void (*entry_grads)(sae_arch_state *a, int r);
    /* sparse step, latent j with entries [e0, e1) in latent order: gb_enc[j],
     * the architecture's own parameters, the L1 term into gd (d); returns
     * the squared norm of its 1-D gradients (gb_enc included). sg, sga: the
     * main and aux entries' dL/dpre sums. NULL: gb_enc = sg + sga. */
    double (*latent_grads)(sae_arch_state *a, const sae_train_io *io, int j, int32_t e0, int32_t e1,
                           float sg, float sga, float *gd);
    /* after the optimiser step (batchtopk: the threshold EMA) */
    void (*after_step)(sae_arch_state *a, const sae_train_io *io);
} sae_arch_ops;

extern const sae_arch_ops sae_standard_ops, sae_gated_ops, sae_jumprelu_ops, sae_batchtopk_ops,
    sae_matryoshka_ops;
/* The table of a (not TopK, whose trainer is sae_train.c). */
const sae_arch_ops *sae_arch_ops_of(sf_sae_arch a);

/* batchtopk and matryoshka over BatchTopK at inference: JumpReLU with the
 * one threshold s->threshold (arch_batchtopk.c). */
int sae_batchtopk_encode_row(const sf_sae *s, const float *pre, int cap, int32_t *ix, float *vl);
/* BatchTopK's selection as a step stage, and its threshold EMA (arch_batchtopk.c). */
int sae_batchtopk_stage(sae_arch_state *a);
void sae_batchtopk_after_step(sae_arch_state *a, const sae_train_io *io);

/* ---- engine pieces the hooks use (arch_train.c) ---- */
/* The sparse step's entries of one row, latents ascending, into idx/val
 * (val = z): j with gate[j] > 0 (gate non-NULL: gated's open gates), else
 * z[j] > 0, plus for p non-NULL |p[j] + be[j] - th[j]| < half (jumprelu's
 * STE window: threshold gradient only). Returns the count. */
int32_t sae_row_entries(int n, const float *gate, const float *z, const float *p, const float *be,
                        const float *th, float half, int32_t *idx, float *val);
/* The per-architecture functions' view of rows [r0, r0 + m) of the batch. */
sae_arch_rows sae_chunk_view(const sae_arch_state *a, int r0, int m, double *pen, int32_t *cnt);
/* dL/dz of entry u of row r: W_dec[:, j] . dL/dx_hat of the prefix holding j */
static inline float sae_entry_gz(const sae_arch_state *a, int r, int32_t u) {
    const sae_sparse_buf *sp = a->sp;
    const int d = a->s->d, j = sp->idx[u];
    return sae_dot(a->s->W_decT + (size_t)j * d,
                   a->Xh + (size_t)sp->grp[j] * a->B * d + (size_t)r * d, d);
}
/* Row-chunk products (single-threaded; the caller runs one per thread).
 * C (m, cols) (+)= A (m, kk) B^T with B (cols, kk). */
void sae_gemm_nt(int m, int cols, int kk, const float *A, int lda, const float *Bm, int ldb,
                 float beta, float *C, int ldc);
/* C (m, d) (+)= A (m, kk) B with B (kk, d). */
void sae_gemm_nn(int m, int d, int kk, const float *A, int lda, const float *Bm, int ldb,
                 float beta, float *C, int ldc);
/* C (cols, d) (+)= A^T B with A (rows, cols) at lda, B (rows, d): reduction over rows. */
void sae_gemm_tn(int cols, int d, int rows, const float *A, int lda, const float *Bm, int ldb,
                 float beta, float *C, int ldc);
/* Index of the parameter whose data is `data`. */
int sae_param_of(const sf_sae *s, const float *data);

/* small helpers (arch_common.c) */
void sae_colsum(const float *M, int rows, int cols, double *out, int par);
int sae_arch_par(size_t work);

#endif
