/* FLUX.1 transformer (diffusers transformer_flux.py semantics) on the kernel
 * layer. D = heads * Dh, streams: text c (B, T, D), image x (B, N, D).
 *
 * Embeddings:
 *   x = img Wx^T + bx;  c = txt Wc^T + bc
 *   temb = MLP_t(sinusoid(1000 sigma)) [+ MLP_g(sinusoid(1000 g))] + MLP_p(pooled)
 *   (MLP = Linear, SiLU, Linear; sinusoid 256 channels, [cos, sin])
 *   s = SiLU(temb), shared by every AdaLN modulation
 * Double block (per stream u in {c, x}, its own weights):
 *   sh1,sc1,g1,sh2,sc2,g2 = s Wmod_u^T + b     (AdaLayerNormZero, 6 chunks)
 *   n_u = LN(u) (1 + sc1) + sh1                (LN: no affine, eps 1e-6)
 *   q,k,v_u = n_u Wqkv_u^T + b; q,k = RMSNorm_head(q,k) (per-stream gamma)
 *   [q;k] of cat[c; x] get RoPE (ids cat[txt_ids; img_ids]);
 *   o = softmax(q k^T / sqrt(Dh)) v over all T + N tokens, no mask
 *   u += g1 * (o_u Wo_u^T + b)
 *   u += g2 * FF_u(LN(u) (1 + sc2) + sh2)      (FF = Linear, GELU-tanh, Linear)
 * Single block, on z = cat[c; x] (B, T + N, D):
 *   sh,sc,g = s Wmod^T + b; n = LN(z) (1 + sc) + sh
 *   [q | k | v | h] = n W1^T + b1   (W1 = BFL's linear1: to_q;to_k;to_v;proj_mlp)
 *   q,k = RoPE(RMSNorm_head(q,k)); o = attention(q, k, v)
 *   z += g * ([o | GELU_tanh(h)] W2^T + b2)    (W2 = proj_out, (D, D + mlp))
 * Output: sc,sh = s Wn^T + b (AdaLayerNormContinuous: SCALE first);
 *   out = (LN(x) (1 + sc) + sh) Wp^T + bp, image rows of z only.
 *
 * Layout: the double blocks keep c (B*T, D) and x (B*N, D) dense, so every
 * per-stream GEMM is one call over the whole batch (a BF16 matrix is widened
 * once); q/k/v are then scattered per example into the joint (B, T + N, 3D)
 * layout attention reads, and its output gathered back. The single blocks run
 * on z (B, T + N, D).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "models/internal.h"
#include "saeflow/config.h"
#include "saeflow/flux.h"

typedef struct {
    sf_weight mod_x, mod_c; /* (6D, D) norm1.linear / norm1_context.linear */
    sf_weight qkv_x, qkv_c; /* (3D, D) to_q;to_k;to_v / add_{q,k,v}_proj */
    sf_weight out_x, out_c; /* (D, D) to_out.0 / to_add_out */
    sf_weight ff1_x, ff2_x; /* (mlp, D), (D, mlp) ff.net.0.proj, ff.net.2 */
    sf_weight ff1_c, ff2_c; /* ff_context */
    const float *mod_xb, *mod_cb, *qkv_xb, *qkv_cb, *out_xb, *out_cb;
    const float *ff1_xb, *ff2_xb, *ff1_cb, *ff2_cb;
    const float *nq_x, *nk_x, *nq_c, *nk_c; /* (Dh) RMSNorm gammas */
} flux_double;

typedef struct {
    sf_weight mod;      /* (3D, D) norm.linear */
    sf_weight lin1;     /* (3D + mlp, D) q; k; v; proj_mlp rows */
    sf_weight qkv, mlp; /* views: rows [0, 3D) and [3D, 3D + mlp) of lin1 */
    sf_weight lin2;     /* (D, D + mlp) proj_out */
    const float *mod_b, *lin1_b, *lin2_b;
    const float *nq, *nk;
} flux_single;

typedef struct {
    sf_weight l1, l2; /* (D, in), (D, D) */
    const float *b1, *b2;
} flux_mlp;

struct sf_flux {
    sf_wl *wl;
    sf_flux_config cfg;
    sf_weight x_emb, c_emb; /* (D, in), (D, joint) */
    const float *x_emb_b, *c_emb_b;
    flux_mlp t_emb, g_emb, p_emb; /* timestep, guidance, pooled text */
    flux_double *dbl;
    flux_single *sgl;
    sf_weight norm_out; /* (2D, D): scale rows, then shift rows */
    const float *norm_out_b;
    sf_weight proj_out; /* (out, D) */
    const float *proj_out_b;
    int n_stages;   /* stages loaded: blocks in run order, + 1 for the output head */
    sf_arena *work; /* the forward's activations (flux_state), kept between calls */
};

static int request_stage(const sf_flux *m, const sf_flux_request *r);

/* ---- config ------------------------------------------------------------- */

/* diffusers' config.json; defaults are FluxTransformer2DModel's (schnell). */
static int parse_config(const char *path, sf_flux_config *c) {
    cJSON *o = sf_cfg_load(path);
    if (!o) return -1;
    int rc = 0, patch = 1, n = 0;
    rc |= sf_cfg_int_range(o, "patch_size", 0, 1, 1, 1, &patch, path) < 0;
    rc |= sf_cfg_int_range(o, "in_channels", 0, 64, 1, 1 << 20, &c->in_channels, path) < 0;
    rc |= sf_cfg_int_range(o, "out_channels", 0, c->in_channels, 1, 1 << 20, &c->out_channels,
                           path) < 0;
    rc |= sf_cfg_int_range(o, "num_layers", 0, 19, 0, 1000, &c->num_layers, path) < 0;
    rc |= sf_cfg_int_range(o, "num_single_layers", 0, 38, 0, 1000, &c->num_single_layers, path) < 0;
    rc |= sf_cfg_int_range(o, "attention_head_dim", 0, 128, 2, 4096, &c->head_dim, path) < 0;
    rc |= sf_cfg_int_range(o, "num_attention_heads", 0, 24, 1, 4096, &c->heads, path) < 0;
    rc |= sf_cfg_int_range(o, "joint_attention_dim", 0, 4096, 1, 1 << 20, &c->joint_dim, path) < 0;
    rc |=
        sf_cfg_int_range(o, "pooled_projection_dim", 0, 768, 1, 1 << 20, &c->pooled_dim, path) < 0;
    rc |= sf_cfg_bool(o, "guidance_embeds", 0, &c->guidance, path);
    rc |= sf_cfg_int_array(o, "axes_dims_rope", 1, 4096, c->axes_dim, SF_FLUX_MAX_AXES, &n, path);
    cJSON_Delete(o);
    if (rc) return -1;
    if (n == 0) /* absent: the class default */
        n = 3, c->axes_dim[0] = 16, c->axes_dim[1] = 56, c->axes_dim[2] = 56;
    c->n_axes = n;
    return 0;
}

