/* T5 encoder (transformers modeling_t5.py, T5EncoderModel) on the kernel
 * layer.
 *
 * x (N = B*T, D) the residual stream, I = num_heads * d_kv, F = d_ff:
 *   x   = shared[ids]                                (no scaling)
 *   bias(h, i, j) = relative_attention_bias[bucket(j - i), h]  (block 0's
 *                   table, computed once, shared by every block), (H, T, T)
 * block l (pre-norm, no biases anywhere):
 *   a   = RMSNorm(x) * g0        RMSNorm(x) = x / sqrt(mean(x^2) + eps), F32
 *   q,k,v = a Wq^T, a Wk^T, a Wv^T                 -> one (N, 3I) GEMM
 *   x  += softmax(q k^T + bias [+ key mask]) v Wo^T   (NO 1/sqrt(d) scaling)
 *   f   = RMSNorm(x) * g1
 *   x  += (act(f Wi0^T) * (f Wi1^T)) Wo^T   gated ("gated-gelu": gelu_new)
 *      or  act(f Wi^T) Wo^T                 ("relu")
 * last_hidden_state = RMSNorm(x) * final_layer_norm.
 * bucket(rel) (bidirectional, nb = num_buckets / 2, me = nb / 2): +nb if
 * rel > 0; |rel| < me exact; else me + trunc(log(|rel| / me) /
 * log(max_distance / me) * (nb - me)) capped at nb - 1, in F32 like torch.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/config.h"
#include "saeflow/t5.h"
#include "models/internal.h"

typedef struct {
    sf_weight qkv;    /* (3I, D): q, k, v rows stacked, one GEMM */
    sf_weight o;      /* (D, I) */
    sf_weight wi;     /* gated: (2F, D) = [wi_0; wi_1]; else (F, D) */
    sf_weight wo;     /* (D, F) */
    const float *ln0; /* layer.0.layer_norm (D) */
    const float *ln1; /* layer.1.layer_norm (D) */
} t5_block;

struct sf_t5 {
    sf_wl *wl; /* owns the mapping and every converted tensor */
    sf_t5_config cfg;
    t5_block *blocks;
    sf_weight emb;         /* shared (vocab, D) */
    const float *rel;      /* (num_buckets, H) of block 0 */
    const float *final_ln; /* (D) */
    sf_arena *work;        /* the blocks' scratch, kept between forwards */
};

/* ---- config ------------------------------------------------------------- */

/* Defaults are T5Config's, so an omitted key means what it means there. */
static int parse_config(const cJSON *o, sf_t5_config *c, const char *where) {
    memset(c, 0, sizeof *c);
    int rc = 0;
    rc |= sf_cfg_int_range(o, "vocab_size", 0, 32128, 1, 1 << 24, &c->vocab_size, where) < 0;
    rc |= sf_cfg_int_range(o, "d_model", 0, 512, 1, 1 << 20, &c->d_model, where) < 0;
    rc |= sf_cfg_int_range(o, "d_kv", 0, 64, 1, 1 << 16, &c->d_kv, where) < 0;
    rc |= sf_cfg_int_range(o, "d_ff", 0, 2048, 1, 1 << 22, &c->d_ff, where) < 0;
    rc |= sf_cfg_int_range(o, "num_layers", 0, 6, 0, 1000, &c->num_layers, where) < 0;
    rc |= sf_cfg_int_range(o, "num_heads", 0, 8, 1, 4096, &c->num_heads, where) < 0;
    rc |= sf_cfg_int_range(o, "relative_attention_num_buckets", 0, 32, 4, 1 << 16, &c->num_buckets,
                           where) < 0;
    rc |= sf_cfg_int_range(o, "relative_attention_max_distance", 0, 128, 1, 1 << 24,
                           &c->max_distance, where) < 0;
    rc |= sf_cfg_float(o, "layer_norm_epsilon", 1e-6f, 0, 1, 1, &c->eps, where) < 0;
    const char *f = "relu";
    rc |= sf_cfg_str(o, "feed_forward_proj", "relu", &f, where) < 0;
    if (rc) return -1;
    /* T5Config: "gated-X" -> gated, act X; "gated-gelu" means gelu_new */
    const char *act = f;
    if (!strncmp(f, "gated-", 6)) c->gated = 1, act = f + 6;
    if (!strcmp(f, "gated-gelu")) act = "gelu_new";
    if (strchr(act, '-') || sf_act_parse(act, &c->act))
        return sf_error("%s: feed_forward_proj '%s' is not supported (relu, gelu, gated-gelu, "
                        "gated-silu, ...)",
                        where, f);
    if (c->max_distance <= c->num_buckets / 4) /* log(max_distance / max_exact) > 0 */
        return sf_error("%s: relative_attention_max_distance %d must exceed num_buckets / 4 (%d)",
                        where, c->max_distance, c->num_buckets / 4);
    return 0;
}

