/* Architecture options and data-driven initialisation for SAEs other than
 * plain TopK (docs/architectures.md). The architectures themselves are
 * selected with sf_sae_init(.., arch, ..) and trained with the usual
 * sf_sae_trainer_* calls; these are the extra knobs. */
#ifndef SAEFLOW_SAE_ARCH_H
#define SAEFLOW_SAE_ARCH_H

#include "saeflow/sae.h"
#include "saeflow/sae_train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Matryoshka: selection base (0 = TopK per row, 1 = BatchTopK) and group
 * sizes (NULL keeps the current / default n/8, n/8, n/4, n/2). */
int sf_sae_set_matryoshka(sf_sae *s, int batch_select, const int *groups, int n_groups);
/* "256,256,512,rest" -> sizes summing to n. */
int sf_sae_parse_groups(const char *spec, int n, int *groups, int *n_groups);
/* JumpReLU: every latent's threshold to thr (> 0). */
int sf_sae_set_jumpthreshold(sf_sae *s, double thr);

/* Decoder bias from a sample of up to `rows` rows (spread over the data):
 * mode "mean", or "median" (geometric median, Weiszfeld iterations). The
 * sample is scaled by s->input_scale when set. Records "b_dec_init" in the
 * config. */
int sf_sae_init_bias(sf_sae *s, const sf_sae_data *D, const char *mode, int64_t rows);
/* Input normalisation: scale = sqrt(d) / mean ||x|| over a sample, so the
 * training inputs have average norm sqrt(d). Sets s->input_scale (folded
 * into the weights on save) and records "input_scale" in the config. */
int sf_sae_set_input_norm(sf_sae *s, const sf_sae_data *D, int64_t rows);

/* ---- one builder for a fresh SAE (train and sweep both use it) ---- */
typedef struct {
    sf_sae_arch arch;
    int d, n; /* features, pages */
    int k;    /* topk, batchtopk, matryoshka: active latents per row */
    uint64_t seed;
    const char *groups;          /* matryoshka: "512,512,1024,rest" (NULL: n/8,n/8,n/4,n/2) */
    const char *matryoshka_base; /* matryoshka: "topk" (NULL) or "batchtopk" */
    double jumpthreshold;        /* jumprelu: initial threshold (0: 0.001) */
    const char *b_dec_init;      /* "zero" (NULL), "mean" or "median" (geometric) */
    int normalize_input;         /* scale inputs to average norm sqrt(d) (needs data) */
} sf_sae_spec;
void sf_sae_spec_default(sf_sae_spec *sp);
/* Which options apply to which architecture (also the trainer's ghost_grads
 * in o, which may be NULL). Errors name the parameter ("ghost_grads applies
 * to arch standard"); a command line adds its own "--". */
int sf_sae_spec_check(const sf_sae_spec *sp, const sf_sae_train_opts *o);
/* Checks sp, initialises s (sf_sae_init + the architecture's options + the
 * data-driven init from D, which may be NULL when b_dec_init is zero and
 * normalize_input is off) and records the settings in its config, with the
 * training settings of o (sf_sae_record_train). On error s is freed. */
int sf_sae_build(sf_sae *s, const sf_sae_spec *sp, const sf_sae_data *D,
                 const sf_sae_train_opts *o);
/* Records the training settings next to the weights (lmbda, bandwidth,
 * sp's jumpthreshold, ghost_grads, resample_every, as s's architecture uses
 * them); sf_sae_build calls it, and a model loaded to train on. */
void sf_sae_record_train(sf_sae *s, const sf_sae_spec *sp, const sf_sae_train_opts *o);

#ifdef __cplusplus
}
#endif
#endif
