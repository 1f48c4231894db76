/* FLUX transformer against diffusers' outputs (fixtures/flux, made by
 * tools/make_flux_fixtures.py). Error norm: max |ours - theirs| over a
 * tensor divided by max |theirs| over the same tensor (the activations' scale:
 * an elementwise relative error would blow up on entries near zero); must be
 * <= 1e-4. Deltas are compared to the fixture's output - input. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/flux.h"
#include "saeflow/flux_sched.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define TOL 1e-4
#define FIX SF_SOURCE_DIR "/fixtures/flux/"

typedef struct {
    sf_st st;
    sf_flux_inputs in;
    float *packed; /* from latents, when the fixture has them */
} expected;

static const float *get(const sf_st *st, const char *name) {
    const sf_tensor_info *t = sf_st_find(st, name);
    return t ? (const float *)t->data : NULL;
}

static int load_expected(expected *e, const char *name) {
    memset(e, 0, sizeof *e);
    char path[1024];
    snprintf(path, sizeof path, FIX "%s.expected.safetensors", name);
    if (sf_st_open(&e->st, path)) return -1;
    const sf_tensor_info *hs = sf_st_find(&e->st, "hidden_states"),
                         *ehs = sf_st_find(&e->st, "encoder_hidden_states");
    e->in.B = hs->shape[0], e->in.N = hs->shape[1], e->in.T = ehs->shape[1];
    e->in.img = get(&e->st, "hidden_states");
    e->in.txt = get(&e->st, "encoder_hidden_states");
    e->in.pooled = get(&e->st, "pooled_projections");
    e->in.timestep = get(&e->st, "timestep");
    e->in.guidance = get(&e->st, "guidance");
    e->in.img_ids = get(&e->st, "img_ids");
    e->in.txt_ids = get(&e->st, "txt_ids");
    return 0;
}

/* The fixture's value for request r (delta: out - in), malloc'd. */
static float *want(const expected *e, const sf_flux_request *r, int64_t rows, int64_t D) {
    const int64_t B = e->in.B, T = e->in.T, N = e->in.N, L = T + N;
    char on[128], in[128];
    if (r->site == SF_FLUX_OUTPUT) {
        const sf_tensor_info *t = sf_st_find(&e->st, "output");
        float *o = malloc(t->nbytes);
        memcpy(o, t->data, t->nbytes);
        return o;
    }
    if (r->site == SF_FLUX_DOUBLE) {
        snprintf(on, sizeof on, "transformer_blocks.%d.out.%d", r->block, (int)r->stream);
        snprintf(in, sizeof in, "transformer_blocks.%d.in.%d", r->block, (int)r->stream);
    } else {
        snprintf(on, sizeof on, "single_transformer_blocks.%d.out", r->block);
        snprintf(in, sizeof in, "single_transformer_blocks.%d.in", r->block);
    }
    const float *po = get(&e->st, on), *pi = get(&e->st, in);
    if (!po || !pi) return NULL;
    int64_t Ls = r->site == SF_FLUX_DOUBLE ? rows : L,
            r0 = r->site == SF_FLUX_SINGLE && r->stream == SF_FLUX_IMAGE ? T : 0;
    float *o = malloc((size_t)(B * rows * D) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < rows * D; i++) {
            int64_t k = (b * Ls + r0) * D + i;
            o[b * rows * D + i] = po[k] - (r->delta ? pi[k] : 0.0f);
        }
    return o;
}

/* Every hook (both streams, single-block parts, deltas) and the output in
 * one forward, each against the fixture. */
