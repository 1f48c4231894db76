/* FLUX.1 text-to-image sampling as diffusers' FluxPipeline.__call__ runs it
 * (CPU, F32), with a per-step, per-block edit hook for steering:
 *
 *   latents  = sf_flux_noise(seed)                 packed (B, N, 4C), torch-exact
 *   sigmas   = sf_flow_sched_sigmas(steps, N)      (shift / dynamic shift of
 *                                                  scheduler/scheduler_config.json)
 *   for i:   v = transformer(latents, timestep = t_i / 1000, guidance (dev),
 *                            prompt_embeds, pooled, img_ids, txt_ids = 0)
 *            latents += (sigma_{i+1} - sigma_i) v  (F32)
 *   image    = VAE decode(unpack(latents) / scaling + shift) -> uint8
 *
 * timestep is the scheduler's F32 timestep divided by 1000 in F32 (what the
 * pipeline passes), not sigma itself: the two can differ in the last bit.
 * Prompt embeddings come from sf_flux_encode_prompts (saeflow/flux_prompts.h)
 * or an `encode-prompts` file: the text encoders need not be loaded here.
 */
#ifndef SAEFLOW_FLUX_GENERATE_H
#define SAEFLOW_FLUX_GENERATE_H

#include "saeflow/flux.h"
#include "saeflow/flux_sched.h"
#include "saeflow/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The sampling parts of a FLUX pipeline folder. */
typedef struct {
    sf_flux *flux;              /* transformer/ */
    sf_vae *vae;                /* vae/ (NULL when loaded latents-only) */
    sf_flow_sched_config sched; /* scheduler/scheduler_config.json */
} sf_flux_gen;

/* dir: a diffusers FLUX pipeline folder (transformer/, vae/, scheduler/).
 * no_vae: skip the VAE (latents only). A missing folder is an error naming
 * it. flux_opts may be NULL. */
sf_flux_gen *sf_flux_gen_load(const char *dir, int no_vae, const sf_flux_load_opts *flux_opts);
void sf_flux_gen_free(sf_flux_gen *g);

/* -1 + error unless height and width are positive multiples of 16 (the VAE's
 * 8x times the 2x2 packing), at most 16384. */
int sf_flux_gen_check_size(int64_t height, int64_t width);

/* Called with every block's output view at every step (see
 * sf_flux_block_view): step 0..steps-1 and its sigma. Nonzero aborts. */
typedef int (*sf_flux_gen_edit_fn)(void *ctx, int step, float sigma, const sf_flux_block_view *v);
/* Called after each Euler step with the packed latents (B, N, 4C)
 * (progress, recording). Nonzero aborts. */
typedef int (*sf_flux_gen_step_fn)(void *ctx, int step, const float *latents, int64_t B, int64_t N,
                                   int64_t C4);

typedef struct {
    int64_t height, width; /* pixels, multiples of 16 */
    int steps;             /* >= 1 (schnell: 4; the reference's SAE sampler: 1) */
    float guidance;        /* guidance scale, used iff the transformer has guidance_embeds */
    sf_torch_rng_kind rng; /* torch CPU randn kernel (default AVX2) */
    sf_flux_gen_edit_fn edit;
    void *edit_ctx;
    int edit_input; /* 1: the views carry the block inputs (sf_flux_inputs.edit_input) */
    sf_flux_gen_step_fn on_step;
    void *step_ctx;
} sf_flux_gen_opts;

/* Defaults: 256 x 256, 4 steps, guidance 3.5 (diffusers' default). */
void sf_flux_gen_opts_default(sf_flux_gen_opts *o);

/* B images, one per (prompt_embeds[b] (T, joint), pooled[b] (pooled_dim),
 * seeds[b]); each image's noise is torch.Generator("cpu").manual_seed(
 * seeds[b]) (the image diffusers draws for that prompt alone with that
 * seed). init (B, N, 4C) replaces the noise when given. Outputs, any NULL:
 * latents (B, N, 4C) packed final latents, rgb (B, height, width, 3)
 * (needs the VAE). 0, or -1 + sf_error. */
int sf_flux_generate(sf_flux_gen *g, const sf_flux_gen_opts *o, int64_t B, int64_t T,
                     const float *prompt_embeds, const float *pooled, const uint64_t *seeds,
                     const float *init, float *latents, uint8_t *rgb);

#ifdef __cplusplus
}
#endif
#endif
