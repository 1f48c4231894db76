/* The FLUX VAE (diffusers AutoencoderKL) on the kernel layer.
 *
 * Activations are NHWC (B, H, W, C) inside (kernels.h "convolution"):
 * convs are im2col + GEMM, the mid-block attention's projections are
 * Linear layers on the (B*H*W, C) pixel matrix as they are. Latents and
 * images cross the API in torch's NCHW.
 *
 * Three activation buffers of the largest B*H*W*C any step needs rotate
 * through the network; a resnet with equal in/out channels adds conv2's
 * output onto its input in place (the residual folded into the GEMM's
 * beta = 1), like torch's `input + hidden` but without a fourth buffer.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "saeflow/config.h"
#include "saeflow/vae.h"
#include "models/internal.h"

#define VAE_EPS 1e-6f

typedef struct {
    int cin, cout;
    const float *n1w, *n1b, *n2w, *n2b;
    sf_conv2d_w conv1, conv2, shortcut; /* shortcut.w NULL when cin == cout */
} vae_resnet;

typedef struct {
    int C;
    const float *gnw, *gnb;
    sf_weight q, k, v, o; /* (C, C) Linear weights (BFL: 1x1 convs viewed 2-D) */
    const float *qb, *kb, *vb, *ob;
} vae_attn;

typedef struct {
    vae_resnet res[2];
    vae_attn attn;
    int has_attn;
} vae_mid;

typedef struct {
    int nres;
    vae_resnet *res;
    sf_conv2d_w resample; /* decoder: upsampler conv; encoder: downsampler; w NULL if none */
} vae_block;

typedef struct {
    int present;
    sf_conv2d_w conv_in, conv_out, quant; /* quant: (post_)quant_conv, w NULL if none */
    vae_mid mid;
    vae_block *blocks; /* decoder: up_blocks order; encoder: down_blocks order */
    int n_blocks;
    const float *norm_w, *norm_b;
} vae_coder;

struct sf_vae {
    sf_vae_config cfg;
    sf_wl *wl;
    int bfl; /* BFL / LDM names */
    vae_coder dec, enc;
    sf_arena *work; /* the activation buffers (vae_act), kept between calls */
};

/* ---- config -------------------------------------------------------------- */

void sf_vae_config_flux(sf_vae_config *c) {
    static const int bo[4] = {128, 256, 512, 512};
    memset(c, 0, sizeof *c);
    c->in_channels = c->out_channels = 3;
    c->latent_channels = 16;
    c->n_blocks = 4;
    memcpy(c->block_out, bo, sizeof bo);
    c->layers_per_block = 2;
    c->norm_num_groups = 32;
    c->mid_attention = 1;
    c->scaling_factor = 0.3611f;
    c->shift_factor = 0.1159f;
}

/* Every entry of a string array equals `want` (diffusers block types). */
static int cfg_types(const cJSON *o, const char *key, const char *want, int n, const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return sf_error("%s: \"%s\" must list %d block types", where, key, n);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e) || strcmp(e->valuestring, want))
            return sf_error("%s: \"%s\": only %s blocks are supported, found %s", where, key, want,
                            cJSON_IsString(e) ? e->valuestring : "(not a string)");
    }
    return 0;
}

static int config_check(const sf_vae_config *c, const char *where) {
    if (c->in_channels <= 0 || c->out_channels <= 0 || c->latent_channels <= 0 ||
        c->layers_per_block < 0 || c->layers_per_block > 64 || c->norm_num_groups <= 0)
        return sf_error("%s: channel counts, layers_per_block or norm_num_groups out of range",
                        where);
    if (c->n_blocks < 1 || c->n_blocks > SF_VAE_MAX_BLOCKS)
        return sf_error("%s: \"block_out_channels\" must have 1..%d entries", where,
                        SF_VAE_MAX_BLOCKS);
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out[i] <= 0 || c->block_out[i] > 65536 || c->block_out[i] % c->norm_num_groups)
            return sf_error("%s: block_out_channels[%d] = %d is not a positive multiple of "
                            "norm_num_groups %d",
                            where, i, c->block_out[i], c->norm_num_groups);
    if (!(c->scaling_factor != 0) || !isfinite(c->scaling_factor))
        return sf_error("%s: \"scaling_factor\" must be a nonzero number", where);
    return 0;
}