static void check_all(const sf_flux *m, const expected *e, const char *what) {
    const sf_flux_config *c = sf_flux_get_config(m);
    sf_flux_request req[128];
    int n = 0;
    for (int d = 0; d < 2; d++) {
        for (int i = 0; i < c->num_layers; i++)
            for (int s = 0; s < 2; s++)
                req[n++] = (sf_flux_request){SF_FLUX_DOUBLE, i, (sf_flux_stream)s, d};
        for (int i = 0; i < c->num_single_layers; i++)
            for (int s = 0; s < 3; s++)
                req[n++] = (sf_flux_request){SF_FLUX_SINGLE, i, (sf_flux_stream)s, d};
    }
    req[n++] = (sf_flux_request){SF_FLUX_OUTPUT, 0, 0, 0};
    float *out[128];
    for (int i = 0; i < n; i++) {
        int64_t rows = sf_flux_request_rows(m, &req[i], e->in.N, e->in.T);
        CHECK(rows > 0);
        out[i] = calloc((size_t)(e->in.B * rows * sf_flux_request_width(m, &req[i])), 4);
    }
    int rc = sf_flux_forward(m, &e->in, n, req, out);
    CHECK_MSG(rc == 0, "%s", sf_errmsg());
    for (int i = 0; i < n && rc == 0; i++) {
        int64_t rows = sf_flux_request_rows(m, &req[i], e->in.N, e->in.T),
                D = sf_flux_request_width(m, &req[i]);
        float *w = want(e, &req[i], rows, D);
        char name[128];
        sf_flux_request_name(&req[i], name, sizeof name);
        CHECK_MSG(w != NULL, "%s: %s missing from the fixture", what, name);
        if (!w) continue;
        double err = test_max_rel(out[i], w, (size_t)(e->in.B * rows * D));
        CHECK_MSG(err <= TOL, "%s %s: rel err %.3g", what, name, err);
        free(w);
    }
    for (int i = 0; i < n; i++)
        free(out[i]);
}

TEST(config_a_diffusers) {
    expected e;
    CHECK(load_expected(&e, "a") == 0);
    /* the packing and the ids the pipeline makes */
    const sf_tensor_info *lat = sf_st_find(&e.st, "latents");
    CHECK(lat && lat->ndim == 4);
    float *packed = malloc((size_t)(e.in.B * e.in.N * 16) * sizeof(float));
    sf_flux_pack_latents(lat->data, lat->shape[0], lat->shape[1], lat->shape[2], lat->shape[3],
                         packed);
    CHECK(memcmp(packed, e.in.img, (size_t)(e.in.B * e.in.N * 16) * sizeof(float)) == 0);
    float *back = malloc(lat->nbytes);
    sf_flux_unpack_latents(packed, lat->shape[0], lat->shape[1], lat->shape[2], lat->shape[3],
                           back);
    CHECK(memcmp(back, lat->data, lat->nbytes) == 0);
    float ids[16 * 3];
    sf_flux_image_ids(lat->shape[2] / 2, lat->shape[3] / 2, ids);
    CHECK(memcmp(ids, e.in.img_ids, sizeof ids) == 0);
    free(packed), free(back);

    sf_flux *m = sf_flux_load(FIX "a", NULL); /* pipeline root: transformer/ inside */
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (m) {
        const sf_flux_config *c = sf_flux_get_config(m);
        CHECK(c->dim == 32 && c->heads == 2 && c->num_layers == 2 && c->num_single_layers == 2);
        CHECK(!c->guidance && !c->bfl && c->n_axes == 3 && c->axes_dim[1] == 6);
        check_all(m, &e, "a");
        /* txt_ids NULL means zeros */
        sf_flux_inputs in = e.in;
        in.txt_ids = NULL;
        sf_flux_request r = {SF_FLUX_OUTPUT, 0, 0, 0};
        float *o = malloc((size_t)(e.in.B * e.in.N * 16) * sizeof(float));
        CHECK(sf_flux_forward(m, &in, 1, &r, &o) == 0);
        CHECK(test_max_rel(o, get(&e.st, "output"), (size_t)(e.in.B * e.in.N * 16)) <= TOL);
        free(o);
        /* a schnell model refuses guidance */
        in.guidance = in.timestep;
        CHECK(sf_flux_forward(m, &in, 1, &r, &o) == -1);
        CHECK_ERR_HAS("guidance");
        sf_flux_free(m);
    }
    sf_st_close(&e.st);
}

