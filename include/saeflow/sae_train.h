/* Training sparse autoencoders: data, one optimisation step, the epoch loop.
 *
 * Objective (TopK): loss = mean_b sum_d (x - x_hat)^2, plus the AuxK term of
 * Gao et al. 2024 when latents are dead:
 *   dead latent: has not fired (z > 0) for `bodycount` training samples;
 *   z_aux = top `aux_k` of ReLU(pre-activations) restricted to dead latents;
 *   e = x - x_hat (x_hat detached), e_hat = W_dec z_aux (no bias);
 *   aux = auxk_coef * sum_b ||e_hat_b - e_b||^2 / sum_b ||e_b - mean_b e||^2.
 *   The aux gradient reaches only dead latents' encoder rows, encoder biases and
 *   decoder columns (not the shared bias b).
 * Backward is hand-written and sparse: only the k (+ aux_k) selected latents of
 * each row are touched. Then: optional removal of the decoder-gradient
 * component parallel to each decoder column (`normalise`), global grad-norm
 * clipping, AdamW with a constant-with-warmup learning rate, and (`normalise`)
 * renormalisation of decoder columns.
 *
 * Determinism: all reductions run in a fixed order that does not depend on
 * the thread count, so the same seed and data give bit-identical checkpoints.
 */
#ifndef SAEFLOW_SAE_TRAIN_H
#define SAEFLOW_SAE_TRAIN_H

#include <stdio.h>

#include "saeflow/sae.h"
#include "saeflow/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- data: rows of [N, d] tensors under one key across safetensors files ---- */
typedef struct {
    sf_st *files;
    const sf_tensor_info **t; /* per file */
    int64_t *start;           /* first global row of each file; start[n_files] = N */
    int n_files;
    int64_t N;
    int d;
    char *key;
} sf_sae_data;

int sf_sae_data_open(sf_sae_data *D, const char *const *paths, int n_paths, const char *key);
void sf_sae_data_close(sf_sae_data *D);
/* Copies rows[0..m) (global indices) as F32 into dst (m, d). Any non-finite
 * value is an error naming the file, key and row. */
int sf_sae_data_gather(const sf_sae_data *D, const int64_t *rows, int64_t m, float *dst);
/* Consecutive rows [r0, r0 + m). */
int sf_sae_data_range(const sf_sae_data *D, int64_t r0, int64_t m, float *dst);
/* Scans every row for NaN/Inf (parallel, streaming); error names file and row. */
int sf_sae_data_check_finite(const sf_sae_data *D);

/* ---- one step ---- */
typedef struct {
    double lr, beta1, beta2, eps, wd;
    int64_t lr_warmup_steps;
    double clip;      /* max global grad norm; <= 0 disables */
    int normalise;    /* unit-norm decoder columns + parallel-gradient removal */
    double auxk_coef; /* 0 disables AuxK */
    int aux_k;
    int64_t bodycount; /* samples without firing before a latent counts as dead */
    /* Other architectures and dead-latent remedies (src/sae/arch_*.c, resample.c;
     * docs/architectures.md). */
    double lmbda;               /* standard, gated: L1 weight; jumprelu: L0 weight */
    int64_t lmbda_warmup_steps; /* lmbda ramps linearly from 0 over these steps */
    double bandwidth;           /* jumprelu: width of the rectangle STE kernel */
    int ghost_grads;            /* standard: ghost grads (Anthropic, Jan 2024) */
    int64_t resample_every;     /* steps between dead-latent resampling; 0 = off */
    int64_t resample_pool;      /* rows drawn from the data to resample from (needs
                                 * sf_sae_trainer_set_data); 0 = the current batch */
    double threshold_decay;     /* batchtopk: EMA decay of the inference threshold */
} sf_sae_train_opts;
void sf_sae_train_opts_default(sf_sae_train_opts *o);

#define SF_SAE_HIST_BINS 13 /* log10 density in [-6, 0], width 0.5 */

typedef struct {
    double loss;          /* l2 + auxk */
    double l2;            /* mean_b ||x - x_hat||^2 */
    double l2_normalised; /* mean((x - x_hat)^2) / mean(x^2) */
    double l1;            /* mean_b sum |z| */
    double l0;            /* mean_b count(z > 0) */
    double cossim;        /* mean_b cos(x, x_hat) */
    double alive;         /* mean(z > 0) = l0 / n */
    double survival;      /* fraction of latents active somewhere in the batch */
    double dead;          /* fraction of latents dead (bodycount rule) */
    double auxk;          /* aux loss (already x auxk_coef) */
    double lr;            /* learning rate used for this step */
    double grad_norm;     /* before clipping */
    int hist[SF_SAE_HIST_BINS];
} sf_sae_metrics;

