/* Architectures other than TopK: the dispatch to each one's table
 * (arch_<name>.c) for parameters and config keys, and the encoder of every
 * architecture. The training step is arch_train.c. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/prefilter.h"
#include "sae/sae_internal.h"

/* Below ~16 MFLOP a step runs on one thread: on a busy machine an OpenMP
 * barrier costs more than the work (results are the same either way). */
int sae_arch_par(size_t work) {
    return work >= ((size_t)1 << 23);
}

/* out[j] = sum_r M[r, j], rows ascending (in double), whatever the thread
 * count. Each thread owns a contiguous column range and walks the rows in
 * memory order: a walk down narrow column blocks strides by a whole row per
 * step, which the prefetchers do not follow past a page. */
void sae_colsum(const float *M, int rows, int cols, double *out, int par) {
#pragma omp parallel if (par)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int c0 = (int)((int64_t)cols * t / nt), c1 = (int)((int64_t)cols * (t + 1) / nt);
        for (int c = c0; c < c1; c++)
            out[c] = 0;
        for (int r = 0; r < rows; r++) {
            const float *m = M + (size_t)r * cols;
#pragma omp simd
            for (int c = c0; c < c1; c++)
                out[c] += m[c];
        }
    }
}

/* ------------------------------------------------------------ the model -- */

const sae_arch_ops *sae_arch_ops_of(sf_sae_arch a) {
    switch (a) {
    case SF_SAE_STANDARD:
        return &sae_standard_ops;
    case SF_SAE_GATED:
        return &sae_gated_ops;
    case SF_SAE_JUMPRELU:
        return &sae_jumprelu_ops;
    case SF_SAE_BATCHTOPK:
        return &sae_batchtopk_ops;
    case SF_SAE_MATRYOSHKA:
        return &sae_matryoshka_ops;
    default:
        return NULL;
    }
}

static int uses_k(sf_sae_arch a) {
    const sae_arch_ops *ops = sae_arch_ops_of(a);
    return ops && ops->k_select;
}

static void set_capacity(sf_sae *s) {
    /* thresholded codes have no per-row bound; TopK-selected ones have k */
    s->k = (s->arch == SF_SAE_MATRYOSHKA && !s->batch_select) ? s->k_sel : s->n;
}

void sae_arch_set_k(sf_sae *s, int k) {
    s->k_sel = uses_k(s->arch) ? k : 0;
    set_capacity(s);
}

float *sae_zalloc(size_t count) {
    float *p = sf_malloc_aligned(count * sizeof(float));
    memset(p, 0, count * sizeof(float));
    return p;
}

void sae_alloc_core(sf_sae *s) {
    const size_t nd = (size_t)s->n * s->d;
    s->W_enc = sae_zalloc(nd);
    s->W_decT = sae_zalloc(nd);
    s->b_enc = sae_zalloc((size_t)s->n);
    s->b_dec = sae_zalloc((size_t)s->d);
}

void sae_add_linear_params(sf_sae *s) {
    sae_add_param(s, "encoder.weight", s->W_enc, 2, s->n, s->d, 0, 1);
    sae_add_param(s, "encoder.bias", s->b_enc, 1, s->n, 1, 0, 1);
    sae_add_param(s, "decoder.weight", s->W_decT, 2, s->d, s->n, 1, 1);
    sae_add_param(s, "bias", s->b_dec, 1, s->d, 1, 0, 0);
}

int sae_arch_alloc(sf_sae *s) {
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (!ops) return sf_error("architecture %d not implemented", (int)s->arch);
    if (ops->k_select && (s->k_sel < 1 || s->k_sel > s->n))
        return sf_error("%s: k %d must be in [1, pages %d]", sf_sae_arch_name(s->arch), s->k_sel,
                        s->n);
    return ops->alloc(s); /* names and order as the reference's state_dict */
}

void sae_arch_init(sf_sae *s, uint64_t seed) {
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (ops && ops->init) ops->init(s, seed);
}

void sae_arch_config(const sf_sae *s, cJSON *cfg) {
    const char *drop[] = {"arch", "k", "threshold", "groups", "matryoshka_base"};
    for (int i = 0; i < 5; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, drop[i]);
    cJSON_AddStringToObject(cfg, "arch", sf_sae_arch_name(s->arch));
    if (uses_k(s->arch)) cJSON_AddNumberToObject(cfg, "k", s->k_sel);
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (ops && ops->config_write) ops->config_write(s, cfg);
}

