/* SAELens and EleutherAI sparsify checkpoints: detection, load, save
 * (layouts in include/saeflow/sae_formats.h). Loading maps them onto the
 * saeflow model exactly (same codes, same reconstructions); where a layout
 * has something saeflow cannot run, the error says which key. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/sae_arch.h"
#include "saeflow/config.h"
#include "saeflow/sae_formats.h"
#include "saeflow/safetensors.h"

static const char *fmt_names[SF_FMT_COUNT] = {"seed", "saelens", "sparsify"};

const char *sf_sae_format_name(sf_sae_format f) {
    return (unsigned)f < SF_FMT_COUNT ? fmt_names[f] : "?";
}

int sf_sae_format_parse(const char *s, sf_sae_format *f) {
    for (int i = 0; i < SF_FMT_COUNT; i++)
        if (!strcmp(s, fmt_names[i])) {
            *f = (sf_sae_format)i;
            return 0;
        }
    return sf_error("unknown checkpoint format '%s' (known: seed, saelens, sparsify)", s);
}

static int exists(const char *dir, const char *name) {
    char *p = sf_path_join(dir, name);
    struct stat st;
    int ok = stat(p, &st) == 0 && S_ISREG(st.st_mode);
    free(p);
    return ok;
}

int sf_sae_detect_format(const char *dir, sf_sae_format *f) {
    if (exists(dir, "config.json") &&
        (exists(dir, "model.safetensors") || exists(dir, "model.safetensors.index.json")))
        *f = SF_FMT_SEED;
    else if (exists(dir, "cfg.json") && exists(dir, "sae_weights.safetensors"))
        *f = SF_FMT_SAELENS;
    else if (exists(dir, "cfg.json") && exists(dir, "sae.safetensors"))
        *f = SF_FMT_SPARSIFY;
    else
        return sf_error("%s: not an SAE checkpoint (looked for config.json + model.safetensors, "
                        "cfg.json + sae_weights.safetensors (SAELens), cfg.json + sae.safetensors "
                        "(sparsify))",
                        dir);
    return 0;
}

/* ------------------------------------------------------------------ load -- */

static cJSON *read_json(const char *dir, const char *name, char **path_out) {
    char *path = sf_path_join(dir, name);
    size_t len;
    char *text = sf_read_file(path, &len);
    if (!text) {
        free(path);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        if (j) cJSON_Delete(j);
        sf_error("%s: not a JSON object", path);
        free(path);
        return NULL;
    }
    *path_out = path;
    return j;
}

