/* CLIP towers against transformers' outputs (fixtures/clip, made by
 * tools/make_clip_fixtures.py). Error norm: max |ours - theirs| over a
 * tensor divided by max |theirs| over the same tensor; must be <= 1e-4. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/clip.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define TOL 1e-4
#define FIX SF_SOURCE_DIR "/fixtures/clip/"

typedef struct {
    sf_st st;
    float *px;
    int32_t *ids, *mask;
    int64_t Bv, Bt, T;
} expected;

static int load_expected(expected *e, const char *name) {
    memset(e, 0, sizeof *e);
    char path[1024];
    snprintf(path, sizeof path, FIX "%s.expected.safetensors", name);
    if (sf_st_open(&e->st, path)) return -1;
    const sf_tensor_info *t = sf_st_find(&e->st, "pixel_values");
    if (t) {
        e->Bv = t->shape[0];
        e->px = malloc(t->nbytes);
        memcpy(e->px, t->data, t->nbytes);
    }
    t = sf_st_find(&e->st, "input_ids");
    if (t) {
        e->Bt = t->shape[0], e->T = t->shape[1];
        e->ids = malloc(t->nbytes);
        memcpy(e->ids, t->data, t->nbytes);
        t = sf_st_find(&e->st, "attention_mask");
        e->mask = malloc(t->nbytes);
        memcpy(e->mask, t->data, t->nbytes);
    }
    return 0;
}

static void free_expected(expected *e) {
    free(e->px), free(e->ids), free(e->mask);
    sf_st_close(&e->st);
}

/* Compares out (n floats) to the expected tensor `name` (or the row gather
 * of it: rows[b] = token index per batch entry, D per row). */
static double compare(const expected *e, const char *name, const float *out, const int64_t *rows,
                      int64_t B) {
    const sf_tensor_info *t = sf_st_find(&e->st, name);
    if (!t) {
        fprintf(stderr, "expected tensor %s missing\n", name);
        return INFINITY;
    }
    float *ref = malloc(t->nbytes);
    memcpy(ref, t->data, t->nbytes);
    double err;
    if (!rows) {
        err = test_max_rel(out, ref, (size_t)sf_tensor_numel(t));
    } else {
        int64_t T = t->shape[1], D = t->shape[2];
        float *g = malloc(sizeof(float) * (size_t)(B * D));
        for (int64_t b = 0; b < B; b++)
            memcpy(g + b * D, ref + (b * T + rows[b]) * D, sizeof(float) * (size_t)D);
        err = test_max_rel(out, g, (size_t)(B * D));
        free(g);
    }
    free(ref);
    if (getenv("SF_TEST_VERBOSE")) fprintf(stderr, "  %-28s rel err %.3g\n", name, err);
    return err;
}

/* TOK_VALID output: the rows of `name` (B, T, D) whose mask is 1, packed. */
static double compare_valid(const expected *e, const char *name, const float *out) {
    const sf_tensor_info *t = sf_st_find(&e->st, name);
    if (!t) return INFINITY;
    int64_t B = t->shape[0], T = t->shape[1], D = t->shape[2], n = 0;
    float *g = malloc(t->nbytes);
    for (int64_t i = 0; i < B * T; i++)
        if (!e->mask || e->mask[i])
            memcpy(g + (n++) * D, (const float *)t->data + i * D, 4 * (size_t)D);
    double err = test_max_rel(out, g, (size_t)(n * D));
    free(g);
    return err;
}

