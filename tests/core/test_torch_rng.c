/* sf_torch_randn against torch's own CPU randn (fixtures/flux-sched/
 * fixtures.safetensors, tools/make_flux_sched_fixtures.py): every value bit
 * for bit, for torch's AVX2 kernels and its DEFAULT (libm) kernels, sizes
 * below 16, exactly 16, not a multiple of 16 and larger, seeds >= 2^32. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/safetensors.h"
#include "saeflow/torch_rng.h"
#include "test.h"

static sf_st fx;

TEST(randn_matches_torch) {
    int cases = 0;
    for (int i = 0; i < fx.n_tensors; i++) {
        const sf_tensor_info *ti = &fx.tensors[i];
        char kind_s[16];
        unsigned long long seed;
        long long n;
        if (sscanf(ti->name, "randn_%15[a-z0-9]_%llu_%lld", kind_s, &seed, &n) != 3) continue;
        sf_torch_rng_kind kind;
        CHECK(sf_torch_rng_kind_parse(kind_s, &kind) == 0);
        CHECK(sf_tensor_numel(ti) == n && ti->dtype == SF_DT_F32);
        float *got = malloc(sizeof(float) * (size_t)n);
        sf_torch_randn_ex(seed, got, n, kind);
        const float *want = ti->data;
        int64_t bad = 0, first = -1;
        for (int64_t j = 0; j < n; j++)
            if (memcmp(got + j, want + j, 4)) bad++, first = first < 0 ? j : first;
        CHECK_MSG(bad == 0, "%s: %" PRId64 " of %lld differ (first at %" PRId64 ": %.9g vs %.9g)",
                  ti->name, bad, n, first, first >= 0 ? got[first] : 0.0,
                  first >= 0 ? want[first] : 0.0);
        if (kind == SF_TORCH_RANDN_AVX2) {
            /* the default entry point is the AVX2 variant */
            float *g2 = malloc(sizeof(float) * (size_t)n);
            sf_torch_randn(seed, g2, n);
            CHECK(memcmp(g2, got, sizeof(float) * (size_t)n) == 0);
            free(g2);
        }
        free(got);
        cases++;
    }
    CHECK(cases == 20);
    /* the two kernel builds differ only in the last bits: theta = 2 pi u2
     * is rounded to F32 (avx2) or computed in double (libm), |d theta| <=
     * 2^-22 for theta < 2 pi, times a radius below 5.7 (u1 >= 2^-24), plus
     * a few ulps from log and sin/cos: well under 1e-5 absolute */
    static float a[4099], b[4099];
    sf_torch_randn_ex(12345, a, 4099, SF_TORCH_RANDN_AVX2);
    sf_torch_randn_ex(12345, b, 4099, SF_TORCH_RANDN_LIBM);
    double md = 0;
    for (int j = 0; j < 4099; j++)
        md = fmax(md, fabs((double)a[j] - b[j]));
    CHECK_MSG(md > 0 && md < 1e-5, "avx2 vs libm: %g", md);
    sf_torch_rng_kind k;
    CHECK(sf_torch_rng_kind_parse("avx512", &k) == 0 && k == SF_TORCH_RANDN_LIBM);
    CHECK(sf_torch_rng_kind_parse("cuda", &k) == -1);
    sf_torch_randn(1, a, 0); /* n = 0: nothing */
}

int main(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures/flux-sched/fixtures.safetensors", SF_SOURCE_DIR);
    if (sf_st_open(&fx, path) != 0) {
        fprintf(stderr, "%s\n", sf_errmsg());
        return 2;
    }
    RUN(randn_matches_torch);
    sf_st_close(&fx);
    return test_summary();
}
