/* SAE architectures other than TopK, and the dead-latent remedies: the hooks
 * that sae.c (model, checkpoints, encode) and sae_train.c (trainer) call.
 * docs/architectures.md has the formulas.
 *
 * Training engine (arch_common.c): the new architectures share one dense
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
 * arch_common.c): sparse prefix decode, dL/dz at active slots only, and
 * per-latent gradient rows from the entries bucketed by latent, as the TopK
 * trainer does. */
#ifndef SAEFLOW_ARCH_INTERNAL_H
#define SAEFLOW_ARCH_INTERNAL_H

#include <cjson/cJSON.h>

#include "saeflow/sae.h"
#include "saeflow/sae_train.h"

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

/* Saves a copy with s->input_scale folded into the weights (resample.c). */
int sae_save_folded(const sf_sae *s, const char *dir);
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

/* ---- per-architecture math (arch_<name>.c), called by arch_common.c ---- */
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

/* ---- one table per architecture (arch_<name>.c) ---- */
typedef struct {
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
} sae_arch_ops;

extern const sae_arch_ops sae_standard_ops, sae_gated_ops, sae_jumprelu_ops, sae_batchtopk_ops,
    sae_matryoshka_ops;
/* The table of a (not TopK, whose trainer is sae_train.c). */
const sae_arch_ops *sae_arch_ops_of(sf_sae_arch a);

/* batchtopk and matryoshka over BatchTopK at inference: JumpReLU with the
 * one threshold s->threshold (arch_batchtopk.c). */
int sae_batchtopk_encode_row(const sf_sae *s, const float *pre, int cap, int32_t *ix, float *vl);

/* small helpers (arch_common.c) */
void sae_colsum(const float *M, int rows, int cols, double *out, int par);
int sae_arch_par(size_t work);

#endif
