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

#ifdef __cplusplus
}
#endif
#endif
