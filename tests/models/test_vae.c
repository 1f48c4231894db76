/* The FLUX VAE (AutoencoderKL) against diffusers on tiny random models
 * (fixtures/vae, tools/make_vae_fixtures.py): decode, the latents -> uint8
 * image path of FluxPipeline, the encoder; diffusers and BFL layouts, BF16
 * weights; bad checkpoints. Tolerance: max |a - b| / max |b| <= 1e-4. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/safetensors.h"
#include "saeflow/vae.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/vae/"

static double rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || d != d) md = d != d ? INFINITY : d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

typedef struct {
    sf_st st;
    const sf_tensor_info *lat, *dec, *u8, *dec_bf16, *img, *mean, *lat_enc;
    int near_half;
} expected;

static int load_expected(expected *e, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, FIX "%s/expected.safetensors", name);
    if (sf_st_open(&e->st, path)) return -1;
    e->lat = sf_st_find(&e->st, "latents");
    e->dec = sf_st_find(&e->st, "decoded");
    e->u8 = sf_st_find(&e->st, "image_u8");
    e->dec_bf16 = sf_st_find(&e->st, "decoded_bf16");
    e->img = sf_st_find(&e->st, "image");
    e->mean = sf_st_find(&e->st, "latent_mean");
    e->lat_enc = sf_st_find(&e->st, "latents_enc");
    const char *nh = sf_st_meta(&e->st, "near_half");
    e->near_half = nh ? atoi(nh) : 0;
    return e->lat && e->dec && e->u8 && e->dec_bf16 && e->img && e->mean && e->lat_enc ? 0 : -1;
}

/* decode + latents_to_image of one model against `want` (decoded) */
static void check_decode(sf_vae *v, expected *e, const sf_tensor_info *want, const char *what) {
    const int64_t *ls = e->lat->shape, *ds = want->shape;
    size_t nd = (size_t)sf_tensor_numel(want);
    float *dec = malloc(nd * sizeof(float));
    uint8_t *rgb = malloc(nd);
    CHECK(sf_vae_scale(v) * ls[2] == ds[2] && sf_vae_scale(v) * ls[3] == ds[3]);
    int rc = sf_vae_latents_to_image(v, e->lat->data, ls[0], ls[2], ls[3], rgb, dec);
    CHECK_MSG(rc == 0, "%s: %s", what, sf_errmsg());
    double err = rel_err(dec, want->data, nd);
    CHECK_MSG(err <= 1e-4, "%s: decoded rel err %g", what, err);
    fprintf(stderr, "  %s: decoded rel err %.2e\n", what, err);
    if (want == e->dec) {
        /* uint8: exact, except where 255 x sits within float rounding of .5
         * (the fixture counts those: near_half) */
        const uint8_t *ref = e->u8->data;
        int diff = 0, far = 0;
        for (size_t i = 0; i < nd; i++)
            if (rgb[i] != ref[i]) {
                diff++;
                far += abs((int)rgb[i] - (int)ref[i]) > 1;
            }
        CHECK_MSG(diff <= e->near_half && far == 0,
                  "%s: %d uint8 values differ (%d by more than 1), %d near .5", what, diff, far,
                  e->near_half);
        fprintf(stderr, "  %s: uint8 differences %d (near-half values in the fixture: %d)\n", what,
                diff, e->near_half);
    }
    free(dec), free(rgb);
}

static void check_encode(sf_vae *v, expected *e, const char *what) {
    const int64_t *is = e->img->shape;
    size_t nm = (size_t)sf_tensor_numel(e->mean);
    float *mean = malloc(nm * sizeof(float)), *lat = malloc(nm * sizeof(float));
    CHECK(sf_vae_encode(v, e->img->data, is[0], is[2], is[3], mean) == 0);
    double err = rel_err(mean, e->mean->data, nm);
    CHECK_MSG(err <= 1e-4, "%s: latent mean rel err %g", what, err);
    CHECK(sf_vae_image_to_latents(v, e->img->data, is[0], is[2], is[3], lat) == 0);
    double err2 = rel_err(lat, e->lat_enc->data, nm);
    CHECK_MSG(err2 <= 1e-4, "%s: img2img latents rel err %g", what, err2);
    fprintf(stderr, "  %s: encoder mean rel err %.2e, latents %.2e\n", what, err, err2);
    free(mean), free(lat);
}

