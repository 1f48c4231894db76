/* The SAE model: init, checkpoints (reference layout), encode/decode/surgery. */
#include <cblas.h>
#include <cjson/cJSON.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/prefilter.h"
#include "sae/sae_internal.h"
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

static void add_param(sf_sae *s, const char *name, float *data, int ndim, int64_t s0, int64_t s1,
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
        add_param(s, "encoder.weight", s->W_enc, 2, s->n, s->d, 0, 1);
        add_param(s, "encoder.bias", s->b_enc, 1, s->n, 1, 0, 1);
        add_param(s, "decoder.weight", s->W_decT, 2, s->d, s->n, 1, 1);
        add_param(s, "bias", s->b_dec, 1, s->d, 1, 0, 0);
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

static int config_int(const cJSON *cfg, const char *path, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v) return sf_error("%s: missing key '%s'", path, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
        v->valuedouble > 1e9)
        return sf_error("%s: key '%s' must be a positive integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
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
    }
    if (config_int(cfg, cpath, "features", &s->d) || config_int(cfg, cpath, "pages", &s->n))
        goto done;
    if (s->arch == SF_SAE_TOPK ? config_int(cfg, cpath, "k", &s->k)
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
    if (s->input_scale > 0 && s->input_scale != 1.0f) return sae_save_folded(s, dir);
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

/* ---------------------------------------------------------------- kernels -- */

int sae_chunk_rows(int64_t B, int n) {
    /* One chunk per thread: every sgemm call packs all of W_enc (n x d) once,
     * which at n x d = 12288 x 3072 costs as much as ~40 rows of compute, so
     * few large chunks win; the per-row work after the GEMM does not need the
     * chunk in cache (it reads each pre-activation once). Capped at 64 MiB of
     * pre-activations per thread, at least 16 rows. */
    int T = omp_get_max_threads();
    int64_t c = (B + T - 1) / (T > 0 ? T : 1);
    int64_t cap = ((int64_t)16 << 20) / (n > 0 ? n : 1);
    const char *env = getenv("SAEFLOW_CHUNK"); /* rows per chunk, for experiments */
    if (env && atoi(env) > 0) c = atoi(env);
    if (c > cap) c = cap;
    if (c < 16) c = 16;
    if (c > B) c = B > 0 ? B : 1;
    return (int)c;
}

void sae_encoder_gemm(const sf_sae *s, const float *xc, int m, float *pre) {
    /* pre (m, n) = xc (m, d) . W_enc^T, W_enc (n, d) row-major */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, s->n, s->d, 1.0f, xc, s->d, s->W_enc,
                s->d, 0.0f, pre, s->n);
}

/* Min-heap on val (root = smallest kept value). */
static inline void heap_sift_down(int32_t *idx, float *val, int c, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < c && (val[l] < val[m] || (val[l] == val[m] && idx[l] > idx[m]))) m = l;
        if (r < c && (val[r] < val[m] || (val[r] == val[m] && idx[r] > idx[m]))) m = r;
        if (m == i) return;
        float tv = val[i];
        val[i] = val[m];
        val[m] = tv;
        int32_t ti = idx[i];
        idx[i] = idx[m];
        idx[m] = ti;
        i = m;
    }
}

static inline void heap_push(int32_t *idx, float *val, int c, int32_t j, float v) {
    int i = c;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!(val[p] > v || (val[p] == v && idx[p] < j))) break;
        val[i] = val[p];
        idx[i] = idx[p];
        i = p;
    }
    val[i] = v;
    idx[i] = j;
}

/* k-th largest of a[0..m) (1-based k <= m); reorders a. Quickselect. */
float sae_kth_largest(float *a, int64_t m, int64_t k) {
    int64_t lo = 0, hi = m - 1, want = k - 1; /* position in descending order */
    while (lo < hi) {
        float piv = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > piv)
                i++;
            while (a[j] < piv)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[want];
}

static inline void topk_offer(int32_t *idx, float *val, int *c, int k, float *thr, int32_t j,
                              float v) {
    if (*c < k) {
        heap_push(idx, val, (*c)++, j, v);
    } else {
        val[0] = v;
        idx[0] = j;
        heap_sift_down(idx, val, *c, 0);
    }
    if (*c == k) *thr = val[0];
}

