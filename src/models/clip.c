/* CLIP towers (Hugging Face modeling_clip.py semantics) on the kernel layer.
 *
 * Encoder layer (pre-LN), x (N = B*T, D) the residual stream:
 *   a   = LN1(x)
 *   q,k,v = a Wq^T + bq, ...            -> one (N, 3D) buffer, heads interleaved
 *   x  += attention(q, k, v) Wo^T + bo  (residual add folded into the GEMM)
 *   x  += act(LN2(x) W1^T + b1) W2^T + b2
 * Vision embeddings: [class_embedding; patches @ Wpatch^T] + position, then
 * pre_layrnorm. Text embeddings: token_embedding[ids] + position_embedding.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/clip.h"
#include "saeflow/config.h"
#include "saeflow/safetensors.h"
#include "models/internal.h"

typedef struct {
    sf_weight qkv;     /* (3D, D): q, k, v rows stacked, one GEMM for all three */
    sf_weight q, k, v; /* (D, D) views into qkv (not owned) */
    sf_weight o, fc1, fc2;
    const float *qkvb; /* (3D) */
    const float *qb, *kb, *vb, *ob, *fc1b, *fc2b, *ln1w, *ln1b, *ln2w, *ln2b;
} clip_layer;

typedef struct {
    int present;
    sf_clip_config cfg;
    clip_layer *layers;
    const float *pos;             /* (P, D) position embedding */
    const float *post_w, *post_b; /* vision post_layernorm / text final_layer_norm */
    sf_weight proj;               /* (projection_dim, D), shape[0] == 0 if absent */
    /* vision */
    const float *class_emb; /* (D) */
    sf_weight patch;        /* (D, C*p*p) */
    const float *pre_w, *pre_b;
    /* text */
    sf_weight tok;  /* (vocab, D) */
    sf_arena *work; /* the layers' scratch, kept between forwards */
} clip_tower;

struct sf_clip {
    sf_wl *wl; /* owns the mapping and every converted tensor */
    clip_tower vision, text;
    sf_dtype dtype;
};

/* ---- config ------------------------------------------------------------- */

/* Defaults are transformers' CLIPVisionConfig / CLIPTextConfig defaults, so
 * a config that omits a key means what it means to transformers. */
static int parse_tower_config(const cJSON *o, int text, sf_clip_config *c, const char *where) {
    memset(c, 0, sizeof *c);
    int rc = 0;
    rc |= sf_cfg_int(o, "hidden_size", text ? 512 : 768, &c->hidden, where);
    rc |= sf_cfg_int(o, "intermediate_size", text ? 2048 : 3072, &c->intermediate, where);
    rc |= sf_cfg_int(o, "num_attention_heads", text ? 8 : 12, &c->heads, where);
    rc |= sf_cfg_int(o, "num_hidden_layers", 12, &c->layers, where);
    rc |= sf_cfg_int(o, "projection_dim", 512, &c->projection_dim, where);
    if (text) {
        rc |= sf_cfg_int(o, "vocab_size", 49408, &c->vocab_size, where);
        rc |= sf_cfg_int(o, "max_position_embeddings", 77, &c->max_positions, where);
        rc |= sf_cfg_int(o, "eos_token_id", 49407, &c->eos_token_id, where);
    } else {
        rc |= sf_cfg_int(o, "image_size", 224, &c->image_size, where);
        rc |= sf_cfg_int(o, "patch_size", 32, &c->patch_size, where);
        rc |= sf_cfg_int(o, "num_channels", 3, &c->channels, where);
    }
    if (rc) return -1;
    const char *act = NULL;
    if (sf_cfg_float(o, "layer_norm_eps", 1e-5f, 0, 1, INFINITY, &c->eps, where) ||
        sf_cfg_str(o, "hidden_act", NULL, &act, where))
        return -1;
    c->act = SF_ACT_QUICK_GELU;
    if (act && sf_act_parse(act, &c->act))
        return sf_error("%s: \"hidden_act\" '%s' is not supported (quick_gelu, gelu, gelu_new, "
                        "gelu_pytorch_tanh, silu, relu)",
                        where, act);
    if (c->hidden <= 0 || c->heads <= 0 || c->hidden % c->heads)
        return sf_error("%s: hidden_size %d is not a positive multiple of num_attention_heads %d",
                        where, c->hidden, c->heads);
    if (c->intermediate <= 0 || c->layers < 0 || c->layers > 1000)
        return sf_error("%s: intermediate_size %d / num_hidden_layers %d out of range", where,
                        c->intermediate, c->layers);
    if (text && (c->vocab_size <= 0 || c->max_positions <= 0))
        return sf_error("%s: vocab_size %d / max_position_embeddings %d must be positive", where,
                        c->vocab_size, c->max_positions);
    if (!text && (c->patch_size <= 0 || c->image_size < c->patch_size || c->channels <= 0 ||
                  c->image_size > 100000))
        return sf_error("%s: image_size %d / patch_size %d / num_channels %d out of range", where,
                        c->image_size, c->patch_size, c->channels);
    return 0;
}

