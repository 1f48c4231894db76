/* FLUX.1 prompt encoding: what diffusers' FluxPipeline.encode_prompt hands
 * the transformer, from the pipeline folder's two text encoders:
 *
 *   pooled_prompt_embeds (N, 768)       CLIP-L text pooler_output of the
 *                                       77-token ids (tokenizer/, text_encoder/)
 *   prompt_embeds        (N, L, 4096)   T5-XXL last_hidden_state of the ids
 *                                       padded to L = max_sequence_length
 *                                       (tokenizer_2/, text_encoder_2/)
 *
 * Neither encoder gets an attention mask (as in diffusers): T5's padding
 * positions are attended and passed on; CLIP's causal attention makes its
 * pooled EOS position independent of the padding anyway. (text_ids are
 * zeros and not produced here.)
 *
 * T5-XXL (9.5 GB BF16) and the FLUX transformer (23.8 GB BF16) do not fit
 * in 24 GiB together: encoding the prompts first, to a file, and running
 * the transformer on that file afterwards is the design, not a workaround.
 */
#ifndef SAEFLOW_FLUX_PROMPTS_H
#define SAEFLOW_FLUX_PROMPTS_H

#include "saeflow/common.h"
#include "saeflow/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sf_flux_text sf_flux_text;

/* Folders of the four parts (diffusers layout: tokenizer/ with tokenizer.json
 * or vocab.json + merges.txt, text_encoder/ a CLIPTextModel, tokenizer_2/
 * with tokenizer.json, text_encoder_2/ a T5EncoderModel, one or sharded). */
typedef struct {
    const char *clip_tokenizer, *clip_model, *t5_tokenizer, *t5_model;
} sf_flux_text_paths;

/* t5_dtype: SF_T5_AS_STORED (saeflow/t5.h), SF_DT_F32, SF_DT_BF16, SF_DT_F16. */
sf_flux_text *sf_flux_text_load(const char *pipeline_dir, sf_dtype t5_dtype);
sf_flux_text *sf_flux_text_load_paths(const sf_flux_text_paths *p, sf_dtype t5_dtype);
void sf_flux_text_free(sf_flux_text *m);
int sf_flux_text_joint_dim(const sf_flux_text *m);  /* T5 d_model (4096) */
int sf_flux_text_pooled_dim(const sf_flux_text *m); /* CLIP hidden (768) */

/* prompts[n] (UTF-8) -> prompt_embeds (n, L, joint) and pooled (n, pooled),
 * either may be NULL to skip that encoder. L = max_sequence_length (FLUX
 * schnell: 256, dev: 512). 0, or -1 with sf_errmsg() naming the prompt. */
int sf_flux_encode_prompts(const sf_flux_text *m, const char *const *prompts, int64_t n,
                           int max_sequence_length, float *prompt_embeds, float *pooled);

#ifdef __cplusplus
}
#endif
#endif
