/* The FLUX VAE: diffusers' AutoencoderKL (decoder, and optionally the
 * encoder) on the kernel layer (saeflow/kernels.h, NHWC inside).
 *
 * Loading: a diffusers `vae/` folder (config.json +
 * diffusion_pytorch_model.safetensors, or sharded), a FLUX pipeline folder
 * holding one, or a single .safetensors file: BFL's ae.safetensors names
 * (decoder.up.N.block.M..., optionally under "first_stage_model." / "vae.")
 * or diffusers names. A file without a config.json beside it takes FLUX.1's
 * AutoencoderKL config (sf_vae_config_flux) unless one is passed in.
 *
 * Decoder (diffusers vae.py Decoder): [post_quant_conv 1x1] -> conv_in 3x3
 * -> mid (resnet, single-head attention, resnet) -> up blocks (reversed
 * block_out_channels, layers_per_block + 1 resnets each, all but the last
 * followed by nearest 2x + conv 3x3) -> GroupNorm, SiLU, conv_out 3x3.
 * Resnet: conv1(SiLU(GN x)), conv2(SiLU(GN h)) + (x or conv_shortcut 1x1 x).
 * GroupNorm eps 1e-6 throughout.
 */
#ifndef SAEFLOW_VAE_H
#define SAEFLOW_VAE_H

#include "saeflow/common.h"
#include "saeflow/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SF_VAE_MAX_BLOCKS 8

typedef struct {
    int in_channels, out_channels, latent_channels;
    int n_blocks, block_out[SF_VAE_MAX_BLOCKS];
    int layers_per_block, norm_num_groups;
    int mid_attention; /* mid_block_add_attention */
    int use_quant_conv, use_post_quant_conv;
    float scaling_factor, shift_factor; /* shift 0 when the config says null */
} sf_vae_config;

/* FLUX.1's VAE: latent 16, block_out (128, 256, 512, 512), 2 layers per
 * block, 32 groups, no quant convs, scaling 0.3611, shift 0.1159. */
void sf_vae_config_flux(sf_vae_config *c);
/* Reads a diffusers AutoencoderKL config.json; missing keys take the class
 * defaults (latent 4, block_out (64,), scaling 0.18215, quant convs on...). */
int sf_vae_config_read(const char *path, sf_vae_config *c);

/* Weights: conv weights are repacked to F32 at load whatever the file holds
 * (F32, BF16, F16; FLUX's decoder is 50M parameters, 200 MB in F32); the
 * attention projections stay in the file's dtype. Compute is F32. */
typedef struct {
    int encoder;                 /* also load the encoder (default: decoder only) */
    const sf_vae_config *config; /* NULL: config.json if present, else FLUX's */
} sf_vae_load_opts;

typedef struct sf_vae sf_vae;
/* NULL + sf_error on failure (errors name the file, tensor and shapes). */
sf_vae *sf_vae_load(const char *path, const sf_vae_load_opts *opts);
void sf_vae_free(sf_vae *v);
const sf_vae_config *sf_vae_get_config(const sf_vae *v);
/* Pixels per latent along each axis: 2^(n_blocks - 1) (8 for FLUX). */
int sf_vae_scale(const sf_vae *v);

/* vae.decode(z).sample: z (B, latent_channels, h, w) NCHW, already
 * unscaled (the decoder's own input) -> out (B, out_channels, s h, s w)
 * NCHW, s = sf_vae_scale. -1 + sf_error on bad sizes. */
int sf_vae_decode(sf_vae *v, const float *z, int64_t B, int64_t h, int64_t w, float *out);
/* What FluxPipeline does with the sampler's (unpacked) latents:
 * decode(latents / scaling_factor + shift_factor), then diffusers'
 * VaeImageProcessor.postprocess: x = (d / 2 + 0.5).clamp(0, 1), uint8 =
 * round_half_even(255 x) (numpy). rgb (B, s h, s w, 3) interleaved (PNG
 * order); decoded (B, 3, s h, s w) or NULL. */
int sf_vae_latents_to_image(sf_vae *v, const float *latents, int64_t B, int64_t h, int64_t w,
                            uint8_t *rgb, float *decoded);

/* Encoder (needs opts.encoder): image (B, in_channels, H, W) NCHW in
 * [-1, 1], H and W multiples of sf_vae_scale -> mean (B, latent_channels,
 * H/s, W/s) = encode(image).latent_dist.mode() (after quant_conv; FLUX's
 * img2img pipeline samples mean + std * noise instead). */
int sf_vae_encode(sf_vae *v, const float *image, int64_t B, int64_t H, int64_t W, float *mean);
/* FLUX img2img latents from an image in [-1, 1]:
 * (mean - shift_factor) * scaling_factor. */
int sf_vae_image_to_latents(sf_vae *v, const float *image, int64_t B, int64_t H, int64_t W,
                            float *latents);

#ifdef __cplusplus
}
#endif
#endif