static int check_config(const sf_flux_config *c, const char *where) {
    if (c->heads <= 0 || c->head_dim <= 0 || c->head_dim % 2 || c->heads > 4096 ||
        c->head_dim > 4096)
        return sf_error("%s: num_attention_heads %d x attention_head_dim %d out of range (head dim "
                        "must be even)",
                        where, c->heads, c->head_dim);
    if (c->in_channels <= 0 || c->out_channels <= 0 || c->joint_dim <= 0 || c->pooled_dim <= 0 ||
        c->num_layers < 0 || c->num_single_layers < 0 || c->num_layers > 1000 ||
        c->num_single_layers > 1000)
        return sf_error("%s: sizes out of range (in %d, out %d, joint %d, pooled %d, layers %d + "
                        "%d)",
                        where, c->in_channels, c->out_channels, c->joint_dim, c->pooled_dim,
                        c->num_layers, c->num_single_layers);
    if (c->mlp <= 0 || c->mlp > (1 << 24))
        return sf_error("%s: MLP width %d out of range", where, c->mlp);
    int sum = 0;
    for (int i = 0; i < c->n_axes; i++) {
        if (c->axes_dim[i] <= 0 || c->axes_dim[i] % 2)
            return sf_error("%s: axes_dims_rope[%d] = %d must be positive and even", where, i,
                            c->axes_dim[i]);
        sum += c->axes_dim[i];
    }
    if (sum != c->head_dim)
        return sf_error("%s: axes_dims_rope sum to %d, but attention_head_dim is %d", where, sum,
                        c->head_dim);
    return 0;
}

/* ---- weights ------------------------------------------------------------ */

/* Layout-specific names of the pieces both layouts share. */
typedef struct {
    const char *x_emb, *c_emb, *t1, *t2, *g1, *g2, *p1, *p2, *proj;
} names;
static const names DIFFUSERS = {"x_embedder",
                                "context_embedder",
                                "time_text_embed.timestep_embedder.linear_1",
                                "time_text_embed.timestep_embedder.linear_2",
                                "time_text_embed.guidance_embedder.linear_1",
                                "time_text_embed.guidance_embedder.linear_2",
                                "time_text_embed.text_embedder.linear_1",
                                "time_text_embed.text_embedder.linear_2",
                                "proj_out"};
static const names BFL = {"img_in",
                          "txt_in",
                          "time_in.in_layer",
                          "time_in.out_layer",
                          "guidance_in.in_layer",
                          "guidance_in.out_layer",
                          "vector_in.in_layer",
                          "vector_in.out_layer",
                          "final_layer.linear"};

/* Linear `name` (.weight (rows, cols) + .bias (rows)). */
static int linear(sf_wl *L, sf_weight *w, const float **b, const char *name, int64_t rows,
                  int64_t cols) {
    const int64_t s[2] = {rows, cols}, r1[1] = {rows};
    if (sf_wl_weight(L, w, 2, s, "%s.weight", name)) return -1;
    return (*b = sf_wl_f32(L, 1, r1, "%s.bias", name)) ? 0 : -1;
}

/* "tensor 'x': expected [a,b], found [c,d]" unless `name` has that shape. */
static int check_shape(sf_wl *L, const char *name, int ndim, const int64_t *shape) {
    const sf_tensor_info *t = sf_wl_info(L, "%s", name);
    if (!t) return -1;
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (ok) return 0;
    char got[128] = "", want[128] = "";
    for (int i = 0; i < t->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
                 (long long)t->shape[i]);
    for (int i = 0; i < ndim; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "",
                 (long long)shape[i]);
    return sf_error("%s: tensor '%s': expected [%s], found [%s]", sf_wl_path(L), name, want, got);
}

/* Several linears stacked into one matrix (weights and biases): one GEMM. */
static int fused(sf_wl *L, sf_weight *w, const float **b, int64_t cols, int n,
                 const char *const *nm, const int64_t *rows) {
    sf_wl_part pw[4], pb[4];
    for (int i = 0; i < n; i++) {
        pw[i] = (sf_wl_part){.row0 = 0, .rows = -1};
        pb[i] = (sf_wl_part){.row0 = 0, .rows = -1};
        snprintf(pw[i].name, sizeof pw[i].name, "%s.weight", nm[i]);
        snprintf(pb[i].name, sizeof pb[i].name, "%s.bias", nm[i]);
        const int64_t s[2] = {rows[i], cols};
        if (check_shape(L, pw[i].name, 2, s) || check_shape(L, pb[i].name, 1, s)) return -1;
    }
    if (sf_wl_fused(L, w, cols, n, pw)) return -1;
    return (*b = sf_wl_fused_f32(L, n, pb)) ? 0 : -1;
}

/* n[k] = block prefix p + suffix s */
#define NM(k, s) (snprintf(n[k], sizeof n[k], "%s%s", p, s), n[k])

