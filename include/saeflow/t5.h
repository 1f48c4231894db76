/* The T5 encoder (transformers' T5EncoderModel): FLUX's second text encoder
 * (t5-v1_1-xxl, `text_encoder_2/`), any size from its config.json.
 *
 * Loading reads a Hugging Face folder: config.json (d_model, d_kv, num_heads,
 * d_ff, num_layers, feed_forward_proj "gated-gelu" / "relu" / "gated-silu"...,
 * relative_attention_num_buckets / _max_distance, layer_norm_epsilon; missing
 * keys take T5Config's defaults) and model.safetensors or a sharded
 * model.safetensors.index.json. Big matrices stay in the stored dtype by
 * default (BF16, F16 or F32; F16 is never rounded through BF16); everything
 * is computed in F32.
 *
 * Outputs (one per call, see sf_t5_request), all tokens (B, T, d_model):
 *   hidden[i]  i in [-(L+1), L]: [0] = embeddings, [i] = output of block i-1
 *              (a forward hook on encoder.block[i-1]), [-1] = last block's
 *              output before final_layer_norm. NB: transformers'
 *              hidden_states[L] is last_hidden_state (after the norm).
 *   last       last_hidden_state = final_layer_norm(block L-1 output): what
 *              FLUX conditions on.
 * Only the blocks the request needs are computed.
 */
#ifndef SAEFLOW_T5_H
#define SAEFLOW_T5_H

#include "saeflow/common.h"
#include "saeflow/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int vocab_size, d_model, d_kv, num_heads, d_ff, num_layers;
    int num_buckets, max_distance;
    float eps;
    int gated; /* "gated-*": act(wi_0 x) * wi_1 x */
    sf_act act;
} sf_t5_config;

typedef struct sf_t5 sf_t5;

/* Keep each matrix in the dtype the file stores it in. */
#define SF_T5_AS_STORED ((sf_dtype)-1)

/* dtype: SF_T5_AS_STORED, SF_DT_F32, SF_DT_BF16 or SF_DT_F16. */
sf_t5 *sf_t5_load(const char *dir, sf_dtype dtype);
void sf_t5_free(sf_t5 *m);
const sf_t5_config *sf_t5_config_of(const sf_t5 *m);

typedef enum {
    SF_T5_HIDDEN, /* hidden[layer] */
    SF_T5_LAST,   /* last_hidden_state */
} sf_t5_output;

typedef struct {
    sf_t5_output what;
    int layer; /* SF_T5_HIDDEN: index, negative from the end */
} sf_t5_request;

/* ids (B, T); mask (B, T) 1 = token, 0 = padding never attended, or NULL:
 * every position attended, pads included (FLUX's use: no attention mask).
 * out (B, T, d_model). 0, or -1 with sf_errmsg(). */
int sf_t5_forward(const sf_t5 *m, const int32_t *ids, const int32_t *mask, int64_t B, int64_t T,
                  const sf_t5_request *r, float *out);
/* "last" / "last_hidden_state" or "layer:N" / "hidden:N". */
int sf_t5_parse_request(const char *s, sf_t5_request *r);
/* T5Attention._relative_position_bucket, bidirectional, rel = key - query
 * (F32 log like torch). */
int sf_t5_bucket(int64_t rel, int num_buckets, int max_distance);

#ifdef __cplusplus
}
#endif
#endif
