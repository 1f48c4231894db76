/* Steering FLUX sampling with an SAE (saeflow/flux_steer.h) on the tiny
 * pipeline (fixtures/flux-pipe/schnell, D 32, 2 + 2 blocks, 48 x 64 px,
 * 4 steps): strength 0 in add mode reproduces the unsteered latents and
 * image bit for bit; a second edit callback around the steer captures each
 * hooked block's rows before and after, and the rows after equal
 * sf_sae_surgery's output on the rows before (surgery mode, bit for bit;
 * delta hooks: input + surgery(output - input)) or x + s W_dec[:, f] (add
 * mode); other rows, examples and steps are untouched; bad steers fail. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/flux_generate.h"
#include "saeflow/flux_steer.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/flux-pipe/"
#define H 48
#define W 64
#define NLAT (12 * 16) /* packed latents (N 12, 4C 16) */

static sf_st st;
static const float *pe, *po; /* the schnell_4 case's embeddings (T 16, J 32, P 32) */

static const float *get(const char *k) {
    const sf_tensor_info *t = sf_st_find(&st, k);
    return t ? (const float *)t->data : NULL;
}

/* A TopK SAE of the transformer's width with its hook in config.json. */
static void make_sae(sf_sae *s, int d, const char *hook) {
    CHECK(sf_sae_init(s, SF_SAE_TOPK, d, 64, 4, 5) == 0);
    if (hook) sf_sae_config_set_string(s, "hook", hook);
}

/* Around sf_flux_steer_edit: every view of the steered block, before and
 * after, checked against the library on the rows before. */
typedef struct {
    sf_flux_steer_ctx *sc;
    const sf_flux_steer *s; /* the one steer of sc */
    int steered_calls, untouched_calls;
    int bad;        /* rows that differ from what they should be */
    double add_err; /* add mode: max |after - (before + s w)| / (|before| + |s w|) */
    float *pre, *pin, *x, *y;
} cap_ctx;

static int cap_edit(void *ctx, int step, float sigma, const sf_flux_block_view *v) {
    cap_ctx *c = ctx;
    const sf_flux_steer *s = c->s;
    const int on_block = v->site == s->hook.site && v->block == s->hook.block;
    const int64_t D = v->D, rows = v->T + v->N;
    // before: example b's text rows then image rows, (B, T + N, D)
    for (int64_t b = 0; b < v->B; b++) {
        memcpy(c->pre + (b * rows) * D, v->txt + b * v->txt_stride,
               (size_t)(v->T * D) * sizeof(float));
        memcpy(c->pre + (b * rows + v->T) * D, v->img + b * v->img_stride,
               (size_t)(v->N * D) * sizeof(float));
        if (v->txt_in) {
            memcpy(c->pin + (b * rows) * D, v->txt_in + b * v->txt_stride,
                   (size_t)(v->T * D) * sizeof(float));
            memcpy(c->pin + (b * rows + v->T) * D, v->img_in + b * v->img_stride,
                   (size_t)(v->N * D) * sizeof(float));
        }
    }
    if (sf_flux_steer_edit(c->sc, step, sigma, v)) return -1;
    const int active = on_block && (!c->sc->steps || c->sc->steps[step]);
    for (int64_t b = 0; b < v->B; b++) {
        const float str = s->strengths ? s->strengths[b] : s->strength;
        const int64_t r0 = s->tokens == SF_FLUX_IMAGE ? v->T : 0,
                      r1 = s->tokens == SF_FLUX_TEXT ? v->T : rows, R = r1 - r0;
        const int edited = active && !(s->mode == SF_STEER_ADD && str == 0);
        // what the selected rows should now be
        const float *pre = c->pre + (b * rows + r0) * D, *pin = c->pin + (b * rows + r0) * D;
        if (edited && s->mode == SF_STEER_SURGERY) {
            for (int64_t i = 0; i < R * D; i++)
                c->x[i] = s->hook.delta ? pre[i] - pin[i] : pre[i];
            CHECK(sf_sae_surgery(s->sae, c->x, R, s->feature, str, c->y) == 0);
            for (int64_t i = 0; s->hook.delta && i < R * D; i++)
                c->y[i] = pin[i] + c->y[i];
        } else {
            memcpy(c->y, pre, (size_t)(R * D) * sizeof(float));
        }
        for (int64_t r = 0; r < rows; r++) {
            const float *now = r < v->T ? v->txt + b * v->txt_stride + r * D
                                        : v->img + b * v->img_stride + (r - v->T) * D;
            const float *before = c->pre + (b * rows + r) * D;
            if (r < r0 || r >= r1 || !edited) {
                c->bad += memcmp(now, before, (size_t)D * sizeof(float)) != 0;
            } else if (s->mode == SF_STEER_SURGERY) {
                c->bad += memcmp(now, c->y + (r - r0) * D, (size_t)D * sizeof(float)) != 0;
            } else {
                const float *w = s->sae->W_decT + (size_t)s->feature * D;
                for (int64_t q = 0; q < D; q++) {
                    double e = fabs(now[q] - ((double)before[q] + (double)str * w[q])) /
                               (fabs(before[q]) + fabs((double)str * w[q]) + 1e-30);
                    if (e > c->add_err) c->add_err = e;
                }
            }
        }
    }
    if (on_block) active ? c->steered_calls++ : c->untouched_calls++;
    return 0;
}

