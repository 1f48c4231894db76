/* Exact TopK through an int16 pre-filter (see prefilter.c for the proof). */
#ifndef SAEFLOW_SAE_PREFILTER_H
#define SAEFLOW_SAE_PREFILTER_H

#include "saeflow/kernels.h"
#include "saeflow/sae.h"

typedef struct {
    int32_t *pa;    /* packed int16 rows of the current chunk */
    int16_t *q;     /* (SF_I16_NR, d) quantisation scratch */
    sf_quant16 *xq; /* (max_rows) per-row scale and norms of the chunk */
    float *lo, *hi; /* (n) bounds of the current row */
    int32_t *cj;    /* (n) candidates of the current row (scratch) */
    float *cl, *ch; /* (n) their bounds */
    /* the chunk's candidates, CSR by row: latent ent[e], F32 value env[e],
     * row erow[e]; eord orders them by latent; lcount (n + 1) counts */
    int32_t *off, *ent, *erow, *eord, *lcount;
    float *env;
    uint8_t *eflag; /* bit 0: a TopK candidate, bit 1: an AuxK candidate */
    int32_t *dl;    /* (n) the dead latents */
    int32_t *aj;    /* (n) AuxK candidates of the current row (scratch) */
    int off_cap, ent_cap;
    float *lm; /* (n + 16) group maxima, then the candidates' positive lo */
} sae_pf_thread;

typedef struct sae_pf_s {
    int n, d, nthreads, max_rows;
    int group;                /* blocks of 16 latents per group maximum (row_candidates) */
    int16_t *pw;              /* W_enc quantised and packed for sf_i16_gemm_packed */
    float *wn, *wr, *ws, *bu; /* per latent: ||w||, ||w - s q||, s, 8u|b| (bound terms) */
    sae_pf_thread *th;        /* (nthreads) per-thread scratch, for the trainer */
} sae_pf;

/* Whether the pre-filter should run for this model with aux_k AuxK latents
 * per row (0: none) (SAEFLOW_PREFILTER=0/1 forces it off/on). */
int sae_pf_wanted(const sf_sae *s, int aux_k);
/* Per-worker scratch for chunks of up to max_rows rows. */
void sae_pf_thread_init(sae_pf_thread *h, int n, int d, int max_rows);
void sae_pf_thread_free(sae_pf_thread *h);
/* (Re)allocates *pf for s, with scratch for nthreads OpenMP threads (th[i],
 * chunks of up to max_rows rows; 0 threads: callers bring their own), and
 * keeps it when it fits. Returns 0. */
int sae_pf_alloc(sae_pf **pf, const sf_sae *s, int max_rows, int nthreads);
/* Quantises latents [32p, 32p + 32) of W_enc (and their b_enc terms) into
 * panel p, with q (SF_I16_NR * d int16) as scratch. Returns 1 when one of
 * them holds a non-finite value. The trainer calls it from AdamW right after
 * a panel's latents are updated, while their rows are still in cache. */
int sae_pf_quant_panel(sae_pf *pf, const sf_sae *s, int64_t p, int16_t *q);
/* sae_pf_alloc, then every panel (call after any other change to W_enc or
 * b_enc). Returns -1 when W_enc or b_enc holds a non-finite value: use the
 * F32 path. */
int sae_pf_prepare(sae_pf **pf, const sf_sae *s, int max_rows, int nthreads);
/* c (m, n) int32 = quantised xc rows . quantised W_enc (the chunk's row
 * statistics are kept in h for sae_pf_select_chunk). */
void sae_pf_gemm(const sae_pf *pf, sae_pf_thread *h, const float *xc, int m, int32_t *c);

/* The AuxK selection: the ak largest positive values among the latents with
 * dead[j], row r of the chunk into idx/val + r * ak, counts in cnt. */
typedef struct {
    const uint8_t *dead;
    int ak;
    int32_t *idx, *cnt;
    float *val;
} sae_pf_aux;

/* The TopK of each of the m rows of the last sae_pf_gemm chunk on h: c its
 * (m, n) int32 result, xc its (m, d) F32 input. Row r gets cnt[r] <= k pairs
 * in idx/val + r * k, with sae_topk_relu's contract; with aux (non-NULL,
 * ak > 0) also the AuxK selection, as sae_topk_relu with the dead mask. Adds
 * the number of F32 candidates to *ncand. */
void sae_pf_select_chunk(const sae_pf *pf, sae_pf_thread *h, const sf_sae *s, const int32_t *c,
                         int m, const float *xc, int k, int32_t *idx, float *val, int32_t *cnt,
                         const sae_pf_aux *aux, int64_t *ncand);
void sae_pf_free(sae_pf *pf);

#endif