static void model_case(const char *name, int has_bfl) {
    expected e;
    CHECK_MSG(load_expected(&e, name) == 0, "%s: %s", name, sf_errmsg());
    char path[1024];
    sf_vae_load_opts o = {1, NULL};
    /* diffusers vae/ folder, F32 */
    snprintf(path, sizeof path, FIX "%s/vae", name);
    sf_vae *v = sf_vae_load(path, &o);
    CHECK_MSG(v != NULL, "%s", sf_errmsg());
    if (v) {
        CHECK_NEAR(sf_vae_get_config(v)->scaling_factor, 0.3611f, 0);
        CHECK_NEAR(sf_vae_get_config(v)->shift_factor, 0.1159f, 0);
        check_decode(v, &e, e.dec, name);
        check_encode(v, &e, name);
        sf_vae_free(v);
    }
    /* BF16 weights */
    snprintf(path, sizeof path, FIX "%s/vae-bf16", name);
    v = sf_vae_load(path, &o);
    CHECK_MSG(v != NULL, "%s", sf_errmsg());
    if (v) {
        check_decode(v, &e, e.dec_bf16, "bf16");
        sf_vae_free(v);
    }
    /* the pipeline folder (finds vae/), decoder only */
    snprintf(path, sizeof path, FIX "%s", name);
    v = sf_vae_load(path, NULL);
    CHECK_MSG(v != NULL, "%s", sf_errmsg());
    if (v) {
        check_decode(v, &e, e.dec, "pipeline folder");
        float x;
        CHECK(sf_vae_encode(v, e.img->data, 1, 16, 16, &x) == -1);
        CHECK_ERR_HAS("encoder was not loaded");
        sf_vae_free(v);
    }
    if (has_bfl) { /* BFL ae.safetensors with this model's config */
        sf_vae_config cfg;
        snprintf(path, sizeof path, FIX "%s/vae/config.json", name);
        CHECK(sf_vae_config_read(path, &cfg) == 0);
        sf_vae_load_opts ob = {1, &cfg};
        snprintf(path, sizeof path, FIX "%s/ae.safetensors", name);
        v = sf_vae_load(path, &ob);
        CHECK_MSG(v != NULL, "%s", sf_errmsg());
        if (v) {
            check_decode(v, &e, e.dec, "BFL ae.safetensors");
            check_encode(v, &e, "BFL ae.safetensors");
            sf_vae_free(v);
        }
    }
    sf_st_close(&e.st);
}

TEST(vae_tiny) {
    model_case("tiny", 1);
}

/* 272 latent pixels: the mid-block attention runs in several query blocks */
TEST(vae_attention_blocks) {
    sf_st st;
    CHECK(sf_st_open(&st, FIX "tiny/expected_big.safetensors") == 0);
    const sf_tensor_info *z = sf_st_find(&st, "latents"), *want = sf_st_find(&st, "decoded");
    sf_vae *v = sf_vae_load(FIX "tiny/vae", NULL);
    CHECK(v && z && want);
    if (v && z && want) {
        size_t n = (size_t)sf_tensor_numel(want);
        float *dec = malloc(n * sizeof(float));
        for (int t = 1; t <= 2; t++) {
            sf_kernels_set_threads(t);
            CHECK(sf_vae_latents_to_image(v, z->data, 1, z->shape[2], z->shape[3], NULL, dec) == 0);
            double err = rel_err(dec, want->data, n);
            CHECK_MSG(err <= 1e-4, "%d threads: rel err %g", t, err);
            fprintf(stderr, "  17x16 latents, %d threads: decoded rel err %.2e\n", t, err);
        }
        free(dec);
    }
    sf_vae_free(v);
    sf_st_close(&st);
}

TEST(vae_flux16) {
    model_case("flux16", 0);
}

TEST(flux_config) {
    sf_vae_config c;
    sf_vae_config_flux(&c);
    CHECK(c.latent_channels == 16 && c.n_blocks == 4 && c.block_out[0] == 128 &&
          c.block_out[3] == 512 && c.layers_per_block == 2 && c.norm_num_groups == 32 &&
          !c.use_quant_conv && !c.use_post_quant_conv);
}