/* ---- weights ------------------------------------------------------------ */

/* Stacks q, k, v into one (3D, D) matrix so attention's input projection is
 * a single GEMM (x is packed once, one parallel region instead of three);
 * q/k/v stay available as views for the one-token last layer. */
static int load_layers(sf_clip *m, clip_tower *tw, const char *prefix) {
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden, I = c->intermediate;
    const int64_t dd[2] = {D, D}, id[2] = {I, D}, di[2] = {D, I}, d1[1] = {D}, i1[1] = {I};
    sf_wl *W = m->wl;
    tw->layers = sf_calloc((size_t)(c->layers ? c->layers : 1), sizeof(clip_layer));
    for (int l = 0; l < c->layers; l++) {
        clip_layer *L = &tw->layers[l];
        char p[200];
        snprintf(p, sizeof p, "%sencoder.layers.%d.", prefix, l);
        sf_wl_part w3[3], b3[3];
        const char *qkv[3] = {"q", "k", "v"};
        for (int i = 0; i < 3; i++) {
            w3[i] = b3[i] = (sf_wl_part){"", 0, -1};
            snprintf(w3[i].name, sizeof w3[i].name, "%sself_attn.%s_proj.weight", p, qkv[i]);
            snprintf(b3[i].name, sizeof b3[i].name, "%sself_attn.%s_proj.bias", p, qkv[i]);
            /* each part is (D, D) / (D) */
            if (sf_wl_check(W, 2, dd, "%s", w3[i].name) || sf_wl_check(W, 1, d1, "%s", b3[i].name))
                return -1;
        }
        if (sf_wl_fused(W, &L->qkv, D, 3, w3) || !(L->qkvb = sf_wl_fused_f32(W, 3, b3)) ||
            sf_wl_weight(W, &L->o, 2, dd, "%sself_attn.out_proj.weight", p) ||
            sf_wl_weight(W, &L->fc1, 2, id, "%smlp.fc1.weight", p) ||
            sf_wl_weight(W, &L->fc2, 2, di, "%smlp.fc2.weight", p))
            return -1;
        if (!(L->ob = sf_wl_f32(W, 1, d1, "%sself_attn.out_proj.bias", p)) ||
            !(L->fc1b = sf_wl_f32(W, 1, i1, "%smlp.fc1.bias", p)) ||
            !(L->fc2b = sf_wl_f32(W, 1, d1, "%smlp.fc2.bias", p)) ||
            !(L->ln1w = sf_wl_f32(W, 1, d1, "%slayer_norm1.weight", p)) ||
            !(L->ln1b = sf_wl_f32(W, 1, d1, "%slayer_norm1.bias", p)) ||
            !(L->ln2w = sf_wl_f32(W, 1, d1, "%slayer_norm2.weight", p)) ||
            !(L->ln2b = sf_wl_f32(W, 1, d1, "%slayer_norm2.bias", p)))
            return -1;
        size_t part = (size_t)(D * D) * sf_dtype_size(L->qkv.dtype);
        sf_weight *qkvw[3] = {&L->q, &L->k, &L->v};
        for (int i = 0; i < 3; i++)
            *qkvw[i] =
                (sf_weight){L->qkv.dtype, 2, {D, D}, (const char *)L->qkv.data + i * part, NULL};
        L->qb = L->qkvb, L->kb = L->qkvb + D, L->vb = L->qkvb + 2 * D;
    }
    return 0;
}