/* ---- weights ------------------------------------------------------------ */

static int load_blocks(sf_t5 *m) {
    const sf_t5_config *c = &m->cfg;
    const int64_t D = c->d_model, I = (int64_t)c->num_heads * c->d_kv, F = c->d_ff;
    const int64_t id[2] = {I, D}, di[2] = {D, I}, fd[2] = {F, D}, df[2] = {D, F}, d1[1] = {D};
    sf_wl *W = m->wl;
    m->blocks = sf_calloc((size_t)(c->num_layers ? c->num_layers : 1), sizeof(t5_block));
    for (int l = 0; l < c->num_layers; l++) {
        t5_block *L = &m->blocks[l];
        char p[128];
        snprintf(p, sizeof p, "encoder.block.%d.layer.", l);
        sf_wl_part qkv[3], wi[2];
        const char *n3[3] = {"q", "k", "v"};
        for (int i = 0; i < 3; i++) {
            qkv[i] = (sf_wl_part){"", 0, -1};
            snprintf(qkv[i].name, sizeof qkv[i].name, "%s0.SelfAttention.%s.weight", p, n3[i]);
            if (sf_wl_check(W, 2, id, "%s", qkv[i].name)) return -1;
        }
        if (sf_wl_fused(W, &L->qkv, D, 3, qkv) ||
            sf_wl_weight(W, &L->o, 2, di, "%s0.SelfAttention.o.weight", p) ||
            sf_wl_weight(W, &L->wo, 2, df, "%s1.DenseReluDense.wo.weight", p))
            return -1;
        if (c->gated) {
            for (int i = 0; i < 2; i++) {
                wi[i] = (sf_wl_part){"", 0, -1};
                snprintf(wi[i].name, sizeof wi[i].name, "%s1.DenseReluDense.wi_%d.weight", p, i);
                if (sf_wl_check(W, 2, fd, "%s", wi[i].name)) return -1;
            }
            if (sf_wl_fused(W, &L->wi, D, 2, wi)) return -1;
        } else if (sf_wl_weight(W, &L->wi, 2, fd, "%s1.DenseReluDense.wi.weight", p)) {
            return -1;
        }
        if (!(L->ln0 = sf_wl_f32(W, 1, d1, "%s0.layer_norm.weight", p)) ||
            !(L->ln1 = sf_wl_f32(W, 1, d1, "%s1.layer_norm.weight", p)))
            return -1;
    }
    return 0;
}

