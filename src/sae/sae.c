/* The SAE model: init, checkpoints (reference layout), encode/decode/surgery.
 * The kernels it shares with the trainer are in sae_kernels.c. */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/prefilter.h"
#include "sae/sae_internal.h"
#include "saeflow/buf.h"
#include "saeflow/config.h"
#include "saeflow/safetensors.h"
#include "saeflow/sae.h"

static const char *arch_names[SF_SAE_ARCH_COUNT] = {"topk",     "standard",  "gated",
                                                    "jumprelu", "batchtopk", "matryoshka"};

const char *sf_sae_arch_name(sf_sae_arch a) {
    return (unsigned)a < SF_SAE_ARCH_COUNT ? arch_names[a] : "?";
}

int sf_sae_arch_parse(const char *s, sf_sae_arch *a) {
    for (int i = 0; i < SF_SAE_ARCH_COUNT; i++)
        if (!strcmp(s, arch_names[i])) {
            *a = (sf_sae_arch)i;
            return 0;
        }
    return sf_error("unknown SAE architecture '%s' (known: topk, standard, gated, jumprelu, "
                    "batchtopk, matryoshka)",
                    s);
}

/* ---------------------------------------------------------------- params -- */

void sae_add_param(sf_sae *s, const char *name, float *data, int ndim, int64_t s0, int64_t s1,
                   int transposed, int per_latent) {
    sf_sae_param *p = &s->params[s->n_params++];
    p->name = name;
    p->data = data;
    p->ndim = ndim;
    p->shape[0] = s0;
    p->shape[1] = ndim > 1 ? s1 : 1;
    p->numel = (size_t)s0 * (size_t)p->shape[1];
    p->transposed = transposed;
    p->per_latent = per_latent;
}

/* Allocates the parameter buffers for s->arch, d, n (zeroed). */
static int alloc_params(sf_sae *s) {
    size_t nd;
    if (s->d <= 0 || s->n <= 0 || s->k <= 0 || s->k > s->n)
        return sf_error("bad SAE shape: features %d, pages %d, k %d (need all > 0, k <= pages)",
                        s->d, s->n, s->k);
    if (sf_mul_size((size_t)s->n, (size_t)s->d, &nd) || nd > ((size_t)1 << 40))
        return sf_error("SAE too large: %d x %d", s->n, s->d);
    switch (s->arch) {
    case SF_SAE_TOPK:
        s->W_enc = sf_malloc_aligned(nd * sizeof(float));
        s->W_decT = sf_malloc_aligned(nd * sizeof(float));
        s->b_enc = sf_malloc_aligned((size_t)s->n * sizeof(float));
        s->b_dec = sf_malloc_aligned((size_t)s->d * sizeof(float));
        memset(s->W_enc, 0, nd * sizeof(float));
        memset(s->W_decT, 0, nd * sizeof(float));
        memset(s->b_enc, 0, (size_t)s->n * sizeof(float));
        memset(s->b_dec, 0, (size_t)s->d * sizeof(float));
        /* Order matters only for readability of the file; Adam treats each alike. */
        sae_add_param(s, "encoder.weight", s->W_enc, 2, s->n, s->d, 0, 1);
        sae_add_param(s, "encoder.bias", s->b_enc, 1, s->n, 1, 0, 1);
        sae_add_param(s, "decoder.weight", s->W_decT, 2, s->d, s->n, 1, 1);
        sae_add_param(s, "bias", s->b_dec, 1, s->d, 1, 0, 0);
        return 0;
    default:
        return sae_arch_alloc(s); /* src/sae/arch_common.c */
    }
}

static void config_base(sf_sae *s) {
    if (!s->config) s->config = cJSON_CreateObject();
    if (s->arch != SF_SAE_TOPK) {
        sae_arch_config(s, s->config);
        return;
    }
    const char *keys[3] = {"features", "pages", "k"};
    int vals[3] = {s->d, s->n, s->k};
    for (int i = 0; i < 3; i++) {
        cJSON_DeleteItemFromObjectCaseSensitive(s->config, keys[i]);
        cJSON_AddNumberToObject(s->config, keys[i], vals[i]);
    }
}