TEST(config_b_sharded_guidance) {
    expected e;
    CHECK(load_expected(&e, "b") == 0);
    sf_flux *m = sf_flux_load(FIX "b/transformer", NULL);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (m) {
        const sf_flux_config *c = sf_flux_get_config(m);
        CHECK(c->guidance && c->dim == 40 && c->axes_dim[0] == 4 && c->axes_dim[1] == 10);
        check_all(m, &e, "b");
        sf_flux_inputs in = e.in;
        in.guidance = NULL;
        sf_flux_request r = {SF_FLUX_DOUBLE, 0, SF_FLUX_IMAGE, 0};
        float *o = malloc((size_t)(e.in.B * e.in.N * 40) * sizeof(float));
        CHECK(sf_flux_forward(m, &in, 1, &r, &o) == -1);
        CHECK_ERR_HAS("guidance is required");
        free(o);
        sf_flux_free(m);
    }
    sf_st_close(&e.st);
}

static void write_bfl_variant(const char *path, const char *drop, const char *shrink, int strip);

TEST(bfl_single_file) {
    expected e;
    CHECK(load_expected(&e, "a") == 0);
    /* the RoPE axes are not in the weights: head dim 16 needs them given */
    CHECK(sf_flux_load(FIX "a_bfl.safetensors", NULL) == NULL);
    CHECK_ERR_HAS("--axes");
    sf_flux_load_opts o = {.n_axes = 3, .axes_dim = {4, 6, 6}};
    sf_flux *m = sf_flux_load(FIX "a_bfl.safetensors", &o);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (m) {
        const sf_flux_config *c = sf_flux_get_config(m);
        CHECK(c->bfl && c->dim == 32 && c->heads == 2 && c->mlp == 128 && c->in_channels == 16);
        CHECK(c->num_layers == 2 && c->num_single_layers == 2 && c->joint_dim == 32);
        CHECK(c->pooled_dim == 24 && !c->guidance);
        check_all(m, &e, "a_bfl");
        sf_flux_free(m);
    }
    /* the same file without the "model.diffusion_model." prefix */
    char path[2200];
    snprintf(path, sizeof path, "%s/noprefix.safetensors", test_tmpdir("flux_bfl"));
    write_bfl_variant(path, NULL, NULL, 1);
    m = sf_flux_load(path, &o);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (m) {
        check_all(m, &e, "a_bfl without prefix");
        sf_flux_free(m);
    }
    /* an F32 file held as BF16 or F16 still runs; the rounded weights move the
     * output by about the format's precision (BF16 2^-8, F16 2^-11) */
    const sf_dtype held[2] = {SF_DT_BF16, SF_DT_F16};
    const double lim[2] = {0.05, 0.01};
    for (int k = 0; k < 2; k++) {
        o.dtype = held[k];
        m = sf_flux_load(FIX "a_bfl.safetensors", &o);
        CHECK_MSG(m != NULL, "%s", sf_errmsg());
        if (!m) continue;
        sf_flux_request r = {SF_FLUX_OUTPUT, 0, 0, 0};
        size_t n = (size_t)(e.in.B * e.in.N * 16);
        float *out = malloc(n * sizeof(float));
        CHECK(sf_flux_forward(m, &e.in, 1, &r, &out) == 0);
        double err = test_max_rel(out, get(&e.st, "output"), n);
        CHECK_MSG(err > 0 && err < lim[k], "%s-held rel err %.3g", sf_dtype_name(held[k]), err);
        free(out);
        sf_flux_free(m);
    }
    sf_st_close(&e.st);
}

TEST(bf16_weights) {
    expected e;
    CHECK(load_expected(&e, "a_bf16") == 0);
    sf_flux *m = sf_flux_load(FIX "a_bf16", NULL); /* as stored: BF16 */
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (m) {
        check_all(m, &e, "a_bf16");
        sf_flux_free(m);
    }
    sf_flux_load_opts o = {.dtype = SF_DT_F32};
    m = sf_flux_load(FIX "a_bf16", &o); /* widened to F32: the same numbers */
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (m) {
        check_all(m, &e, "a_bf16 as f32");
        sf_flux_free(m);
    }
    sf_st_close(&e.st);
}

