/* SAELens and sparsify checkpoints: the fixtures written by
 * tools/make_format_fixtures.py with the real safetensors package load
 * through sf_sae_load (detected), and encode/decode match the codes and
 * reconstructions computed in torch with each project's semantics; every
 * architecture round-trips through every layout that can hold it; bad or
 * unsupported checkpoints give clear errors. */
#include <math.h>
#include <string.h>

#include "saeflow/sae_formats.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FX SF_SOURCE_DIR "/fixtures/formats"

static void check_fixture(const char *dir, const char *key, sf_sae_arch want_arch) {
    sf_st in;
    CHECK(sf_st_open(&in, FX "/inputs.safetensors") == 0);
    sf_sae s;
    int rc = sf_sae_load(&s, dir);
    CHECK_MSG(rc == 0, "%s: %s", dir, sf_errmsg());
    if (rc) {
        sf_st_close(&in);
        return;
    }
    CHECK(s.arch == want_arch);
    const int R = 10;
    float x[10 * 16], codes[10 * 48], recon[10 * 16], xh[10 * 16];
    int64_t sx[2] = {R, 16}, sc[2] = {R, 48};
    char name[128];
    CHECK(sf_st_read_f32(&in, "x", 2, sx, x) == 0);
    snprintf(name, sizeof name, "%s.codes", key);
    CHECK(sf_st_read_f32(&in, name, 2, sc, codes) == 0);
    snprintf(name, sizeof name, "%s.recon", key);
    CHECK(sf_st_read_f32(&in, name, 2, sx, recon) == 0);
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, R, s.k);
    CHECK(sf_sae_encode(&s, x, R, &c) == 0);
    float dense[10 * 48] = {0};
    int nnz = 0;
    for (int b = 0; b < R; b++)
        for (int u = 0; u < c.cnt[b]; u++)
            dense[b * 48 + c.idx[b * s.k + u]] = c.val[b * s.k + u];
    for (int i = 0; i < R * 48; i++) {
        CHECK_NEAR(dense[i], codes[i], 2e-5 * (1 + fabs(codes[i])));
        nnz += codes[i] != 0;
    }
    CHECK(nnz > R);
    sf_sae_decode(&s, &c, xh);
    for (int i = 0; i < R * 16; i++)
        CHECK_NEAR(xh[i], recon[i], 2e-5 * (1 + fabs(recon[i])));
    fprintf(stderr, "%s: %s, %d nonzero codes match\n", key, sf_sae_arch_name(s.arch), nnz);
    sf_sae_codes_free(&c);
    sf_sae_free(&s);
    sf_st_close(&in);
}

TEST(saelens_standard) {
    check_fixture(FX "/saelens_standard", "saelens_standard", SF_SAE_STANDARD);
}
TEST(saelens_gated_no_bdec_input) {
    check_fixture(FX "/saelens_gated", "saelens_gated", SF_SAE_GATED);
}
TEST(saelens_jumprelu) {
    check_fixture(FX "/saelens_jumprelu", "saelens_jumprelu", SF_SAE_JUMPRELU);
}
TEST(saelens_topk) {
    check_fixture(FX "/saelens_topk", "saelens_topk", SF_SAE_TOPK);
}
TEST(sparsify_topk) {
    check_fixture(FX "/sparsify/layers.6", "sparsify", SF_SAE_TOPK);
}

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
    RUN(saelens_standard);
    RUN(saelens_gated_no_bdec_input);
    RUN(saelens_jumprelu);
    RUN(saelens_topk);
    RUN(sparsify_topk);
    RUN(detect);
    RUN(round_trips);
    RUN(unsupported);
    return test_summary();
}