sf_t5 *sf_t5_load(const char *dir, sf_dtype dtype) {
    if (dtype != SF_T5_AS_STORED && dtype != SF_DT_F32 && dtype != SF_DT_BF16 &&
        dtype != SF_DT_F16) {
        sf_error("%s: weight dtype %s not supported (as stored, F32, BF16, F16)", dir,
                 sf_dtype_name(dtype));
        return NULL;
    }
    char *cfg_path = sf_path_join(dir, "config.json");
    cJSON *root = sf_cfg_load(cfg_path);
    if (!root) {
        sf_error_prefix("%s: a Hugging Face T5 folder needs config.json", dir);
        free(cfg_path);
        return NULL;
    }
    sf_t5 *m = sf_calloc(1, sizeof *m);
    m->work = sf_arena_new();
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "t5") && strcmp(mt->valuestring, "umt5")) {
        sf_error("%s: model_type '%s' is not a T5 model", cfg_path, mt->valuestring);
        goto fail;
    }
    if (parse_config(root, &m->cfg, cfg_path)) goto fail;
    if (!(m->wl = sf_wl_open(dir, dtype == SF_T5_AS_STORED ? SF_WL_AS_STORED : dtype))) goto fail;
    const sf_t5_config *c = &m->cfg;
    const int64_t emb[2] = {c->vocab_size, c->d_model}, d1[1] = {c->d_model},
                  rel[2] = {c->num_buckets, c->num_heads};
    /* T5EncoderModel saves the tied embedding as shared.weight; some
     * exports keep only encoder.embed_tokens.weight */
    const char *emb_name =
        sf_wl_has(m->wl, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight";
    if (sf_wl_weight(m->wl, &m->emb, 2, emb, "%s", emb_name) ||
        !(m->final_ln = sf_wl_f32(m->wl, 1, d1, "encoder.final_layer_norm.weight")) ||
        (c->num_layers > 0 &&
         !(m->rel = sf_wl_f32(m->wl, 2, rel,
                              "encoder.block.0.layer.0.SelfAttention.relative_attention_bias."
                              "weight"))) ||
        load_blocks(m))
        goto fail;
    cJSON_Delete(root);
    free(cfg_path);
    return m;
fail:
    cJSON_Delete(root);
    free(cfg_path);
    sf_t5_free(m);
    return NULL;
}

void sf_t5_free(sf_t5 *m) {
    if (!m) return;
    free(m->blocks); /* the weights belong to the loader */
    sf_wl_close(m->wl);
    sf_arena_free(m->work);
    free(m);
}

const sf_t5_config *sf_t5_config_of(const sf_t5 *m) {
    return &m->cfg;
}

/* ---- forward ------------------------------------------------------------ */

int sf_t5_bucket(int64_t rel, int num_buckets, int max_distance) {
    const int nb = num_buckets / 2, me = nb / 2;
    int b = rel > 0 ? nb : 0;
    int64_t a = rel < 0 ? -rel : rel;
    if (a < me) return b + (int)a;
    /* torch: log of an F32 tensor, divided by a Python float (cast to F32),
     * times an int, truncated toward zero */
    float r = logf((float)a / (float)me) / (float)log((double)max_distance / me) * (float)(nb - me);
    int64_t large = me + (int64_t)r;
    if (large > nb - 1) large = nb - 1;
    return b + (int)large;
}

typedef struct {
    float *ln, *qkv, *att, *ff, *g; /* (N, D), (N, 3I), (N, I), (N, 2F | F), (N, F) */
} scratch;

static void block_forward(const sf_t5 *m, const t5_block *L, float *x, int64_t B, int64_t T,
                          const float *bias, const int32_t *mask, scratch *s) {
    const sf_t5_config *c = &m->cfg;
    const int64_t D = c->d_model, H = c->num_heads, Dh = c->d_kv, I = H * Dh, F = c->d_ff,
                  N = B * T;
    // self-attention: x += Attn(RMSNorm(x) * g0) Wo^T
    sf_rmsnorm(x, s->ln, N, D, L->ln0, c->eps);
    sf_linear(s->ln, N, D, &L->qkv, NULL, s->qkv, 3 * I, 0); // (N, 3I)
    sf_attn_shape as = {.B = B,
                        .Tq = T,
                        .Tk = T,
                        .H = H,
                        .Dh = Dh,
                        .ldq = 3 * I,
                        .ldk = 3 * I,
                        .ldv = 3 * I,
                        .ldo = I,
                        .scale = 1.0f, // T5 folds the scale into its init
                        .key_mask = mask,
                        .bias = bias};
    sf_attention(&as, s->qkv, s->qkv + I, s->qkv + 2 * I, s->att);
    sf_linear(s->att, N, I, &L->o, NULL, x, D, 1);
    // feed-forward: x += FF(RMSNorm(x) * g1)
    sf_rmsnorm(x, s->ln, N, D, L->ln1, c->eps);
    if (c->gated) {
        sf_linear(s->ln, N, D, &L->wi, NULL, s->ff, 2 * F, 0); // [h0 | h1] (N, 2F)
#pragma omp parallel for schedule(static) if (N * F > 65536)
        for (int64_t n = 0; n < N; n++) {
            float *h0 = s->ff + n * 2 * F, *h1 = h0 + F, *g = s->g + n * F;
            sf_activation(h0, (size_t)F, c->act);
            for (int64_t f = 0; f < F; f++)
                g[f] = h0[f] * h1[f];
        }
    } else {
        sf_linear(s->ln, N, D, &L->wi, NULL, s->g, F, 0);
        sf_activation(s->g, (size_t)(N * F), c->act);
    }
    sf_linear(s->g, N, F, &L->wo, NULL, x, D, 1);
}

