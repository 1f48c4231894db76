/* CLIP vision and text towers, as Hugging Face transformers computes them
 * (CLIPVisionModel, CLIPTextModel, and both towers + projections of a
 * CLIPModel checkpoint), on the kernel layer (saeflow/kernels.h).
 *
 * Loading reads a Hugging Face model directory: config.json (a CLIPModel
 * config with text_config/vision_config, or a single-tower
 * CLIPVisionConfig/CLIPTextConfig) and model.safetensors or a sharded
 * model.safetensors.index.json. Sizes come from the config (any ViT-L/14,
 * B/32, B/16, 336px... checkpoint); missing keys take transformers' defaults.
 * Weights are looked up by checkpoint name, with or without the
 * "vision_model."/"text_model." prefix (transformers 5 saves single towers
 * without it).
 *
 * Outputs (one per call, see sf_clip_request):
 *   hidden_states[i]   i in [-(L+1), L]; [0] = embeddings (vision: after
 *                      pre_layrnorm), [i] = output of layer i-1, [-1] = last
 *                      layer output, no final norm (like transformers).
 *                      Token selection: all tokens, or the first token
 *                      (vision CLS), or the pooled position (text: first EOS).
 *   pooler_output      vision: post_layernorm(last[:, 0]);
 *                      text: final_layer_norm(last)[pooled position].
 *   embeds             pooler_output @ visual_projection^T / text_projection^T
 *                      (needs a CLIPModel checkpoint or a *WithProjection one).
 * Only the layers the request needs are computed (hidden_states[-2] skips the
 * last layer; a first-token request finishes its last layer on that token).
 */
#ifndef SAEFLOW_CLIP_H
#define SAEFLOW_CLIP_H

#include "saeflow/common.h"
#include "saeflow/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int hidden, intermediate, heads, layers;
    float eps;
    sf_act act;
    int projection_dim; /* 0 when the checkpoint has no projection for this tower */
    /* vision */
    int image_size, patch_size, channels;
    /* text */
    int vocab_size, max_positions, eos_token_id;
} sf_clip_config;

typedef struct sf_clip sf_clip;

typedef struct {
    sf_dtype dtype; /* in-memory weight dtype: SF_DT_F32 (default if 0) or SF_DT_BF16 */
    int vision;     /* load the vision tower (if the checkpoint has one) */
    int text;       /* load the text tower (if the checkpoint has one) */
} sf_clip_load_opts;

/* Loads from a Hugging Face directory. Towers not requested or not present
 * are absent (sf_clip_*_config returns NULL). A directory with only
 * pytorch_model.bin gets an error explaining how to convert. */
sf_clip *sf_clip_load(const char *dir, const sf_clip_load_opts *opts);
void sf_clip_free(sf_clip *m);
const sf_clip_config *sf_clip_vision_config(const sf_clip *m);
const sf_clip_config *sf_clip_text_config(const sf_clip *m);
/* Vision: tokens per image = (image/patch)^2 + 1. */
int sf_clip_vision_tokens(const sf_clip *m);

typedef enum {
    SF_CLIP_HIDDEN, /* hidden_states[layer] */
    SF_CLIP_POOLED, /* pooler_output */
    SF_CLIP_EMBEDS, /* projected image/text embeds */
} sf_clip_output;

typedef enum {
    SF_CLIP_TOK_ALL,    /* every token: (B, T, d) */
    SF_CLIP_TOK_FIRST,  /* token 0 (vision CLS): (B, d) */
    SF_CLIP_TOK_POOLED, /* the pooled position (vision: 0; text: first EOS): (B, d) */
    /* text: the non-padding tokens (mask 1) only, packed: (sum of the mask, d),
     * rows in (b, t) order; padding positions are never computed (each
     * sequence runs up to its last token). Vision: the same as ALL. */
    SF_CLIP_TOK_VALID,
} sf_clip_tokens;

typedef struct {
    sf_clip_output what;
    int layer;             /* SF_CLIP_HIDDEN: index into hidden_states, negative from the end */
    sf_clip_tokens tokens; /* SF_CLIP_HIDDEN only; POOLED/EMBEDS are always (B, d) */
} sf_clip_request;

/* Floats per example the request produces (d, T*d or projection_dim; for
 * TOK_VALID the all-token T*d, an upper bound), or -1
 * with an error for a request the tower cannot serve (layer out of range,
 * no projection, tower absent). */
int64_t sf_clip_output_size(const sf_clip *m, int text, const sf_clip_request *r, int T);

/* pixels (B, C, S, S) as CLIPImageProcessor makes them -> out (B, n) with n
 * from sf_clip_output_size. */
int sf_clip_vision_forward(const sf_clip *m, const float *pixels, int64_t B,
                           const sf_clip_request *r, float *out);
/* ids (B, T) token ids, mask (B, T) 1 = token, 0 = padding (NULL: all ones);
 * T <= max_positions. Causal attention plus key padding, like transformers.
 * The pooled position follows transformers: eos_token_id == 2 (legacy
 * configs) -> argmax of the ids; otherwise the first position holding
 * eos_token_id (position 0 if none). */
int sf_clip_text_forward(const sf_clip *m, const int32_t *ids, const int32_t *mask, int64_t B,
                         int64_t T, const sf_clip_request *r, float *out);
/* Parses "pooled", "embeds", "layer:N" / "hidden:N" into a request
 * (tokens defaults to tok); -1 with an error otherwise. */
int sf_clip_parse_request(const char *s, sf_clip_tokens tok, sf_clip_request *r);

#ifdef __cplusplus
}
#endif
#endif