static int load_double(sf_flux *m, int i) {
    sf_wl *L = m->wl;
    const sf_flux_config *c = &m->cfg;
    const int64_t D = c->dim, F = c->mlp, Dh = c->head_dim, h1[1] = {Dh};
    flux_double *b = &m->dbl[i];
    char p[96], n[4][160];
    if (c->bfl) {
        snprintf(p, sizeof p, "double_blocks.%d.", i);
        if (linear(L, &b->mod_x, &b->mod_xb, NM(0, "img_mod.lin"), 6 * D, D) ||
            linear(L, &b->mod_c, &b->mod_cb, NM(0, "txt_mod.lin"), 6 * D, D) ||
            linear(L, &b->qkv_x, &b->qkv_xb, NM(0, "img_attn.qkv"), 3 * D, D) ||
            linear(L, &b->qkv_c, &b->qkv_cb, NM(0, "txt_attn.qkv"), 3 * D, D) ||
            linear(L, &b->out_x, &b->out_xb, NM(0, "img_attn.proj"), D, D) ||
            linear(L, &b->out_c, &b->out_cb, NM(0, "txt_attn.proj"), D, D) ||
            linear(L, &b->ff1_x, &b->ff1_xb, NM(0, "img_mlp.0"), F, D) ||
            linear(L, &b->ff2_x, &b->ff2_xb, NM(0, "img_mlp.2"), D, F) ||
            linear(L, &b->ff1_c, &b->ff1_cb, NM(0, "txt_mlp.0"), F, D) ||
            linear(L, &b->ff2_c, &b->ff2_cb, NM(0, "txt_mlp.2"), D, F))
            return -1;
        if (!(b->nq_x = sf_wl_f32(L, 1, h1, "%simg_attn.norm.query_norm.scale", p)) ||
            !(b->nk_x = sf_wl_f32(L, 1, h1, "%simg_attn.norm.key_norm.scale", p)) ||
            !(b->nq_c = sf_wl_f32(L, 1, h1, "%stxt_attn.norm.query_norm.scale", p)) ||
            !(b->nk_c = sf_wl_f32(L, 1, h1, "%stxt_attn.norm.key_norm.scale", p)))
            return -1;
        return 0;
    }
    snprintf(p, sizeof p, "transformer_blocks.%d.", i);
    const int64_t r3[3] = {D, D, D};
    const char *qx[3] = {NM(0, "attn.to_q"), NM(1, "attn.to_k"), NM(2, "attn.to_v")};
    if (fused(L, &b->qkv_x, &b->qkv_xb, D, 3, qx, r3)) return -1;
    const char *qc[3] = {NM(0, "attn.add_q_proj"), NM(1, "attn.add_k_proj"),
                         NM(2, "attn.add_v_proj")};
    if (fused(L, &b->qkv_c, &b->qkv_cb, D, 3, qc, r3)) return -1;
    if (linear(L, &b->mod_x, &b->mod_xb, NM(0, "norm1.linear"), 6 * D, D) ||
        linear(L, &b->mod_c, &b->mod_cb, NM(0, "norm1_context.linear"), 6 * D, D) ||
        linear(L, &b->out_x, &b->out_xb, NM(0, "attn.to_out.0"), D, D) ||
        linear(L, &b->out_c, &b->out_cb, NM(0, "attn.to_add_out"), D, D) ||
        linear(L, &b->ff1_x, &b->ff1_xb, NM(0, "ff.net.0.proj"), F, D) ||
        linear(L, &b->ff2_x, &b->ff2_xb, NM(0, "ff.net.2"), D, F) ||
        linear(L, &b->ff1_c, &b->ff1_cb, NM(0, "ff_context.net.0.proj"), F, D) ||
        linear(L, &b->ff2_c, &b->ff2_cb, NM(0, "ff_context.net.2"), D, F))
        return -1;
    if (!(b->nq_x = sf_wl_f32(L, 1, h1, "%sattn.norm_q.weight", p)) ||
        !(b->nk_x = sf_wl_f32(L, 1, h1, "%sattn.norm_k.weight", p)) ||
        !(b->nq_c = sf_wl_f32(L, 1, h1, "%sattn.norm_added_q.weight", p)) ||
        !(b->nk_c = sf_wl_f32(L, 1, h1, "%sattn.norm_added_k.weight", p)))
        return -1;
    return 0;
}

static int load_single(sf_flux *m, int i) {
    sf_wl *L = m->wl;
    const sf_flux_config *c = &m->cfg;
    const int64_t D = c->dim, F = c->mlp, Dh = c->head_dim, h1[1] = {Dh};
    flux_single *b = &m->sgl[i];
    char p[96], n[4][160];
    if (c->bfl) {
        snprintf(p, sizeof p, "single_blocks.%d.", i);
        if (linear(L, &b->mod, &b->mod_b, NM(0, "modulation.lin"), 3 * D, D) ||
            linear(L, &b->lin1, &b->lin1_b, NM(0, "linear1"), 3 * D + F, D) ||
            linear(L, &b->lin2, &b->lin2_b, NM(0, "linear2"), D, D + F))
            return -1;
        if (!(b->nq = sf_wl_f32(L, 1, h1, "%snorm.query_norm.scale", p)) ||
            !(b->nk = sf_wl_f32(L, 1, h1, "%snorm.key_norm.scale", p)))
            return -1;
    } else {
        snprintf(p, sizeof p, "single_transformer_blocks.%d.", i);
        const int64_t r4[4] = {D, D, D, F};
        const char *q[4] = {NM(0, "attn.to_q"), NM(1, "attn.to_k"), NM(2, "attn.to_v"),
                            NM(3, "proj_mlp")};
        if (fused(L, &b->lin1, &b->lin1_b, D, 4, q, r4) ||
            linear(L, &b->mod, &b->mod_b, NM(0, "norm.linear"), 3 * D, D) ||
            linear(L, &b->lin2, &b->lin2_b, NM(0, "proj_out"), D, D + F))
            return -1;
        if (!(b->nq = sf_wl_f32(L, 1, h1, "%sattn.norm_q.weight", p)) ||
            !(b->nk = sf_wl_f32(L, 1, h1, "%sattn.norm_k.weight", p)))
            return -1;
    }
    /* q;k;v and the MLP rows as two views of the one fused matrix: the MLP
     * half is written straight into its place in [o | h] (see forward). */
    size_t esz = sf_dtype_size(b->lin1.dtype);
    b->qkv = (sf_weight){b->lin1.dtype, 2, {3 * D, D}, b->lin1.data, NULL};
    b->mlp =
        (sf_weight){b->lin1.dtype, 2, {F, D}, (const char *)b->lin1.data + 3 * D * D * esz, NULL};
    return 0;
}

/* Sizes from the tensor shapes (BFL single file, or a diffusers file without
 * its config.json). */
static int infer_config(sf_flux *m, const sf_flux_load_opts *o) {
    sf_wl *L = m->wl;
    sf_flux_config *c = &m->cfg;
    const names *nm = c->bfl ? &BFL : &DIFFUSERS;
    const sf_tensor_info *t;
    if (!(t = sf_wl_info(L, "%s.weight", nm->x_emb)) || t->ndim != 2) return -1;
    c->dim = (int)t->shape[0], c->in_channels = (int)t->shape[1];
    if (!(t = sf_wl_info(L, "%s.weight", nm->c_emb)) || t->ndim != 2) return -1;
    c->joint_dim = (int)t->shape[1];
    if (!(t = sf_wl_info(L, "%s.weight", nm->p1)) || t->ndim != 2) return -1;
    c->pooled_dim = (int)t->shape[1];
    if (!(t = sf_wl_info(L, "%s.weight", nm->proj)) || t->ndim != 2) return -1;
    c->out_channels = (int)t->shape[0];
    c->guidance = sf_wl_has(L, "%s.weight", nm->g1);
    const char *dn = c->bfl ? "double_blocks" : "transformer_blocks";
    const char *sn = c->bfl ? "single_blocks" : "single_transformer_blocks";
    const char *dq = c->bfl ? "img_attn.norm.query_norm.scale" : "attn.norm_q.weight";
    const char *sq = c->bfl ? "norm.query_norm.scale" : "attn.norm_q.weight";
    c->num_layers = c->num_single_layers = 0;
    while (c->num_layers < 1000 && sf_wl_has(L, "%s.%d.%s", dn, c->num_layers, dq))
        c->num_layers++;
    while (c->num_single_layers < 1000 && sf_wl_has(L, "%s.%d.%s", sn, c->num_single_layers, sq))
        c->num_single_layers++;
    if (c->num_layers)
        t = sf_wl_info(L, "%s.0.%s", dn, dq);
    else if (c->num_single_layers)
        t = sf_wl_info(L, "%s.0.%s", sn, sq);
    else
        return sf_error("%s: no FLUX blocks found (%s.0 / %s.0)", sf_wl_path(L), dn, sn);
    if (!t || t->ndim != 1) return -1;
    c->head_dim = (int)t->shape[0];
    if (c->head_dim <= 0 || c->dim % c->head_dim)
        return sf_error("%s: hidden width %d is not a multiple of the q-norm width %d",
                        sf_wl_path(L), c->dim, c->head_dim);
    c->heads = c->dim / c->head_dim;
    if (c->num_layers) {
        t = sf_wl_info(L, c->bfl ? "%s.0.img_mlp.0.weight" : "%s.0.ff.net.0.proj.weight", dn);
        if (!t || t->ndim != 2) return -1;
        c->mlp = (int)t->shape[0];
    } else {
        t = sf_wl_info(L, c->bfl ? "%s.0.linear1.weight" : "%s.0.proj_mlp.weight", sn);
        if (!t || t->ndim != 2) return -1;
        c->mlp = (int)t->shape[0] - (c->bfl ? 3 * c->dim : 0);
    }
    if (o->n_axes > 0) {
        c->n_axes = o->n_axes;
        memcpy(c->axes_dim, o->axes_dim, sizeof c->axes_dim);
    } else if (c->head_dim == 128) {
        c->n_axes = 3, c->axes_dim[0] = 16, c->axes_dim[1] = 56, c->axes_dim[2] = 56;
    } else {
        return sf_error("%s: no config.json, and the RoPE axes of head dim %d are not stored in "
                        "the weights: give them (--axes a,b,c)",
                        sf_wl_path(L), c->head_dim);
    }
    return 0;
}

