/* FLUX sampler pieces against diffusers (fixtures/flux-sched/,
 * tools/make_flux_sched_fixtures.py), all bit for bit: the
 * FlowMatchEulerDiscreteScheduler sigmas and timesteps as FluxPipeline sets
 * them (schnell-like static shift 1, static shift 3, dev-like dynamic
 * exponential shift, a linear time shift) for 1..50 steps and several image
 * sizes; two Euler steps (scheduler.step); _pack_latents / _unpack_latents /
 * _prepare_latent_image_ids on a non-square latent; prepare_latents' noise
 * with one CPU generator and with a list of them. Plus config errors. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/flux_sched.h"
#include "saeflow/safetensors.h"
#include "test.h"

static sf_st fx;

static const float *fget(const char *name, int64_t *numel) {
    const sf_tensor_info *ti = sf_st_find(&fx, name);
    if (!ti || ti->dtype != SF_DT_F32) {
        fprintf(stderr, "fixture tensor %s missing\n", name);
        exit(2);
    }
    if (numel) *numel = sf_tensor_numel(ti);
    return (const float *)ti->data;
}

static size_t ndiff(const float *a, const float *b, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += memcmp(a + i, b + i, sizeof(float)) != 0;
    return c;
}

TEST(sigmas_match_diffusers) {
    const char *names[4] = {"schnell", "shift3", "dev", "devlinear"};
    const int Ns[6] = {1, 2, 4, 7, 28, 50};
    const int64_t seqs[5] = {256, 600, 1024, 4096, 4352};
    int cases = 0;
    for (int c = 0; c < 4; c++) {
        char path[4096], key[128];
        snprintf(path, sizeof path, "%s/fixtures/flux-sched/scheduler_%s.json", SF_SOURCE_DIR,
                 names[c]);
        sf_flow_sched_config cfg;
        CHECK_MSG(sf_flow_sched_config_load(&cfg, path) == 0, "%s", sf_errmsg());
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 5; b++) {
                const int N = Ns[a];
                float sig[51], ts[50];
                CHECK(sf_flow_sched_sigmas(&cfg, N, seqs[b], sig, ts) == 0);
                int64_t ns, nt;
                snprintf(key, sizeof key, "sched_%s_%d_%lld_sigmas", names[c], N,
                         (long long)seqs[b]);
                const float *ws = fget(key, &ns);
                snprintf(key, sizeof key, "sched_%s_%d_%lld_timesteps", names[c], N,
                         (long long)seqs[b]);
                const float *wt = fget(key, &nt);
                CHECK(ns == N + 1 && nt == N);
                size_t d1 = ndiff(sig, ws, (size_t)N + 1), d2 = ndiff(ts, wt, (size_t)N);
                CHECK_MSG(d1 == 0 && d2 == 0,
                          "%s N %d seq %lld: %zu sigmas, %zu timesteps differ (%.9g vs %.9g)",
                          names[c], N, (long long)seqs[b], d1, d2, sig[0 < N - 1 ? 1 : 0],
                          ws[0 < N - 1 ? 1 : 0]);
                cases++;
            }
    }
    CHECK(cases == 120);
    /* schnell 4 steps: the documented [1, .75, .5, .25, 0] */
    sf_flow_sched_config d;
    sf_flow_sched_config_default(&d);
    float sig[5], ts[4];
    sf_flow_sched_sigmas(&d, 4, 256, sig, ts);
    CHECK(sig[0] == 1.0f && sig[1] == 0.75f && sig[2] == 0.5f && sig[3] == 0.25f && sig[4] == 0);
    CHECK(ts[0] == 1000.0f && ts[3] == 250.0f);
    CHECK(sf_flow_sched_sigmas(&d, 0, 256, sig, ts) == -1);
    /* calculate_shift at the ends of the range */
    CHECK_NEAR(sf_flux_calculate_shift(256, 256, 4096, 0.5, 1.15), 0.5, 1e-15);
    CHECK_NEAR(sf_flux_calculate_shift(4096, 256, 4096, 0.5, 1.15), 1.15, 1e-15);
}

TEST(euler_step) {
    int64_t n;
    const float *x = fget("step_x", &n), *v = fget("step_v", NULL),
                *sig = fget("step_sigmas", NULL);
    float *y = malloc(sizeof(float) * (size_t)n);
    memcpy(y, x, sizeof(float) * (size_t)n);
    sf_flow_euler_step(y, v, n, sig[0], sig[1]);
    CHECK(ndiff(y, fget("step_x1", NULL), (size_t)n) == 0);
    sf_flow_euler_step(y, v, n, sig[1], sig[2]);
    CHECK(ndiff(y, fget("step_x2", NULL), (size_t)n) == 0);
    free(y);
}

