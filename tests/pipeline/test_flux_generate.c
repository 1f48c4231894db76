/* FLUX sampling end to end against diffusers' FluxPipeline on a tiny
 * pipeline folder (fixtures/flux-pipe, tools/make_flux_pipeline_fixture.py):
 * prompt -> CLIP + T5 embeddings (ours) -> torch-exact noise from the seed ->
 * latents after every Euler step -> VAE -> uint8, for schnell (shift 1, 1
 * and 4 steps, two prompts) and a dev-style config (guidance embeds,
 * dynamic shift, 1 and 4 steps). Error norm: max |ours - theirs| / max
 * |theirs| per tensor, <= 1e-4; the uint8 image within +-1. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/flux_generate.h"
#include "saeflow/flux_prompts.h"
#include "saeflow/safetensors.h"
#include "saeflow/t5.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/flux-pipe/"

static const float *get(const sf_st *st, const char *c, const char *k) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", c, k);
    const sf_tensor_info *t = sf_st_find(st, name);
    return t ? (const float *)t->data : NULL;
}

typedef struct {
    const sf_st *st;
    const char *name;
    double worst;
    int n;
} step_ctx;

static int on_step(void *ctx, int step, const float *x, int64_t B, int64_t N, int64_t C4) {
    step_ctx *s = ctx;
    char k[32];
    snprintf(k, sizeof k, "step.%d", step);
    const float *w = get(s->st, s->name, k);
    CHECK_MSG(w != NULL, "%s: no %s", s->name, k);
    if (!w) return 0;
    double e = test_max_rel(x, w, (size_t)(B * N * C4));
    fprintf(stderr, "  %s step %d: latents rel err %.2e\n", s->name, step, e);
    CHECK_MSG(e <= 1e-4, "%s step %d: rel err %.3g", s->name, step, e);
    if (e > s->worst) s->worst = e;
    s->n++;
    return 0;
}

TEST(pipeline_cases) {
    sf_st st;
    CHECK(sf_st_open(&st, FIX "expected.safetensors") == 0);
    cJSON *cases = cJSON_Parse(sf_st_meta(&st, "cases"));
    CHECK(cases != NULL && cJSON_GetArraySize(cases) == 5);
    const char *models[2] = {"schnell", "dev"};
    for (int mi = 0; mi < 2; mi++) {
        char dir[512];
        snprintf(dir, sizeof dir, FIX "%s", models[mi]);
        /* all prompts first, then the text encoders go before the transformer */
        sf_flux_text *txt = sf_flux_text_load(dir, SF_T5_AS_STORED);
        CHECK_MSG(txt != NULL, "%s", sf_errmsg());
        if (!txt) continue;
        const int64_t J = sf_flux_text_joint_dim(txt), P = sf_flux_text_pooled_dim(txt);
        int nc = cJSON_GetArraySize(cases);
        float **pe = calloc((size_t)nc, sizeof(float *)),
              **po = calloc((size_t)nc, sizeof(float *));
        for (int ci = 0; ci < nc; ci++) {
            cJSON *c = cJSON_GetArrayItem(cases, ci);
            if (strcmp(cJSON_GetObjectItem(c, "model")->valuestring, models[mi])) continue;
            const char *name = cJSON_GetObjectItem(c, "name")->valuestring,
                       *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
            int L = cJSON_GetObjectItem(c, "max_sequence_length")->valueint;
            pe[ci] = malloc((size_t)(L * J) * sizeof(float));
            po[ci] = malloc((size_t)P * sizeof(float));
            CHECK(sf_flux_encode_prompts(txt, &prompt, 1, L, pe[ci], po[ci]) == 0);
            CHECK(test_max_rel(pe[ci], get(&st, name, "prompt_embeds"), (size_t)(L * J)) <= 1e-4);
            CHECK(test_max_rel(po[ci], get(&st, name, "pooled"), (size_t)P) <= 1e-4);
        }
        sf_flux_text_free(txt);
        sf_flux_gen *g = sf_flux_gen_load(dir, 0, NULL);
        CHECK_MSG(g != NULL, "%s", sf_errmsg());
        for (int ci = 0; ci < nc && g; ci++) {
            if (!pe[ci]) continue;
            cJSON *c = cJSON_GetArrayItem(cases, ci);
            const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
            sf_flux_gen_opts o;
            sf_flux_gen_opts_default(&o);
            o.height = cJSON_GetObjectItem(c, "height")->valueint;
            o.width = cJSON_GetObjectItem(c, "width")->valueint;
            o.steps = cJSON_GetObjectItem(c, "steps")->valueint;
            o.guidance = (float)cJSON_GetObjectItem(c, "guidance")->valuedouble;
            uint64_t seed = (uint64_t)cJSON_GetObjectItem(c, "seed")->valuedouble;
            int L = cJSON_GetObjectItem(c, "max_sequence_length")->valueint;
            const int64_t h = sf_flux_latent_side(o.height), w = sf_flux_latent_side(o.width),
                          N = h / 2 * (w / 2), n = N * 16;
            /* the initial latents: torch's randn for the seed, packed */
            float *x0 = malloc((size_t)n * sizeof(float));
            CHECK(sf_flux_noise(0, &seed, 1, 4, h, w, SF_TORCH_RANDN_AVX2, x0) == 0);
            double e0 = test_max_rel(x0, get(&st, name, "latents_init"), (size_t)n);
            CHECK_MSG(e0 == 0, "%s: initial latents differ (%.3g)", name, e0);
            step_ctx sc = {&st, name, 0, 0};
            o.on_step = on_step, o.step_ctx = &sc;
            uint8_t *rgb = malloc((size_t)(o.height * o.width * 3));
            float *lat = malloc((size_t)n * sizeof(float));
            CHECK_MSG(sf_flux_generate(g, &o, 1, L, pe[ci], po[ci], &seed, NULL, lat, rgb) == 0,
                      "%s", sf_errmsg());
            CHECK(sc.n == o.steps);
            const sf_tensor_info *ti = NULL;
            char k[128];
            snprintf(k, sizeof k, "%s.image", name);
            ti = sf_st_find(&st, k);
            CHECK(ti && ti->nbytes == (size_t)(o.height * o.width * 3));
            int maxd = 0, ndiff = 0;
            for (size_t i = 0; ti && i < ti->nbytes; i++) {
                int d = abs((int)rgb[i] - (int)((const uint8_t *)ti->data)[i]);
                if (d > maxd) maxd = d;
                ndiff += d != 0;
            }
            fprintf(stderr, "  %s: image max |diff| %d (%d of %zu values differ)\n", name, maxd,
                    ndiff, ti ? ti->nbytes : 0);
            CHECK(maxd <= 1);
            free(x0), free(rgb), free(lat);
        }
        for (int ci = 0; ci < nc; ci++)
            free(pe[ci]), free(po[ci]);
        free(pe), free(po);
        sf_flux_gen_free(g);
    }
    cJSON_Delete(cases);
    sf_st_close(&st);
}