/* One generation of B examples through cap_edit (or no edit: s NULL). */
static int run(sf_flux_gen *g, int64_t B, const sf_flux_steer *s, const uint8_t *steps, float *lat,
               uint8_t *rgb, cap_ctx *out) {
    float pe2[2 * 16 * 32], po2[2 * 32];
    uint64_t seeds[2] = {42, 43};
    for (int64_t b = 0; b < B; b++) {
        memcpy(pe2 + b * 16 * 32, pe, sizeof(float) * 16 * 32);
        memcpy(po2 + b * 32, po, sizeof(float) * 32);
    }
    sf_flux_gen_opts o;
    sf_flux_gen_opts_default(&o);
    o.height = H, o.width = W;
    sf_flux_steer_ctx sc = {s, 1, steps, 4, NULL, 0};
    const int64_t n = B * (16 + 12) * 32;
    cap_ctx c = {&sc, s, 0, 0, 0, 0, malloc(n * 4), calloc(n, 4), malloc(n * 4), malloc(n * 4)};
    if (s) {
        o.edit = cap_edit, o.edit_ctx = &c;
        o.edit_input = sf_flux_steer_needs_input(s, 1);
    }
    int rc = sf_flux_generate(g, &o, B, 16, pe2, po2, seeds, NULL, lat, rgb);
    sf_flux_steer_ctx_free(&sc);
    free(c.pre), free(c.pin), free(c.x), free(c.y);
    c.pre = c.pin = c.x = c.y = NULL;
    if (out) *out = c;
    return rc;
}