sf_flux *sf_flux_load(const char *path, const sf_flux_load_opts *opts) {
    sf_flux_load_opts def = {0};
    if (!opts) opts = &def;
    sf_dtype dt = opts->dtype ? opts->dtype : SF_WL_AS_STORED;
    if (opts->dtype && dt != SF_DT_F32 && dt != SF_DT_BF16 && dt != SF_DT_F16) {
        sf_error("%s: weight dtype %s not supported (F32, BF16, F16, or as stored)", path,
                 sf_dtype_name(dt));
        return NULL;
    }
    /* A pipeline root holds the transformer in transformer/. */
    char *dir = NULL, *cfg_path = NULL;
    if (sf_is_dir(path)) {
        char *sub = sf_path_join(path, "transformer");
        if (sf_is_dir(sub))
            dir = sub;
        else
            free(sub), dir = sf_strdup(path);
        cfg_path = sf_path_join(dir, "config.json");
    } else {
        /* a file: config.json next to it counts only for the diffusers layout */
        dir = sf_strdup(path);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[1] = 0, cfg_path = sf_path_join(dir, "config.json");
        else
            cfg_path = sf_strdup("config.json");
        free(dir);
        dir = sf_strdup(path);
    }
    sf_flux *m = sf_calloc(1, sizeof *m);
    sf_flux_config *c = &m->cfg;
    m->work = sf_arena_new();
    if (!(m->wl = sf_wl_open(dir, dt))) goto fail;
    /* BFL names, with the prefix ComfyUI-style files carry, or without */
    if (sf_wl_has(m->wl, "model.diffusion_model.img_in.weight")) {
        c->bfl = 1;
        sf_wl_set_prefix(m->wl, "model.diffusion_model.");
    } else if (sf_wl_has(m->wl, "img_in.weight")) {
        c->bfl = 1;
    } else if (!sf_wl_has(m->wl, "x_embedder.weight")) {
        sf_error("%s: not a FLUX transformer (neither x_embedder.weight nor img_in.weight)",
                 sf_wl_path(m->wl));
        goto fail;
    }
    c->theta = 10000.0;
    if (!c->bfl && sf_is_file(cfg_path)) {
        if (parse_config(cfg_path, c)) goto fail;
        c->dim = c->heads * c->head_dim;
        c->mlp = 4 * c->dim; /* mlp_ratio 4 */
        if (check_config(c, cfg_path)) goto fail;
        /* blocks the config does not know about mean the two disagree */
        if (sf_wl_has(m->wl, "transformer_blocks.%d.norm1.linear.weight", c->num_layers) ||
            sf_wl_has(m->wl, "single_transformer_blocks.%d.norm.linear.weight",
                      c->num_single_layers)) {
            sf_error("%s: num_layers %d / num_single_layers %d, but the weights have more blocks",
                     cfg_path, c->num_layers, c->num_single_layers);
            goto fail;
        }
    } else {
        if (infer_config(m, opts) || check_config(c, sf_wl_path(m->wl))) goto fail;
    }
    const names *nm = c->bfl ? &BFL : &DIFFUSERS;
    const int64_t D = c->dim;
    if (linear(m->wl, &m->x_emb, &m->x_emb_b, nm->x_emb, D, c->in_channels) ||
        linear(m->wl, &m->c_emb, &m->c_emb_b, nm->c_emb, D, c->joint_dim) ||
        linear(m->wl, &m->t_emb.l1, &m->t_emb.b1, nm->t1, D, 256) ||
        linear(m->wl, &m->t_emb.l2, &m->t_emb.b2, nm->t2, D, D) ||
        linear(m->wl, &m->p_emb.l1, &m->p_emb.b1, nm->p1, D, c->pooled_dim) ||
        linear(m->wl, &m->p_emb.l2, &m->p_emb.b2, nm->p2, D, D) ||
        linear(m->wl, &m->proj_out, &m->proj_out_b, nm->proj, c->out_channels, D))
        goto fail;
    if (c->guidance && (linear(m->wl, &m->g_emb.l1, &m->g_emb.b1, nm->g1, D, 256) ||
                        linear(m->wl, &m->g_emb.l2, &m->g_emb.b2, nm->g2, D, D)))
        goto fail;
    if (c->bfl) {
        /* BFL's final modulation is (shift, scale); diffusers' (scale, shift) */
        const int64_t s2[2] = {2 * D, D};
        const int64_t s1[1] = {2 * D};
        if (check_shape(m->wl, "final_layer.adaLN_modulation.1.weight", 2, s2) ||
            check_shape(m->wl, "final_layer.adaLN_modulation.1.bias", 1, s1))
            goto fail;
        sf_wl_part pw[2] = {{"final_layer.adaLN_modulation.1.weight", D, D},
                            {"final_layer.adaLN_modulation.1.weight", 0, D}};
        sf_wl_part pb[2] = {{"final_layer.adaLN_modulation.1.bias", D, D},
                            {"final_layer.adaLN_modulation.1.bias", 0, D}};
        if (sf_wl_fused(m->wl, &m->norm_out, D, 2, pw) ||
            !(m->norm_out_b = sf_wl_fused_f32(m->wl, 2, pb)))
            goto fail;
    } else if (linear(m->wl, &m->norm_out, &m->norm_out_b, "norm_out.linear", 2 * D, D)) {
        goto fail;
    }
    m->dbl = sf_calloc((size_t)(c->num_layers + 1), sizeof *m->dbl);
    m->sgl = sf_calloc((size_t)(c->num_single_layers + 1), sizeof *m->sgl);
    /* Only the blocks the given requests reach: the one-step hook at
     * transformer_blocks.0 then binds 1 of 57 blocks (mmap'd weights of the
     * rest are never read, and the diffusers layout's fused copies not made). */
    m->n_stages = c->num_layers + c->num_single_layers + 1;
    if (opts->n_only > 0) {
        int last = -1;
        for (int i = 0; i < opts->n_only; i++) {
            int st = request_stage(m, &opts->only[i]);
            if (st < 0) goto fail;
            if (st > last) last = st;
        }
        m->n_stages = last + 1;
    }
    for (int i = 0; i < c->num_layers && i < m->n_stages; i++)
        if (load_double(m, i)) goto fail;
    for (int i = 0; i < c->num_single_layers && c->num_layers + i < m->n_stages; i++)
        if (load_single(m, i)) goto fail;
    free(dir);
    free(cfg_path);
    return m;
fail:
    free(dir);
    free(cfg_path);
    sf_flux_free(m);
    return NULL;
}