static void check_vision(const sf_clip *m, const expected *e, const char *model) {
    const sf_clip_config *c = sf_clip_vision_config(m);
    CHECK(c != NULL);
    if (!c) return;
    const int L = c->layers, Tv = sf_clip_vision_tokens(m);
    const int64_t B = e->Bv, D = c->hidden;
    float *out = malloc(sizeof(float) * (size_t)(B * Tv * D + B * 1024));
    char name[128];
    for (int i = -(L + 1); i <= L; i++) {
        sf_clip_request r = {SF_CLIP_HIDDEN, i, SF_CLIP_TOK_ALL};
        CHECK(sf_clip_output_size(m, 0, &r, 0) == Tv * D);
        CHECK(sf_clip_vision_forward(m, e->px, B, &r, out) == 0);
        snprintf(name, sizeof name, "vision.hidden_states.%d", i < 0 ? i + L + 1 : i);
        double err = compare(e, name, out, NULL, 0);
        CHECK_MSG(err <= TOL, "%s: %s (layer %d): rel err %g", model, name, i, err);
        /* CLS only: the last layer runs on one token */
        r.tokens = SF_CLIP_TOK_FIRST;
        CHECK(sf_clip_vision_forward(m, e->px, B, &r, out) == 0);
        int64_t zero[8] = {0};
        err = compare(e, name, out, zero, B);
        CHECK_MSG(err <= TOL, "%s: %s CLS: rel err %g", model, name, err);
    }
    sf_clip_request r = {SF_CLIP_POOLED, 0, SF_CLIP_TOK_ALL};
    CHECK(sf_clip_vision_forward(m, e->px, B, &r, out) == 0);
    double err = compare(e, "vision.pooler_output", out, NULL, 0);
    CHECK_MSG(err <= TOL, "%s: pooler_output: rel err %g", model, err);
    r.what = SF_CLIP_EMBEDS;
    if (sf_st_find(&e->st, "vision.image_embeds")) {
        CHECK(sf_clip_output_size(m, 0, &r, 0) == c->projection_dim);
        CHECK(sf_clip_vision_forward(m, e->px, B, &r, out) == 0);
        err = compare(e, "vision.image_embeds", out, NULL, 0);
        CHECK_MSG(err <= TOL, "%s: image_embeds: rel err %g", model, err);
    } else {
        CHECK(sf_clip_vision_forward(m, e->px, B, &r, out) == -1);
        CHECK_ERR_HAS("no vision projection");
    }
    sf_clip_request bad = {SF_CLIP_HIDDEN, L + 1, SF_CLIP_TOK_ALL};
    CHECK(sf_clip_vision_forward(m, e->px, B, &bad, out) == -1);
    CHECK_ERR_HAS("out of range");
    bad.layer = -(L + 2);
    CHECK(sf_clip_output_size(m, 0, &bad, 0) == -1);
    free(out);
}