static const char *cfg_str(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int cfg_bool(const cJSON *cfg, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

/* tensor `name` with shape (r, c) (c = -1: 1-D of r) into dst, optionally transposed */
static int get(const sf_st *f, const char *name, int64_t r, int64_t c, int transpose, float *dst) {
    int64_t shape[2] = {r, c};
    float *owned = NULL;
    const float *src = sf_st_get_f32(f, name, c < 0 ? 1 : 2, shape, &owned);
    if (!src) return -1;
    size_t m = (size_t)r * (size_t)(c < 0 ? 1 : c);
    if (!sae_all_finite(src, m)) {
        free(owned);
        return sf_error("%s: tensor '%s': contains NaN or Inf", f->path, name);
    }
    if (transpose)
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++)
                dst[j * r + i] = src[i * c + j];
    else
        memcpy(dst, src, m * sizeof(float));
    free(owned);
    return 0;
}

static int load_saelens(sf_sae *s, const char *dir) {
    char *cpath = NULL;
    cJSON *cfg = read_json(dir, "cfg.json", &cpath);
    if (!cfg) return -1;
    int rc = -1, d = 0, n = 0, k = 0, st_open = 0;
    sf_st f;
    const char *arch = cfg_str(cfg, "architecture");
    const char *act = cfg_str(cfg, "activation_fn_str");
    if (!act) act = cfg_str(cfg, "activation_fn");
    const char *norm = cfg_str(cfg, "normalize_activations");
    if (sf_cfg_int_range(cfg, "d_in", 1, d, 0, 1000000000, &d, cpath) ||
        sf_cfg_int_range(cfg, "d_sae", 1, n, 0, 1000000000, &n, cpath))
        goto done;
    if (!arch) arch = "standard"; /* pre-v4 configs had no key: ReLU SAEs */
    if (norm && strcmp(norm, "none")) {
        sf_error("%s: normalize_activations '%s' is not supported (it rescales inputs by a "
                 "factor the checkpoint does not hold); only 'none'",
                 cpath, norm);
        goto done;
    }
    sf_sae_arch a;
    /* training checkpoints (save_model) of batchtopk and matryoshka_batchtopk
     * hold the global threshold as a scalar, their inference files as JumpReLU */
    int batch_thr = 0;
    if (!strcmp(arch, "standard") && act && !strcmp(act, "topk")) arch = "topk"; /* old TopK */
    if (!strcmp(arch, "standard")) {
        if (act && strcmp(act, "relu")) {
            sf_error("%s: activation_fn '%s' is not supported (relu or topk)", cpath, act);
            goto done;
        }
        a = SF_SAE_STANDARD;
    } else if (!strcmp(arch, "topk")) {
        a = SF_SAE_TOPK;
        if (sf_cfg_int_range(cfg, "k", 0, k, 0, 1000000000, &k, cpath) == 1) {
            const cJSON *kw = cJSON_GetObjectItemCaseSensitive(cfg, "activation_fn_kwargs");
            if (!kw || sf_cfg_int_range(kw, "k", 1, k, 0, 1000000000, &k, cpath)) {
                sf_error_prefix("topk needs 'k' (or activation_fn_kwargs.k)");
                goto done;
            }
        }
        if (k < 1 || k > n) {
            sf_error("%s: key 'k' %d must be in [1, d_sae %d]", cpath, k, n);
            goto done;
        }
    } else if (!strcmp(arch, "gated")) {
        a = SF_SAE_GATED;
    } else if (!strcmp(arch, "jumprelu")) {
        a = SF_SAE_JUMPRELU;
    } else if (!strcmp(arch, "batchtopk") || !strcmp(arch, "matryoshka_batchtopk")) {
        a = SF_SAE_JUMPRELU; /* inference: JumpReLU with the one threshold */
        batch_thr = 1;
    } else {
        sf_error("%s: architecture '%s' is not supported (standard, topk, gated, jumprelu, "
                 "batchtopk, matryoshka_batchtopk)",
                 cpath, arch);
        goto done;
    }
    /* Pre-activations times ||W_dec[j]|| before the selection, codes divided
     * by it in decode (SAELens v6 TopK training default): folded below. */
    const int rescale =
        cfg_bool(cfg, "rescale_acts_by_decoder_norm", 0) && (a == SF_SAE_TOPK || batch_thr);
    if (sf_sae_init(s, a, d, n, a == SF_SAE_TOPK ? k : 1, 0)) goto done;
    char *wpath = sf_path_join(dir, "sae_weights.safetensors");
    int orc = sf_st_open(&f, wpath);
    free(wpath);
    if (orc) goto done;
    st_open = 1;
    if (get(&f, "W_enc", d, n, 1, s->W_enc) || get(&f, "W_dec", n, d, 0, s->W_decT) ||
        get(&f, "b_dec", d, -1, 0, s->b_dec))
        goto done;
    if (a == SF_SAE_GATED) {
        if (get(&f, "b_gate", n, -1, 0, s->b_enc) || get(&f, "b_mag", n, -1, 0, s->b_mag) ||
            get(&f, "r_mag", n, -1, 0, s->r_mag))
            goto done;
    } else if (get(&f, "b_enc", n, -1, 0, s->b_enc)) {
        goto done;
    }
    if (a == SF_SAE_JUMPRELU && batch_thr && !sf_st_find(&f, "threshold")) {
        /* save_model: topk_threshold, a 0-d (F64) scalar */
        float *owned = NULL;
        const float *t = sf_st_get_f32(&f, "topk_threshold", -1, NULL, &owned);
        const sf_tensor_info *ti = sf_st_find(&f, "topk_threshold");
        if (!t || sf_tensor_numel(ti) != 1 || !(t[0] >= 0) || !isfinite(t[0])) {
            if (t) sf_error("%s: tensor 'topk_threshold' must be one finite number >= 0", f.path);
            free(owned);
            goto done;
        }
        for (int j = 0; j < n; j++)
            s->logthres[j] = t[0];
        free(owned);
    } else if (a == SF_SAE_JUMPRELU && get(&f, "threshold", n, -1, 0, s->logthres)) {
        goto done;
    }
    if (a == SF_SAE_JUMPRELU) {
        for (int j = 0; j < n; j++) {
            /* saeflow stores log(threshold); SAELens gates relu(pi) * (pi > t),
             * the same for t > 0; t <= 0 is plain ReLU, so the smallest
             * positive float stands in for it. */
            float t = s->logthres[j];
            s->logthres[j] = logf(t > 1e-37f ? t : 1e-37f);
        }
    }
    if (!cfg_bool(cfg, "apply_b_dec_to_input", 1)) {
        /* pre = W x + b_enc = W (x - b_dec) + (b_enc + W b_dec): fold into the biases */
        for (int j = 0; j < n; j++) {
            double wb = 0;
            for (int q = 0; q < d; q++)
                wb += (double)s->W_enc[(size_t)j * d + q] * s->b_dec[q];
            s->b_enc[j] += (float)wb;
            if (a == SF_SAE_GATED) s->b_mag[j] += (float)(exp(s->r_mag[j]) * wb);
        }
    }
    if (sf_st_find(&f, "scaling_factor")) {
        /* legacy finetuning_scaling_factor: decode (z * sf) W_dec = z (sf W_dec) */
        float *sf = sf_malloc((size_t)n * sizeof(float));
        if (get(&f, "scaling_factor", n, -1, 0, sf)) {
            free(sf);
            goto done;
        }
        for (int j = 0; j < n; j++)
            for (int q = 0; q < d; q++)
                s->W_decT[(size_t)j * d + q] *= sf[j];
        free(sf);
    }
    /* times c = ||W_dec[j]|| before the selection, / c in decode: the same as
     * W_enc[j], b_enc[j] times c and W_dec[j] / c; a zero row gives code 0 */
    if (rescale) sae_fold_norms(s, 1);
    sf_sae_config_set_string(s, "converted_from", "saelens");
    rc = 0;
done:
    if (rc) sf_error_prefix("%s (SAELens layout)", dir);
    if (st_open) sf_st_close(&f);
    cJSON_Delete(cfg);
    free(cpath);
    return rc;
}

static int load_sparsify(sf_sae *s, const char *dir) {
    char *cpath = NULL;
    cJSON *cfg = read_json(dir, "cfg.json", &cpath);
    if (!cfg) return -1;
    int rc = -1, d = 0, n = 0, k = 0, st_open = 0;
    sf_st f;
    const char *act = cfg_str(cfg, "activation");
    if (act && strcmp(act, "topk")) {
        sf_error("%s: activation '%s' is not supported (topk only)", cpath, act);
        goto done;
    }
    if (cfg_bool(cfg, "skip_connection", 0) || cfg_bool(cfg, "transcode", 0)) {
        sf_error("%s: skip_connection / transcode SAEs are not supported", cpath);
        goto done;
    }
    if (sf_cfg_int_range(cfg, "k", 1, k, 0, 1000000000, &k, cpath)) goto done;
    char *wpath = sf_path_join(dir, "sae.safetensors");
    int orc = sf_st_open(&f, wpath);
    free(wpath);
    if (orc) goto done;
    st_open = 1;
    /* d_in is written by sparsify's save; num_latents may be 0 (then from
     * expansion_factor); the tensor shape settles both. */
    const sf_tensor_info *t = sf_st_find(&f, "encoder.weight");
    if (!t || t->ndim != 2) {
        sf_error("%s: tensor 'encoder.weight' [num_latents, d_in] missing or not 2-D", f.path);
        goto done;
    }
    n = (int)t->shape[0];
    d = (int)t->shape[1];
    int dc = 0;
    if (sf_cfg_int_range(cfg, "d_in", 0, dc, 0, 1000000000, &dc, cpath) == 0 && dc != d) {
        sf_error("%s: d_in %d but encoder.weight has %d columns", cpath, dc, d);
        goto done;
    }
    if (k < 1 || k > n) {
        sf_error("%s: k %d must be in [1, num_latents %d]", cpath, k, n);
        goto done;
    }
    if (sf_sae_init(s, SF_SAE_TOPK, d, n, k, 0)) goto done;
    if (get(&f, "encoder.weight", n, d, 0, s->W_enc) ||
        get(&f, "encoder.bias", n, -1, 0, s->b_enc) || get(&f, "W_dec", n, d, 0, s->W_decT) ||
        get(&f, "b_dec", d, -1, 0, s->b_dec))
        goto done;
    sf_sae_config_set_string(s, "converted_from", "sparsify");
    rc = 0;
done:
    if (rc) sf_error_prefix("%s (sparsify layout)", dir);
    if (st_open) sf_st_close(&f);
    cJSON_Delete(cfg);
    free(cpath);
    return rc;
}

int sae_is_foreign(const char *dir) {
    return !exists(dir, "config.json") && exists(dir, "cfg.json");
}

int sae_load_foreign(sf_sae *s, const char *dir) {
    return sf_sae_load_any(s, dir);
}

int sf_sae_load_any(sf_sae *s, const char *dir) {
    memset(s, 0, sizeof *s);
    sf_sae_format f;
    if (sf_sae_detect_format(dir, &f)) return -1;
    int rc;
    switch (f) {
    case SF_FMT_SAELENS:
        rc = load_saelens(s, dir);
        break;
    case SF_FMT_SPARSIFY:
        rc = load_sparsify(s, dir);
        break;
    default:
        return sf_sae_load(s, dir);
    }
    if (rc) sf_sae_free(s);
    return rc;
}

/* ------------------------------------------------------------------ save -- */

static int write_json(const char *dir, const char *name, cJSON *j) {
    char *text = cJSON_Print(j);
    size_t len = strlen(text);
    text = sf_realloc(text, len + 2);
    text[len] = '\n';
    char *path = sf_path_join(dir, name);
    int rc = sf_write_file_atomic(path, text, len + 1);
    free(path);
    free(text);
    return rc;
}

static int save_saelens(const sf_sae *s, const char *dir) {
    const int d = s->d, n = s->n;
    const char *arch;
    int k = 0;
    switch (s->arch) {
    case SF_SAE_TOPK:
        arch = "topk";
        k = s->k;
        break;
    case SF_SAE_STANDARD:
        arch = "standard";
        break;
    case SF_SAE_GATED:
        arch = "gated";
        break;
    case SF_SAE_MATRYOSHKA:
        /* inference only needs the selection: TopK per row, or the threshold */
        if (s->batch_select)
            arch = "jumprelu";
        else {
            arch = "topk";
            k = s->k_sel;
        }
        break;
    default:
        arch = "jumprelu";
        break; /* jumprelu; batchtopk runs as JumpReLU */
    }
    float *We = sf_malloc((size_t)n * d * sizeof(float)), *th = NULL;
    for (int j = 0; j < n; j++)
        for (int q = 0; q < d; q++)
            We[(size_t)q * n + j] = s->W_enc[(size_t)j * d + q];
    int64_t sdn[2] = {d, n}, snd[2] = {n, d}, sn[1] = {n}, sd[1] = {d};
    sf_st_writer *w = sf_stw_new();
    sf_stw_add_f32(w, "W_enc", sae_save_dtype(s), 2, sdn, We);
    sf_stw_add_f32(w, "W_dec", sae_save_dtype(s), 2, snd, s->W_decT);
    sf_stw_add_f32(w, "b_dec", sae_save_dtype(s), 1, sd, s->b_dec);
    if (s->arch == SF_SAE_GATED) {
        sf_stw_add_f32(w, "b_gate", sae_save_dtype(s), 1, sn, s->b_enc);
        sf_stw_add_f32(w, "b_mag", sae_save_dtype(s), 1, sn, s->b_mag);
        sf_stw_add_f32(w, "r_mag", sae_save_dtype(s), 1, sn, s->r_mag);
    } else {
        sf_stw_add_f32(w, "b_enc", sae_save_dtype(s), 1, sn, s->b_enc);
    }
    if (!strcmp(arch, "jumprelu")) {
        th = sf_malloc((size_t)n * sizeof(float));
        for (int j = 0; j < n; j++)
            th[j] = s->arch == SF_SAE_JUMPRELU ? expf(s->logthres[j]) : s->threshold;
        sf_stw_add_f32(w, "threshold", sae_save_dtype(s), 1, sn, th);
    }
    sf_stw_meta(w, "format", "pt");
    char *path = sf_path_join(dir, "sae_weights.safetensors");
    int rc = sf_stw_write(w, path);
    free(path);
    sf_stw_free(w);
    free(We);
    free(th);
    if (rc) return -1;
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "architecture", arch);
    cJSON_AddNumberToObject(cfg, "d_in", d);
    cJSON_AddNumberToObject(cfg, "d_sae", n);
    if (k) cJSON_AddNumberToObject(cfg, "k", k);
    cJSON_AddStringToObject(cfg, "dtype",
                            s->save_half == 1   ? "bfloat16"
                            : s->save_half == 2 ? "float16"
                                                : "float32");
    cJSON_AddStringToObject(cfg, "device", "cpu");
    cJSON_AddBoolToObject(cfg, "apply_b_dec_to_input", 1);
    cJSON_AddStringToObject(cfg, "normalize_activations", "none");
    cJSON_AddStringToObject(cfg, "reshape_activations", "none");
    cJSON *meta = cJSON_AddObjectToObject(cfg, "metadata");
    cJSON_AddStringToObject(meta, "converted_by", "saeflow");
    cJSON_AddStringToObject(meta, "saeflow_arch", sf_sae_arch_name(s->arch));
    rc = write_json(dir, "cfg.json", cfg);
    cJSON_Delete(cfg);
    return rc;
}