void sf_flux_free(sf_flux *m) {
    if (!m) return;
    sf_wl_close(m->wl);
    sf_arena_free(m->work);
    free(m->dbl);
    free(m->sgl);
    free(m);
}

const sf_flux_config *sf_flux_get_config(const sf_flux *m) {
    return &m->cfg;
}

/* ---- requests ----------------------------------------------------------- */

int sf_flux_parse_request(const char *s, sf_flux_request *r) {
    memset(r, 0, sizeof *r);
    const char *orig = s;
    if (!strcmp(s, "output")) {
        r->site = SF_FLUX_OUTPUT;
        return 0;
    }
    int stream = -1; /* not given yet */
    if (!strncmp(s, "transformer_blocks.", 19)) {
        r->site = SF_FLUX_DOUBLE, s += 19;
    } else if (!strncmp(s, "single_transformer_blocks.", 26)) {
        r->site = SF_FLUX_SINGLE, s += 26, stream = SF_FLUX_BOTH;
    } else {
        goto bad;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 0 || v > 100000) goto bad;
    r->block = (int)v;
    s = end;
    while (*s) {
        if (*s != '.' && *s != ':' && *s != '-') goto bad;
        const char *w = s + 1;
        size_t n = strcspn(w, ".:-");
        if ((n == 1 && *w == '0') || (n == 4 && !strncmp(w, "text", 4)) ||
            (n == 3 && !strncmp(w, "txt", 3)))
            stream = SF_FLUX_TEXT;
        else if ((n == 1 && *w == '1') || (n == 5 && !strncmp(w, "image", 5)) ||
                 (n == 3 && !strncmp(w, "img", 3)))
            stream = SF_FLUX_IMAGE;
        else if (n == 5 && !strncmp(w, "delta", 5))
            r->delta = 1;
        else
            goto bad;
        s = w + n;
    }
    r->stream = stream < 0 ? SF_FLUX_TEXT : (sf_flux_stream)stream;
    if (r->site == SF_FLUX_DOUBLE && stream < 0)
        return sf_error("hook '%s': a double block has two streams: add .0 (text) or .1 (image)",
                        orig);
    return 0;
bad:
    return sf_error("hook '%s' not understood (transformer_blocks.N.0|1, "
                    "single_transformer_blocks.N[:text|:image], optional :delta, output)",
                    orig);
}

void sf_flux_request_name(const sf_flux_request *r, char *buf, size_t n) {
    static const char *st[3] = {"text", "image", ""};
    if (r->site == SF_FLUX_OUTPUT)
        snprintf(buf, n, "output");
    else if (r->site == SF_FLUX_DOUBLE)
        snprintf(buf, n, "transformer_blocks.%d.%d%s", r->block, (int)r->stream,
                 r->delta ? ":delta" : "");
    else
        snprintf(buf, n, "single_transformer_blocks.%d%s%s%s", r->block,
                 r->stream == SF_FLUX_BOTH ? "" : ":", st[r->stream], r->delta ? ":delta" : "");
}

/* Index of the last block the request needs in run order (double blocks,
 * then single blocks, then the output head); -1 with an error. */
static int request_stage(const sf_flux *m, const sf_flux_request *r) {
    const sf_flux_config *c = &m->cfg;
    switch (r->site) {
    case SF_FLUX_OUTPUT:
        return c->num_layers + c->num_single_layers;
    case SF_FLUX_DOUBLE:
        if (r->block < 0 || r->block >= c->num_layers)
            return sf_error("transformer_blocks.%d: the model has %d double blocks", r->block,
                            c->num_layers);
        if (r->stream != SF_FLUX_TEXT && r->stream != SF_FLUX_IMAGE)
            return sf_error("transformer_blocks.%d: stream must be 0 (text) or 1 (image)",
                            r->block);
        return r->block;
    case SF_FLUX_SINGLE:
        if (r->block < 0 || r->block >= c->num_single_layers)
            return sf_error("single_transformer_blocks.%d: the model has %d single blocks",
                            r->block, c->num_single_layers);
        if ((unsigned)r->stream > SF_FLUX_BOTH)
            return sf_error("single_transformer_blocks.%d: bad stream %d", r->block,
                            (int)r->stream);
        return c->num_layers + r->block;
    }
    return sf_error("unknown FLUX hook site %d", (int)r->site);
}

/* request_stage, and the stage must have been loaded. */
static int request_stage_loaded(const sf_flux *m, const sf_flux_request *r) {
    int st = request_stage(m, r);
    if (st >= m->n_stages) {
        char name[128];
        sf_flux_request_name(r, name, sizeof name);
        return sf_error("%s: the model was loaded for earlier hooks only "
                        "(sf_flux_load_opts.only)",
                        name);
    }
    return st;
}

int64_t sf_flux_request_rows(const sf_flux *m, const sf_flux_request *r, int64_t N, int64_t T) {
    if (request_stage_loaded(m, r) < 0) return -1;
    if (r->site == SF_FLUX_OUTPUT) return N;
    return r->stream == SF_FLUX_TEXT ? T : r->stream == SF_FLUX_IMAGE ? N : T + N;
}

int64_t sf_flux_request_width(const sf_flux *m, const sf_flux_request *r) {
    return r->site == SF_FLUX_OUTPUT ? m->cfg.out_channels : m->cfg.dim;
}

/* ---- forward ------------------------------------------------------------ */

