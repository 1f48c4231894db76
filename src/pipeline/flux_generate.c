/* FLUX.1 sampling (see include/saeflow/flux_generate.h): diffusers'
 * FluxPipeline.__call__ on the transformer, the flow-matching Euler
 * scheduler and the VAE, one forward per step over the whole batch. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "saeflow/flux_generate.h"

/* dir/part, or NULL + error naming what is missing. */
static char *part_dir(const char *dir, const char *part, const char *what) {
    char *p = sf_path_join(dir, part);
    if (!sf_is_dir(p)) {
        sf_error("%s: no %s/ folder (%s): not a diffusers FLUX pipeline folder", dir, part, what);
        free(p);
        return NULL;
    }
    return p;
}

void sf_flux_gen_free(sf_flux_gen *g) {
    if (!g) return;
    sf_flux_free(g->flux);
    sf_vae_free(g->vae);
    free(g);
}

sf_flux_gen *sf_flux_gen_load(const char *dir, int no_vae, const sf_flux_load_opts *flux_opts) {
    if (!sf_is_dir(dir)) {
        sf_error("%s: not a folder (a diffusers FLUX pipeline folder)", dir);
        return NULL;
    }
    sf_flux_gen *g = sf_calloc(1, sizeof *g);
    // the first missing part is the one reported
    char *tr = part_dir(dir, "transformer", "the FLUX transformer"), *sc = NULL, *va = NULL;
    if (tr) sc = part_dir(dir, "scheduler", "scheduler_config.json");
    if (sc && !no_vae) va = part_dir(dir, "vae", "the VAE; --latents-only skips it");
    int ok = tr && sc && (no_vae || va);
    if (ok) {
        char *sj = sf_path_join(sc, "scheduler_config.json");
        ok = sf_flow_sched_config_load(&g->sched, sj) == 0;
        free(sj);
    }
    if (ok) ok = (g->flux = sf_flux_load(tr, flux_opts)) != NULL;
    if (ok && !no_vae) ok = (g->vae = sf_vae_load(va, NULL)) != NULL;
    if (ok) {
        const sf_flux_config *c = sf_flux_get_config(g->flux);
        if (c->in_channels % 4 || c->out_channels != c->in_channels || c->n_axes != 3)
            ok = !sf_error("%s: transformer in_channels %d / out_channels %d / %d RoPE axes: "
                           "FLUX sampling needs in = out = 4 x latent channels and 3 axes",
                           tr, c->in_channels, c->out_channels, c->n_axes);
        else if (g->vae && (sf_vae_get_config(g->vae)->latent_channels * 4 != c->in_channels ||
                            sf_vae_scale(g->vae) != 8))
            ok = !sf_error("%s: VAE latent_channels %d x 4 != transformer in_channels %d, or "
                           "its scale %d != 8",
                           va, sf_vae_get_config(g->vae)->latent_channels, c->in_channels,
                           sf_vae_scale(g->vae));
    }
    free(tr), free(sc), free(va);
    if (!ok) {
        sf_flux_gen_free(g);
        return NULL;
    }
    return g;
}

int sf_flux_gen_check_size(int64_t height, int64_t width) {
    if (height < 16 || width < 16 || height % 16 || width % 16 || height > 16384 || width > 16384)
        return sf_error("image size %lld x %lld: height and width must be positive multiples "
                        "of 16 (VAE 8x, 2x2 latent packing), at most 16384",
                        (long long)height, (long long)width);
    return 0;
}

void sf_flux_gen_opts_default(sf_flux_gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->height = o->width = 256;
    o->steps = 4;
    o->guidance = 3.5f;
    o->rng = SF_TORCH_RANDN_AVX2;
}

/* The transformer's edit hook, with the step and sigma added. */
typedef struct {
    const sf_flux_gen_opts *o;
    int step;
    float sigma;
} edit_wrap;

static int edit_step(void *ctx, const sf_flux_block_view *v) {
    edit_wrap *w = ctx;
    return w->o->edit(w->o->edit_ctx, w->step, w->sigma, v);
}