int sf_t5_forward(const sf_t5 *m, const int32_t *ids, const int32_t *mask, int64_t B, int64_t T,
                  const sf_t5_request *r, float *out) {
    const sf_t5_config *c = &m->cfg;
    const int L = c->num_layers;
    int nl = L;
    if (r->what == SF_T5_HIDDEN) {
        nl = r->layer < 0 ? r->layer + L + 1 : r->layer;
        if (nl < 0 || nl > L)
            return sf_error("t5: hidden[%d] out of range: the encoder has %d blocks, so indices "
                            "run from %d to %d",
                            r->layer, L, -(L + 1), L);
    } else if (r->what != SF_T5_LAST) {
        return sf_error("t5: unknown output kind %d", (int)r->what);
    }
    if (B <= 0) return 0;
    if (T <= 0 || T > 1000000)
        return sf_error("t5: sequence length %lld out of range", (long long)T);
    for (int64_t i = 0; i < B * T; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return sf_error("t5: token id %d at [%lld, %lld] outside the vocabulary [0, %d)",
                            ids[i], (long long)(i / T), (long long)(i % T), c->vocab_size);
    const int64_t D = c->d_model, H = c->num_heads, I = H * c->d_kv, F = c->d_ff, N = B * T;
    // x (N, D) = shared[ids]
    float *x = sf_malloc_aligned((size_t)(N * D) * sizeof(float));
#pragma omp parallel for schedule(static) if (N * D > 65536)
    for (int64_t i = 0; i < N; i++)
        sf_weight_rows_f32(&m->emb, ids[i], 1, x + i * D);
    float *bias = NULL;
    if (nl > 0) {
        // bias (H, T, T) from block 0's table: one bucket per distance j - i
        int32_t *bk = sf_malloc((size_t)(2 * T - 1) * sizeof(int32_t));
        for (int64_t d = -(T - 1); d <= T - 1; d++)
            bk[d + T - 1] = sf_t5_bucket(d, c->num_buckets, c->max_distance);
        bias = sf_malloc_aligned((size_t)(H * T * T) * sizeof(float));
#pragma omp parallel for schedule(static) if (H * T * T > 65536)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < T; j++)
                    bias[(h * T + i) * T + j] = m->rel[bk[j - i + T - 1] * H + h];
        free(bk);
        // scratch: one block of the model's arena, so a generation run's
        // prompts after the first touch no fresh pages (ff only when gated)
        scratch s;
        float **const buf[] = {&s.ln, &s.qkv, &s.att, &s.ff, &s.g};
        const size_t len[] = {N * D, N * 3 * I, N * I, c->gated ? N * 2 * F : 0, N * F};
        void *block = sf_arena_take_floats(m->work, 5, len, buf);
        for (int l = 0; l < nl; l++)
            block_forward(m, &m->blocks[l], x, B, T, bias, mask, &s);
        sf_arena_give(m->work, block);
        sf_free_aligned(bias);
    }
    if (r->what == SF_T5_LAST)
        sf_rmsnorm(x, out, N, D, m->final_ln, c->eps);
    else
        memcpy(out, x, (size_t)(N * D) * sizeof(float));
    sf_free_aligned(x);
    return 0;
}

int sf_t5_parse_request(const char *s, sf_t5_request *r) {
    memset(r, 0, sizeof *r);
    if (!strcmp(s, "last") || !strcmp(s, "last_hidden_state")) {
        r->what = SF_T5_LAST;
        return 0;
    }
    if (sf_models_parse_layer(s, &r->layer)) {
        r->what = SF_T5_HIDDEN;
        return 0;
    }
    return sf_error("t5 output '%s' not understood (last, layer:N with N a hidden index)", s);
}