static void check_text(const sf_clip *m, const expected *e, const char *model) {
    const sf_clip_config *c = sf_clip_text_config(m);
    CHECK(c != NULL);
    if (!c) return;
    const int L = c->layers;
    const int64_t B = e->Bt, T = e->T, D = c->hidden;
    float *out = malloc(sizeof(float) * (size_t)(B * T * D + B * 1024));
    /* pooled position as transformers picks it */
    int64_t pos[16] = {0};
    for (int64_t b = 0; b < B; b++) {
        const int32_t *row = e->ids + b * T;
        if (c->eos_token_id == 2) {
            for (int64_t t = 1; t < T; t++)
                if (row[t] > row[pos[b]]) pos[b] = t;
        } else {
            for (int64_t t = T - 1; t >= 0; t--)
                if (row[t] == c->eos_token_id) pos[b] = t;
        }
    }
    char name[128];
    for (int i = -(L + 1); i <= L; i++) {
        sf_clip_request r = {SF_CLIP_HIDDEN, i, SF_CLIP_TOK_ALL};
        CHECK(sf_clip_output_size(m, 1, &r, (int)T) == T * D);
        CHECK(sf_clip_text_forward(m, e->ids, e->mask, B, T, &r, out) == 0);
        snprintf(name, sizeof name, "text.hidden_states.%d", i < 0 ? i + L + 1 : i);
        double err = compare(e, name, out, NULL, 0);
        CHECK_MSG(err <= TOL, "%s: %s (layer %d): rel err %g", model, name, i, err);
        /* the non-padding tokens only, each caption run to its last token */
        r.tokens = SF_CLIP_TOK_VALID;
        CHECK(sf_clip_output_size(m, 1, &r, (int)T) == T * D);
        CHECK(sf_clip_text_forward(m, e->ids, e->mask, B, T, &r, out) == 0);
        err = compare_valid(e, name, out);
        CHECK_MSG(err <= TOL, "%s: %s (layer %d) valid tokens: rel err %g", model, name, i, err);
        r.tokens = SF_CLIP_TOK_POOLED;
        CHECK(sf_clip_text_forward(m, e->ids, e->mask, B, T, &r, out) == 0);
        err = compare(e, name, out, pos, B);
        CHECK_MSG(err <= TOL, "%s: %s at the pooled position: rel err %g", model, name, err);
        r.tokens = SF_CLIP_TOK_FIRST;
        int64_t zero[16] = {0};
        CHECK(sf_clip_text_forward(m, e->ids, e->mask, B, T, &r, out) == 0);
        err = compare(e, name, out, zero, B);
        CHECK_MSG(err <= TOL, "%s: %s first token: rel err %g", model, name, err);
    }
    sf_clip_request r = {SF_CLIP_POOLED, 0, SF_CLIP_TOK_ALL};
    CHECK(sf_clip_text_forward(m, e->ids, e->mask, B, T, &r, out) == 0);
    double err = compare(e, "text.pooler_output", out, NULL, 0);
    CHECK_MSG(err <= TOL, "%s: text pooler_output: rel err %g", model, err);
    r.what = SF_CLIP_EMBEDS;
    if (sf_st_find(&e->st, "text.text_embeds")) {
        CHECK(sf_clip_text_forward(m, e->ids, e->mask, B, T, &r, out) == 0);
        err = compare(e, "text.text_embeds", out, NULL, 0);
        CHECK_MSG(err <= TOL, "%s: text_embeds: rel err %g", model, err);
    }
    /* bad inputs */
    int32_t bad_ids[2] = {0, c->vocab_size};
    CHECK(sf_clip_text_forward(m, bad_ids, NULL, 1, 2, &r, out) == -1);
    CHECK_ERR_HAS("outside the vocabulary");
    free(out);
}

/* The fixture `model` loaded from dir (NULL: its own folder). */
static void check_model_in(const char *model, const char *where, sf_dtype dt, int want_vision,
                           int want_text) {
    expected e;
    CHECK(load_expected(&e, model) == 0);
    char dir[1024];
    if (where)
        snprintf(dir, sizeof dir, "%s", where);
    else
        snprintf(dir, sizeof dir, FIX "%s", model);
    sf_clip_load_opts o = {dt, 1, 1};
    sf_clip *m = sf_clip_load(dir, &o);
    CHECK_MSG(m != NULL, "%s: %s", model, sf_errmsg());
    if (m) {
        CHECK((sf_clip_vision_config(m) != NULL) == want_vision);
        CHECK((sf_clip_text_config(m) != NULL) == want_text);
        if (want_vision) check_vision(m, &e, model);
        if (want_text) check_text(m, &e, model);
        sf_clip_free(m);
    }
    free_expected(&e);
}

static void check_model(const char *model, sf_dtype dt, int want_vision, int want_text) {
    check_model_in(model, NULL, dt, want_vision, want_text);
}

/* A copy of fixture `model` in a temp folder with every tensor name given
 * `add` as prefix, or stripped of `strip`. */