TEST(strength_zero_add_is_unsteered) {
    sf_flux_gen *g = sf_flux_gen_load(FIX "schnell", 0, NULL);
    CHECK_MSG(g != NULL, "%s", sf_errmsg());
    if (!g) return;
    sf_sae sae;
    make_sae(&sae, 32, "transformer_blocks.1.1");
    float a[NLAT], b[NLAT], c[NLAT];
    static uint8_t ia[H * W * 3], ib[H * W * 3], ic[H * W * 3];
    CHECK(run(g, 1, NULL, NULL, a, ia, NULL) == 0);
    const char *hooks[3] = {"transformer_blocks.1.1", "single_transformer_blocks.0",
                            "single_transformer_blocks.1:delta"};
    for (int h = 0; h < 3; h++) {
        sf_flux_steer s = {&sae, {0}, 7, SF_FLUX_BOTH, SF_STEER_ADD, 0.0f, NULL};
        CHECK(sf_flux_parse_request(hooks[h], &s.hook) == 0);
        if (s.hook.site == SF_FLUX_DOUBLE) s.tokens = SF_FLUX_IMAGE;
        cap_ctx cc;
        CHECK_MSG(run(g, 1, &s, NULL, b, ib, &cc) == 0, "%s", sf_errmsg());
        CHECK(cc.steered_calls == 4 && cc.bad == 0);
        CHECK_MSG(!memcmp(a, b, sizeof a) && !memcmp(ia, ib, sizeof ia),
                  "%s: strength 0 changed the result", hooks[h]);
        /* surgery at strength 0 replaces x by its reconstruction: a change */
        s.mode = SF_STEER_SURGERY;
        CHECK_MSG(run(g, 1, &s, NULL, c, ic, &cc) == 0, "%s", sf_errmsg());
        double e = test_max_rel(c, a, NLAT);
        fprintf(stderr, "  %s: surgery at strength 0 moves the latents by %.3g (relative)\n",
                hooks[h], e);
        CHECK(e > 1e-4 && cc.bad == 0 && cc.steered_calls == 4);
    }
    sf_sae_free(&sae);
    sf_flux_gen_free(g);
}

TEST(edit_equals_surgery) {
    sf_flux_gen *g = sf_flux_gen_load(FIX "schnell", 1, NULL);
    CHECK_MSG(g != NULL, "%s", sf_errmsg());
    if (!g) return;
    sf_sae sae;
    make_sae(&sae, 32, NULL);
    float a[NLAT], b[NLAT];
    CHECK(run(g, 1, NULL, NULL, a, NULL, NULL) == 0);
    struct {
        const char *hook;
        sf_flux_stream tokens;
    } cases[] = {{"transformer_blocks.1.1", SF_FLUX_IMAGE},
                 {"transformer_blocks.0.0", SF_FLUX_TEXT},
                 {"single_transformer_blocks.0", SF_FLUX_BOTH},
                 {"single_transformer_blocks.0", SF_FLUX_IMAGE},
                 {"single_transformer_blocks.0:text", SF_FLUX_TEXT},
                 {"single_transformer_blocks.1:delta", SF_FLUX_IMAGE},
                 {"transformer_blocks.1.1:delta", SF_FLUX_IMAGE}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int mode = 0; mode < 2; mode++) {
            sf_flux_steer s = {&sae, {0}, 11, cases[i].tokens, (sf_steer_mode)mode, 3.0f, NULL};
            CHECK(sf_flux_parse_request(cases[i].hook, &s.hook) == 0);
            CHECK_MSG(sf_flux_steer_check(&s, g->flux) == 0, "%s", sf_errmsg());
            cap_ctx cc;
            CHECK_MSG(run(g, 1, &s, NULL, b, NULL, &cc) == 0, "%s", sf_errmsg());
            double e = test_max_rel(b, a, NLAT);
            fprintf(stderr, "  %s %s tokens %d: %d rows wrong, add err %.2g, latents moved %.3g\n",
                    cases[i].hook, mode ? "surgery" : "add", (int)cases[i].tokens, cc.bad,
                    cc.add_err, e);
            CHECK(cc.steered_calls == 4 && cc.bad == 0 && e > 1e-4);
            CHECK(cc.add_err <= 1e-6); /* one rounding of x + s w (FMA or not) */
        }
    sf_sae_free(&sae);
    sf_flux_gen_free(g);
}