void sf_sae_config_set_number(sf_sae *s, const char *key, double v) {
    if (!s->config) s->config = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(s->config, key);
    cJSON_AddNumberToObject(s->config, key, v);
}

void sf_sae_config_set_string(sf_sae *s, const char *key, const char *v) {
    if (!s->config) s->config = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(s->config, key);
    cJSON_AddStringToObject(s->config, key, v);
}

void sf_sae_free(sf_sae *s) {
    if (!s) return;
    sf_free_aligned(s->W_enc);
    sf_free_aligned(s->b_enc);
    sf_free_aligned(s->W_decT);
    sf_free_aligned(s->b_dec);
    sf_free_aligned(s->r_mag);
    sf_free_aligned(s->b_mag);
    sf_free_aligned(s->logthres);
    if (s->config) cJSON_Delete(s->config);
    memset(s, 0, sizeof *s);
}

/* Unit-norm rows of W_decT (= unit-norm decoder columns). A zero row stays zero. */
static void normalise_rows(float *W, int n, int d) {
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; j++) {
        float *w = W + (size_t)j * d;
        double ss = 0;
        for (int c = 0; c < d; c++)
            ss += (double)w[c] * w[c];
        if (ss > 0) {
            float inv = (float)(1.0 / sqrt(ss));
            for (int c = 0; c < d; c++)
                w[c] *= inv;
        }
    }
}

int sf_sae_init(sf_sae *s, sf_sae_arch arch, int d, int n, int k, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->arch = arch;
    s->d = d;
    s->n = n;
    s->k = k;
    if (arch != SF_SAE_TOPK) sae_arch_set_k(s, k); /* k -> k_sel, code capacity */
    if (alloc_params(s)) {
        sf_sae_free(s);
        return -1;
    }
    /* torch nn.Linear: kaiming_uniform(a=sqrt(5)) on weight = U(-1/sqrt(fan_in), +).
     * Drawn serially from one stream so the result does not depend on threads. */
    sf_rng r;
    sf_rng_seed(&r, seed);
    const double bound = 1.0 / sqrt((double)d);
    size_t nd = (size_t)n * d;
    for (size_t i = 0; i < nd; i++)
        s->W_enc[i] = (float)((2.0 * sf_rng_uniform(&r) - 1.0) * bound);
    /* decoder = encoder^T: in our transposed layout W_decT = W_enc, then unit rows. */
    memcpy(s->W_decT, s->W_enc, nd * sizeof(float));
    normalise_rows(s->W_decT, n, d);
    if (arch != SF_SAE_TOPK) sae_arch_init(s, seed);
    config_base(s);
    return 0;
}

/* ------------------------------------------------------------ checkpoints -- */

/* No "arch" in config.json: the reference's save_pretrained writes only the
 * constructor's arguments ({"features", "pages"}, TopK "k", JumpReLU
 * "bandwidth" and "jumpthreshold"), so the tensor names tell: gated has
 * gate_bias / r_mag / mag_bias / decoder_bias, jumprelu logthres; otherwise
 * "k" means topk, and encoder.weight, encoder.bias, decoder.weight, bias
 * without it standard. Both or neither: an error listing what was found. */