static int load_vision(sf_clip *m, const char *prefix, const char *proj_name) {
    clip_tower *tw = &m->vision;
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden, g = c->image_size / c->patch_size;
    const int64_t d1[1] = {D}, pos[2] = {g * g + 1, D},
                  patch[4] = {D, c->channels, c->patch_size, c->patch_size};
    if (!(tw->class_emb = sf_wl_f32(m->wl, 1, d1, "%sembeddings.class_embedding", prefix)) ||
        sf_wl_weight(m->wl, &tw->patch, 4, patch, "%sembeddings.patch_embedding.weight", prefix) ||
        !(tw->pos = sf_wl_f32(m->wl, 2, pos, "%sembeddings.position_embedding.weight", prefix)) ||
        !(tw->pre_w = sf_wl_f32(m->wl, 1, d1, "%spre_layrnorm.weight", prefix)) ||
        !(tw->pre_b = sf_wl_f32(m->wl, 1, d1, "%spre_layrnorm.bias", prefix)) ||
        !(tw->post_w = sf_wl_f32(m->wl, 1, d1, "%spost_layernorm.weight", prefix)) ||
        !(tw->post_b = sf_wl_f32(m->wl, 1, d1, "%spost_layernorm.bias", prefix)) ||
        load_layers(m, tw, prefix))
        return -1;
    if (proj_name && sf_wl_has(m->wl, "%s", proj_name)) {
        const int64_t ps[2] = {c->projection_dim, D};
        if (sf_wl_weight(m->wl, &tw->proj, 2, ps, "%s", proj_name)) return -1;
    } else {
        tw->cfg.projection_dim = 0;
    }
    return 0;
}

static int load_text(sf_clip *m, const char *prefix, const char *proj_name) {
    clip_tower *tw = &m->text;
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden, d1[1] = {D}, pos[2] = {c->max_positions, D},
                  tok[2] = {c->vocab_size, D};
    if (sf_wl_weight(m->wl, &tw->tok, 2, tok, "%sembeddings.token_embedding.weight", prefix) ||
        !(tw->pos = sf_wl_f32(m->wl, 2, pos, "%sembeddings.position_embedding.weight", prefix)) ||
        !(tw->post_w = sf_wl_f32(m->wl, 1, d1, "%sfinal_layer_norm.weight", prefix)) ||
        !(tw->post_b = sf_wl_f32(m->wl, 1, d1, "%sfinal_layer_norm.bias", prefix)) ||
        load_layers(m, tw, prefix))
        return -1;
    if (proj_name && sf_wl_has(m->wl, "%s", proj_name)) {
        const int64_t ps[2] = {c->projection_dim, D};
        if (sf_wl_weight(m->wl, &tw->proj, 2, ps, "%s", proj_name)) return -1;
    } else {
        tw->cfg.projection_dim = 0;
    }
    return 0;
}

/* One tower (text = 0: vision, 1: text) of a full CLIP config (its
 * vision_config / text_config, or the older *_config_dict) or of a
 * single-tower one; weights under "vision_model." / "text_model." or, for a
 * single-tower file, no prefix. Absent weights leave the tower absent. */
static int load_tower(sf_clip *m, const cJSON *root, int is_full, int is_single, int text,
                      int top_proj, const char *cfg_path) {
    const char *name = text ? "text" : "vision";
    char key[32], where[600];
    const cJSON *c = root;
    if (is_full) {
        snprintf(key, sizeof key, "%s_config", name);
        c = cJSON_GetObjectItemCaseSensitive(root, key);
        if (!cJSON_IsObject(c)) {
            snprintf(key, sizeof key, "%s_config_dict", name);
            c = cJSON_GetObjectItemCaseSensitive(root, key);
        }
        if (!cJSON_IsObject(c)) c = NULL;
    }
    snprintf(where, sizeof where, "%s%s%s%s", cfg_path, is_full ? " (" : "", is_full ? name : "",
             is_full ? "_config)" : "");
    clip_tower *tw = text ? &m->text : &m->vision;
    if (parse_tower_config(c, text, &tw->cfg, where)) return -1;
    if (is_full) tw->cfg.projection_dim = top_proj;
    const char *probe =
        text ? "embeddings.token_embedding.weight" : "embeddings.patch_embedding.weight";
    const char *prefix = sf_wl_has(m->wl, "%s_model.%s", name, probe)
                             ? (text ? "text_model." : "vision_model.")
                         : (is_single && sf_wl_has(m->wl, "%s", probe)) ? ""
                                                                        : NULL;
    if (!prefix) return 0;
    int rc = text ? load_text(m, prefix, "text_projection.weight")
                  : load_vision(m, prefix, "visual_projection.weight");
    if (rc) return -1;
    tw->present = 1;
    return 0;
}