/* FP8 (E4M3) matrices + BF16 vectors in the BFL layout: widened exactly
 * (to BF16 as stored, or to F32), so diffusers' F32 forward on the same
 * values is matched to F32 rounding. */
TEST(fp8_weights) {
    expected e;
    CHECK(load_expected(&e, "a_fp8") == 0);
    const sf_dtype dts[2] = {0, SF_DT_F32};
    for (int k = 0; k < 2; k++) {
        sf_flux_load_opts o = {.dtype = dts[k], .n_axes = 3, .axes_dim = {4, 6, 6}};
        sf_flux *m = sf_flux_load(FIX "a_fp8.safetensors", &o);
        CHECK_MSG(m != NULL, "%s", sf_errmsg());
        if (m) {
            check_all(m, &e, k ? "a_fp8 as f32" : "a_fp8");
            sf_flux_free(m);
        }
    }
    sf_st_close(&e.st);
}

/* Only the blocks a request needs run: a hook at transformer_blocks.0 gives
 * the same numbers alone as with the output requested too. */
TEST(early_exit_same_values) {
    expected e;
    CHECK(load_expected(&e, "a") == 0);
    sf_flux *m = sf_flux_load(FIX "a", NULL);
    CHECK(m != NULL);
    if (m) {
        sf_flux_request r = {SF_FLUX_DOUBLE, 0, SF_FLUX_IMAGE, 1};
        size_t n = (size_t)(e.in.B * e.in.N * 32);
        float *o = malloc(n * sizeof(float));
        CHECK(sf_flux_forward(m, &e.in, 1, &r, &o) == 0);
        float *w = want(&e, &r, e.in.N, 32);
        CHECK(test_max_rel(o, w, n) <= TOL);
        sf_flux_free(m);
        /* loaded for that hook only: the same values; later hooks refused */
        sf_flux_load_opts lo = {.only = &r, .n_only = 1};
        m = sf_flux_load(FIX "a", &lo);
        CHECK_MSG(m != NULL, "%s", sf_errmsg());
        if (m) {
            memset(o, 0, n * sizeof(float));
            CHECK(sf_flux_forward(m, &e.in, 1, &r, &o) == 0);
            CHECK(test_max_rel(o, w, n) <= TOL);
            sf_flux_request later = {SF_FLUX_SINGLE, 0, SF_FLUX_BOTH, 0};
            CHECK(sf_flux_forward(m, &e.in, 1, &later, &o) == -1);
            CHECK_ERR_HAS("earlier hooks only");
            CHECK(sf_flux_request_rows(m, &later, e.in.N, e.in.T) == -1);
            sf_flux_free(m);
        }
        sf_flux_request bad = {SF_FLUX_DOUBLE, 9, SF_FLUX_TEXT, 0};
        lo.only = &bad;
        CHECK(sf_flux_load(FIX "a", &lo) == NULL);
        CHECK_ERR_HAS("transformer_blocks.9");
        free(o), free(w);
    }
    sf_st_close(&e.st);
}

/* Edit callback: checks every block's view against the fixture's block
 * outputs (both streams, double and single blocks), then (add != 0) adds a
 * constant to feature 0 of the image rows of transformer_blocks.0. */
typedef struct {
    const expected *e;
    float add;
    int calls, bad, fail_at;
    double err;
} edit_ctx;