static int infer_arch(const char *dir, const cJSON *cfg, const char *cpath, sf_sae_arch *arch) {
    sf_st_set set;
    if (sf_st_set_open_dir(&set, dir, "model")) return -1;
#define HAS(name) (sf_st_set_find(&set, name, &(const sf_st *){0}) != NULL)
    const int gated = HAS("gate_bias") || HAS("r_mag") || HAS("mag_bias") || HAS("decoder_bias");
    const int jump = HAS("logthres");
    const int linear =
        HAS("encoder.weight") && HAS("encoder.bias") && HAS("decoder.weight") && HAS("bias");
#undef HAS
    const int has_k = cJSON_GetObjectItemCaseSensitive(cfg, "k") != NULL;
    int rc = 0;
    if (gated != jump) /* a missing companion tensor is named by the load */
        *arch = gated ? SF_SAE_GATED : SF_SAE_JUMPRELU;
    else if (!gated && has_k)
        *arch = SF_SAE_TOPK;
    else if (!gated && linear)
        *arch = SF_SAE_STANDARD;
    else {
        sf_sbuf names = {0};
        int shown = 0;
        for (int f = 0; f < set.n_files; f++)
            for (int i = 0; i < set.files[f].n_tensors; i++)
                if (shown++ < 12)
                    sf_sb_printf(&names, "%s'%s'", shown > 1 ? ", " : "",
                                 set.files[f].tensors[i].name);
        rc = sf_error("%s: no key 'arch', and the tensors (%s%s) match %s (gated: gate_bias, "
                      "r_mag, mag_bias; jumprelu: logthres; topk with 'k', standard without: "
                      "encoder.weight, encoder.bias, decoder.weight, bias); add \"arch\" to "
                      "config.json",
                      cpath, names.s ? names.s : "none", shown > 12 ? ", ..." : "",
                      gated ? "both gated and jumprelu" : "no architecture");
        sf_sb_free(&names);
    }
    sf_st_set_close(&set);
    return rc;
}

int sf_sae_load(sf_sae *s, const char *dir) {
    memset(s, 0, sizeof *s);
    if (sae_is_foreign(dir)) return sae_load_foreign(s, dir); /* SAELens, sparsify: formats.c */
    char *cpath = sf_path_join(dir, "config.json");
    size_t len;
    char *text = sf_read_file(cpath, &len);
    if (!text) {
        free(cpath);
        return -1;
    }
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = -1;
    sf_st_set set;
    int set_open = 0;
    if (!cfg || !cJSON_IsObject(cfg)) {
        sf_error("%s: not a JSON object", cpath);
        goto done;
    }
    s->config = cfg;
    s->arch = SF_SAE_TOPK;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(cfg, "arch");
    if (a) {
        if (!cJSON_IsString(a) || sf_sae_arch_parse(a->valuestring, &s->arch)) {
            sf_error("%s: key 'arch': unknown architecture", cpath);
            goto done;
        }
    } else if (infer_arch(dir, cfg, cpath, &s->arch)) {
        goto done;
    }
    if (sf_cfg_int_req(cfg, "features", 1, 1000000000, &s->d, cpath) ||
        sf_cfg_int_req(cfg, "pages", 1, 1000000000, &s->n, cpath))
        goto done;
    if (s->arch == SF_SAE_TOPK ? sf_cfg_int_req(cfg, "k", 1, 1000000000, &s->k, cpath)
                               : sae_arch_load_config(s, cfg, cpath))
        goto done;
    if (alloc_params(s)) {
        sf_error_prefix("%s", cpath);
        goto done;
    }
    if (sf_st_set_open_dir(&set, dir, "model")) goto done;
    set_open = 1;
    for (int i = 0; i < s->n_params; i++) {
        sf_sae_param *p = &s->params[i];
        const sf_st *f;
        const sf_tensor_info *t = sf_st_set_find(&set, p->name, &f);
        if (!t) {
            sf_error("%s/model.safetensors: missing tensor '%s'", dir, p->name);
            goto done;
        }
        float *owned = NULL;
        const float *src = sf_st_get_f32(f, p->name, p->ndim, p->shape, &owned);
        if (!src) goto done;
        if (!sae_all_finite(src, p->numel)) {
            free(owned);
            sf_error("%s: tensor '%s': contains NaN or Inf", f->path, p->name);
            goto done;
        }
        if (p->transposed) {
            /* checkpoint (r, c) -> internal (c, r) */
            int64_t R = p->shape[0], C = p->shape[1];
#pragma omp parallel for schedule(static)
            for (int64_t c = 0; c < C; c++)
                for (int64_t r = 0; r < R; r++)
                    p->data[c * R + r] = src[r * C + c];
        } else {
            memcpy(p->data, src, p->numel * sizeof(float));
        }
        free(owned);
    }
    /* the reference's codes: standard and gated encode times ||w_j|| */
    sf_sae_fold_decoder_norms(s);
    rc = 0;
done:
    if (set_open) sf_st_set_close(&set);
    if (rc) {
        if (!s->config && cfg) cJSON_Delete(cfg);
        sf_sae_free(s);
    }
    free(cpath);
    return rc;
}