typedef struct {
    int64_t B, N, T, L, D, M; /* L = T + N tokens, M = B*L rows */
    float *c, *x;             /* (B*T, D), (B*N, D) double-block streams */
    float *z;                 /* (B, L, D) single-block sequence */
    float *nrm;               /* (M, D) normed input: text rows then image rows */
    float *qkv;               /* (B, L, 3D) */
    float *att;               /* (B, L, D) attention output */
    float *y;                 /* (M, D) projection outputs: text rows then image rows */
    float *cat;       /* (M, D + mlp): [o | h] of single blocks; doubles: q/k/v, FF hidden */
    float *mod;       /* (B, 6D) */
    float *silu;      /* (B, D) SiLU(temb) */
    float *cos, *sin; /* (L, Dh/2) */
    float *prev;      /* (M, D) block input, for deltas */
    void *block;      /* all of the above, from the model's arena */
} flux_state;

static float *abuf(int64_t n) {
    return sf_malloc_aligned((size_t)(n > 0 ? n : 1) * sizeof(float));
}

/* The state's buffers, one block of the model's arena: the second and later
 * forwards of a sampling loop or a benchmark touch no fresh pages. */
static void state_alloc(const sf_flux *m, flux_state *s, int need_prev) {
    const int64_t M = s->M, D = s->D, F = m->cfg.mlp, B = s->B, hd = m->cfg.head_dim / 2;
    float **const buf[] = {&s->c,   &s->x,   &s->z,    &s->nrm, &s->qkv, &s->att, &s->y,
                           &s->cat, &s->mod, &s->silu, &s->cos, &s->sin, &s->prev};
    const size_t len[] = {B * s->T * D,
                          B * s->N * D,
                          M * D,
                          M * D,
                          M * 3 * D,
                          M * D,
                          M * D,
                          M * (D + F),
                          B * 12 * D,
                          B * D,
                          s->L * hd,
                          s->L * hd,
                          need_prev ? M * D : 0};
    s->block = sf_arena_take_floats(m->work, (int)(sizeof len / sizeof len[0]), len, buf);
}

/* Linear, SiLU, Linear on B rows (TimestepEmbedding, PixArtAlphaTextProjection). */
static void mlp2(const flux_mlp *e, const float *in, int64_t B, int64_t K, int64_t D, float *tmp,
                 float *out) {
    sf_linear(in, B, K, &e->l1, e->b1, tmp, D, 0);
    sf_activation(tmp, (size_t)(B * D), SF_ACT_SILU);
    sf_linear(tmp, B, D, &e->l2, e->b2, out, D, 0);
}

/* temb (B, D) -> s->silu = SiLU(temb) (CombinedTimestep[Guidance]TextProjEmbeddings). */
static void time_text(const sf_flux *m, const sf_flux_inputs *in, flux_state *s) {
    const int64_t B = s->B, D = s->D;
    float *t = abuf(B), *proj = abuf(B * 256), *tmp = abuf(B * D), *e = abuf(B * D),
          *g = abuf(B * D);
    for (int64_t b = 0; b < B; b++)
        t[b] = in->timestep[b] * 1000.0f; // timestep.to(dtype) * 1000, F32
    sf_timestep_embedding(t, B, 256, 1, 0.0f, 1.0f, 10000.0f, proj);
    mlp2(&m->t_emb, proj, B, 256, D, tmp, e);
    if (m->cfg.guidance) {
        for (int64_t b = 0; b < B; b++)
            t[b] = in->guidance[b] * 1000.0f;
        sf_timestep_embedding(t, B, 256, 1, 0.0f, 1.0f, 10000.0f, proj);
        mlp2(&m->g_emb, proj, B, 256, D, tmp, g);
        sf_add(e, g, (size_t)(B * D)); // timesteps_emb + guidance_emb
    }
    mlp2(&m->p_emb, in->pooled, B, m->cfg.pooled_dim, D, tmp, g);
    sf_add(e, g, (size_t)(B * D)); // + pooled projection
    memcpy(s->silu, e, (size_t)(B * D) * sizeof(float));
    sf_activation(s->silu, (size_t)(B * D), SF_ACT_SILU);
    sf_free_aligned(t), sf_free_aligned(proj), sf_free_aligned(tmp), sf_free_aligned(e),
        sf_free_aligned(g);
}

/* q and k of rows [r0, r0 + n) of each example's (L, ld) block: per-head
 * RMSNorm with gammas gq, gk, then (when rope) RoPE with rows r0.. of the
 * tables. */
static void qk_norm_rope(const sf_flux *m, flux_state *s, float *buf, int64_t ld, int64_t r0,
                         int64_t n, const float *gq, const float *gk) {
    const sf_flux_config *c = &m->cfg;
    const int64_t H = c->heads, Dh = c->head_dim, D = s->D, hd = Dh / 2;
    for (int64_t b = 0; b < s->B; b++) {
        float *q = buf + (b * s->L + r0) * ld;
        sf_rmsnorm_heads(q, n, ld, H, Dh, gq, 1e-6f);
        sf_rmsnorm_heads(q + D, n, ld, H, Dh, gk, 1e-6f);
        sf_rope_apply(q, n, ld, H, Dh, s->cos + r0 * hd, s->sin + r0 * hd);
        sf_rope_apply(q + D, n, ld, H, Dh, s->cos + r0 * hd, s->sin + r0 * hd);
    }
}

static void attention(const sf_flux *m, flux_state *s, const float *qkv, int64_t ld, float *out,
                      int64_t ldo) {
    const sf_flux_config *c = &m->cfg;
    sf_attn_shape as = {.B = s->B,
                        .Tq = s->L,
                        .Tk = s->L,
                        .H = c->heads,
                        .Dh = c->head_dim,
                        .ldq = ld,
                        .ldk = ld,
                        .ldv = ld,
                        .ldo = ldo,
                        .scale = 1.0f / sqrtf((float)c->head_dim)};
    sf_attention(&as, qkv, qkv + s->D, qkv + 2 * s->D, out);
}

/* Joint rows (B, L, w) <-> stream rows: text (B*T, w) and image (B*N, w).
 * to_joint: joint <- text, image; else text, image <- joint. */
static void split_rows(const flux_state *s, float *joint, float *txt, float *img, int64_t w,
                       int to_joint) {
    const int64_t T = s->T, N = s->N, L = s->L;
    const size_t nt = (size_t)(T * w) * sizeof(float), ni = (size_t)(N * w) * sizeof(float);
#pragma omp parallel for schedule(static) if (s->M * w > 65536)
    for (int64_t b = 0; b < s->B; b++) {
        float *j = joint + b * L * w;
        if (to_joint)
            memcpy(j, txt + b * T * w, nt), memcpy(j + T * w, img + b * N * w, ni);
        else
            memcpy(txt + b * T * w, j, nt), memcpy(img + b * N * w, j + T * w, ni);
    }
}