int sae_arch_load_config(sf_sae *s, const cJSON *cfg, const char *path) {
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(cfg, "k");
    if (uses_k(s->arch)) {
        if (!k)
            return sf_error("%s: missing key 'k' (needed by %s)", path, sf_sae_arch_name(s->arch));
        if (!cJSON_IsNumber(k) || k->valuedouble != floor(k->valuedouble) || k->valuedouble < 1 ||
            k->valuedouble > 1e9)
            return sf_error("%s: key 'k' must be a positive integer", path);
        s->k_sel = (int)k->valuedouble;
    }
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(cfg, "threshold");
    if (th) {
        if (!cJSON_IsNumber(th) || !isfinite(th->valuedouble) || th->valuedouble < 0)
            return sf_error("%s: key 'threshold' must be a finite number >= 0", path);
        s->threshold = (float)th->valuedouble;
    }
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    if (ops && ops->config_read && ops->config_read(s, cfg, path)) return -1;
    set_capacity(s);
    return 0;
}

/* ------------------------------------------------------------ inference -- */

/* Every architecture's encoder (sf_sae_encode): chunked GEMM, then per row
 * TopK (topk; matryoshka over TopK) or the thresholded activation. */
int sae_arch_encode(const sf_sae *s, const sae_pf *pf, const float *x, int64_t B,
                    sf_sae_codes *out) {
    const int d = s->d, n = s->n, cap = s->k;
    if (out->k != cap || out->B < B) return sf_error("encode: code buffer too small");
    const int64_t chunk = sae_chunk_rows(B, n);
    const int64_t nchunks = (B + chunk - 1) / chunk;
    const int rowtopk = sae_row_topk(s);
    const sae_arch_ops *ops = sae_arch_ops_of(s->arch);
    int64_t bad_row = -1;
    if (!rowtopk || (pf && (pf->n != n || pf->d != d))) pf = NULL;
        /* inside a parallel region (sf_sae_encoder_run_sliced) one thread per call */
#pragma omp parallel if (!omp_in_parallel() && sae_parallel_worth((size_t)B * n * d))
    {
        float *xc = sf_malloc_aligned((size_t)chunk * d * sizeof(float));
        float *pre = sf_malloc_aligned((size_t)chunk * n * sizeof(float));
        sae_pf_thread h; /* this worker's pre-filter scratch */
        if (pf) sae_pf_thread_init(&h, n, d, (int)chunk);
        int64_t ncand = 0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ci = 0; ci < nchunks; ci++) {
            int64_t r0 = ci * chunk, m = B - r0 < chunk ? B - r0 : chunk;
            int64_t bad = sae_center_rows(s, x + (size_t)r0 * d, m, xc);
            if (bad >= 0) {
#pragma omp critical(sae_arch_bad_row)
                if (bad_row < 0 || r0 + bad < bad_row) bad_row = r0 + bad;
            }
            if (pf) { /* exact TopK through the int16 pre-filter, sorted by index */
                sae_pf_gemm(pf, &h, xc, (int)m, (int32_t *)pre);
                sae_pf_select_chunk(pf, &h, s, (const int32_t *)pre, (int)m, xc, cap,
                                    out->idx + (size_t)r0 * cap, out->val + (size_t)r0 * cap,
                                    out->cnt + r0, NULL, &ncand);
                for (int64_t r = r0; r < r0 + m; r++)
                    sae_sort_pairs(out->idx + (size_t)r * cap, out->val + (size_t)r * cap,
                                   out->cnt[r]);
                continue;
            }
            sae_encoder_gemm(s, xc, (int)m, pre);
            for (int64_t r = 0; r < m; r++) {
                int32_t *ix = out->idx + (size_t)(r0 + r) * cap;
                float *vl = out->val + (size_t)(r0 + r) * cap;
                const float *pr = pre + (size_t)r * n;
                int c = 0;
                if (rowtopk) {
                    c = sae_topk_relu(pr, s->b_enc, n, cap, NULL, ix, vl);
                    sae_sort_pairs(ix, vl, c);
                } else {
                    c = ops->encode_row(s, pr, cap, ix, vl);
                }
                out->cnt[r0 + r] = c;
            }
        }
        sf_free_aligned(xc);
        sf_free_aligned(pre);
        if (pf) sae_pf_thread_free(&h);
    }
    if (bad_row >= 0) return sf_error("row %lld: NaN or Inf in input", (long long)bad_row);
    return 0;
}