int sf_sae_save(const sf_sae *s, const char *dir) {
    if (sae_needs_fold(s)) { /* input scale, decoder norms: on a copy */
        sf_sae f;
        if (sae_folded_copy(&f, s)) return -1;
        int frc = sf_sae_save(&f, dir);
        sf_sae_free(&f);
        return frc;
    }
    if (sf_mkdirs(dir)) return -1;
    int rc = -1;
    float *tbuf[SF_SAE_MAX_PARAMS] = {0};
    sf_st_writer *w = sf_stw_new();
    for (int i = 0; i < s->n_params; i++) {
        const sf_sae_param *p = &s->params[i];
        const float *data = p->data;
        if (p->transposed) {
            int64_t R = p->shape[0], C = p->shape[1]; /* checkpoint shape; internal (C, R) */
            float *t = tbuf[i] = sf_malloc(p->numel * sizeof(float));
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++)
                    t[r * C + c] = p->data[c * R + r];
            data = t;
        }
        if (sf_stw_add_f32(w, p->name, sae_save_dtype(s), p->ndim, p->shape, data)) goto done;
    }
    sf_stw_meta(w, "format", "pt");
    char *mpath = sf_path_join(dir, "model.safetensors");
    int wrc = sf_stw_write(w, mpath);
    free(mpath);
    if (wrc) goto done;
    /* config.json: the loaded object (extra keys kept) with this model's shape. */
    cJSON *cfg = s->config ? cJSON_Duplicate(s->config, 1) : cJSON_CreateObject();
    const char *keys[3] = {"features", "pages", "k"};
    int vals[3] = {s->d, s->n, s->k};
    for (int i = 0; i < 3; i++) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, keys[i]);
        cJSON_AddNumberToObject(cfg, keys[i], vals[i]);
    }
    if (s->arch != SF_SAE_TOPK) sae_arch_config(s, cfg);
    char *json = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    char *cpath = sf_path_join(dir, "config.json");
    size_t jl = strlen(json);
    json = sf_realloc(json, jl + 2);
    json[jl] = '\n';
    json[jl + 1] = 0;
    rc = sf_write_file_atomic(cpath, json, jl + 1);
    free(cpath);
    free(json);
done:
    sf_stw_free(w);
    for (int i = 0; i < SF_SAE_MAX_PARAMS; i++)
        free(tbuf[i]);
    return rc;
}

/* ------------------------------------------------------------- inference -- */

void sf_sae_codes_alloc(sf_sae_codes *c, int64_t B, int k) {
    c->B = B;
    c->k = k;
    c->idx = sf_malloc((size_t)(B > 0 ? B : 1) * k * sizeof(int32_t));
    c->val = sf_malloc((size_t)(B > 0 ? B : 1) * k * sizeof(float));
    c->cnt = sf_calloc((size_t)(B > 0 ? B : 1), sizeof(int32_t));
}

void sf_sae_codes_free(sf_sae_codes *c) {
    free(c->idx);
    free(c->val);
    free(c->cnt);
    memset(c, 0, sizeof *c);
}

void sf_sae_codes_dense(const sf_sae_codes *c, int n, float *z) {
    /* row by row: the zeros and the k values are written while the row is in
     * cache, one pass over z (B, n) instead of a fill and a scatter */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < c->B; b++) {
        float *zr = z + (size_t)b * (size_t)n;
        const int32_t *ir = c->idx + (size_t)b * (size_t)c->k;
        const float *vr = c->val + (size_t)b * (size_t)c->k;
        memset(zr, 0, (size_t)n * sizeof(float));
        for (int j = 0; j < c->cnt[b]; j++)
            zr[ir[j]] = vr[j];
    }
}