TEST(steps_and_examples) {
    sf_flux_gen *g = sf_flux_gen_load(FIX "schnell", 1, NULL);
    CHECK_MSG(g != NULL, "%s", sf_errmsg());
    if (!g) return;
    sf_sae sae;
    make_sae(&sae, 32, NULL);
    float lat[2 * NLAT];
    uint8_t mask[4];
    CHECK(sf_flux_steer_parse_steps("1-2", 4, mask) == 0);
    sf_flux_steer s = {&sae, {0}, 2, SF_FLUX_IMAGE, SF_STEER_SURGERY, -2.0f, NULL};
    CHECK(sf_flux_parse_request("single_transformer_blocks.1", &s.hook) == 0);
    cap_ctx cc;
    CHECK(run(g, 1, &s, mask, lat, NULL, &cc) == 0);
    CHECK(cc.steered_calls == 2 && cc.untouched_calls == 2 && cc.bad == 0);
    /* two examples, strengths 0 and 5 (add): the first one's rows untouched */
    float str[2] = {0, 5};
    s.mode = SF_STEER_ADD, s.strengths = str;
    CHECK(run(g, 2, &s, NULL, lat, NULL, &cc) == 0);
    CHECK(cc.steered_calls == 4 && cc.bad == 0 && cc.add_err <= 1e-6);
    /* surgery per example, each with its strength */
    s.mode = SF_STEER_SURGERY, s.tokens = SF_FLUX_BOTH;
    CHECK(run(g, 2, &s, NULL, lat, NULL, &cc) == 0);
    CHECK(cc.steered_calls == 4 && cc.bad == 0);
    /* a delta surgery without the block inputs fails with a message */
    sf_flux_steer_ctx sc = {&s, 1, NULL, 4, NULL, 0};
    CHECK(sf_flux_parse_request("single_transformer_blocks.1:delta", &s.hook) == 0);
    sf_flux_gen_opts o;
    sf_flux_gen_opts_default(&o);
    o.height = H, o.width = W, o.edit = sf_flux_steer_edit, o.edit_ctx = &sc;
    uint64_t seed = 1;
    s.strengths = NULL;
    CHECK(sf_flux_generate(g, &o, 1, 16, pe, po, &seed, NULL, lat, NULL) == -1);
    CHECK_ERR_HAS("block inputs");
    sf_flux_steer_ctx_free(&sc);
    sf_sae_free(&sae);
    sf_flux_gen_free(g);
}

