/* The T5 encoder against transformers' T5EncoderModel (fixtures/t5, made by
 * tools/make_t5_fixtures.py): tiny random checkpoints, gated-gelu (T5's real
 * 32 buckets / max_distance 128, 140 tokens so the far buckets are used;
 * sharded F32, one-file BF16 and F16) and relu (odd sizes: 3 heads x 7 !=
 * d_model 36; 10 buckets / distance 12). The references are transformers'
 * F32 outputs from the stored (rounded) weights. Error norm: max |ours -
 * theirs| over a tensor / max |theirs| over it, <= 1e-4. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/safetensors.h"
#include "saeflow/t5.h"
#include "test.h"

#define TOL 1e-4
#define FIX SF_SOURCE_DIR "/fixtures/t5/"

static void check_model(const char *name, const char *variant, const char *tag, sf_dtype dt) {
    char path[1024];
    snprintf(path, sizeof path, FIX "%s.expected.safetensors", name);
    sf_st st;
    CHECK_MSG(sf_st_open(&st, path) == 0, "%s", sf_errmsg());
    snprintf(path, sizeof path, FIX "%s_%s", name, variant);
    sf_t5 *m = sf_t5_load(path, dt);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (!m) {
        sf_st_close(&st);
        return;
    }
    const sf_t5_config *c = sf_t5_config_of(m);
    const sf_tensor_info *ti = sf_st_find(&st, "input_ids");
    const sf_tensor_info *tm = sf_st_find(&st, "attention_mask");
    const int64_t B = ti->shape[0], T = ti->shape[1], D = c->d_model;
    const int32_t *ids = (const int32_t *)ti->data, *mask = (const int32_t *)tm->data;
    float *out = sf_malloc((size_t)(B * T * D) * sizeof(float));
    char key[64];
    float *own = NULL; /* F32 fixtures are zero-copy: stays NULL */
    for (int i = 0; i <= c->num_layers + 1; i++) {
        sf_t5_request r = {i <= c->num_layers ? SF_T5_HIDDEN : SF_T5_LAST, i};
        if (i <= c->num_layers)
            snprintf(key, sizeof key, "%s.hidden.%d", tag, i);
        else
            snprintf(key, sizeof key, "%s.last", tag);
        const int64_t shape[3] = {B, T, D};
        const float *want = sf_st_get_f32(&st, key, 3, shape, &own);
        CHECK_MSG(want != NULL, "%s: %s", key, sf_errmsg());
        CHECK_MSG(sf_t5_forward(m, ids, NULL, B, T, &r, out) == 0, "%s", sf_errmsg());
        double e = want ? test_max_rel(out, want, (size_t)(B * T * D)) : 1;
        fprintf(stderr, "  %s %s %-14s rel err %.2e\n", name, variant, key, e);
        CHECK_MSG(e <= TOL, "%s %s %s: %.3g", name, variant, key, e);
    }
    /* negative indices name the same outputs */
    sf_t5_request r = {SF_T5_HIDDEN, -1};
    float *out2 = sf_malloc((size_t)(B * T * D) * sizeof(float));
    CHECK(sf_t5_forward(m, ids, NULL, B, T, &r, out2) == 0);
    r.layer = c->num_layers;
    CHECK(sf_t5_forward(m, ids, NULL, B, T, &r, out) == 0);
    CHECK(!memcmp(out, out2, (size_t)(B * T * D) * sizeof(float)));
    /* with a key mask (general use; FLUX passes none) */
    snprintf(key, sizeof key, "%s.masked_last", tag);
    const int64_t shape[3] = {B, T, D};
    const float *want = sf_st_get_f32(&st, key, 3, shape, &own);
    r = (sf_t5_request){SF_T5_LAST, 0};
    CHECK(want && sf_t5_forward(m, ids, mask, B, T, &r, out) == 0);
    /* padded query rows are computed too (transformers does): compare all */
    double e = want ? test_max_rel(out, want, (size_t)(B * T * D)) : 1;
    fprintf(stderr, "  %s %s %-14s rel err %.2e\n", name, variant, key, e);
    CHECK_MSG(e <= TOL, "%s masked: %.3g", name, e);
    /* errors */
    r.what = SF_T5_HIDDEN, r.layer = c->num_layers + 1;
    CHECK(sf_t5_forward(m, ids, NULL, B, T, &r, out) == -1);
    CHECK_ERR_HAS("out of range");
    int32_t bad[2] = {0, c->vocab_size};
    r.what = SF_T5_LAST;
    CHECK(sf_t5_forward(m, bad, NULL, 1, 2, &r, out) == -1);
    CHECK_ERR_HAS("vocabulary");
    free(out);
    free(out2);
    sf_t5_free(m);
    sf_st_close(&st);
}