int sf_sae_encode(const sf_sae *s, const float *x, int64_t B, sf_sae_codes *out) {
    return sae_arch_encode(s, NULL, x, B, out); /* arch_common.c: one encoder for all */
}

struct sf_sae_encoder {
    const sf_sae *s;
    sae_pf *pf; /* NULL: the F32 GEMM */
};

sf_sae_encoder *sf_sae_encoder_new(const sf_sae *s) {
    sf_sae_encoder *e = sf_calloc(1, sizeof *e);
    e->s = s;
    const int rowtopk = sae_row_topk(s);
    if (rowtopk && sae_pf_wanted(s, 0) && sae_pf_prepare(&e->pf, s, 0, 0) != 0) {
        sae_pf_free(e->pf); /* non-finite weights: the F32 route */
        e->pf = NULL;
    }
    return e;
}

int sf_sae_encoder_run(sf_sae_encoder *e, const float *x, int64_t B, sf_sae_codes *out) {
    return sae_arch_encode(e->s, e->pf, x, B, out);
}

int sf_sae_encoder_run_sliced(sf_sae_encoder *e, const float *x, int64_t B, int64_t r0,
                              sf_sae_codes *out) {
    const int64_t S = SF_SAE_ENCODE_SLICE, ns = (B + S - 1) / S;
    int64_t bad = -1;
    char msg[1024] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < ns; i++) {
        int64_t b0 = i * S, mb = B - b0 < S ? B - b0 : S;
        /* a view of the slice's rows in the batch's code buffer */
        sf_sae_codes v = {mb, out->k, out->idx + b0 * out->k, out->val + b0 * out->k,
                          out->cnt + b0};
        if (sae_arch_encode(e->s, e->pf, x + b0 * e->s->d, mb, &v)) {
#pragma omp critical(sae_sliced_err)
            if (bad < 0 || i < bad) {
                bad = i;
                snprintf(msg, sizeof msg, "%s", sf_errmsg());
            }
        }
    }
    if (bad >= 0)
        return sf_error("rows %lld..%lld: %s", (long long)(r0 + bad * S),
                        (long long)(r0 + bad * S + S - 1), msg);
    return 0;
}

void sf_sae_encoder_free(sf_sae_encoder *e) {
    if (!e) return;
    sae_pf_free(e->pf);
    free(e);
}

void sf_sae_decode(const sf_sae *s, const sf_sae_codes *c, float *x_hat) {
#pragma omp parallel for schedule(static) if (sae_parallel_worth((size_t)c->B * c->k * s->d * 8))
    for (int64_t b = 0; b < c->B; b++)
        sae_decode_row(s->W_decT, s->b_dec, s->d, c->idx + (size_t)b * c->k,
                       c->val + (size_t)b * c->k, c->cnt[b], x_hat + (size_t)b * s->d);
}

int sf_sae_surgery(const sf_sae *s, const float *x, int64_t B, int feature, float strength,
                   float *out) {
    if (feature < 0 || feature >= s->n)
        return sf_error("feature %d out of range [0, %d)", feature, s->n);
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, B, s->k);
    if (sf_sae_encode(s, x, B, &c)) {
        sf_sae_codes_free(&c);
        return -1;
    }
    /* z + strength * e_f, then decode: adding the feature's column scaled by
     * strength to the reconstruction is the same and needs no code change. */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B; b++) {
        float *o = out + (size_t)b * s->d;
        sae_decode_row(s->W_decT, s->b_dec, s->d, c.idx + (size_t)b * s->k,
                       c.val + (size_t)b * s->k, c.cnt[b], o);
        const float *w = s->W_decT + (size_t)feature * s->d;
        for (int q = 0; q < s->d; q++)
            o[q] += strength * w[q];
    }
    sf_sae_codes_free(&c);
    return 0;
}