int sf_vae_config_read(const char *path, sf_vae_config *c) {
    cJSON *root = sf_cfg_load(path);
    if (!root) return -1;
    /* AutoencoderKL's class defaults */
    memset(c, 0, sizeof *c);
    c->mid_attention = 1;
    int rc = 0, quant = 1, pquant = 1, n = 0;
    const char *cls = NULL, *act = NULL;
    rc = rc ? rc : sf_cfg_str(root, "_class_name", NULL, &cls, path);
    if (!rc && cls && strcmp(cls, "AutoencoderKL"))
        rc = sf_error("%s: _class_name %s is not AutoencoderKL", path, cls);
    rc = rc ? rc : sf_cfg_int(root, "in_channels", 3, &c->in_channels, path);
    rc = rc ? rc : sf_cfg_int(root, "out_channels", 3, &c->out_channels, path);
    rc = rc ? rc : sf_cfg_int(root, "latent_channels", 4, &c->latent_channels, path);
    rc = rc ? rc : sf_cfg_int(root, "layers_per_block", 2, &c->layers_per_block, path);
    rc = rc ? rc : sf_cfg_int(root, "norm_num_groups", 32, &c->norm_num_groups, path);
    rc = rc ? rc : sf_cfg_bool(root, "use_quant_conv", 1, &quant, path);
    rc = rc ? rc : sf_cfg_bool(root, "use_post_quant_conv", 1, &pquant, path);
    rc = rc ? rc : sf_cfg_bool(root, "mid_block_add_attention", 1, &c->mid_attention, path);
    rc = rc ? rc
            : sf_cfg_float(root, "scaling_factor", 0.18215f, -INFINITY, 0, INFINITY,
                           &c->scaling_factor, path);
    rc = rc ? rc
            : sf_cfg_float(root, "shift_factor", 0.0f, -INFINITY, 0, INFINITY, &c->shift_factor,
                           path);
    rc = rc ? rc
            : sf_cfg_int_array(root, "block_out_channels", 1, 65536, c->block_out,
                               SF_VAE_MAX_BLOCKS, &n, path);
    if (!rc && !sf_cfg_has(root, "block_out_channels")) c->block_out[0] = 64, n = 1;
    c->n_blocks = n;
    c->use_quant_conv = quant, c->use_post_quant_conv = pquant;
    if (!rc && n < 1)
        rc = sf_error("%s: \"block_out_channels\" must list 1..%d channel counts", path,
                      SF_VAE_MAX_BLOCKS);
    rc = rc ? rc : cfg_types(root, "down_block_types", "DownEncoderBlock2D", n, path);
    rc = rc ? rc : cfg_types(root, "up_block_types", "UpDecoderBlock2D", n, path);
    rc = rc ? rc : sf_cfg_str(root, "act_fn", "silu", &act, path);
    if (!rc && strcmp(act, "silu"))
        rc = sf_error("%s: act_fn %s is not supported (silu)", path, act);
    cJSON_Delete(root);
    return rc ? rc : config_check(c, path);
}

/* ---- weights ------------------------------------------------------------- */

/* A conv weight (cout, cin, k, k) + bias, repacked for sf_conv2d. */
static int load_conv(sf_vae *v, sf_conv2d_w *cw, const char *name, int cout, int cin, int k,
                     int stride) {
    int64_t shape[4] = {cout, cin, k, k}, bshape[1] = {cout};
    sf_weight w;
    if (sf_wl_weight(v->wl, &w, 4, shape, "%s.weight", name)) return -1;
    const float *b = sf_wl_f32(v->wl, 1, bshape, "%s.bias", name);
    if (!b) return -1;
    return sf_conv2d_pack(cw, &w, cout, cin, k, stride, b);
}

static int load_norm(sf_vae *v, const float **w, const float **b, const char *name, int C) {
    int64_t shape[1] = {C};
    *w = sf_wl_f32(v->wl, 1, shape, "%s.weight", name);
    *b = *w ? sf_wl_f32(v->wl, 1, shape, "%s.bias", name) : NULL;
    return *b ? 0 : -1;
}