/* Initial latents given instead of a seed, latents only, an edit at every
 * block that changes nothing vs one that does. */
typedef struct {
    int calls;
    float add;
} edit_ctx;

static int edit(void *ctx, int step, float sigma, const sf_flux_block_view *v) {
    edit_ctx *e = ctx;
    e->calls++;
    (void)sigma;
    if (e->add != 0 && step == 0 && v->site == SF_FLUX_SINGLE && v->block == 1)
        for (int64_t b = 0; b < v->B; b++)
            for (int64_t i = 0; i < v->N; i++)
                v->img[b * v->img_stride + i * v->D] += e->add;
    return 0;
}

TEST(init_latents_and_edit) {
    sf_st st;
    CHECK(sf_st_open(&st, FIX "expected.safetensors") == 0);
    sf_flux_gen *g = sf_flux_gen_load(FIX "schnell", 1, NULL);
    CHECK_MSG(g != NULL, "%s", sf_errmsg());
    if (!g) return;
    CHECK(g->vae == NULL);
    const float *pe = get(&st, "schnell_4", "prompt_embeds"), *po = get(&st, "schnell_4", "pooled");
    sf_flux_gen_opts o;
    sf_flux_gen_opts_default(&o);
    o.height = 48, o.width = 64;
    const int64_t n = 12 * 16;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    edit_ctx e = {0, 0};
    o.edit = edit, o.edit_ctx = &e;
    CHECK(sf_flux_generate(g, &o, 1, 16, pe, po, NULL, get(&st, "schnell_4", "latents_init"), a,
                           NULL) == 0);
    CHECK(e.calls == 4 * 4); /* 4 steps x (2 double + 2 single blocks) */
    CHECK(test_max_rel(a, get(&st, "schnell_4", "step.3"), n) <= 1e-4);
    edit_ctx e2 = {0, 1.0f};
    o.edit_ctx = &e2;
    CHECK(sf_flux_generate(g, &o, 1, 16, pe, po, NULL, get(&st, "schnell_4", "latents_init"), b,
                           NULL) == 0);
    CHECK(test_max_rel(b, a, n) > 1e-3);
    /* images need the VAE; bad sizes; no seed */
    uint8_t px[48 * 64 * 3];
    uint64_t seed = 1;
    CHECK(sf_flux_generate(g, &o, 1, 16, pe, po, &seed, NULL, NULL, px) == -1);
    CHECK_ERR_HAS("VAE");
    o.height = 40;
    CHECK(sf_flux_generate(g, &o, 1, 16, pe, po, &seed, NULL, a, NULL) == -1);
    CHECK_ERR_HAS("multiples of 16");
    o.height = 48;
    CHECK(sf_flux_generate(g, &o, 1, 16, pe, po, NULL, NULL, a, NULL) == -1);
    free(a), free(b);
    sf_flux_gen_free(g);
    sf_st_close(&st);
}