static int save_sparsify(const sf_sae *s, const char *dir) {
    int k;
    if (s->arch == SF_SAE_TOPK)
        k = s->k;
    else if (s->arch == SF_SAE_MATRYOSHKA && !s->batch_select)
        k = s->k_sel;
    else
        return sf_error("sparsify checkpoints hold TopK SAEs only; a %s SAE cannot be saved as "
                        "sparsify (use seed or saelens)",
                        sf_sae_arch_name(s->arch));
    const int d = s->d, n = s->n;
    int64_t snd[2] = {n, d}, sn[1] = {n}, sd[1] = {d};
    sf_st_writer *w = sf_stw_new();
    sf_stw_add_f32(w, "encoder.weight", sae_save_dtype(s), 2, snd, s->W_enc);
    sf_stw_add_f32(w, "encoder.bias", sae_save_dtype(s), 1, sn, s->b_enc);
    sf_stw_add_f32(w, "W_dec", sae_save_dtype(s), 2, snd, s->W_decT);
    sf_stw_add_f32(w, "b_dec", sae_save_dtype(s), 1, sd, s->b_dec);
    char *path = sf_path_join(dir, "sae.safetensors");
    int rc = sf_stw_write(w, path);
    free(path);
    sf_stw_free(w);
    if (rc) return -1;
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "activation", "topk");
    cJSON_AddNumberToObject(cfg, "expansion_factor", n % d == 0 ? n / d : (double)n / d);
    cJSON_AddBoolToObject(cfg, "normalize_decoder", 1);
    cJSON_AddNumberToObject(cfg, "num_latents", n);
    cJSON_AddNumberToObject(cfg, "k", k);
    cJSON_AddBoolToObject(cfg, "multi_topk", 0);
    cJSON_AddBoolToObject(cfg, "skip_connection", 0);
    cJSON_AddBoolToObject(cfg, "transcode", 0);
    cJSON_AddNumberToObject(cfg, "d_in", d);
    rc = write_json(dir, "cfg.json", cfg);
    cJSON_Delete(cfg);
    return rc;
}

int sf_sae_save_as(const sf_sae *s, const char *dir, sf_sae_format f) {
    if (f == SF_FMT_SEED) return sf_sae_save(s, dir);
    if (sae_needs_fold(s)) {
        sf_sae c;
        if (sae_folded_copy(&c, s)) return -1; /* as sf_sae_save, then the other layout */
        int rc = sf_sae_save_as(&c, dir, f);
        sf_sae_free(&c);
        return rc;
    }
    if (f == SF_FMT_SPARSIFY &&
        !(s->arch == SF_SAE_TOPK || (s->arch == SF_SAE_MATRYOSHKA && !s->batch_select)))
        return save_sparsify(s, dir); /* the error, before any file is made */
    if (sf_mkdirs(dir)) return -1;
    return f == SF_FMT_SAELENS ? save_saelens(s, dir) : save_sparsify(s, dir);
}