static int load_resnet(sf_vae *v, vae_resnet *r, const char *p, int cin, int cout) {
    char n[640]; /* the caller's prefix (< 512) + a suffix */
    r->cin = cin, r->cout = cout;
    snprintf(n, sizeof n, "%s.norm1", p);
    if (load_norm(v, &r->n1w, &r->n1b, n, cin)) return -1;
    snprintf(n, sizeof n, "%s.conv1", p);
    if (load_conv(v, &r->conv1, n, cout, cin, 3, 1)) return -1;
    snprintf(n, sizeof n, "%s.norm2", p);
    if (load_norm(v, &r->n2w, &r->n2b, n, cout)) return -1;
    snprintf(n, sizeof n, "%s.conv2", p);
    if (load_conv(v, &r->conv2, n, cout, cout, 3, 1)) return -1;
    if (cin != cout) {
        snprintf(n, sizeof n, "%s.%s", p, v->bfl ? "nin_shortcut" : "conv_shortcut");
        if (load_conv(v, &r->shortcut, n, cout, cin, 1, 1)) return -1;
    }
    return 0;
}

static void free_resnet(vae_resnet *r) {
    sf_conv2d_free(&r->conv1);
    sf_conv2d_free(&r->conv2);
    sf_conv2d_free(&r->shortcut);
}

static int load_attn(sf_vae *v, vae_attn *a, const char *p, int C) {
    static const char *dn[5] = {"group_norm", "to_q", "to_k", "to_v", "to_out.0"};
    static const char *bn[5] = {"norm", "q", "k", "v", "proj_out"};
    const char **nm = v->bfl ? bn : dn;
    char n[640]; /* the caller's prefix (< 512) + a suffix */
    a->C = C;
    snprintf(n, sizeof n, "%s.%s", p, nm[0]);
    if (load_norm(v, &a->gnw, &a->gnb, n, C)) return -1;
    sf_weight *w[4] = {&a->q, &a->k, &a->v, &a->o};
    const float **b[4] = {&a->qb, &a->kb, &a->vb, &a->ob};
    /* BFL's projections are 1x1 convs (C, C, 1, 1); diffusers' are Linear */
    int64_t shape[4] = {C, C, 1, 1}, bshape[1] = {C};
    for (int i = 0; i < 4; i++) {
        if (sf_wl_weight(v->wl, w[i], v->bfl ? 4 : 2, shape, "%s.%s.weight", p, nm[i + 1]))
            return -1;
        if (!(*b[i] = sf_wl_f32(v->wl, 1, bshape, "%s.%s.bias", p, nm[i + 1]))) return -1;
    }
    return 0;
}

static int load_mid(sf_vae *v, vae_mid *m, const char *side, int C) {
    char n[512];
    for (int i = 0; i < 2; i++) {
        if (v->bfl)
            snprintf(n, sizeof n, "%s.mid.block_%d", side, i + 1);
        else
            snprintf(n, sizeof n, "%s.mid_block.resnets.%d", side, i);
        if (load_resnet(v, &m->res[i], n, C, C)) return -1;
    }
    m->has_attn = v->cfg.mid_attention;
    if (!m->has_attn) return 0;
    snprintf(n, sizeof n, v->bfl ? "%s.mid.attn_1" : "%s.mid_block.attentions.0", side);
    return load_attn(v, &m->attn, n, C);
}

static void free_coder(vae_coder *c) {
    sf_conv2d_free(&c->conv_in);
    sf_conv2d_free(&c->conv_out);
    sf_conv2d_free(&c->quant);
    for (int i = 0; i < 2; i++)
        free_resnet(&c->mid.res[i]);
    for (int i = 0; i < c->n_blocks && c->blocks; i++) {
        for (int j = 0; j < c->blocks[i].nres && c->blocks[i].res; j++)
            free_resnet(&c->blocks[i].res[j]);
        free(c->blocks[i].res);
        sf_conv2d_free(&c->blocks[i].resample);
    }
    free(c->blocks);
    memset(c, 0, sizeof *c);
}

