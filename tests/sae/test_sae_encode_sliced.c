/* sf_sae_encoder_run_sliced: fixed slices of SF_SAE_ENCODE_SLICE rows, so
 * the codes of a row do not depend on how the rows are split into calls
 * (at slice multiples); each slice equals one plain encoder call on those
 * rows; errors name the global rows. (Thread counts: the CLI tests.) */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "saeflow/sae.h"
#include "test.h"

static int same_codes(const sf_sae_codes *a, const sf_sae_codes *b, int64_t B) {
    for (int64_t r = 0; r < B; r++) {
        if (a->cnt[r] != b->cnt[r]) return 0;
        size_t o = (size_t)r * a->k;
        if (memcmp(a->idx + o, b->idx + o, (size_t)a->cnt[r] * sizeof(int32_t)) ||
            memcmp(a->val + o, b->val + o, (size_t)a->cnt[r] * sizeof(float)))
            return 0;
    }
    return 1;
}

static void run_arch(sf_sae_arch arch) {
    const int d = 48, n = 384, k = 12;
    const int64_t B = 700; /* two whole slices and a partial one */
    sf_sae s;
    CHECK(sf_sae_init(&s, arch, d, n, k, 5) == 0);
    sf_rng r;
    sf_rng_seed(&r, 11);
    for (int j = 0; j < n; j++)
        s.b_enc[j] = 0.05f * sf_rng_normal(&r);
    float *x = sf_malloc((size_t)B * d * sizeof(float));
    for (size_t i = 0; i < (size_t)B * d; i++)
        x[i] = sf_rng_normal(&r);
    sf_sae_encoder *e = sf_sae_encoder_new(&s);
    sf_sae_codes all, part, ref;
    sf_sae_codes_alloc(&all, B, s.k);
    sf_sae_codes_alloc(&part, B, s.k);
    sf_sae_codes_alloc(&ref, B, s.k);
    const int T0 = omp_get_max_threads();
    sf_sae_set_threads(2); /* OpenBLAS to one thread: OpenMP owns the threads */
    CHECK(sf_sae_encoder_run_sliced(e, x, B, 0, &all) == 0);
    /* the same rows in two calls, split at a slice boundary */
    const int64_t S = SF_SAE_ENCODE_SLICE;
    sf_sae_codes tail = {B - S, s.k, part.idx + S * s.k, part.val + S * s.k, part.cnt + S};
    CHECK(sf_sae_encoder_run_sliced(e, x, S, 0, &part) == 0);
    CHECK(sf_sae_encoder_run_sliced(e, x + S * d, B - S, S, &tail) == 0);
    CHECK_MSG(same_codes(&all, &part, B), "%s: split / threads change the codes",
              sf_sae_arch_name(arch));
    /* each slice is one plain encoder call on its rows */
    for (int64_t b0 = 0; b0 < B; b0 += S) {
        int64_t m = B - b0 < S ? B - b0 : S;
        sf_sae_codes v = {m, s.k, ref.idx + b0 * s.k, ref.val + b0 * s.k, ref.cnt + b0};
        CHECK(sf_sae_encoder_run(e, x + b0 * d, m, &v) == 0);
    }
    CHECK(same_codes(&all, &ref, B));
    /* a bad row: the error names the rows of its slice, from r0 */
    x[(size_t)300 * d + 3] = NAN;
    CHECK(sf_sae_encoder_run_sliced(e, x, B, 1000, &all) != 0);
    CHECK_MSG(strstr(sf_errmsg(), "rows 1256..1511") != NULL, "%s", sf_errmsg());
    omp_set_num_threads(T0);
    sf_sae_codes_free(&all);
    sf_sae_codes_free(&part);
    sf_sae_codes_free(&ref);
    sf_sae_encoder_free(e);
    free(x);
    sf_sae_free(&s);
}

TEST(sliced_topk) {
    run_arch(SF_SAE_TOPK);
}

TEST(sliced_thresholded) {
    run_arch(SF_SAE_STANDARD);
}

int main(void) {
    RUN(sliced_topk);
    RUN(sliced_thresholded);
    return test_summary();
}
