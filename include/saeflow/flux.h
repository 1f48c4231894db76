/* The FLUX.1 transformer (diffusers FluxTransformer2DModel: schnell, dev) on
 * the kernel layer (saeflow/kernels.h), with activation hooks at every block.
 *
 * Loading (sf_flux_load) takes
 * - a diffusers folder: the pipeline root (transformer/ inside) or the
 *   transformer folder itself: config.json + diffusion_pytorch_model.safetensors
 *   or its sharded -0000k-of-0000n files + .index.json;
 * - Black Forest Labs' single file (flux1-schnell.safetensors, names
 *   double_blocks.*, single_blocks.*, optional "model.diffusion_model."
 *   prefix): fused qkv / linear1 and the swapped final-norm halves are mapped
 *   by name. With no config.json the sizes come from the tensor shapes; the
 *   RoPE axes cannot (they are not stored): FLUX.1's (16, 56, 56) for head
 *   dim 128, otherwise sf_flux_load_opts.axes_dim.
 * Weights keep the file's dtype by default (BF16/F16/F32 mmap'd zero-copy,
 * FP8 widened to BF16); every kernel computes in F32.
 *
 * Inputs are what diffusers' forward takes: hidden_states are the PACKED
 * latents (B, N, in_channels) (sf_flux_pack_latents and sf_flux_image_ids in
 * saeflow/flux_sched.h), timestep is sigma in
 * [0, 1] (the model embeds 1000 * sigma), guidance is the raw guidance scale
 * (embedded as 1000 * g, FLUX.1-dev only).
 *
 * Hooks (sf_flux_request), any number per forward; the forward stops after
 * the last block a request needs:
 *   transformer_blocks.N      stream 0 = text (B, T, D), 1 = image (B, N, D):
 *                             the block's output tuple (encoder_hidden_states,
 *                             hidden_states), as the reference hooked it.
 *   single_transformer_blocks.N   the text+image sequence cat[text; image]
 *                             (B, T + N, D) (what diffusers <= 0.34 returned),
 *                             or its text / image rows only.
 *   delta                     output minus input of that block (one-step SAEs).
 *   output                    the model's sample (B, N, out_channels), packed.
 */
#ifndef SAEFLOW_FLUX_H
#define SAEFLOW_FLUX_H

#include "saeflow/common.h"
#include "saeflow/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SF_FLUX_MAX_AXES 4

typedef struct {
    int in_channels, out_channels;
    int num_layers, num_single_layers; /* double-stream, single-stream blocks */
    int heads, head_dim, dim;          /* dim = heads * head_dim */
    int mlp;                           /* MLP hidden width (4 dim) */
    int joint_dim, pooled_dim;         /* T5 width, CLIP pooled width */
    int guidance;                      /* guidance_embeds (FLUX.1-dev) */
    int n_axes, axes_dim[SF_FLUX_MAX_AXES];
    double theta;
    int bfl; /* 1: loaded from the BFL single-file layout */
} sf_flux_config;

typedef enum {
    SF_FLUX_DOUBLE, /* transformer_blocks.N */
    SF_FLUX_SINGLE, /* single_transformer_blocks.N */
    SF_FLUX_OUTPUT, /* the final output (after norm_out, proj_out) */
} sf_flux_site;

typedef enum {
    SF_FLUX_TEXT = 0,  /* stream 0 */
    SF_FLUX_IMAGE = 1, /* stream 1 */
    SF_FLUX_BOTH = 2,  /* single blocks: cat[text; image] (the default there) */
} sf_flux_stream;

typedef struct {
    sf_flux_site site;
    int block;             /* N (DOUBLE, SINGLE) */
    sf_flux_stream stream; /* DOUBLE: TEXT or IMAGE; SINGLE: any; OUTPUT: ignored */
    int delta;             /* output - input of the block (DOUBLE, SINGLE) */
} sf_flux_request;

typedef struct sf_flux sf_flux;