static int edit_check(void *ctx, const sf_flux_block_view *v) {
    edit_ctx *c = ctx;
    c->calls++;
    if (c->fail_at == c->calls) return sf_error("stop here");
    if (c->add == 0) {
        for (int s = 0; s < 2; s++) {
            char name[128];
            if (v->site == SF_FLUX_DOUBLE)
                snprintf(name, sizeof name, "transformer_blocks.%d.out.%d", v->block, s);
            else
                snprintf(name, sizeof name, "single_transformer_blocks.%d.out", v->block);
            const float *w = get(&c->e->st, name);
            if (!w) {
                c->bad++;
                continue;
            }
            const int64_t rows = s ? v->N : v->T, L = v->T + v->N;
            for (int64_t b = 0; b < v->B; b++) {
                const float *p = (s ? v->img : v->txt) + b * (s ? v->img_stride : v->txt_stride);
                const float *q = v->site == SF_FLUX_DOUBLE ? w + b * rows * v->D
                                                           : w + (b * L + (s ? v->T : 0)) * v->D;
                double e = test_max_rel(p, q, (size_t)(rows * v->D));
                if (e > c->err) c->err = e;
            }
        }
    } else if (v->site == SF_FLUX_DOUBLE && v->block == 0) {
        for (int64_t b = 0; b < v->B; b++)
            for (int64_t i = 0; i < v->N * v->D; i += v->D)
                v->img[b * v->img_stride + i] += c->add; /* feature 0 (a constant over
                                                            all features would vanish in LN) */
    }
    return 0;
}

TEST(edit_in_place) {
    expected e;
    CHECK(load_expected(&e, "a") == 0);
    sf_flux *m = sf_flux_load(FIX "a", NULL);
    CHECK(m != NULL);
    if (!m) return;
    const int64_t B = e.in.B, N = e.in.N, D = 32;
    sf_flux_request r[2] = {{SF_FLUX_DOUBLE, 0, SF_FLUX_IMAGE, 0}, {SF_FLUX_OUTPUT, 0, 0, 0}};
    float *o0 = malloc((size_t)(B * N * D) * sizeof(float)),
          *o1 = malloc((size_t)(B * N * 16) * sizeof(float)), *out[2] = {o0, o1};
    /* views: every block, both streams, equal to diffusers' block outputs */
    edit_ctx c = {&e, 0, 0, 0, 0, 0};
    e.in.edit = edit_check, e.in.edit_ctx = &c;
    CHECK_MSG(sf_flux_forward(m, &e.in, 2, r, out) == 0, "%s", sf_errmsg());
    CHECK(c.calls == 4 && c.bad == 0);
    CHECK_MSG(c.err <= TOL, "view rel err %.3g", c.err);
    CHECK(test_max_rel(o1, get(&e.st, "output"), (size_t)(B * N * 16)) <= TOL);
    /* an edit is seen by the hook of that block and changes the output */
    edit_ctx c2 = {&e, 0.5f, 0, 0, 0, 0};
    e.in.edit_ctx = &c2;
    CHECK(sf_flux_forward(m, &e.in, 2, r, out) == 0);
    const float *w0 = get(&e.st, "transformer_blocks.0.out.1");
    double md = 0;
    for (int64_t i = 0; i < B * N * D; i++)
        md = fmax(md, fabs(o0[i] - (w0[i] + (i % D ? 0.0f : 0.5f))));
    CHECK_MSG(md < 1e-4, "hook after edit: %.3g", md);
    CHECK(test_max_rel(o1, get(&e.st, "output"), (size_t)(B * N * 16)) > 1e-3);
    /* a failing edit aborts the forward with its message */
    edit_ctx c3 = {&e, 0, 0, 0, 3, 0};
    e.in.edit_ctx = &c3;
    CHECK(sf_flux_forward(m, &e.in, 2, r, out) == -1);
    CHECK_ERR_HAS("single_transformer_blocks.0");
    CHECK_ERR_HAS("stop here");
    free(o0), free(o1);
    sf_flux_free(m);
    sf_st_close(&e.st);
}