int sae_topk_relu(const float *pre, const float *b, int n, int k, const uint8_t *mask, int32_t *idx,
                  float *val) {
    int c = 0;
    float thr = 0.0f; /* ReLU: only v > 0 can enter; once full, v > heap minimum */
    int j0 = 0;
#ifdef __AVX512F__
    /* Starting threshold: lane-wise maxima over groups of 256 are n/16 distinct
     * elements, so the k-th largest of them is <= the k-th largest overall and
     * can only exclude non-winners. It cuts heap insertions from ~k ln(n/k)
     * to about k. Not for masked (AuxK) selection. */
    if (!mask && n >= 512 && n <= 65536 && n / 16 >= 2 * k) {
        float lm[4096];
        const int groups = n / 256;
        for (int g = 0; g < groups; g++) {
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int u = 0; u < 256; u += 16) {
                const int j = g * 256 + u;
                mx = _mm512_max_ps(mx,
                                   _mm512_add_ps(_mm512_loadu_ps(pre + j), _mm512_loadu_ps(b + j)));
            }
            _mm512_storeu_ps(lm + g * 16, mx);
        }
        float t0 = sae_kth_largest(lm, groups * 16, k);
        if (t0 > 0) thr = nextafterf(t0, -INFINITY); /* v > thr  <=>  v >= t0 */
    }
    /* 16 at a time: one compare against the running threshold; past the first
     * few blocks almost no lane passes, so the cost is one load+add+cmp per 16. */
    for (; j0 + 16 <= n; j0 += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(pre + j0), _mm512_loadu_ps(b + j0));
        __mmask16 hit = _mm512_cmp_ps_mask(v, _mm512_set1_ps(thr), _CMP_GT_OQ);
        while (hit) {
            int u = __builtin_ctz(hit);
            hit &= hit - 1;
            int j = j0 + u;
            float vj = pre[j] + b[j];
            if (!(vj > thr) || (mask && !mask[j])) continue; /* thr may have risen */
            topk_offer(idx, val, &c, k, &thr, j, vj);
        }
    }
#endif
    for (int j = j0; j < n; j++) {
        float v = pre[j] + b[j];
        if (!(v > thr) || (mask && !mask[j])) continue;
        topk_offer(idx, val, &c, k, &thr, j, v);
    }
    return c;
}

int sae_topk_relu_list(const int32_t *ids, const float *v, int m, int k, int32_t *idx, float *val) {
    int c = 0;
    float thr = 0.0f;
    for (int u = 0; u < m; u++)
        if (v[u] > thr) topk_offer(idx, val, &c, k, &thr, ids[u], v[u]);
    return c;
}

void sae_sort_pairs(int32_t *idx, float *val, int c) {
    for (int i = 1; i < c; i++) {
        int32_t ji = idx[i];
        float vi = val[i];
        int p = i - 1;
        while (p >= 0 && idx[p] > ji) {
            idx[p + 1] = idx[p];
            val[p + 1] = val[p];
            p--;
        }
        idx[p + 1] = ji;
        val[p + 1] = vi;
    }
}

void sae_decode_row(const float *W_decT, const float *bias, int d, const int32_t *idx,
                    const float *val, int c, float *out) {
    if (bias)
        memcpy(out, bias, (size_t)d * sizeof(float));
    else
        memset(out, 0, (size_t)d * sizeof(float));
    int s = 0;
    for (; s + 1 < c; s += 2) { /* two rows per sweep over out */
        const float *w0 = W_decT + (size_t)idx[s] * d, *w1 = W_decT + (size_t)idx[s + 1] * d;
        const float v0 = val[s], v1 = val[s + 1];
#pragma omp simd
        for (int q = 0; q < d; q++)
            out[q] += v0 * w0[q] + v1 * w1[q];
    }
    for (; s < c; s++) {
        const float *w = W_decT + (size_t)idx[s] * d;
        const float v = val[s];
#pragma omp simd
        for (int q = 0; q < d; q++)
            out[q] += v * w[q];
    }
}

void sae_store_row(float *dst, const float *src, int d, int stream) {
#ifdef __AVX512F__
    if (stream && d % 16 == 0 && (uintptr_t)dst % 64 == 0) {
        for (int q = 0; q < d; q += 16)
            _mm512_stream_ps(dst + q, _mm512_loadu_ps(src + q));
        return;
    }
#endif
    (void)stream;
    memcpy(dst, src, (size_t)d * sizeof(float));
}

void sae_drop_along(float *g, const float *w, int d) {
    float ww = sae_dot(w, w, d);
    if (!(ww > 0)) return;
    float a = sae_dot(g, w, d) / ww;
#pragma omp simd
    for (int q = 0; q < d; q++)
        g[q] -= a * w[q];
}

double sae_latent_rows_done(float *ge, float *gd, const float *w_dec, int normalise, int d,
                            float *out_e, float *out_d, int stream, double ss0) {
    if (normalise) sae_drop_along(gd, w_dec, d);
    double ss = ss0;
#pragma omp simd reduction(+ : ss)
    for (int q = 0; q < d; q++)
        ss += (double)ge[q] * ge[q] + (double)gd[q] * gd[q];
    sae_store_row(out_e, ge, d, stream);
    sae_store_row(out_d, gd, d, stream);
    return ss;
}

void sae_store_fence(void) {
#ifdef __AVX512F__
    _mm_sfence();
#endif
}

int sae_all_finite(const float *x, size_t m) {
    /* x*0 is 0 for finite x and NaN for Inf/NaN; the OR-reduction vectorises. */
    int bad = 0;
    for (size_t i = 0; i < m; i++)
        bad |= (x[i] * 0.0f != 0.0f);
    return !bad;
}

int64_t sae_center_rows(const sf_sae *s, const float *x, int64_t m, float *xc) {
    const int d = s->d;
    int64_t bad = -1;
    for (int64_t r = 0; r < m; r++) {
        const float *xr = x + (size_t)r * d;
        float *xcr = xc + (size_t)r * d;
        if (bad < 0 && !sae_all_finite(xr, (size_t)d)) bad = r;
#pragma omp simd
        for (int q = 0; q < d; q++)
            xcr[q] = xr[q] - s->b_dec[q];
    }
    return bad;
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