/* One double-stream block on s->c (B, T, D) and s->x (B, N, D). */
static void double_block(const sf_flux *m, const flux_double *w, flux_state *s) {
    const int64_t B = s->B, N = s->N, T = s->T, D = s->D, F = m->cfg.mlp;
    float *mod_c = s->mod, *mod_x = s->mod + B * 6 * D; // (B, 6D) each
    float *nc = s->nrm, *nx = s->nrm + B * T * D, *yc = s->y, *yx = s->y + B * T * D;
    // shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = SiLU(temb) W^T + b
    sf_linear(s->silu, B, D, &w->mod_c, w->mod_cb, mod_c, 6 * D, 0);
    sf_linear(s->silu, B, D, &w->mod_x, w->mod_xb, mod_x, 6 * D, 0);
    sf_layernorm(s->c, nc, B * T, D, NULL, NULL, 1e-6f);
    sf_ada_modulate(nc, nc, B, T, D, mod_c, mod_c + D, 6 * D);
    sf_layernorm(s->x, nx, B * N, D, NULL, NULL, 1e-6f);
    sf_ada_modulate(nx, nx, B, N, D, mod_x, mod_x + D, 6 * D);
    // q, k, v of each stream in one GEMM over all its rows (cat as scratch:
    // one call per weight, so a BF16 matrix is widened once, not per example),
    // then scattered into the joint (B, L, 3D) layout attention reads: per
    // example the text rows, then the image rows
    float *qc = s->cat, *qx = s->cat + B * T * 3 * D;
    sf_linear(nc, B * T, D, &w->qkv_c, w->qkv_cb, qc, 3 * D, 0);
    sf_linear(nx, B * N, D, &w->qkv_x, w->qkv_xb, qx, 3 * D, 0);
    split_rows(s, s->qkv, qc, qx, 3 * D, 1);
    qk_norm_rope(m, s, s->qkv, 3 * D, 0, T, w->nq_c, w->nk_c);
    qk_norm_rope(m, s, s->qkv, 3 * D, T, N, w->nq_x, w->nk_x);
    attention(m, s, s->qkv, 3 * D, s->att, D);
    split_rows(s, s->att, nc, nx, D, 0); // o back to stream order (nrm is free now)
    sf_linear(nc, B * T, D, &w->out_c, w->out_cb, yc, D, 0);
    sf_linear(nx, B * N, D, &w->out_x, w->out_xb, yx, D, 0);
    sf_gated_add(s->c, yc, D, B, T, D, mod_c + 2 * D, 6 * D); // c += gate_msa * attn
    sf_gated_add(s->x, yx, D, B, N, D, mod_x + 2 * D, 6 * D);
    // FF per stream: u += gate_mlp * FF(LN(u) (1 + scale_mlp) + shift_mlp)
    float *us[2] = {s->c, s->x}, *ns[2] = {nc, nx}, *ys[2] = {yc, yx}, *mods[2] = {mod_c, mod_x};
    const sf_weight *f1[2] = {&w->ff1_c, &w->ff1_x}, *f2[2] = {&w->ff2_c, &w->ff2_x};
    const float *b1[2] = {w->ff1_cb, w->ff1_xb}, *b2[2] = {w->ff2_cb, w->ff2_xb};
    const int64_t Ts[2] = {T, N};
    for (int u = 0; u < 2; u++) {
        const int64_t R = B * Ts[u];
        sf_layernorm(us[u], ns[u], R, D, NULL, NULL, 1e-6f);
        sf_ada_modulate(ns[u], ns[u], B, Ts[u], D, mods[u] + 3 * D, mods[u] + 4 * D, 6 * D);
        sf_linear(ns[u], R, D, f1[u], b1[u], s->cat, F, 0); // (R, mlp)
        sf_activation(s->cat, (size_t)(R * F), SF_ACT_GELU_TANH);
        sf_linear(s->cat, R, F, f2[u], b2[u], ys[u], D, 0);
        sf_gated_add(us[u], ys[u], D, B, Ts[u], D, mods[u] + 5 * D, 6 * D);
    }
}

/* One single-stream block on s->z (B, L, D). */
static void single_block(const sf_flux *m, const flux_single *w, flux_state *s) {
    const int64_t B = s->B, L = s->L, D = s->D, F = m->cfg.mlp, M = s->M, ldc = D + F;
    sf_linear(s->silu, B, D, &w->mod, w->mod_b, s->mod, 3 * D, 0); // shift, scale, gate
    sf_layernorm(s->z, s->nrm, M, D, NULL, NULL, 1e-6f);
    sf_ada_modulate(s->nrm, s->nrm, B, L, D, s->mod, s->mod + D, 3 * D);
    // q, k, v (M, 3D) and h (M, mlp) from the two halves of linear1; h lands
    // in cat[:, D:], the attention output in cat[:, :D], so proj_out reads
    // cat = [o | GELU(h)] without a copy
    sf_linear(s->nrm, M, D, &w->qkv, w->lin1_b, s->qkv, 3 * D, 0);
    sf_linear(s->nrm, M, D, &w->mlp, w->lin1_b + 3 * D, s->cat + D, ldc, 0);
    qk_norm_rope(m, s, s->qkv, 3 * D, 0, L, w->nq, w->nk);
    attention(m, s, s->qkv, 3 * D, s->cat, ldc);
#pragma omp parallel for schedule(static) if (M * F > 65536)
    for (int64_t r = 0; r < M; r++)
        sf_activation(s->cat + r * ldc + D, (size_t)F, SF_ACT_GELU_TANH);
    sf_linear(s->cat, M, ldc, &w->lin2, w->lin2_b, s->y, D, 0);
    sf_gated_add(s->z, s->y, D, B, L, D, s->mod + 2 * D, 3 * D);
}

/* z (B, L, D) <- cat[c; x] per example. */
static void join_streams(flux_state *s) {
    split_rows(s, s->z, s->c, s->x, s->D, 1);
}

/* Rows [r0, r0 + n) of each example of src (B, Ls, D) -> dst (B, n, D),
 * minus the same rows of sub when given. */
static void take_rows(float *dst, const float *src, const float *sub, int64_t B, int64_t Ls,
                      int64_t r0, int64_t n, int64_t D) {
#pragma omp parallel for schedule(static) if (B * n * D > 65536)
    for (int64_t b = 0; b < B; b++) {
        const float *p = src + (b * Ls + r0) * D;
        float *o = dst + b * n * D;
        if (!sub) {
            memcpy(o, p, (size_t)(n * D) * sizeof(float));
            continue;
        }
        const float *q = sub + (b * Ls + r0) * D;
        for (int64_t i = 0; i < n * D; i++)
            o[i] = p[i] - q[i];
    }
}