int sf_flux_generate(sf_flux_gen *g, const sf_flux_gen_opts *o, int64_t B, int64_t T,
                     const float *prompt_embeds, const float *pooled, const uint64_t *seeds,
                     const float *init, float *latents, uint8_t *rgb) {
    const sf_flux_config *c = sf_flux_get_config(g->flux);
    if (sf_flux_gen_check_size(o->height, o->width)) return -1;
    if (o->steps < 1 || o->steps > 10000)
        return sf_error("flux generate: %d steps (need 1..10000)", o->steps);
    if (B < 1 || T < 1)
        return sf_error("flux generate: %lld prompts of %lld tokens", (long long)B, (long long)T);
    if (rgb && !g->vae) return sf_error("flux generate: images need the VAE (loaded latents-only)");
    const int64_t C4 = c->in_channels, C = C4 / 4, h = sf_flux_latent_side(o->height),
                  w = sf_flux_latent_side(o->width), N = (h / 2) * (w / 2);
    float *x = sf_malloc_aligned((size_t)(B * N * C4) * sizeof(float)),
          *v = sf_malloc_aligned((size_t)(B * N * C4) * sizeof(float)),
          *sig = sf_malloc((size_t)(o->steps + 1) * sizeof(float)),
          *ts = sf_malloc((size_t)o->steps * sizeof(float)),
          *ids = sf_malloc((size_t)(N * 3) * sizeof(float)),
          *tb = sf_malloc((size_t)B * sizeof(float)), *gb = sf_malloc((size_t)B * sizeof(float));
    int rc = 0;
    if (init)
        memcpy(x, init, (size_t)(B * N * C4) * sizeof(float));
    else if (seeds)
        rc = sf_flux_noise(0, seeds, B, C, h, w, o->rng, x);
    else
        rc = sf_error("flux generate: seeds or initial latents are required");
    if (!rc) rc = sf_flow_sched_sigmas(&g->sched, o->steps, N, sig, ts);
    sf_flux_image_ids(h / 2, w / 2, ids);
    for (int64_t b = 0; b < B; b++)
        gb[b] = o->guidance;
    edit_wrap ew = {o, 0, 0};
    sf_flux_inputs in = {.B = B,
                         .N = N,
                         .T = T,
                         .img = x,
                         .txt = prompt_embeds,
                         .pooled = pooled,
                         .timestep = tb,
                         .guidance = c->guidance ? gb : NULL,
                         .img_ids = ids,
                         .txt_ids = NULL,
                         .edit = o->edit ? edit_step : NULL,
                         .edit_ctx = &ew,
                         .edit_input = o->edit_input};
    sf_flux_request out = {SF_FLUX_OUTPUT, 0, 0, 0};
    for (int i = 0; i < o->steps && !rc; i++) {
        // the pipeline passes timestep = t / 1000 with t = 1000 sigma in F32
        for (int64_t b = 0; b < B; b++)
            tb[b] = ts[i] / 1000.0f;
        ew.step = i, ew.sigma = sig[i];
        if (sf_flux_forward(g->flux, &in, 1, &out, &v)) {
            rc = sf_error_prefix("flux generate: step %d of %d", i + 1, o->steps);
            break;
        }
        sf_flow_euler_step(x, v, B * N * C4, sig[i], sig[i + 1]);
        if (o->on_step && o->on_step(o->step_ctx, i, x, B, N, C4)) rc = -1;
    }
    if (!rc && latents) memcpy(latents, x, (size_t)(B * N * C4) * sizeof(float));
    if (!rc && rgb) {
        float *lat = v; // (B, C, h, w): same size as the packed latents
        sf_flux_unpack_latents(x, B, C, h, w, lat);
        rc = sf_vae_latents_to_image(g->vae, lat, B, h, w, rgb, NULL);
    }
    sf_free_aligned(x), sf_free_aligned(v);
    free(sig), free(ts), free(ids), free(tb), free(gb);
    return rc;
}
