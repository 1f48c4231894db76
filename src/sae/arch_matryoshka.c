/* Matryoshka SAE (Bussmann et al. 2025, "Learning multi-level features with
 * Matryoshka SAEs"; Nabeshima 2024): the dictionary is split into groups
 * g_1..g_m; every prefix m_i = g_1 + ... + g_i must reconstruct the input on
 * its own, with the codes selected once over the whole dictionary by TopK
 * (per row) or BatchTopK (per batch):
 *   x_hat_i = b + sum_{j < m_i} z_j W_dec[:, j]
 *   L = (1/m) sum_i mean_b ||x - x_hat_i||^2   (+ AuxK)
 * Early latents are pushed to be general, later ones refine. In training the
 * groups are nested prefixes [0, m_i) of the step (matryoshka_prefixes):
 * dL/dx_hat_i = 2/(m B) (x_hat_i - x), and latent j in group g sees the sum
 * of dL/dx_hat_i over the prefixes i >= g that hold it (arch_train.c,
 * recon_grad). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/sae_arch.h"

/* Default groups: prefixes n/8, n/4, n/2, n (sizes n/8, n/8, n/4, n/2). */
static void default_groups(sf_sae *s) {
    const int n = s->n;
    int ends[4] = {n / 8, n / 4, n / 2, n}, ng = 0, prev = 0;
    for (int i = 0; i < 4; i++)
        if (ends[i] > prev) {
            s->groups[ng++] = ends[i] - prev;
            prev = ends[i];
        }
    s->n_groups = ng;
}

static int matryoshka_alloc(sf_sae *s) {
    if (s->n_groups == 0) default_groups(s);
    long sum = 0;
    for (int g = 0; g < s->n_groups; g++) {
        if (s->groups[g] < 1) return sf_error("matryoshka: group %d has size %d", g, s->groups[g]);
        sum += s->groups[g];
    }
    if (sum != s->n) return sf_error("matryoshka: group sizes sum to %ld, pages is %d", sum, s->n);
    sae_alloc_core(s);
    sae_add_linear_params(s);
    return 0;
}

static void matryoshka_config_write(const sf_sae *s, cJSON *cfg) {
    if (s->batch_select) cJSON_AddNumberToObject(cfg, "threshold", s->threshold);
    cJSON_AddItemToObject(cfg, "groups", cJSON_CreateIntArray(s->groups, s->n_groups));
    cJSON_AddStringToObject(cfg, "matryoshka_base", s->batch_select ? "batchtopk" : "topk");
}

static int matryoshka_config_read(sf_sae *s, const cJSON *cfg, const char *path) {
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(cfg, "matryoshka_base");
    if (base) {
        if (!cJSON_IsString(base) ||
            (strcmp(base->valuestring, "topk") && strcmp(base->valuestring, "batchtopk")))
            return sf_error("%s: key 'matryoshka_base' must be \"topk\" or \"batchtopk\"", path);
        s->batch_select = !strcmp(base->valuestring, "batchtopk");
    }
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(cfg, "groups");
    if (g) {
        int ng = cJSON_GetArraySize(g);
        if (!cJSON_IsArray(g) || ng < 1 || ng > SF_SAE_MAX_GROUPS)
            return sf_error("%s: key 'groups' must be an array of 1..%d sizes", path,
                            SF_SAE_MAX_GROUPS);
        for (int i = 0; i < ng; i++) {
            const cJSON *v = cJSON_GetArrayItem(g, i);
            if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 1e9 ||
                v->valuedouble != floor(v->valuedouble))
                return sf_error("%s: key 'groups': entry %d is not a positive integer", path, i);
            s->groups[i] = (int)v->valuedouble;
        }
        s->n_groups = ng;
    }
    return 0;
}

int sf_sae_parse_groups(const char *spec, int n, int *groups, int *n_groups) {
    /* "a,b,c": group sizes; a last entry of 0 or "rest" takes what is left. */
    int ng = 0;
    long sum = 0;
    const char *p = spec;
    while (*p) {
        if (ng == SF_SAE_MAX_GROUPS)
            return sf_error("groups: at most %d groups", SF_SAE_MAX_GROUPS);
        char *end;
        long v;
        if (!strncmp(p, "rest", 4)) {
            v = n - sum;
            end = (char *)p + 4;
        } else {
            v = strtol(p, &end, 10);
            if (end == p) return sf_error("groups: '%s' is not a list of sizes", spec);
            if (v == 0) v = n - sum;
        }
        if (v < 1) return sf_error("groups: sizes must be positive (pages %d)", n);
        groups[ng++] = (int)v;
        sum += v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return sf_error("groups: unexpected '%c' in '%s'", *p, spec);
    }
    if (ng == 0) return sf_error("groups: empty list");
    if (sum != n) return sf_error("groups: sizes sum to %ld, pages is %d", sum, n);
    *n_groups = ng;
    return 0;
}

int sf_sae_set_matryoshka(sf_sae *s, int batch_select, const int *groups, int n_groups) {
    if (s->arch != SF_SAE_MATRYOSHKA) return sf_error("not a matryoshka SAE");
    if (groups) {
        if (n_groups < 1 || n_groups > SF_SAE_MAX_GROUPS)
            return sf_error("matryoshka: bad group count");
        long sum = 0;
        for (int g = 0; g < n_groups; g++) {
            if (groups[g] < 1) return sf_error("matryoshka: group sizes must be positive");
            sum += groups[g];
        }
        if (sum != s->n)
            return sf_error("matryoshka: group sizes sum to %ld, pages is %d", sum, s->n);
        memcpy(s->groups, groups, (size_t)n_groups * sizeof(int));
        s->n_groups = n_groups;
    }
    s->batch_select = batch_select != 0;
    s->k = s->batch_select ? s->n : s->k_sel; /* code capacity */
    if (s->config) {
        cJSON *cfg = s->config;
        sae_arch_config(s, cfg);
    }
    return 0;
}

/* ---------------------------------------------------------------- training -- */

static int matryoshka_prefixes(const sf_sae *s, int *gs, int *ge) {
    for (int g = 0, e = 0; g < s->n_groups; g++) {
        gs[g] = e;
        e += s->groups[g];
        ge[g] = e;
    }
    return s->n_groups;
}

/* over BatchTopK its selection; over TopK per row into row lists (no dense Z) */
static int matryoshka_select(sae_arch_state *a) {
    const sf_sae *s = a->s;
    if (s->batch_select) return sae_batchtopk_stage(a);
    sae_rowlists *L = &a->rl;
    const int k = s->k_sel, n = s->n, B = a->B;
    if (sae_rowlists_reserve(L, B, k)) return -1;
#pragma omp parallel for schedule(static) if (a->par)
    for (int r = 0; r < B; r++)
        a->rcnt[r] = L->cnt[r] = sae_topk_relu(a->P + (size_t)r * n, s->b_enc, n, k, NULL,
                                               L->ix + (size_t)r * k, L->vl + (size_t)r * k);
    L->thr = -INFINITY;
    L->valid = 1;
    return 0;
}

/* Over TopK the encoder selects per row (sae_row_topk); over BatchTopK,
 * BatchTopK's threshold. */
const sae_arch_ops sae_matryoshka_ops = {
    .k_select = 1,
    .alloc = matryoshka_alloc,
    .config_write = matryoshka_config_write,
    .config_read = matryoshka_config_read,
    .encode_row = sae_batchtopk_encode_row,
    .prefixes = matryoshka_prefixes,
    .select = matryoshka_select,
    .after_step = sae_batchtopk_after_step,
};