/* Writes every request hooked at stage `stage` (after it ran). */
static void capture(const sf_flux *m, flux_state *s, int stage, int nreq,
                    const sf_flux_request *req, float *const *out) {
    const sf_flux_config *c = &m->cfg;
    for (int i = 0; i < nreq; i++) {
        const sf_flux_request *r = &req[i];
        if (r->site == SF_FLUX_OUTPUT || request_stage(m, r) != stage) continue;
        if (r->site == SF_FLUX_DOUBLE) {
            int text = r->stream == SF_FLUX_TEXT;
            const int64_t Ts = text ? s->T : s->N;
            const float *prev = r->delta ? s->prev + (text ? 0 : s->B * s->T * s->D) : NULL;
            take_rows(out[i], text ? s->c : s->x, prev, s->B, Ts, 0, Ts, s->D);
        } else {
            int64_t r0 = r->stream == SF_FLUX_IMAGE ? s->T : 0, n = r->stream == SF_FLUX_TEXT ? s->T
                                                                    : r->stream == SF_FLUX_IMAGE
                                                                        ? s->N
                                                                        : s->L;
            take_rows(out[i], s->z, r->delta ? s->prev : NULL, s->B, s->L, r0, n, s->D);
        }
    }
    (void)c;
}

static int check_inputs(const sf_flux *m, const sf_flux_inputs *in) {
    const sf_flux_config *c = &m->cfg;
    if (in->B <= 0 || in->N <= 0 || in->T <= 0 || in->B > (1 << 20) || in->N > (1 << 24) ||
        in->T > (1 << 24))
        return sf_error("flux: batch %lld, image tokens %lld, text tokens %lld must be positive",
                        (long long)in->B, (long long)in->N, (long long)in->T);
    if (!in->img || !in->txt || !in->pooled || !in->timestep || !in->img_ids)
        return sf_error("flux: hidden_states, encoder_hidden_states, pooled_projections, "
                        "timestep and img_ids are required");
    if (c->guidance && !in->guidance)
        return sf_error("flux: the model has guidance_embeds (FLUX.1-dev): guidance is required");
    if (!c->guidance && in->guidance)
        return sf_error("flux: guidance given, but the model has no guidance embedder "
                        "(guidance_embeds false, e.g. FLUX.1-schnell)");
    return 0;
}

int sf_flux_forward(const sf_flux *m, const sf_flux_inputs *in, int nreq,
                    const sf_flux_request *req, float *const *out) {
    const sf_flux_config *c = &m->cfg;
    if (check_inputs(m, in)) return -1;
    int last = -1, need_prev = 0, rc = 0;
    for (int i = 0; i < nreq; i++) {
        int st = request_stage_loaded(m, &req[i]);
        if (st < 0) return -1;
        if (st > last) last = st;
        need_prev |= req[i].delta && req[i].site != SF_FLUX_OUTPUT;
    }
    need_prev |= in->edit && in->edit_input;
    if (last < 0) return 0;
    flux_state S = {.B = in->B, .N = in->N, .T = in->T, .L = in->N + in->T, .D = c->dim};
    flux_state *s = &S;
    const int64_t B = s->B, N = s->N, T = s->T, L = s->L, D = s->D;
    s->M = B * L;
    const int64_t M = s->M;
    state_alloc(m, s, need_prev);
    // RoPE tables for ids = cat[txt_ids; img_ids] (L, n_axes)
    float *ids = sf_calloc((size_t)(L * c->n_axes), sizeof(float));
    if (in->txt_ids) memcpy(ids, in->txt_ids, (size_t)(T * c->n_axes) * sizeof(float));
    memcpy(ids + T * c->n_axes, in->img_ids, (size_t)(N * c->n_axes) * sizeof(float));
    sf_rope_table(ids, L, c->n_axes, c->axes_dim, c->theta, s->cos, s->sin);
    free(ids);
    // embeddings
    time_text(m, in, s);
    sf_linear(in->img, B * N, c->in_channels, &m->x_emb, m->x_emb_b, s->x, D, 0);
    sf_linear(in->txt, B * T, c->joint_dim, &m->c_emb, m->c_emb_b, s->c, D, 0);
    int stage = 0;
    for (int i = 0; i < c->num_layers && stage <= last; i++, stage++) {
        if (need_prev) {
            memcpy(s->prev, s->c, (size_t)(B * T * D) * sizeof(float));
            memcpy(s->prev + B * T * D, s->x, (size_t)(B * N * D) * sizeof(float));
        }
        double_block(m, &m->dbl[i], s);
        const int with_in = in->edit_input && s->prev;
        sf_flux_block_view v = {SF_FLUX_DOUBLE,
                                i,
                                B,
                                T,
                                N,
                                D,
                                s->c,
                                s->x,
                                T * D,
                                N * D,
                                with_in ? s->prev : NULL,
                                with_in ? s->prev + B * T * D : NULL};
        if (in->edit && in->edit(in->edit_ctx, &v)) {
            rc = sf_error_prefix("flux: edit after transformer_blocks.%d", i);
            goto done;
        }
        capture(m, s, stage, nreq, req, out);
    }
    if (stage <= last) join_streams(s);
    for (int i = 0; i < c->num_single_layers && stage <= last; i++, stage++) {
        if (need_prev) memcpy(s->prev, s->z, (size_t)(M * D) * sizeof(float));
        single_block(m, &m->sgl[i], s);
        const int with_in = in->edit_input && s->prev;
        sf_flux_block_view v = {SF_FLUX_SINGLE,
                                i,
                                B,
                                T,
                                N,
                                D,
                                s->z,
                                s->z + T * D,
                                L * D,
                                L * D,
                                with_in ? s->prev : NULL,
                                with_in ? s->prev + T * D : NULL};
        if (in->edit && in->edit(in->edit_ctx, &v)) {
            rc = sf_error_prefix("flux: edit after single_transformer_blocks.%d", i);
            goto done;
        }
        capture(m, s, stage, nreq, req, out);
    }
    if (stage <= last) {
        // image rows of z -> AdaLayerNormContinuous (scale, shift) -> proj_out
        float *xi = s->x, *emb = s->mod;
        if (c->num_single_layers) take_rows(xi, s->z, NULL, B, L, T, N, D);
        sf_linear(s->silu, B, D, &m->norm_out, m->norm_out_b, emb, 2 * D, 0);
        sf_layernorm(xi, s->nrm, B * N, D, NULL, NULL, 1e-6f);
        sf_ada_modulate(s->nrm, s->nrm, B, N, D, emb + D, emb, 2 * D);
        for (int i = 0; i < nreq; i++)
            if (req[i].site == SF_FLUX_OUTPUT)
                sf_linear(s->nrm, B * N, D, &m->proj_out, m->proj_out_b, out[i], c->out_channels,
                          0);
    }
done:
    sf_arena_give(m->work, s->block);
    return rc;
}