TEST(parse_requests) {
    sf_flux_request r;
    char buf[128];
    CHECK(sf_flux_parse_request("transformer_blocks.18.1", &r) == 0);
    CHECK(r.site == SF_FLUX_DOUBLE && r.block == 18 && r.stream == SF_FLUX_IMAGE && !r.delta);
    CHECK(sf_flux_parse_request("transformer_blocks.0-0", &r) ==
          0); /* the reference's loc-stream */
    CHECK(r.block == 0 && r.stream == SF_FLUX_TEXT);
    CHECK(sf_flux_parse_request("transformer_blocks.3:image:delta", &r) == 0);
    CHECK(r.stream == SF_FLUX_IMAGE && r.delta);
    sf_flux_request_name(&r, buf, sizeof buf);
    CHECK_STR(buf, "transformer_blocks.3.1:delta");
    CHECK(sf_flux_parse_request("single_transformer_blocks.37", &r) == 0);
    CHECK(r.site == SF_FLUX_SINGLE && r.block == 37 && r.stream == SF_FLUX_BOTH);
    sf_flux_request_name(&r, buf, sizeof buf);
    CHECK_STR(buf, "single_transformer_blocks.37");
    CHECK(sf_flux_parse_request("single_transformer_blocks.9:text:delta", &r) == 0);
    sf_flux_request_name(&r, buf, sizeof buf);
    CHECK_STR(buf, "single_transformer_blocks.9:text:delta");
    CHECK(sf_flux_parse_request("output", &r) == 0 && r.site == SF_FLUX_OUTPUT);
    CHECK(sf_flux_parse_request("transformer_blocks.2", &r) == -1);
    CHECK_ERR_HAS("two streams");
    CHECK(sf_flux_parse_request("transformer_blocks.x.0", &r) == -1);
    CHECK(sf_flux_parse_request("single_transformer_blocks.1:foo", &r) == -1);
    CHECK_ERR_HAS("not understood");
}

/* ---- bad checkpoints ---------------------------------------------------- */

static void copy_dir(const char *src, const char *dst) {
    char cmd[3 * 4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dst, src, dst);
    CHECK(system(cmd) == 0);
}

/* a_bfl.safetensors rewritten without `drop`, or with `shrink` one element
 * shorter along dim 0, or without the "model.diffusion_model." prefix. */