TEST(bad_steers) {
    sf_flux_gen *g = sf_flux_gen_load(FIX "schnell", 1, NULL);
    CHECK_MSG(g != NULL, "%s", sf_errmsg());
    if (!g) return;
    sf_sae sae, narrow;
    make_sae(&sae, 32, "single_transformer_blocks.1:image");
    make_sae(&narrow, 16, NULL);
    sf_flux_steer s = {&sae, {0}, 3, SF_FLUX_IMAGE, SF_STEER_ADD, 1.0f, NULL};
    CHECK(sf_flux_steer_hook_of(&sae, &s.hook) == 0);
    CHECK(s.hook.site == SF_FLUX_SINGLE && s.hook.block == 1 && s.hook.stream == SF_FLUX_IMAGE);
    CHECK(sf_flux_steer_default_tokens(&s.hook) == SF_FLUX_IMAGE);
    CHECK(sf_flux_steer_check(&s, g->flux) == 0);
    sf_flux_request r;
    CHECK(sf_flux_steer_hook_of(&narrow, &r) == 1);
    sf_sae_config_set_string(&narrow, "hook", "layers.3");
    CHECK(sf_flux_steer_hook_of(&narrow, &r) == -1);
    CHECK_ERR_HAS("not a FLUX hook");
    s.sae = &narrow;
    CHECK(sf_flux_steer_check(&s, g->flux) == -1);
    CHECK_ERR_HAS("SAE width (features) 16, but single_transformer_blocks.1:image rows are 32");
    s.sae = &sae, s.feature = 64;
    CHECK(sf_flux_steer_check(&s, g->flux) == -1);
    CHECK_ERR_HAS("feature 64 outside [0, 64)");
    s.feature = 3;
    CHECK(sf_flux_parse_request("transformer_blocks.5.1", &s.hook) == 0);
    CHECK(sf_flux_steer_check(&s, g->flux) == -1);
    CHECK_ERR_HAS("2 double blocks");
    CHECK(sf_flux_parse_request("transformer_blocks.1.0", &s.hook) == 0);
    CHECK(sf_flux_steer_default_tokens(&s.hook) == SF_FLUX_TEXT);
    CHECK(sf_flux_steer_check(&s, g->flux) == -1); /* image tokens of a text-stream SAE */
    CHECK_ERR_HAS("text stream of a double block");
    CHECK(sf_flux_parse_request("output", &s.hook) == 0);
    CHECK(sf_flux_steer_check(&s, g->flux) == -1);
    CHECK_ERR_HAS("only block outputs");
    /* specs */
    char *ck = NULL;
    int f = -1;
    float v = 0;
    CHECK(sf_flux_steer_parse_spec("ck/a:12:-2.5", 1, &ck, &f, &v) == 0);
    CHECK_STR(ck, "ck/a");
    CHECK(f == 12 && v == -2.5f);
    free(ck);
    CHECK(sf_flux_steer_parse_spec("c:d/e:3:1e1", 1, &ck, &f, &v) == 0);
    CHECK_STR(ck, "c:d/e");
    CHECK(f == 3 && v == 10.0f);
    free(ck);
    CHECK(sf_flux_steer_parse_spec("c:d/e:7", 0, &ck, &f, &v) == 0);
    CHECK_STR(ck, "c:d/e");
    CHECK(f == 7);
    free(ck);
    const char *bad[] = {"ck:3", "ck:x:1",  "ck:3:",   "ck:3:nan",
                         ":3:1", "ck:-1:2", "ck:3:1x", "nocolon"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck = NULL;
        CHECK_MSG(sf_flux_steer_parse_spec(bad[i], 1, &ck, &f, &v) == -1, "%s", bad[i]);
        CHECK(ck == NULL);
    }
    /* the grid form has no strength: a third field belongs to the path */
    CHECK(sf_flux_steer_parse_spec("ck:3:1", 0, &ck, &f, &v) == 0);
    CHECK_STR(ck, "ck:3");
    CHECK(f == 1);
    free(ck);
    /* steps, tokens, modes, lists */
    uint8_t m[4];
    CHECK(sf_flux_steer_parse_steps("all", 4, m) == 0 && m[0] && m[3]);
    CHECK(sf_flux_steer_parse_steps("0,2-3", 4, m) == 0 && m[0] && !m[1] && m[2] && m[3]);
    CHECK(sf_flux_steer_parse_steps("4", 4, m) == -1);
    CHECK_ERR_HAS("outside the 4 steps");
    CHECK(sf_flux_steer_parse_steps("2-1", 4, m) == -1);
    CHECK(sf_flux_steer_parse_steps("0,", 4, m) == -1);
    CHECK(sf_flux_steer_parse_steps("x", 4, m) == -1);
    sf_flux_stream t;
    sf_steer_mode md;
    CHECK(sf_flux_steer_parse_tokens("both", &t) == 0 && t == SF_FLUX_BOTH);
    CHECK(sf_flux_steer_parse_tokens("all", &t) == -1);
    CHECK(sf_flux_steer_parse_mode("surgery", &md) == 0 && md == SF_STEER_SURGERY);
    CHECK(sf_flux_steer_parse_mode("set", &md) == -1);
    double l[4];
    CHECK(sf_flux_steer_parse_list("0,4,-8,1.5", l, 4) == 4 && l[2] == -8 && l[3] == 1.5);
    CHECK(sf_flux_steer_parse_list("0,4,8,16,32", l, 4) == -1);
    CHECK(sf_flux_steer_parse_list("0,,1", l, 4) == -1);
    CHECK(sf_flux_steer_parse_list("inf", l, 4) == -1);
    sf_sae_free(&sae);
    sf_sae_free(&narrow);
    sf_flux_gen_free(g);
}

int main(void) {
    CHECK(sf_st_open(&st, FIX "expected.safetensors") == 0);
    pe = get("schnell_4.prompt_embeds"), po = get("schnell_4.pooled");
    CHECK(pe && po);
    if (!pe || !po) return test_summary();
    RUN(strength_zero_add_is_unsteered);
    RUN(edit_equals_surgery);
    RUN(steps_and_examples);
    RUN(bad_steers);
    sf_st_close(&st);
    return test_summary();
}