static int load_decoder(sf_vae *v) {
    const sf_vae_config *c = &v->cfg;
    vae_coder *d = &v->dec;
    const int n = c->n_blocks, top = c->block_out[n - 1];
    char nm[512];
    if (c->use_post_quant_conv &&
        load_conv(v, &d->quant, "post_quant_conv", c->latent_channels, c->latent_channels, 1, 1))
        return -1;
    if (load_conv(v, &d->conv_in, "decoder.conv_in", top, c->latent_channels, 3, 1)) return -1;
    if (load_mid(v, &d->mid, "decoder", top)) return -1;
    d->blocks = sf_calloc((size_t)n, sizeof *d->blocks);
    d->n_blocks = n;
    int prev = top;
    for (int i = 0; i < n; i++) {
        vae_block *b = &d->blocks[i];
        int out = c->block_out[n - 1 - i];
        /* BFL counts its up blocks from the output end: up.{n-1-i} */
        b->nres = c->layers_per_block + 1;
        b->res = sf_calloc((size_t)b->nres, sizeof *b->res);
        for (int j = 0; j < b->nres; j++) {
            if (v->bfl)
                snprintf(nm, sizeof nm, "decoder.up.%d.block.%d", n - 1 - i, j);
            else
                snprintf(nm, sizeof nm, "decoder.up_blocks.%d.resnets.%d", i, j);
            if (load_resnet(v, &b->res[j], nm, j ? out : prev, out)) return -1;
        }
        if (i < n - 1) {
            if (v->bfl)
                snprintf(nm, sizeof nm, "decoder.up.%d.upsample.conv", n - 1 - i);
            else
                snprintf(nm, sizeof nm, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            if (load_conv(v, &b->resample, nm, out, out, 3, 1)) return -1;
        }
        prev = out;
    }
    const char *no = v->bfl ? "decoder.norm_out" : "decoder.conv_norm_out";
    if (load_norm(v, &d->norm_w, &d->norm_b, no, c->block_out[0])) return -1;
    if (load_conv(v, &d->conv_out, "decoder.conv_out", c->out_channels, c->block_out[0], 3, 1))
        return -1;
    d->present = 1;
    return 0;
}

static int load_encoder(sf_vae *v) {
    const sf_vae_config *c = &v->cfg;
    vae_coder *e = &v->enc;
    const int n = c->n_blocks, top = c->block_out[n - 1], L2 = 2 * c->latent_channels;
    char nm[512];
    if (load_conv(v, &e->conv_in, "encoder.conv_in", c->block_out[0], c->in_channels, 3, 1))
        return -1;
    e->blocks = sf_calloc((size_t)n, sizeof *e->blocks);
    e->n_blocks = n;
    int prev = c->block_out[0];
    for (int i = 0; i < n; i++) {
        vae_block *b = &e->blocks[i];
        int out = c->block_out[i];
        b->nres = c->layers_per_block;
        b->res = sf_calloc((size_t)(b->nres ? b->nres : 1), sizeof *b->res);
        for (int j = 0; j < b->nres; j++) {
            if (v->bfl)
                snprintf(nm, sizeof nm, "encoder.down.%d.block.%d", i, j);
            else
                snprintf(nm, sizeof nm, "encoder.down_blocks.%d.resnets.%d", i, j);
            if (load_resnet(v, &b->res[j], nm, j ? out : prev, out)) return -1;
        }
        if (i < n - 1) {
            if (v->bfl)
                snprintf(nm, sizeof nm, "encoder.down.%d.downsample.conv", i);
            else
                snprintf(nm, sizeof nm, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            if (load_conv(v, &b->resample, nm, out, out, 3, 2)) return -1;
        }
        prev = out;
    }
    if (load_mid(v, &e->mid, "encoder", top)) return -1;
    const char *no = v->bfl ? "encoder.norm_out" : "encoder.conv_norm_out";
    if (load_norm(v, &e->norm_w, &e->norm_b, no, top)) return -1;
    if (load_conv(v, &e->conv_out, "encoder.conv_out", L2, top, 3, 1)) return -1;
    if (c->use_quant_conv && load_conv(v, &e->quant, "quant_conv", L2, L2, 1, 1)) return -1;
    e->present = 1;
    return 0;
}

sf_vae *sf_vae_load(const char *path, const sf_vae_load_opts *opts) {
    sf_vae_load_opts def = {0, NULL};
    if (!opts) opts = &def;
    sf_vae *v = sf_calloc(1, sizeof *v);
    v->work = sf_arena_new();
    char *dir = NULL, *cfg_path = NULL;
    /* A pipeline folder: use its vae/ */
    if (sf_is_dir(path)) {
        char *sub = sf_path_join(path, "vae");
        char *sub_cfg = sf_path_join(sub, "config.json");
        char *own_cfg = sf_path_join(path, "config.json");
        if (!sf_is_file(own_cfg) && sf_is_file(sub_cfg))
            dir = sub, sub = NULL;
        else
            dir = sf_strdup(path);
        free(sub), free(sub_cfg), free(own_cfg);
        cfg_path = sf_path_join(dir, "config.json");
        if (!sf_is_file(cfg_path)) free(cfg_path), cfg_path = NULL;
    }
    if (opts->config) {
        v->cfg = *opts->config;
        if (config_check(&v->cfg, path)) goto fail;
    } else if (cfg_path) {
        if (sf_vae_config_read(cfg_path, &v->cfg)) goto fail;
    } else {
        sf_vae_config_flux(&v->cfg);
    }
    /* As stored: conv weights are widened to F32 when repacked anyway, and
     * the attention matrices run from the file's F32/BF16/F16 in place. */
    if (!(v->wl = sf_wl_open(dir ? dir : path, SF_WL_AS_STORED))) goto fail;
    /* LDM checkpoints keep the VAE under a prefix */
    static const char *prefixes[] = {"first_stage_model.", "vae."};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
        if (sf_wl_has(v->wl, "%sdecoder.conv_in.weight", prefixes[i]) ||
            sf_wl_has(v->wl, "%sencoder.conv_in.weight", prefixes[i]))
            sf_wl_set_prefix(v->wl, prefixes[i]);
    v->bfl = sf_wl_has(v->wl, "decoder.mid.block_1.conv1.weight") ||
             sf_wl_has(v->wl, "encoder.mid.block_1.conv1.weight");
    if (!sf_wl_has(v->wl, "decoder.conv_in.weight")) {
        sf_error("%s: no VAE decoder (tensor 'decoder.conv_in.weight' not found)",
                 sf_wl_path(v->wl));
        goto fail;
    }
    if (load_decoder(v) || (opts->encoder && load_encoder(v))) goto fail;
    free(dir), free(cfg_path);
    return v;
fail:
    free(dir), free(cfg_path);
    sf_vae_free(v);
    return NULL;
}

void sf_vae_free(sf_vae *v) {
    if (!v) return;
    free_coder(&v->dec);
    free_coder(&v->enc);
    sf_wl_close(v->wl);
    sf_arena_free(v->work);
    free(v);
}

const sf_vae_config *sf_vae_get_config(const sf_vae *v) {
    return &v->cfg;
}

int sf_vae_scale(const sf_vae *v) {
    return 1 << (v->cfg.n_blocks - 1);
}

/* ---- forward ------------------------------------------------------------- */

/* Rotating activation buffers: x is the current activation, t[0], t[1]
 * scratch; each holds `cap` floats. */
typedef struct {
    float *x, *t[2];
    int64_t B, H, W, C; /* x's shape (B, H, W, C) */
    void *block;        /* the three buffers, from the model's arena */
} vae_act;

static void swap(float **a, float **b) {
    float *t = *a;
    *a = *b, *b = t;
}

static void conv_step(vae_act *a, const sf_conv2d_w *cw) {
    static const int64_t pad1[4] = {1, 1, 1, 1};
    sf_conv2d(a->x, a->B, a->H, a->W, cw, cw->k == 3 ? pad1 : NULL, a->t[0], 0);
    swap(&a->x, &a->t[0]);
    a->C = cw->cout;
}

// x (B, H, W, cin) -> (B, H, W, cout)
static void resnet_fwd(vae_act *a, const vae_resnet *r, int G) {
    static const int64_t pad1[4] = {1, 1, 1, 1};
    const int64_t B = a->B, H = a->H, W = a->W, HW = H * W;
    float *h = a->t[0], *u = a->t[1];
    sf_groupnorm(a->x, h, B, HW, r->cin, G, r->n1w, r->n1b, VAE_EPS, 1);
    sf_conv2d(h, B, H, W, &r->conv1, pad1, u, 0);
    sf_groupnorm(u, u, B, HW, r->cout, G, r->n2w, r->n2b, VAE_EPS, 1);
    /* dropout is identity at inference; output_scale_factor is 1 */
    if (r->shortcut.w) { /* h = conv_shortcut(x); h += conv2(u); x <- h */
        sf_conv2d(a->x, B, H, W, &r->shortcut, NULL, h, 0);
        sf_conv2d(u, B, H, W, &r->conv2, pad1, h, 1);
        swap(&a->x, &a->t[0]);
    } else { /* x += conv2(u) */
        sf_conv2d(u, B, H, W, &r->conv2, pad1, a->x, 1);
    }
    a->C = r->cout;
}

// diffusers Attention (1 head, group_norm, residual): x += to_out(softmax(q k^T / sqrt C) v)
static void attn_fwd(vae_act *a, const vae_attn *at, int G) {
    const int64_t B = a->B, T = a->H * a->W, C = at->C;
    float *n = a->t[0], *qkv = a->t[1]; /* n (B*T, C); qkv (B*T, 3C) */
    sf_groupnorm(a->x, n, B, T, C, G, at->gnw, at->gnb, VAE_EPS, 0);
    sf_linear(n, B * T, C, &at->q, at->qb, qkv, 3 * C, 0);
    sf_linear(n, B * T, C, &at->k, at->kb, qkv + C, 3 * C, 0);
    sf_linear(n, B * T, C, &at->v, at->vb, qkv + 2 * C, 3 * C, 0);
    /* One head: sf_attention would run it on one thread with a T x T score
     * matrix (1 GB at 1024 px, T = 16384). Blocks of queries instead, spread
     * over the threads, each against all keys: O(QB x T) scratch per call. */
    const int64_t QB = 256, nqb = (T + QB - 1) / QB;
#pragma omp parallel for schedule(dynamic, 1) collapse(2) if (B * nqb > 1 && T * T * C > 1000000)
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < nqb; i++) {
            sf_attn_shape s;
            memset(&s, 0, sizeof s);
            s.B = 1, s.Tq = T - i * QB < QB ? T - i * QB : QB, s.Tk = T, s.H = 1, s.Dh = C;
            s.ldq = s.ldk = s.ldv = 3 * C, s.ldo = C;
            s.scale = 1.0f / sqrtf((float)C);
            const float *kb = qkv + b * T * 3 * C, *qb = kb + i * QB * 3 * C;
            sf_attention(&s, qb, kb + C, kb + 2 * C, n + (b * T + i * QB) * C);
        }
    sf_linear(n, B * T, C, &at->o, at->ob, a->x, C, 1);
}

static void mid_fwd(vae_act *a, const vae_mid *m, int G) {
    resnet_fwd(a, &m->res[0], G);
    if (m->has_attn) attn_fwd(a, &m->attn, G);
    resnet_fwd(a, &m->res[1], G);
}

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

/* Floats per activation buffer: the largest B*H*W*C a decoder step holds
 * (a resnet holds max(cin, cout) channels, the attention's q/k/v 3C). */
static int64_t dec_cap(const sf_vae_config *c, int64_t B, int64_t H, int64_t W) {
    const int n = c->n_blocks, top = c->block_out[n - 1];
    int64_t m = max64(c->latent_channels, top) * H * W, prev = top;
    if (c->mid_attention) m = max64(m, 3 * top * H * W);
    for (int i = 0; i < n; i++) {
        int64_t out = c->block_out[n - 1 - i];
        m = max64(m, max64(prev, out) * H * W);
        if (i < n - 1) H *= 2, W *= 2, m = max64(m, out * H * W);
        prev = out;
    }
    return B * max64(m, (int64_t)c->out_channels * H * W);
}

static int64_t enc_cap(const sf_vae_config *c, int64_t B, int64_t H, int64_t W) {
    const int n = c->n_blocks, top = c->block_out[n - 1];
    int64_t m = max64(c->in_channels, c->block_out[0]) * H * W, prev = c->block_out[0];
    for (int i = 0; i < n; i++) {
        int64_t out = c->block_out[i];
        m = max64(m, max64(prev, out) * H * W);
        if (i < n - 1) H /= 2, W /= 2;
        prev = out;
    }
    if (c->mid_attention) m = max64(m, 3 * top * H * W);
    return B * max64(m, 2 * (int64_t)c->latent_channels * H * W);
}

static int size_check(const char *what, int64_t B, int64_t h, int64_t w, int64_t s) {
    /* 2^31 pixels is far beyond any image; it keeps B*H*W*C in int64 */
    if (B <= 0 || h <= 0 || w <= 0 || (double)B * (double)h * (double)w * s * s > 2147483648.0)
        return sf_error("vae %s: sizes B=%lld, %lld x %lld out of range", what, (long long)B,
                        (long long)h, (long long)w);
    return 0;
}

/* One block of the model's arena: a generation run's decodes after the
 * first touch no fresh pages. */
static void alloc_act(sf_arena *work, vae_act *a, int64_t cap) {
    float **const buf[] = {&a->x, &a->t[0], &a->t[1]};
    const size_t len[] = {(size_t)cap, (size_t)cap, (size_t)cap};
    a->block = sf_arena_take_floats(work, 3, len, buf);
}

static void free_act(sf_arena *work, vae_act *a) {
    sf_arena_give(work, a->block);
}

int sf_vae_decode(sf_vae *v, const float *z, int64_t B, int64_t h, int64_t w, float *out) {
    const sf_vae_config *c = &v->cfg;
    const vae_coder *d = &v->dec;
    const int G = c->norm_num_groups, s = sf_vae_scale(v);
    if (size_check("decode", B, h, w, s)) return -1;
    vae_act a = {0};
    alloc_act(v->work, &a, dec_cap(c, B, h, w));
    a.B = B, a.H = h, a.W = w, a.C = c->latent_channels;
    sf_nchw_to_nhwc(z, a.x, B, a.C, h * w);
    if (d->quant.w) conv_step(&a, &d->quant);
    conv_step(&a, &d->conv_in);
    mid_fwd(&a, &d->mid, G);
    for (int i = 0; i < d->n_blocks; i++) {
        const vae_block *b = &d->blocks[i];
        for (int j = 0; j < b->nres; j++)
            resnet_fwd(&a, &b->res[j], G);
        if (b->resample.w) { /* nearest 2x, then conv 3x3 */
            sf_upsample_nearest2x(a.x, a.t[1], a.B, a.H, a.W, a.C);
            swap(&a.x, &a.t[1]);
            a.H *= 2, a.W *= 2;
            conv_step(&a, &b->resample);
        }
    }
    sf_groupnorm(a.x, a.x, B, a.H * a.W, a.C, G, d->norm_w, d->norm_b, VAE_EPS, 1);
    conv_step(&a, &d->conv_out);
    sf_nhwc_to_nchw(a.x, out, B, a.C, a.H * a.W);
    free_act(v->work, &a);
    return 0;
}

int sf_vae_latents_to_image(sf_vae *v, const float *latents, int64_t B, int64_t h, int64_t w,
                            uint8_t *rgb, float *decoded) {
    const sf_vae_config *c = &v->cfg;
    const int64_t s = sf_vae_scale(v), H = h * s, W = w * s, C = c->out_channels;
    if (size_check("decode", B, h, w, s)) return -1;
    if (rgb && C != 3)
        return sf_error("vae: an RGB image needs out_channels 3, the config has %d", (int)C);
    const int64_t nz = B * c->latent_channels * h * w;
    float *z = sf_malloc((size_t)nz * sizeof(float));
    float *img = decoded ? decoded : sf_malloc((size_t)(B * C * H * W) * sizeof(float));
    /* FluxPipeline: latents / scaling_factor + shift_factor, both in F32 (a
     * division, as torch does it: z * (1/s) differs in the last bit) */
    for (int64_t i = 0; i < nz; i++)
        z[i] = latents[i] / c->scaling_factor + c->shift_factor;
    int rc = sf_vae_decode(v, z, B, h, w, img);
    free(z);
    if (!rc && rgb) {
        /* VaeImageProcessor.postprocess: (x / 2 + 0.5).clamp(0, 1) in F32,
         * then numpy's (x * 255).round() (half to even, as rintf). */
        for (int64_t b = 0; b < B; b++)
            for (int64_t ch = 0; ch < 3; ch++)
                for (int64_t p = 0; p < H * W; p++) {
                    float x = img[(b * 3 + ch) * H * W + p] / 2.0f + 0.5f;
                    x = x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
                    rgb[(b * H * W + p) * 3 + ch] = (uint8_t)rintf(x * 255.0f);
                }
    }
    if (!decoded) free(img);
    return rc;
}

int sf_vae_encode(sf_vae *v, const float *image, int64_t B, int64_t H, int64_t W, float *mean) {
    const sf_vae_config *c = &v->cfg;
    const vae_coder *e = &v->enc;
    const int G = c->norm_num_groups, s = sf_vae_scale(v);
    if (!e->present) return sf_error("vae encode: the encoder was not loaded (opts.encoder)");
    if (size_check("encode", B, H / s, W / s, s)) return -1;
    if (H % s || W % s)
        return sf_error("vae encode: image %lld x %lld is not a multiple of %d", (long long)H,
                        (long long)W, s);
    vae_act a = {0};
    alloc_act(v->work, &a, enc_cap(c, B, H, W));
    a.B = B, a.H = H, a.W = W, a.C = c->in_channels;
    sf_nchw_to_nhwc(image, a.x, B, a.C, H * W);
    conv_step(&a, &e->conv_in);
    for (int i = 0; i < e->n_blocks; i++) {
        const vae_block *b = &e->blocks[i];
        for (int j = 0; j < b->nres; j++)
            resnet_fwd(&a, &b->res[j], G);
        if (b->resample.w) { /* Downsample2D: F.pad(x, (0, 1, 0, 1)), conv 3x3 stride 2 */
            static const int64_t pad[4] = {0, 0, 1, 1};
            sf_conv2d(a.x, a.B, a.H, a.W, &b->resample, pad, a.t[0], 0);
            swap(&a.x, &a.t[0]);
            a.H = sf_conv2d_out_size(a.H, 3, 2, 0, 1), a.W = sf_conv2d_out_size(a.W, 3, 2, 0, 1);
        }
    }
    mid_fwd(&a, &e->mid, G);
    sf_groupnorm(a.x, a.x, B, a.H * a.W, a.C, G, e->norm_w, e->norm_b, VAE_EPS, 1);
    conv_step(&a, &e->conv_out);
    if (e->quant.w) conv_step(&a, &e->quant);
    /* moments (B, h, w, 2L): the mean is the first L channels */
    const int64_t L = c->latent_channels, HW = a.H * a.W;
    for (int64_t b = 0; b < B; b++)
        for (int64_t ch = 0; ch < L; ch++)
            for (int64_t p = 0; p < HW; p++)
                mean[(b * L + ch) * HW + p] = a.x[(b * HW + p) * 2 * L + ch];
    free_act(v->work, &a);
    return 0;
}

int sf_vae_image_to_latents(sf_vae *v, const float *image, int64_t B, int64_t H, int64_t W,
                            float *latents) {
    if (sf_vae_encode(v, image, B, H, W, latents)) return -1;
    const int s = sf_vae_scale(v);
    const int64_t n = B * v->cfg.latent_channels * (H / s) * (W / s);
    for (int64_t i = 0; i < n; i++)
        latents[i] = (latents[i] - v->cfg.shift_factor) * v->cfg.scaling_factor;
    return 0;
}
