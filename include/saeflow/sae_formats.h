/* Other SAE checkpoint layouts users hold, next to the reference project's:
 *
 *   seed      config.json {"features", "pages", "k", "arch"...} + model.safetensors
 *             (encoder.weight [n,d], encoder.bias, decoder.weight [d,n], bias, ...)
 *   saelens   cfg.json {"architecture", "d_in", "d_sae", "k", "apply_b_dec_to_input",
 *             "normalize_activations", ...} + sae_weights.safetensors: W_enc [d,n],
 *             b_enc [n], W_dec [n,d], b_dec [d]; jumprelu adds threshold [n];
 *             gated has b_gate, b_mag, r_mag instead of b_enc
 *   sparsify  (EleutherAI) cfg.json {"activation", "expansion_factor", "num_latents",
 *             "k", "d_in", ...} + sae.safetensors: encoder.weight [n,d],
 *             encoder.bias [n], W_dec [n,d], b_dec [d]   (TopK only)
 *
 * sf_sae_load() detects the layout from the files present, so every command
 * that takes a checkpoint reads all three. SAELens files of save_model
 * (training configs) load too: rescale_acts_by_decoder_norm is folded into
 * the encoder, batchtopk's topk_threshold becomes a JumpReLU threshold; keys
 * that change the arithmetic and that saeflow does not run are refused.
 * Mapping and limits: docs/architectures.md. */
#ifndef SAEFLOW_SAE_FORMATS_H
#define SAEFLOW_SAE_FORMATS_H

#include "saeflow/sae.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SF_FMT_SEED = 0, SF_FMT_SAELENS, SF_FMT_SPARSIFY, SF_FMT_COUNT } sf_sae_format;

const char *sf_sae_format_name(sf_sae_format f);
int sf_sae_format_parse(const char *s, sf_sae_format *f); /* -1 with message if unknown */
/* Which layout `dir` holds; -1 with a message naming the files looked for. */
int sf_sae_detect_format(const char *dir, sf_sae_format *f);
/* Loads any of the three (sf_sae_load calls this for non-seed directories). */
int sf_sae_load_any(sf_sae *s, const char *dir);
/* Writes `dir` in the given layout, atomically per file. Errors when the
 * layout cannot express the architecture (sparsify: TopK only). */
int sf_sae_save_as(const sf_sae *s, const char *dir, sf_sae_format f);

#ifdef __cplusplus
}
#endif
#endif
