/* SAELens and sparsify layouts: detection, every architecture round-trips
 * through every layout that can hold it, bad or unsupported checkpoints give
 * clear errors. The peers' own files: test_ckpt_peers.c. */
#include <math.h>
#include <string.h>

#include "saeflow/sae_formats.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FX SF_SOURCE_DIR "/fixtures/formats"

TEST(detect) {
    sf_sae_format f;
    CHECK(sf_sae_detect_format(FX "/saelens_gated", &f) == 0 && f == SF_FMT_SAELENS);
    CHECK(sf_sae_detect_format(FX "/sparsify/layers.6", &f) == 0 && f == SF_FMT_SPARSIFY);
    CHECK(sf_sae_detect_format(FX, &f) == -1);
    CHECK_ERR_HAS("not an SAE checkpoint");
    sf_sae s;
    CHECK(sf_sae_load(&s, FX "/sparsify") == -1);
    CHECK(sf_sae_format_parse("torch", &f) == -1);
    CHECK_ERR_HAS("unknown checkpoint format 'torch'");
}

/* Every architecture through every layout that can hold it: same codes. */
TEST(round_trips) {
    const sf_sae_arch archs[] = {SF_SAE_TOPK,     SF_SAE_STANDARD,  SF_SAE_GATED,
                                 SF_SAE_JUMPRELU, SF_SAE_BATCHTOPK, SF_SAE_MATRYOSHKA};
    sf_rng r;
    sf_rng_seed(&r, 3);
    float x[12 * 8];
    for (int i = 0; i < 12 * 8; i++)
        x[i] = sf_rng_normal(&r);
    int done = 0;
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++)
        for (int f = 0; f < SF_FMT_COUNT; f++) {
            sf_sae s, L;
            CHECK(sf_sae_init(&s, archs[a], 8, 24, 3, 2) == 0);
            for (int i = 0; i < s.n_params; i++)
                for (size_t e = 0; e < s.params[i].numel; e++)
                    s.params[i].data[e] += 0.05f * sf_rng_normal(&r);
            if (archs[a] == SF_SAE_BATCHTOPK) s.threshold = 0.1f;
            char dir[2400];
            snprintf(dir, sizeof dir, "%s/tmp/formats/%s_%s", SF_BINARY_DIR,
                     sf_sae_arch_name(archs[a]), sf_sae_format_name((sf_sae_format)f));
            int can =
                f != SF_FMT_SPARSIFY || archs[a] == SF_SAE_TOPK || archs[a] == SF_SAE_MATRYOSHKA;
            int rc = sf_sae_save_as(&s, dir, (sf_sae_format)f);
            if (!can) {
                CHECK(rc == -1);
                CHECK_ERR_HAS("TopK SAEs only");
                sf_sae_free(&s);
                continue;
            }
            CHECK_MSG(rc == 0, "%s", sf_errmsg());
            CHECK_MSG(sf_sae_load(&L, dir) == 0, "%s", sf_errmsg());
            /* standard and gated were written with unit decoder columns */
            sf_sae_fold_decoder_norms(&s);
            sf_sae_codes c1, c2;
            sf_sae_codes_alloc(&c1, 12, s.k);
            sf_sae_codes_alloc(&c2, 12, L.k);
            CHECK(sf_sae_encode(&s, x, 12, &c1) == 0);
            CHECK(sf_sae_encode(&L, x, 12, &c2) == 0);
            float h1[12 * 8], h2[12 * 8];
            sf_sae_decode(&s, &c1, h1);
            sf_sae_decode(&L, &c2, h2);
            for (int b = 0; b < 12; b++) {
                CHECK(c1.cnt[b] == c2.cnt[b]);
                for (int u = 0; u < c1.cnt[b] && u < c2.cnt[b]; u++) {
                    CHECK(c1.idx[b * s.k + u] == c2.idx[b * L.k + u]);
                    CHECK_NEAR(c1.val[b * s.k + u], c2.val[b * L.k + u], 1e-5);
                }
            }
            for (int i = 0; i < 12 * 8; i++)
                CHECK_NEAR(h1[i], h2[i], 1e-5);
            done++;
            sf_sae_codes_free(&c1);
            sf_sae_codes_free(&c2);
            sf_sae_free(&s);
            sf_sae_free(&L);
        }
    CHECK(done == 14);
}

TEST(unsupported) {
    char dir[2400], path[2500];
    snprintf(dir, sizeof dir, "%s/tmp/formats/bad", SF_BINARY_DIR);
    sf_sae s, L;
    CHECK(sf_sae_init(&s, SF_SAE_STANDARD, 8, 16, 1, 1) == 0);
    CHECK(sf_sae_save_as(&s, dir, SF_FMT_SAELENS) == 0);
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    const char *t1 = "{\"architecture\": \"standard\", \"d_in\": 8, \"d_sae\": 16, "
                     "\"normalize_activations\": \"expected_average_only_in\"}";
    CHECK(sf_write_file_atomic(path, t1, strlen(t1)) == 0);
    CHECK(sf_sae_load(&L, dir) == -1);
    CHECK_ERR_HAS("normalize_activations 'expected_average_only_in' is not supported");
    const char *t2 = "{\"architecture\": \"transcoder\", \"d_in\": 8, \"d_sae\": 16}";
    CHECK(sf_write_file_atomic(path, t2, strlen(t2)) == 0);
    CHECK(sf_sae_load(&L, dir) == -1);
    CHECK_ERR_HAS("architecture 'transcoder' is not supported");
    const char *t3 = "{\"architecture\": \"standard\", \"d_in\": 9, \"d_sae\": 16}";
    CHECK(sf_write_file_atomic(path, t3, strlen(t3)) == 0);
    CHECK(sf_sae_load(&L, dir) == -1);
    CHECK_ERR_HAS("W_enc");
    sf_sae_free(&s);
}

int main(void) {
    RUN(detect);
    RUN(round_trips);
    RUN(unsupported);
    return test_summary();
}
