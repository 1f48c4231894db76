/* Synthetic ground truth and evaluation of SAEs.
 *
 * synth: x = sum_i c_i f_i + noise, where f_i are the rows of a random
 * unit-norm dictionary (n_true, d), feature i is active with probability
 * p_i proportional to (i + 1)^-alpha (scaled so that on average `active`
 * features are on per sample), and c_i ~ U(0.5, 1.5) (non-negative).
 *
 * eval: FVU = sum ||x - x_hat||^2 / sum ||x - mean x||^2, L0, dead fraction;
 * with a true dictionary, MMCS = mean over true features of the best cosine
 * similarity with any decoder column, and the fraction of true features whose
 * best cosine exceeds 0.9.
 */
#ifndef SAEFLOW_SAE_EVAL_H
#define SAEFLOW_SAE_EVAL_H

#include "saeflow/sae.h"
#include "saeflow/sae_train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int d;           /* activation width */
    int n_true;      /* dictionary size */
    int64_t samples; /* rows */
    double active;   /* mean active features per row */
    double alpha;    /* power-law exponent of feature frequencies */
    double noise;    /* std of Gaussian noise per dimension */
    uint64_t seed;
} sf_synth_opts;
void sf_synth_opts_default(sf_synth_opts *o);

/* Writes `key` [samples, d] and `dict_key` [n_true, d] (F32) into one
 * safetensors file, atomically. */
int sf_sae_synth(const sf_synth_opts *o, const char *path, const char *key, const char *dict_key);

typedef struct {
    double fvu, mse, l0, dead; /* dead: fraction of latents never active on the data */
    double mmcs, recovered;    /* NaN without a dictionary */
    int64_t rows;
} sf_sae_eval_result;

/* dict (n_true, d) may be NULL. max_rows <= 0: all rows. */
int sf_sae_evaluate(const sf_sae *s, const sf_sae_data *D, int64_t max_rows, const float *dict,
                    int n_true, sf_sae_eval_result *r);
/* MMCS of dict (n_true, d) against s's decoder columns; per_feature (n_true) may be NULL. */
double sf_sae_mmcs(const sf_sae *s, const float *dict, int n_true, double *recovered,
                   float *per_feature);

#ifdef __cplusplus
}
#endif
#endif