TEST(buckets) {
    const char *names[2] = {"model_gg", "model_relu"};
    const int nb[2] = {32, 10}, md[2] = {128, 12};
    for (int k = 0; k < 2; k++) {
        char path[1024];
        snprintf(path, sizeof path, FIX "%s.expected.safetensors", names[k]);
        sf_st st;
        CHECK(sf_st_open(&st, path) == 0);
        const sf_tensor_info *t = sf_st_find(&st, "buckets");
        CHECK(t != NULL);
        if (!t) continue;
        int64_t n = t->shape[0], R = (n - 1) / 2;
        const int32_t *b = (const int32_t *)t->data;
        int bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += sf_t5_bucket(i - R, nb[k], md[k]) != b[i];
        CHECK_MSG(bad == 0, "%s: %d buckets differ", names[k], bad);
        sf_st_close(&st);
    }
    /* the facts note's table for 32 buckets / 128 */
    CHECK(sf_t5_bucket(-7, 32, 128) == 7 && sf_t5_bucket(8, 32, 128) == 24);
    CHECK(sf_t5_bucket(-16, 32, 128) == 10 && sf_t5_bucket(-90, 32, 128) == 14);
    CHECK(sf_t5_bucket(-91, 32, 128) == 15 && sf_t5_bucket(1000, 32, 128) == 31);
}

TEST(gated_gelu_f32_sharded) {
    check_model("model_gg", "f32_sharded", "f32", SF_T5_AS_STORED);
}
TEST(gated_gelu_bf16) {
    check_model("model_gg", "bf16", "bf16", SF_T5_AS_STORED);
}
TEST(gated_gelu_f16) {
    check_model("model_gg", "f16", "f16", SF_T5_AS_STORED);
}
TEST(relu_odd_sizes) {
    check_model("model_relu", "f32", "f32", SF_T5_AS_STORED);
}

TEST(load_errors) {
    CHECK(sf_t5_load(FIX "missing", SF_T5_AS_STORED) == NULL);
    CHECK_ERR_HAS("config.json");
    /* bad configs name the key */
    const char *cfgs[3][2] = {{"{\"feed_forward_proj\": \"gated-foo\"}", "feed_forward_proj"},
                              {"{\"d_model\": -1}", "d_model"},
                              {"{\"relative_attention_max_distance\": 4}", "max_distance"}};
    for (int i = 0; i < 3; i++) {
        char dir[1024], path[1100];
        snprintf(dir, sizeof dir, "%s/t5_badcfg", SF_BINARY_DIR);
        sf_mkdirs(dir);
        snprintf(path, sizeof path, "%s/config.json", dir);
        FILE *f = fopen(path, "wb");
        fputs(cfgs[i][0], f);
        fclose(f);
        CHECK(sf_t5_load(dir, SF_T5_AS_STORED) == NULL);
        CHECK_ERR_HAS(cfgs[i][1]);
    }
    sf_t5_request r;
    CHECK(sf_t5_parse_request("last", &r) == 0 && r.what == SF_T5_LAST);
    CHECK(sf_t5_parse_request("layer:-2", &r) == 0 && r.what == SF_T5_HIDDEN && r.layer == -2);
    CHECK(sf_t5_parse_request("pooled", &r) == -1);
}

int main(void) {
    RUN(buckets);
    RUN(gated_gelu_f32_sharded);
    RUN(gated_gelu_bf16);
    RUN(gated_gelu_f16);
    RUN(relu_odd_sizes);
    RUN(load_errors);
    return test_summary();
}