/* Two prompts in one batch, one seed each: each image's latents as
 * diffusers' single-prompt run (the fixture's embeddings as input). */
TEST(batch_two_prompts) {
    sf_st st;
    CHECK(sf_st_open(&st, FIX "expected.safetensors") == 0);
    sf_flux_gen *g = sf_flux_gen_load(FIX "schnell", 0, NULL);
    CHECK_MSG(g != NULL, "%s", sf_errmsg());
    if (!g) return;
    const char *names[2] = {"schnell_4", "schnell_4b"};
    const int64_t n = 12 * 16, L = 16, J = 32, P = 32;
    float pe[2 * 16 * 32], po[2 * 32], lat[2 * 12 * 16];
    uint8_t rgb[2 * 48 * 64 * 3];
    for (int b = 0; b < 2; b++) {
        memcpy(pe + b * L * J, get(&st, names[b], "prompt_embeds"), sizeof(float) * L * J);
        memcpy(po + b * P, get(&st, names[b], "pooled"), sizeof(float) * P);
    }
    sf_flux_gen_opts o;
    sf_flux_gen_opts_default(&o);
    o.height = 48, o.width = 64;
    uint64_t seeds[2] = {42, 42};
    CHECK_MSG(sf_flux_generate(g, &o, 2, L, pe, po, seeds, NULL, lat, rgb) == 0, "%s", sf_errmsg());
    for (int b = 0; b < 2; b++) {
        double e = test_max_rel(lat + b * n, get(&st, names[b], "step.3"), (size_t)n);
        CHECK_MSG(e <= 1e-4, "%s in a batch: rel err %.3g", names[b], e);
        char k[64];
        snprintf(k, sizeof k, "%s.image", names[b]);
        const uint8_t *w = sf_st_find(&st, k)->data;
        int maxd = 0;
        for (int i = 0; i < 48 * 64 * 3; i++)
            maxd = abs(rgb[b * 48 * 64 * 3 + i] - w[i]) > maxd
                       ? abs(rgb[b * 48 * 64 * 3 + i] - w[i])
                       : maxd;
        CHECK(maxd <= 1);
    }
    sf_flux_gen_free(g);
    sf_st_close(&st);
}

TEST(missing_parts) {
    CHECK(sf_flux_gen_load(FIX "nope", 0, NULL) == NULL);
    CHECK_ERR_HAS("not a folder");
    CHECK(sf_flux_gen_load(SF_SOURCE_DIR "/fixtures/flux", 0, NULL) == NULL);
    CHECK_ERR_HAS("no transformer/ folder");
    CHECK(sf_flux_gen_check_size(256, 250) == -1);
    CHECK(sf_flux_gen_check_size(256, 0) == -1);
    CHECK(sf_flux_gen_check_size(1024, 768) == 0);
}

int main(void) {
    RUN(missing_parts);
    RUN(pipeline_cases);
    RUN(init_latents_and_edit);
    RUN(batch_two_prompts);
    return test_summary();
}
