/* The FLUX sampler's model-independent pieces, as diffusers' FluxPipeline
 * and FlowMatchEulerDiscreteScheduler compute them: the sigma schedule
 * (with the scheduler config's shift or the dev-style dynamic shift), the
 * Euler step, 2x2 latent packing, image position ids and the initial noise.
 *
 *   sigmas  = linspace(1, 1/N, N)              (float64, then F32)
 *   static:   sigma' = shift sigma / (1 + (shift - 1) sigma)
 *   dynamic:  mu = calculate_shift(image_seq_len, base_image_seq_len,
 *             max_image_seq_len, base_shift, max_shift)  (float64)
 *             exponential: sigma' = e^mu / (e^mu + (1/sigma - 1))
 *             linear:      sigma' = mu / (mu + (1/sigma - 1))
 *   timesteps = num_train_timesteps * sigma'  (F32; the model gets t/1000)
 *   sigmas   += [0]
 *   step:     x = x + (sigma_next - sigma) v  (F32)
 * Every F32 step rounds where numpy/torch round, so sigmas and timesteps
 * match diffusers bit for bit (tests/models/test_flux_sched.c). */
#ifndef SAEFLOW_FLUX_SCHED_H
#define SAEFLOW_FLUX_SCHED_H

#include "saeflow/common.h"
#include "saeflow/torch_rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FlowMatchEulerDiscreteScheduler's config (scheduler_config.json). */
typedef struct {
    int num_train_timesteps;      /* 1000 */
    double shift;                 /* 1.0 (schnell); dev's json says 3.0 but shifts dynamically */
    int use_dynamic_shifting;     /* 0 (schnell), 1 (dev) */
    double base_shift, max_shift; /* 0.5, 1.15 */
    int64_t base_image_seq_len, max_image_seq_len; /* 256, 4096 */
    int time_shift_linear; /* time_shift_type "linear" (default "exponential") */
} sf_flow_sched_config;

/* The class defaults (= FLUX.1-schnell's scheduler_config.json). */
void sf_flow_sched_config_default(sf_flow_sched_config *c);
/* Reads scheduler_config.json (missing keys keep the defaults). Options that
 * change the schedule in ways not implemented here (use_karras_sigmas,
 * use_exponential_sigmas, use_beta_sigmas, shift_terminal, invert_sigmas,
 * stochastic_sampling) are errors naming the file and key. */
int sf_flow_sched_config_load(sf_flow_sched_config *c, const char *path);

/* pipeline_flux.calculate_shift, in float64. */
double sf_flux_calculate_shift(int64_t image_seq_len, int64_t base_seq_len, int64_t max_seq_len,
                               double base_shift, double max_shift);
/* N >= 1 steps for an image of image_seq_len packed tokens ((h/2)*(w/2)):
 * sigmas (N + 1, the last 0), timesteps (N) (NULL to skip). -1 if N < 1. */
int sf_flow_sched_sigmas(const sf_flow_sched_config *c, int N, int64_t image_seq_len, float *sigmas,
                         float *timesteps);
/* One Euler step in place: x (n) += (sigma_next - sigma) * v (n). */
void sf_flow_euler_step(float *x, const float *v, int64_t n, float sigma, float sigma_next);

/* Latent height or width for an image side in pixels: 2 * (px / 16). */
static inline int64_t sf_flux_latent_side(int64_t px) {
    return 2 * (px / 16);
}
/* FluxPipeline._pack_latents: lat (B, C, h, w), h and w even ->
 * packed (B, (h/2)*(w/2), 4C), channel 4c + 2dy + dx of token r*(w/2) + q
 * holding lat[b][c][2r + dy][2q + dx]. */
void sf_flux_pack_latents(const float *lat, int64_t B, int64_t C, int64_t h, int64_t w,
                          float *packed);
/* The inverse (FluxPipeline._unpack_latents): packed -> lat (B, C, h, w). */
void sf_flux_unpack_latents(const float *packed, int64_t B, int64_t C, int64_t h, int64_t w,
                            float *lat);
/* _prepare_latent_image_ids: ids (hp*wp, 3), row r*wp + q = (0, r, q), for
 * the packed grid hp = h/2, wp = w/2. (Text ids are all zeros.) */
void sf_flux_image_ids(int64_t hp, int64_t wp, float *ids);
/* Initial packed latents (B, (h/2)*(w/2), 4C) as FluxPipeline.prepare_latents
 * draws them on CPU: with seeds == NULL one generator,
 * torch.Generator("cpu").manual_seed(seed), and one randn of (B, C, h, w);
 * with seeds (B) a list of generators, randn (1, C, h, w) from seeds[b] for
 * batch b. F32 pipelines get these values; BF16 ones the same rounded to
 * BF16 (B*C*h*w is a multiple of 16, where torch's BF16 randn equals the
 * F32 one rounded). -1 on bad sizes or out of memory. */
int sf_flux_noise(uint64_t seed, const uint64_t *seeds, int64_t B, int64_t C, int64_t h, int64_t w,
                  sf_torch_rng_kind kind, float *packed);

#ifdef __cplusplus
}
#endif
#endif