/* Writes `src` minus tensor `drop` (or with `reshape` given a new first dim). */
static void rewrite(const char *src, const char *dst, const char *drop, const char *reshape) {
    sf_st st;
    CHECK(sf_st_open(&st, src) == 0);
    sf_st_writer *w = sf_stw_new();
    for (int i = 0; i < st.n_tensors; i++) {
        const sf_tensor_info *t = &st.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        int64_t shape[SF_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int ndim = t->ndim;
        if (reshape && !strcmp(t->name, reshape)) { /* same bytes, flattened to 1-D */
            shape[0] = sf_tensor_numel(t);
            ndim = 1;
        }
        sf_stw_add(w, t->name, t->dtype, ndim, shape, t->data);
    }
    CHECK(sf_stw_write(w, dst) == 0);
    sf_stw_free(w);
    sf_st_close(&st);
}

TEST(bad_inputs) {
    const char *tmp = test_tmpdir("vae_bad");
    char path[2200];
    sf_vae_config cfg;
    CHECK(sf_vae_config_read(FIX "tiny/vae/config.json", &cfg) == 0);
    sf_vae_load_opts o = {1, &cfg};
    /* the tiny ae.safetensors with FLUX's config (no config.json): shape error */
    CHECK(sf_vae_load(FIX "tiny/ae.safetensors", NULL) == NULL);
    CHECK_ERR_HAS("decoder.conv_in.weight");
    CHECK_ERR_HAS("expected [512,16,3,3]");
    /* a missing tensor */
    snprintf(path, sizeof path, "%s/missing.safetensors", tmp);
    rewrite(FIX "tiny/ae.safetensors", path, "decoder.up.1.block.0.nin_shortcut.weight", NULL);
    CHECK(sf_vae_load(path, &o) == NULL);
    CHECK_ERR_HAS("decoder.up.1.block.0.nin_shortcut.weight");
    CHECK_ERR_HAS("missing.safetensors");
    /* a wrong shape */
    snprintf(path, sizeof path, "%s/shape.safetensors", tmp);
    rewrite(FIX "tiny/ae.safetensors", path, NULL, "decoder.mid.attn_1.q.weight");
    CHECK(sf_vae_load(path, &o) == NULL);
    CHECK_ERR_HAS("decoder.mid.attn_1.q.weight");
    CHECK_ERR_HAS("expected [16,16,1,1]");
    /* not a VAE */
    snprintf(path, sizeof path, "%s/empty.safetensors", tmp);
    rewrite(FIX "tiny/ae.safetensors", path, "decoder.conv_in.weight", NULL);
    CHECK(sf_vae_load(path, &o) == NULL);
    CHECK_ERR_HAS("no VAE decoder");
    /* configs */
    static const struct {
        const char *json, *err;
    } bad[] = {
        {"{\"block_out_channels\": [8, 12], \"norm_num_groups\": 8}", "not a positive multiple"},
        {"{\"up_block_types\": [\"UpDecoderBlock2D\", \"AttnUpDecoderBlock2D\"], "
         "\"block_out_channels\": [32, 32]}",
         "only UpDecoderBlock2D"},
        {"{\"act_fn\": \"gelu\"}", "act_fn gelu"},
        {"{\"latent_channels\": 2.5}", "latent_channels"},
        {"{\"_class_name\": \"AutoencoderTiny\"}", "not AutoencoderKL"},
        {"[1]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(path, sizeof path, "%s/config.json", tmp);
        FILE *f = fopen(path, "w");
        fputs(bad[i].json, f);
        fclose(f);
        sf_vae_config c;
        CHECK_MSG(sf_vae_config_read(path, &c) == -1, "%s", bad[i].json);
        CHECK_ERR_HAS(bad[i].err);
    }
    /* bad sizes */
    sf_vae *v = sf_vae_load(FIX "tiny/vae", NULL);
    CHECK(v != NULL);
    if (v) {
        float z[4] = {0}, out[4];
        CHECK(sf_vae_decode(v, z, 0, 1, 1, out) == -1);
        CHECK_ERR_HAS("out of range");
        CHECK(sf_vae_decode(v, z, 1, -1, 1, out) == -1);
        sf_vae_free(v);
    }
}

int main(void) {
    RUN(flux_config);
    RUN(vae_tiny);
    RUN(vae_attention_blocks);
    RUN(vae_flux16);
    RUN(bad_inputs);
    return test_summary();
}