TEST(pack_unpack_ids) {
    int64_t n;
    const float *in = fget("pack_in", &n);
    const int64_t B = 2, C = 3, h = 6, w = 10;
    CHECK(n == B * C * h * w);
    float p[360], u[360], ids[45];
    sf_flux_pack_latents(in, B, C, h, w, p);
    CHECK(ndiff(p, fget("pack_out", NULL), 360) == 0);
    sf_flux_unpack_latents(p, B, C, h, w, u);
    CHECK(ndiff(u, fget("unpack_out", NULL), 360) == 0);
    CHECK(ndiff(u, in, 360) == 0);
    sf_flux_image_ids(3, 5, ids);
    CHECK(ndiff(ids, fget("ids_3x5", NULL), 45) == 0);
    CHECK(sf_flux_latent_side(208) == 26 && sf_flux_latent_side(144) == 18 &&
          sf_flux_latent_side(1000) == 124);
}

TEST(noise_matches_prepare_latents) {
    /* FluxPipeline.prepare_latents(B 2, 16 ch, 208 x 144 px): latents 26 x 18 */
    const int64_t B = 2, C = 16, h = 26, w = 18, n = B * C * h * w;
    int64_t nn, nid;
    float *got = malloc(sizeof(float) * (size_t)n), ids[13 * 9 * 3];
    CHECK(sf_flux_noise(1234, NULL, B, C, h, w, SF_TORCH_RANDN_AVX2, got) == 0);
    const float *want = fget("noise_single_1234", &nn);
    CHECK(nn == n && ndiff(got, want, (size_t)n) == 0);
    const uint64_t seeds[2] = {5, 8589934593ull};
    CHECK(sf_flux_noise(0, seeds, B, C, h, w, SF_TORCH_RANDN_AVX2, got) == 0);
    CHECK(ndiff(got, fget("noise_list_5_8589934593", NULL), (size_t)n) == 0);
    sf_flux_image_ids(h / 2, w / 2, ids);
    const float *wid = fget("noise_ids", &nid);
    CHECK(nid == 13 * 9 * 3 && ndiff(ids, wid, (size_t)nid) == 0);
    CHECK(sf_flux_noise(1, NULL, 1, 16, 5, 4, SF_TORCH_RANDN_AVX2, got) == -1);
    CHECK_ERR_HAS("even");
    free(got);
}

TEST(config_errors) {
    const char *dir = test_tmpdir("flux_sched");
    char path[4096];
    snprintf(path, sizeof path, "%s/s.json", dir);
    sf_flow_sched_config c;
    struct {
        const char *json, *err;
    } bad[] = {
        {"[1, 2]", "not a JSON object"},
        {"{\"shift\": \"3\"}", "\"shift\" must be a number"},
        {"{\"use_dynamic_shifting\": 1}", "must be true or false"},
        {"{\"use_karras_sigmas\": true}", "use_karras_sigmas"},
        {"{\"shift_terminal\": 0.02}", "shift_terminal"},
        {"{\"time_shift_type\": \"cubic\"}", "time_shift_type"},
        {"{\"num_train_timesteps\": 10.5}", "num_train_timesteps"},
        {"{\"base_image_seq_len\": 4096}", "distinct"},
        {"{\"shift\": 0}", "positive"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i].json, f);
        fclose(f);
        CHECK_MSG(sf_flow_sched_config_load(&c, path) == -1, "%s accepted", bad[i].json);
        CHECK_ERR_HAS(bad[i].err);
        CHECK_ERR_HAS("s.json");
    }
    /* explicit false / null options are fine */
    FILE *f = fopen(path, "w");
    fputs("{\"use_karras_sigmas\": false, \"shift_terminal\": null, \"shift\": 2.0}", f);
    fclose(f);
    CHECK(sf_flow_sched_config_load(&c, path) == 0 && c.shift == 2.0);
    snprintf(path, sizeof path, "%s/missing.json", dir);
    CHECK(sf_flow_sched_config_load(&c, path) == -1);
    CHECK_ERR_HAS("missing.json");
}

int main(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures/flux-sched/fixtures.safetensors", SF_SOURCE_DIR);
    if (sf_st_open(&fx, path) != 0) {
        fprintf(stderr, "%s\n", sf_errmsg());
        return 2;
    }
    RUN(sigmas_match_diffusers);
    RUN(euler_step);
    RUN(pack_unpack_ids);
    RUN(noise_matches_prepare_latents);
    RUN(config_errors);
    sf_st_close(&fx);
    return test_summary();
}
