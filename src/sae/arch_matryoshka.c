/* Matryoshka SAE (Bussmann et al. 2025, "Learning multi-level features with
 * Matryoshka SAEs"; Nabeshima 2024): the dictionary is split into groups
 * g_1..g_m; every prefix m_i = g_1 + ... + g_i must reconstruct the input on
 * its own, with the codes selected once over the whole dictionary by TopK
 * (per row) or BatchTopK (per batch):
 *   x_hat_i = b + sum_{j < m_i} z_j W_dec[:, j]
 *   L = (1/m) sum_i mean_b ||x - x_hat_i||^2   (+ AuxK)
 * Early latents are pushed to be general, later ones refine. The prefix
 * sums and gradients run in arch_common.c (groups as nested prefixes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/sae_arch.h"

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