static const char *renamed_copy(const char *model, const char *add, const char *strip) {
    char src[1024], dst[4200];
    const char *dir = test_tmpdir(model);
    snprintf(src, sizeof src, FIX "%s/config.json", model);
    size_t len;
    char *cfg = sf_read_file(src, &len);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    CHECK(cfg && sf_write_file_atomic(dst, cfg, len) == 0);
    free(cfg);
    snprintf(src, sizeof src, FIX "%s/model.safetensors", model);
    sf_st f;
    CHECK(sf_st_open(&f, src) == 0);
    sf_st_writer *w = sf_stw_new();
    for (int i = 0; i < f.n_tensors; i++) {
        const sf_tensor_info *t = &f.tensors[i];
        char name[512];
        size_t ls = strlen(strip);
        if (ls && !strncmp(t->name, strip, ls))
            snprintf(name, sizeof name, "%s", t->name + ls);
        else
            snprintf(name, sizeof name, "%s%s", add, t->name);
        CHECK(sf_stw_add(w, name, t->dtype, t->ndim, t->shape, t->data) == 0);
    }
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    CHECK(sf_stw_write(w, dst) == 0);
    sf_stw_free(w);
    sf_st_close(&f);
    return dir;
}

/* Single towers come both ways: transformers 5.24 saves CLIPVisionModel /
 * CLIPTextModel without the vision_model. / text_model. prefix (fixture b32)
 * and *WithProjection with it (text_proj); transformers 4 saved all of
 * them with it. Each tower is loaded the other way too. */
TEST(single_towers_with_and_without_prefix) {
    check_model_in("b32", renamed_copy("b32", "vision_model.", ""), SF_DT_F32, 1, 0);
    check_model_in("text_proj", renamed_copy("text_proj", "", "text_model."), SF_DT_F32, 0, 1);
}

TEST(tiny_clipmodel) {
    check_model("tiny", SF_DT_F32, 1, 1);
}
TEST(gelu_legacy_eos) {
    check_model("gelu", SF_DT_F32, 1, 1);
}
TEST(b32_vision_only) {
    check_model("b32", SF_DT_F32, 1, 0);
    sf_clip *m = sf_clip_load(FIX "b32", NULL);
    sf_clip_request r = {SF_CLIP_POOLED, 0, SF_CLIP_TOK_ALL};
    int32_t ids[2] = {0, 1};
    float out[64];
    CHECK(sf_clip_text_forward(m, ids, NULL, 1, 2, &r, out) == -1);
    CHECK_ERR_HAS("no text tower");
    sf_clip_free(m);
}
TEST(text_with_projection) {
    check_model("text_proj", SF_DT_F32, 0, 1);
}
TEST(bf16_checkpoint) {
    /* The BF16 weights are exact in both in-memory dtypes. */
    check_model("bf16", SF_DT_F32, 1, 1);
    check_model("bf16", SF_DT_BF16, 1, 1);
}
TEST(sharded_checkpoint) {
    /* gelu_sharded holds gelu's weights in several files + index.json */
    expected e;
    CHECK(load_expected(&e, "gelu") == 0);
    sf_clip *m = sf_clip_load(FIX "gelu_sharded", NULL);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (m) {
        check_vision(m, &e, "gelu_sharded");
        check_text(m, &e, "gelu_sharded");
        sf_clip_free(m);
    }
    free_expected(&e);
}

TEST(bf16_of_f32_weights) {
    /* --dtype bf16 on an F32 checkpoint rounds the weights: close, not exact. */
    expected e;
    CHECK(load_expected(&e, "tiny") == 0);
    sf_clip_load_opts o = {SF_DT_BF16, 1, 0};
    sf_clip *m = sf_clip_load(FIX "tiny", &o);
    CHECK(m != NULL && sf_clip_text_config(m) == NULL);
    if (m) {
        float out[3 * 64];
        sf_clip_request r = {SF_CLIP_POOLED, 0, SF_CLIP_TOK_ALL};
        CHECK(sf_clip_vision_forward(m, e.px, e.Bv, &r, out) == 0);
        double err = compare(&e, "vision.pooler_output", out, NULL, 0);
        CHECK_MSG(err < 3e-2 && err > 1e-6, "bf16 rounding error %g", err);
        sf_clip_free(m);
    }
    free_expected(&e);
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
}