/* Seconds spent per phase over all steps so far (for the benchmark). */
typedef struct {
    double encode;   /* x - b, encoder GEMM, bias+ReLU+TopK, sparse decode, grad wrt z */
    double gemm;     /* of which: the encoder GEMM (summed over threads / threads) */
    double aux;      /* AuxK forward/backward */
    double backward; /* bucketing + per-latent gradients + clipping */
    double adam;     /* AdamW (+ decoder renormalisation) */
    int64_t steps;
    int64_t pf_rows;  /* rows whose TopK went through the int16 pre-filter */
    int64_t pf_cands; /* F32 candidates those rows needed (k of them are the answer) */
    double comm;      /* of adam: the MPI reduction of gradients, flags and metrics (R > 1) */
} sf_sae_timing;

typedef struct sf_sae_trainer sf_sae_trainer;

sf_sae_trainer *sf_sae_trainer_new(sf_sae *s, const sf_sae_train_opts *o, int max_batch);
/* The data the trainer may sample beyond the batch (dead-latent resampling
 * from a pool of opts.resample_pool rows). Not owned; NULL: batch only. */
void sf_sae_trainer_set_data(sf_sae_trainer *t, const sf_sae_data *D);
void sf_sae_trainer_free(sf_sae_trainer *t);
/* Forward + backward on x (B, d): fills the gradients and metrics (except lr),
 * updates nothing. Exposed for the finite-difference tests. */
int sf_sae_trainer_grad(sf_sae_trainer *t, const float *x, int B, sf_sae_metrics *m);
/* Gradient buffer of s->params[i] (same layout). */
const float *sf_sae_trainer_grad_of(const sf_sae_trainer *t, int param);
/* grad + clip + AdamW (+ renormalise); advances the dead-latent counters.
 * Between two steps the trainer assumes that only it changed the model: its
 * AdamW also prepares the next step's TopK pre-filter from the weights it
 * wrote. Call sf_sae_trainer_model_changed after changing the parameters
 * yourself. */
int sf_sae_trainer_step(sf_sae_trainer *t, const float *x, int B, sf_sae_metrics *m);
void sf_sae_trainer_model_changed(sf_sae_trainer *t);
/* Samples since each latent last fired (n entries), writable (tests use it to
 * mark latents dead). */
int64_t *sf_sae_trainer_since_fired(sf_sae_trainer *t);
int64_t sf_sae_trainer_steps(const sf_sae_trainer *t);
const sf_sae_timing *sf_sae_trainer_timing(const sf_sae_trainer *t);

/* ---- trainer state, for a resume equal to an uninterrupted run ----
 * Everything the next step depends on besides the batch: the F32 parameters
 * as trained (a checkpoint may be folded or BF16), both AdamW moments, the
 * step count (LR and lmbda warmup), the dead-latent counters (AuxK's dead
 * set, resampling), the BatchTopK threshold and search state, the input
 * scale and the model's config. state_add adds them to a writer (tensors
 * "param.*", "adam_m.*", "adam_v.*", "since_fired"; metadata "trainer_*";
 * buffers referenced until sf_stw_write, which writes atomically), so the
 * caller can add its own data position next to them. state_load restores
 * them into a trainer of a model with the same architecture and shapes
 * (sf_sae_load of the checkpoint, or the same sf_sae_build). */
int sf_sae_trainer_state_add(sf_sae_trainer *t, sf_st_writer *w);
int sf_sae_trainer_state_load(sf_sae_trainer *t, const sf_st *f);

/* ---- the training loop ---- */
typedef struct {
    sf_sae_train_opts train;
    int batch_size;
    int num_epochs;
    uint64_t seed;      /* shuffling (the model has its own init seed) */
    const char *outdir; /* checkpoint directory: savedir/name */
    int64_t save_every; /* steps; 0 = only at the end */
    int quiet;          /* no summary on stdout */
    int resume;         /* continue from outdir/trainer_state.safetensors (s loaded
                         * from outdir by the caller); see sf_sae_train_run */
} sf_sae_run_opts;

#define SF_SAE_STATE_FILE "trainer_state.safetensors"

/* Trains s on D for num_epochs, reshuffling rows every epoch with the seeded
 * RNG. Writes outdir/{trainer_state.safetensors, model.safetensors,
 * config.json} (at save_every steps and at the end; the state first, each
 * file atomically) and outdir/metrics.jsonl (one JSON object per step,
 * appended and flushed as the run goes, so a killed run keeps its curves).
 * With o->resume the run continues from the state file: weights, moments,
 * counters, step and the data position (epoch, shuffle RNG); metrics lines
 * past that step are dropped, so the outputs equal an uninterrupted run's
 * bit for bit. A failed run leaves the checkpoints it completed and the
 * metrics it logged. */
int sf_sae_train_run(sf_sae *s, const sf_sae_data *D, const sf_sae_run_opts *o,
                     sf_sae_metrics *last);

/* metrics.jsonl opened for appending one line per step (flushed by the
 * caller after each): step 0 = fresh (emptied); otherwise a resume at
 * `step`, the file cut after its first `step` lines (a killed run may have
 * logged further, or half a line; fewer lines are an error). */
FILE *sf_sae_metrics_open(const char *path, int64_t step);

/* JSON object (no newline) for one step's metrics, into buf. */
int sf_sae_metrics_json(const sf_sae_metrics *m, int64_t step, int epoch, int64_t samples,
                        char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