sf_clip *sf_clip_load(const char *dir, const sf_clip_load_opts *opts) {
    sf_clip_load_opts def = {SF_DT_F32, 1, 1};
    if (!opts) opts = &def;
    sf_dtype dt = opts->dtype ? opts->dtype : SF_DT_F32;
    if (dt != SF_DT_F32 && dt != SF_DT_BF16) {
        sf_error("%s: weight dtype %s not supported (F32 or BF16)", dir, sf_dtype_name(dt));
        return NULL;
    }
    char *cfg_path = sf_path_join(dir, "config.json");
    size_t len;
    char *txt = sf_read_file(cfg_path, &len);
    if (!txt) {
        sf_error_prefix("%s: a Hugging Face CLIP directory needs config.json", dir);
        free(cfg_path);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(txt, len);
    free(txt);
    sf_clip *m = sf_calloc(1, sizeof *m);
    m->vision.work = sf_arena_new(), m->text.work = sf_arena_new();
    m->dtype = dt;
    if (!root || !cJSON_IsObject(root)) {
        sf_error("%s: not a JSON object", cfg_path);
        goto fail;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const char *type = cJSON_IsString(mt) ? mt->valuestring : "";
    int is_full = !strcmp(type, "clip"), is_vis = !strcmp(type, "clip_vision_model"),
        is_txt = !strcmp(type, "clip_text_model");
    if (!is_full && !is_vis && !is_txt) {
        sf_error(
            "%s: model_type '%s' is not a CLIP model (clip, clip_vision_model, clip_text_model)",
            cfg_path, type);
        goto fail;
    }
    if (!(m->wl = sf_wl_open(dir, dt))) goto fail;

    int top_proj = 512;
    if (is_full && sf_cfg_int(root, "projection_dim", 512, &top_proj, cfg_path)) goto fail;
    if (opts->vision && (is_full || is_vis) &&
        load_tower(m, root, is_full, is_vis, 0, top_proj, cfg_path))
        goto fail;
    if (opts->text && (is_full || is_txt) &&
        load_tower(m, root, is_full, is_txt, 1, top_proj, cfg_path))
        goto fail;
    if (!m->vision.present && !m->text.present) {
        sf_error("%s: no %s tower weights found in the checkpoint", dir,
                 opts->vision && opts->text ? "vision or text"
                 : opts->vision             ? "vision"
                                            : "text");
        goto fail;
    }
    cJSON_Delete(root);
    free(cfg_path);
    return m;
fail:
    cJSON_Delete(root);
    free(cfg_path);
    sf_clip_free(m);
    return NULL;
}

static void free_tower(clip_tower *tw) {
    free(tw->layers); /* the weights belong to the loader */
    sf_arena_free(tw->work);
}

void sf_clip_free(sf_clip *m) {
    if (!m) return;
    free_tower(&m->vision);
    free_tower(&m->text);
    sf_wl_close(m->wl);
    free(m);
}

const sf_clip_config *sf_clip_vision_config(const sf_clip *m) {
    return m->vision.present ? &m->vision.cfg : NULL;
}
const sf_clip_config *sf_clip_text_config(const sf_clip *m) {
    return m->text.present ? &m->text.cfg : NULL;
}

int sf_clip_vision_tokens(const sf_clip *m) {
    if (!m->vision.present) return 0;
    int g = m->vision.cfg.image_size / m->vision.cfg.patch_size;
    return g * g + 1;
}

/* ---- forward ------------------------------------------------------------ */

/* Resolves the request to the number of layers to run; -1 on error. */
static int layers_needed(const clip_tower *tw, const sf_clip_request *r, const char *tower) {
    const int L = tw->cfg.layers;
    if (!tw->present) return sf_error("the checkpoint has no %s tower", tower);
    switch (r->what) {
    case SF_CLIP_HIDDEN: {
        int i = r->layer < 0 ? r->layer + L + 1 : r->layer;
        if (i < 0 || i > L)
            return sf_error("%s hidden_states[%d] out of range: the tower has %d layers, so "
                            "indices run from %d to %d",
                            tower, r->layer, L, -(L + 1), L);
        return i;
    }
    case SF_CLIP_EMBEDS:
        if (!tw->proj.data)
            return sf_error("the checkpoint has no %s projection (a CLIPModel or *WithProjection "
                            "checkpoint has one)",
                            tower);
        return L;
    case SF_CLIP_POOLED:
        return L;
    }
    return sf_error("unknown CLIP output kind %d", (int)r->what);
}

int64_t sf_clip_output_size(const sf_clip *m, int text, const sf_clip_request *r, int T) {
    const clip_tower *tw = text ? &m->text : &m->vision;
    if (layers_needed(tw, r, text ? "text" : "vision") < 0) return -1;
    if (r->what == SF_CLIP_EMBEDS) return tw->cfg.projection_dim;
    if (r->what == SF_CLIP_HIDDEN &&
        (r->tokens == SF_CLIP_TOK_ALL || r->tokens == SF_CLIP_TOK_VALID))
        return (int64_t)(text ? T : sf_clip_vision_tokens(m)) * tw->cfg.hidden;
    return tw->cfg.hidden;
}

typedef struct {
    float *ln, *qkv, *att, *mlp; /* (N, D), (N, 3D), (N, D), (N, I) */
    void *block;                 /* all four, from the tower's arena */
} scratch;

/* One block of the tower's arena: an extraction run's forwards after the
 * first touch no fresh pages (vision L/14, batch 8: 24k page faults per
 * forward before; ~350 with this and the kernels' scratch kept). */
static void scratch_alloc(const clip_tower *tw, scratch *s, int64_t N, int64_t D, int64_t I) {
    float **const buf[] = {&s->ln, &s->qkv, &s->att, &s->mlp};
    const size_t len[] = {N * D, N * 3 * D, N * D, N * I};
    s->block = sf_arena_take_floats(tw->work, 4, len, buf);
}
static void scratch_free(const clip_tower *tw, scratch *s) {
    sf_arena_give(tw->work, s->block);
}

/* One full encoder layer on x (N, D), in place: B sequences packed back to
 * back, sequence b in rows [off[b], off[b+1]) (N = off[B]; a uniform batch
 * has off[b] = b*T). Only attention sees the sequence boundaries. */
static void layer_full(const clip_tower *tw, const clip_layer *L, float *x, int64_t B,
                       const int64_t *off, int causal, const int32_t *key_mask, scratch *s) {
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden, I = c->intermediate, N = off[B], H = c->heads, Dh = D / H;
    sf_layernorm(x, s->ln, N, D, L->ln1w, L->ln1b, c->eps);
    // qkv (N, 3D) = ln @ [Wq; Wk; Wv]^T + [bq; bk; bv]: q, k, v are its thirds
    sf_linear(s->ln, N, D, &L->qkv, L->qkvb, s->qkv, 3 * D, 0);
    sf_attn_shape as = {.B = B,
                        .H = H,
                        .Dh = Dh,
                        .ldq = 3 * D,
                        .ldk = 3 * D,
                        .ldv = 3 * D,
                        .ldo = D,
                        .scale = 1.0f / sqrtf((float)Dh),
                        .causal = causal,
                        .key_mask = key_mask,
                        .q_off = off,
                        .k_off = off};
    sf_attention(&as, s->qkv, s->qkv + D, s->qkv + 2 * D, s->att);
    sf_linear(s->att, N, D, &L->o, L->ob, x, D, 1); // x += att Wo^T + bo
    sf_layernorm(x, s->ln, N, D, L->ln2w, L->ln2b, c->eps);
    sf_linear(s->ln, N, D, &L->fc1, L->fc1b, s->mlp, I, 0); // (N, I)
    sf_activation(s->mlp, (size_t)(N * I), c->act);
    sf_linear(s->mlp, N, I, &L->fc2, L->fc2b, x, D, 1); // x += mlp W2^T + b2
}

/* The last layer when only one token per sequence (row off[b] + sel[b]) is
 * wanted: keys/values for every row, everything else for one row per
 * sequence. vis (N): which keys that row may see (causal and padding folded
 * in); iota (B + 1): 0, 1, ..., B, the query rows. Updates those rows of x. */
static void layer_one_token(const clip_tower *tw, const clip_layer *L, float *x, int64_t B,
                            const int64_t *off, const int64_t *sel, const int32_t *vis,
                            const int64_t *iota, scratch *s) {
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden, I = c->intermediate, N = off[B], H = c->heads, Dh = D / H;
    sf_layernorm(x, s->ln, N, D, L->ln1w, L->ln1b, c->eps);
    sf_linear(s->ln, N, D, &L->k, L->kb, s->qkv + D, 3 * D, 0);
    sf_linear(s->ln, N, D, &L->v, L->vb, s->qkv + 2 * D, 3 * D, 0);
    // gather the selected rows: xs (B, D) residual, a (B, D) normed
    float *xs = s->att, *a = s->att + B * D, *q = s->att + 2 * B * D, *o = s->att + 3 * B * D;
    for (int64_t b = 0; b < B; b++) {
        memcpy(xs + b * D, x + (off[b] + sel[b]) * D, (size_t)D * sizeof(float));
        memcpy(a + b * D, s->ln + (off[b] + sel[b]) * D, (size_t)D * sizeof(float));
    }
    sf_linear(a, B, D, &L->q, L->qb, q, D, 0);
    sf_attn_shape as = {.B = B,
                        .H = H,
                        .Dh = Dh,
                        .ldq = D,
                        .ldk = 3 * D,
                        .ldv = 3 * D,
                        .ldo = D,
                        .scale = 1.0f / sqrtf((float)Dh),
                        .causal = 0,
                        .key_mask = vis,
                        .q_off = iota,
                        .k_off = off};
    sf_attention(&as, q, s->qkv + D, s->qkv + 2 * D, o);
    sf_linear(o, B, D, &L->o, L->ob, xs, D, 1);
    sf_layernorm(xs, a, B, D, L->ln2w, L->ln2b, c->eps);
    sf_linear(a, B, D, &L->fc1, L->fc1b, s->mlp, I, 0);
    sf_activation(s->mlp, (size_t)(B * I), c->act);
    sf_linear(s->mlp, B, I, &L->fc2, L->fc2b, xs, D, 1);
    for (int64_t b = 0; b < B; b++)
        memcpy(x + (off[b] + sel[b]) * D, xs + b * D, (size_t)D * sizeof(float));
}

/* Every token's hidden state, rather than one per sequence. */
static int all_tokens(const sf_clip_request *r) {
    return r->what == SF_CLIP_HIDDEN &&
           (r->tokens == SF_CLIP_TOK_ALL || r->tokens == SF_CLIP_TOK_VALID);
}

/* Runs `nl` layers on x (N, D), sequences packed as in layer_full, and
 * writes the requested output. sel[b]: the pooled / first token's position
 * within sequence b. mask (N) or NULL: 0 = padding key. An all-token output
 * (TOK_ALL) needs the uniform layout (off[b] = b*T): it is x itself;
 * TOK_VALID keeps the rows whose mask is 1. */
static int run_tower(const clip_tower *tw, float *x, int64_t B, const int64_t *off, int nl,
                     const sf_clip_request *r, int causal, const int32_t *mask, const int64_t *sel,
                     float *out) {
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden, N = off[B];
    int one_token = !all_tokens(r);
    scratch s;
    /* att doubles as the 4 (B, D) buffers of the one-token layer */
    scratch_alloc(tw, &s, N > 4 * B ? N : 4 * B, D, c->intermediate);
    int32_t *vis = NULL;
    int64_t *iota = NULL;
    if (one_token && nl > 0) {
        vis = sf_malloc((size_t)N * sizeof(int32_t));
        iota = sf_malloc((size_t)(B + 1) * sizeof(int64_t));
        for (int64_t b = 0; b <= B; b++)
            iota[b] = b;
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < off[b + 1] - off[b]; j++)
                vis[off[b] + j] = (!causal || j <= sel[b]) && (!mask || mask[off[b] + j]);
    }
    for (int l = 0; l < nl; l++) {
        if (one_token && l == nl - 1)
            layer_one_token(tw, &tw->layers[l], x, B, off, sel, vis, iota, &s);
        else
            layer_full(tw, &tw->layers[l], x, B, off, causal, mask, &s);
    }
    free(vis);
    free(iota);
    if (!one_token && r->tokens == SF_CLIP_TOK_VALID && mask) {
        int64_t o = 0; /* the non-padding rows, in order */
        for (int64_t i = 0; i < N; i++)
            if (mask[i]) memcpy(out + (o++) * D, x + i * D, (size_t)D * sizeof(float));
    } else if (!one_token) {
        memcpy(out, x, (size_t)(N * D) * sizeof(float));
    } else {
        float *rows = r->what == SF_CLIP_EMBEDS ? s.ln : out; // (B, D)
        for (int64_t b = 0; b < B; b++)
            memcpy(rows + b * D, x + (off[b] + sel[b]) * D, (size_t)D * sizeof(float));
        if (r->what != SF_CLIP_HIDDEN)
            sf_layernorm(rows, rows, B, D, tw->post_w, tw->post_b, c->eps);
        if (r->what == SF_CLIP_EMBEDS)
            sf_linear(rows, B, D, &tw->proj, NULL, out, tw->proj.shape[0], 0);
    }
    scratch_free(tw, &s);
    return 0;
}

int sf_clip_vision_forward(const sf_clip *m, const float *pixels, int64_t B,
                           const sf_clip_request *r, float *out) {
    const clip_tower *tw = &m->vision;
    int nl = layers_needed(tw, r, "vision");
    if (nl < 0) return -1;
    if (B <= 0) return 0;
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden, S = c->image_size, g = S / c->patch_size, G = g * g, T = G + 1;
    // embeddings: x (B, T, D) = [cls; patches] + pos
    float *x = sf_malloc_aligned((size_t)(B * T * D) * sizeof(float));
    float *pe = sf_malloc_aligned((size_t)(B * G * D) * sizeof(float));
    sf_patch_embed(pixels, B, c->channels, S, S, c->patch_size, &tw->patch, NULL, pe);
#pragma omp parallel for schedule(static) if (B * T * D > 65536)
    for (int64_t b = 0; b < B; b++) {
        float *xb = x + b * T * D;
        for (int64_t d = 0; d < D; d++)
            xb[d] = tw->class_emb[d] + tw->pos[d];
        for (int64_t t = 1; t < T; t++)
            for (int64_t d = 0; d < D; d++)
                xb[t * D + d] = pe[(b * G + t - 1) * D + d] + tw->pos[t * D + d];
    }
    sf_free_aligned(pe);
    sf_layernorm(x, x, B * T, D, tw->pre_w, tw->pre_b, c->eps);
    int64_t *sel = sf_calloc((size_t)B, sizeof(int64_t)); /* CLS = token 0 */
    int64_t *off = sf_malloc((size_t)(B + 1) * sizeof(int64_t));
    for (int64_t b = 0; b <= B; b++)
        off[b] = b * T;
    int rc = run_tower(tw, x, B, off, nl, r, 0, NULL, sel, out);
    free(off);
    free(sel);
    sf_free_aligned(x);
    return rc;
}

int sf_clip_text_forward(const sf_clip *m, const int32_t *ids, const int32_t *mask, int64_t B,
                         int64_t T, const sf_clip_request *r, float *out) {
    const clip_tower *tw = &m->text;
    int nl = layers_needed(tw, r, "text");
    if (nl < 0) return -1;
    if (B <= 0) return 0;
    const sf_clip_config *c = &tw->cfg;
    const int64_t D = c->hidden;
    if (T <= 0 || T > c->max_positions)
        return sf_error("text: sequence length %lld outside [1, %d] (max_position_embeddings)",
                        (long long)T, c->max_positions);
    for (int64_t i = 0; i < B * T; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return sf_error("text: token id %d at [%lld, %lld] outside the vocabulary [0, %d)",
                            ids[i], (long long)(i / T), (long long)(i % T), c->vocab_size);
    /* Pooled position, exactly as transformers' CLIPTextTransformer: legacy
     * configs (eos_token_id == 2) take argmax(ids) (the EOT id 49407 is the
     * largest in CLIP's vocabulary); others the first eos_token_id, and
     * argmax over an all-false row gives 0. Both argmaxes return the first
     * maximal index. */
    int64_t *sel = sf_calloc((size_t)B, sizeof(int64_t));
    const int one_token = !all_tokens(r), valid = !one_token && r->tokens == SF_CLIP_TOK_VALID;
    for (int64_t b = 0; b < B; b++) {
        const int32_t *row = ids + b * T;
        int64_t best = 0;
        if (c->eos_token_id == 2) {
            for (int64_t t = 1; t < T; t++)
                if (row[t] > row[best]) best = t;
        } else {
            for (int64_t t = 0; t < T; t++)
                if (row[t] == c->eos_token_id) {
                    best = t;
                    break;
                }
        }
        sel[b] = r->what == SF_CLIP_HIDDEN && r->tokens == SF_CLIP_TOK_FIRST ? 0 : best;
    }
    /* Under the causal mask position t depends only on positions <= t, so a
     * one-token request needs positions 0..sel[b] of sequence b and nothing
     * after, and a TOK_VALID request positions up to the sequence's last
     * token: the sequences are packed back to back with those lengths (a
     * caption of 12 tokens costs 12 rows, not 77), and attention runs per
     * sequence (ragged). TOK_ALL keeps every position. */
    int64_t *off = sf_malloc((size_t)(B + 1) * sizeof(int64_t));
    off[0] = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = T;
        if (one_token) {
            len = sel[b] + 1;
        } else if (valid && mask) {
            len = 0;
            for (int64_t t = 0; t < T; t++)
                if (mask[b * T + t]) len = t + 1;
        }
        off[b + 1] = off[b] + len;
    }
    const int64_t N = off[B];
    // embeddings: x (N, D) = token_embedding[ids] + position_embedding[t]
    float *x = sf_malloc_aligned((size_t)((N > 0 ? N : 1) * D) * sizeof(float));
    int32_t *mk = mask ? sf_malloc((size_t)N * sizeof(int32_t)) : NULL;
#pragma omp parallel for schedule(static) if (N * D > 65536)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < off[b + 1] - off[b]; t++) {
            float *xi = x + (off[b] + t) * D;
            sf_weight_rows_f32(&tw->tok, ids[b * T + t], 1, xi);
            const float *p = tw->pos + t * D;
            for (int64_t d = 0; d < D; d++)
                xi[d] += p[d];
            if (mk) mk[off[b] + t] = mask[b * T + t];
        }
    int rc = run_tower(tw, x, B, off, nl, r, 1, mk, sel, out);
    free(mk);
    free(off);
    free(sel);
    sf_free_aligned(x);
    return rc;
}

int sf_clip_parse_request(const char *s, sf_clip_tokens tok, sf_clip_request *r) {
    memset(r, 0, sizeof *r);
    r->tokens = tok;
    if (!strcmp(s, "pooled") || !strcmp(s, "pooler_output")) {
        r->what = SF_CLIP_POOLED;
        return 0;
    }
    if (!strcmp(s, "embeds") || !strcmp(s, "projected")) {
        r->what = SF_CLIP_EMBEDS;
        return 0;
    }
    if (sf_models_parse_layer(s, &r->layer)) {
        r->what = SF_CLIP_HIDDEN;
        return 0;
    }
    return sf_error("output '%s' not understood (pooled, embeds, layer:N with N a hidden_states "
                    "index, e.g. -2)",
                    s);
}