TEST(load_errors) {
    const char *d = test_tmpdir("clip_errors");
    char p[4096], cmd[8192];
    /* .bin only */
    snprintf(p, sizeof p, "%s/config.json", d);
    write_text(p, "{\"model_type\": \"clip\"}");
    snprintf(p, sizeof p, "%s/pytorch_model.bin", d);
    write_text(p, "not a pickle");
    CHECK(sf_clip_load(d, NULL) == NULL);
    CHECK_ERR_HAS("Convert");
    CHECK_ERR_HAS("safetensors");
    /* no config */
    CHECK(sf_clip_load(SF_SOURCE_DIR "/fixtures", NULL) == NULL);
    CHECK_ERR_HAS("config.json");
    /* not CLIP */
    snprintf(p, sizeof p, "%s/config.json", d);
    write_text(p, "{\"model_type\": \"bert\"}");
    CHECK(sf_clip_load(d, NULL) == NULL);
    CHECK_ERR_HAS("not a CLIP model");
    /* config that disagrees with the weights; unsupported activation */
    snprintf(
        cmd, sizeof cmd,
        "rm -f '%s/pytorch_model.bin' && ln -sf '%s/tiny/model.safetensors' '%s/model.safetensors'",
        d, SF_SOURCE_DIR "/fixtures/clip", d);
    CHECK(system(cmd) == 0);
    write_text(p,
               "{\"model_type\": \"clip\", \"projection_dim\": 32, \"vision_config\": "
               "{\"hidden_size\": 64, "
               "\"intermediate_size\": 100, \"num_attention_heads\": 4, \"num_hidden_layers\": 3, "
               "\"image_size\": 32, \"patch_size\": 8}, \"text_config\": {\"hidden_size\": 48}}");
    CHECK(sf_clip_load(d, NULL) == NULL);
    CHECK_ERR_HAS("mlp.fc1.weight");
    CHECK_ERR_HAS("disagree");
    write_text(p, "{\"model_type\": \"clip\", \"vision_config\": {\"hidden_act\": \"mish\"}}");
    CHECK(sf_clip_load(d, NULL) == NULL);
    CHECK_ERR_HAS("hidden_act");
    write_text(p, "{\"model_type\": \"clip\", \"vision_config\": {\"hidden_size\": 65, "
                  "\"num_attention_heads\": 4}}");
    CHECK(sf_clip_load(d, NULL) == NULL);
    CHECK_ERR_HAS("multiple of num_attention_heads");
    write_text(p, "{\"model_type\": \"clip\", \"vision_config\": {\"patch_size\": \"8\"}}");
    CHECK(sf_clip_load(d, NULL) == NULL);
    CHECK_ERR_HAS("patch_size");
    write_text(p, "{\"model_type\": ");
    CHECK(sf_clip_load(d, NULL) == NULL);
    CHECK_ERR_HAS("JSON");

    sf_clip_request r;
    CHECK(sf_clip_parse_request("layer:-2", SF_CLIP_TOK_FIRST, &r) == 0 &&
          r.what == SF_CLIP_HIDDEN && r.layer == -2 && r.tokens == SF_CLIP_TOK_FIRST);
    CHECK(sf_clip_parse_request("pooled", SF_CLIP_TOK_ALL, &r) == 0 && r.what == SF_CLIP_POOLED);
    CHECK(sf_clip_parse_request("embeds", SF_CLIP_TOK_ALL, &r) == 0 && r.what == SF_CLIP_EMBEDS);
    CHECK(sf_clip_parse_request("layer:x", SF_CLIP_TOK_ALL, &r) == -1);
    CHECK(sf_clip_parse_request("mean", SF_CLIP_TOK_ALL, &r) == -1);
}

int main(void) {
    RUN(tiny_clipmodel);
    RUN(gelu_legacy_eos);
    RUN(b32_vision_only);
    RUN(single_towers_with_and_without_prefix);
    RUN(text_with_projection);
    RUN(bf16_checkpoint);
    RUN(sharded_checkpoint);
    RUN(bf16_of_f32_weights);
    RUN(load_errors);
    return test_summary();
}