typedef struct {
    sf_dtype dtype; /* in-memory weights: 0 = as stored, or SF_DT_F32 / SF_DT_BF16 / SF_DT_F16 */
    /* RoPE axes when there is no config.json and head dim != 128 (n_axes 0: none given) */
    int n_axes, axes_dim[SF_FLUX_MAX_AXES];
    /* n_only > 0: bind only the blocks these requests need (up to the last
     * one they reach); forwards may then ask for nothing later. */
    const sf_flux_request *only;
    int n_only;
} sf_flux_load_opts;

sf_flux *sf_flux_load(const char *path, const sf_flux_load_opts *opts);
void sf_flux_free(sf_flux *m);
const sf_flux_config *sf_flux_get_config(const sf_flux *m);

/* Parses "transformer_blocks.N.0|1" (or ":0|1", ":text|:image", the
 * reference's "transformer_blocks.N-1"), "single_transformer_blocks.N"
 * (":text", ":image" for one part), an optional ":delta" suffix, and
 * "output". -1 with an error otherwise. */
int sf_flux_parse_request(const char *s, sf_flux_request *r);
/* Canonical name of a request ("transformer_blocks.0.1", "...:delta"). */
void sf_flux_request_name(const sf_flux_request *r, char *buf, size_t n);

/* Rows per example of a request's output for N image and T text tokens (its
 * width is dim, or out_channels for OUTPUT), or -1 with an error for a
 * request the model cannot serve (block out of range, bad stream). */
int64_t sf_flux_request_rows(const sf_flux *m, const sf_flux_request *r, int64_t N, int64_t T);
int64_t sf_flux_request_width(const sf_flux *m, const sf_flux_request *r);

/* A block's output as the next block will read it, handed to an edit
 * callback (steering): example b's text rows are txt + b * txt_stride
 * (T, D) and its image rows img + b * img_stride (N, D), row-major. Double
 * blocks: the two stream buffers; single blocks: both point into the
 * (B, T + N, D) sequence. Writes through the pointers change what the rest
 * of the forward computes. */
typedef struct {
    sf_flux_site site; /* SF_FLUX_DOUBLE or SF_FLUX_SINGLE */
    int block;
    int64_t B, T, N, D;
    float *txt, *img;
    int64_t txt_stride, img_stride;
    /* The block's input rows, same layout and strides (steering a delta
     * hook); NULL unless sf_flux_inputs.edit_input. */
    const float *txt_in, *img_in;
} sf_flux_block_view;
/* Called after every block the forward runs, before its hooks are captured
 * (hooks see the edited values). Nonzero aborts the forward (-1). */
typedef int (*sf_flux_edit_fn)(void *ctx, const sf_flux_block_view *v);

typedef struct {
    int64_t B, N, T;       /* batch, image tokens, text tokens */
    const float *img;      /* (B, N, in_channels) packed latents (hidden_states) */
    const float *txt;      /* (B, T, joint_dim) T5 embeddings (encoder_hidden_states) */
    const float *pooled;   /* (B, pooled_dim) CLIP pooled (pooled_projections) */
    const float *timestep; /* (B) sigma */
    const float *guidance; /* (B) guidance scale; required iff the config has guidance_embeds */
    const float *img_ids;  /* (N, n_axes) positions (sf_flux_image_ids) */
    const float *txt_ids;  /* (T, n_axes) or NULL: zeros (FLUX.1) */
    sf_flux_edit_fn edit;  /* optional in-place edit after each block (NULL: none) */
    void *edit_ctx;
    int edit_input; /* 1: views carry the block input (one more (B, T + N, D) copy) */
} sf_flux_inputs;

/* Runs the transformer as far as the requests need. out[i] receives
 * (B, rows_i, width_i) floats for request i. -1 with an error on bad inputs. */
int sf_flux_forward(const sf_flux *m, const sf_flux_inputs *in, int nreq,
                    const sf_flux_request *req, float *const *out);

#ifdef __cplusplus
}
#endif
#endif