static void write_bfl_variant(const char *path, const char *drop, const char *shrink, int strip) {
    sf_st st;
    CHECK(sf_st_open(&st, FIX "a_bfl.safetensors") == 0);
    sf_st_writer *w = sf_stw_new();
    for (int i = 0; i < st.n_tensors; i++) {
        const sf_tensor_info *t = &st.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        int64_t shape[SF_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (shrink && !strcmp(t->name, shrink)) shape[0]--;
        const char *name = t->name;
        if (strip && !strncmp(name, "model.diffusion_model.", 22)) name += 22;
        sf_stw_add(w, name, t->dtype, t->ndim, shape, t->data);
    }
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    sf_st_close(&st);
}

TEST(bad_checkpoints) {
    const char *tmp = test_tmpdir("flux_bad");
    char dir[2200], path[2400], cmd[5000];
    sf_flux_load_opts o = {.n_axes = 3, .axes_dim = {4, 6, 6}};

    /* missing tensor */
    snprintf(path, sizeof path, "%s/missing.safetensors", tmp);
    write_bfl_variant(path, "model.diffusion_model.double_blocks.1.txt_mlp.2.weight", NULL, 0);
    CHECK(sf_flux_load(path, &o) == NULL);
    CHECK_ERR_HAS("double_blocks.1.txt_mlp.2.weight");
    CHECK_ERR_HAS("missing.safetensors");

    /* wrong shape */
    snprintf(path, sizeof path, "%s/shape.safetensors", tmp);
    write_bfl_variant(path, NULL, "model.diffusion_model.single_blocks.0.linear2.bias", 0);
    CHECK(sf_flux_load(path, &o) == NULL);
    CHECK_ERR_HAS("single_blocks.0.linear2.bias");
    CHECK_ERR_HAS("[32]");
    CHECK_ERR_HAS("[31]");

    /* truncated shard */
    snprintf(dir, sizeof dir, "%s/trunc", tmp);
    copy_dir(FIX "b/transformer", dir);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model-00002-of-00005.safetensors", dir);
    CHECK(truncate(path, 50000) == 0);
    CHECK(sf_flux_load(dir, NULL) == NULL);
    CHECK_ERR_HAS("diffusion_pytorch_model-00002-of-00005.safetensors");

    /* a shard listed in the index is missing */
    snprintf(dir, sizeof dir, "%s/noshard", tmp);
    copy_dir(FIX "b/transformer", dir);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model-00003-of-00005.safetensors", dir);
    CHECK(unlink(path) == 0);
    CHECK(sf_flux_load(dir, NULL) == NULL);
    CHECK_ERR_HAS("diffusion_pytorch_model-00003-of-00005.safetensors");

    /* config.json and weights disagree: more layers than stored, fewer than
     * stored, another head split */
    static const struct {
        const char *from, *to, *msg;
    } cfgs[] = {
        {"\"num_layers\": 2", "\"num_layers\": 3", "transformer_blocks.2."},
        {"\"num_single_layers\": 2", "\"num_single_layers\": 1", "more blocks"},
        {"\"attention_head_dim\": 20", "\"attention_head_dim\": 10", "axes_dims_rope"},
        {"\"joint_attention_dim\": 40", "\"joint_attention_dim\": 41", "context_embedder.weight"},
        {"\"guidance_embeds\": true", "\"guidance_embeds\": 3", "guidance_embeds"},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
        snprintf(dir, sizeof dir, "%s/cfg%zu", tmp, i);
        copy_dir(FIX "b/transformer", dir);
        snprintf(cmd, sizeof cmd, "sed -i 's/%s/%s/' '%s/config.json'", cfgs[i].from, cfgs[i].to,
                 dir);
        CHECK(system(cmd) == 0);
        CHECK(sf_flux_load(dir, NULL) == NULL);
        CHECK_ERR_HAS(cfgs[i].msg);
    }

    /* not a FLUX checkpoint at all */
    CHECK(sf_flux_load(SF_SOURCE_DIR "/fixtures/clip/tiny", NULL) == NULL);
    CHECK_ERR_HAS("not a FLUX transformer");
    CHECK(sf_flux_load(FIX "does-not-exist", NULL) == NULL);
}

TEST(bad_requests) {
    expected e;
    CHECK(load_expected(&e, "a") == 0);
    sf_flux *m = sf_flux_load(FIX "a", NULL);
    CHECK(m != NULL);
    if (m) {
        sf_flux_request r = {SF_FLUX_DOUBLE, 2, SF_FLUX_TEXT, 0};
        CHECK(sf_flux_request_rows(m, &r, 16, 7) == -1);
        CHECK_ERR_HAS("2 double blocks");
        r = (sf_flux_request){SF_FLUX_DOUBLE, 0, SF_FLUX_BOTH, 0};
        CHECK(sf_flux_request_rows(m, &r, 16, 7) == -1);
        r = (sf_flux_request){SF_FLUX_SINGLE, 5, SF_FLUX_BOTH, 0};
        float *o = NULL;
        CHECK(sf_flux_forward(m, &e.in, 1, &r, &o) == -1);
        CHECK_ERR_HAS("single_transformer_blocks.5");
        sf_flux_inputs in = e.in;
        in.img_ids = NULL;
        CHECK(sf_flux_forward(m, &in, 0, NULL, NULL) == -1);
        sf_flux_free(m);
    }
    sf_st_close(&e.st);
}

int main(void) {
    RUN(parse_requests);
    RUN(config_a_diffusers);
    RUN(config_b_sharded_guidance);
    RUN(bfl_single_file);
    RUN(bf16_weights);
    RUN(fp8_weights);
    RUN(early_exit_same_values);
    RUN(edit_in_place);
    RUN(bad_checkpoints);
    RUN(bad_requests);
    return test_summary();
}
