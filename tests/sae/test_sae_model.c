/* SAE model: the reference fixture (made with torch + safetensors +
 * huggingface_hub by tools/make_sae_fixture.py), TopK selection against brute
 * force, checkpoint round trip, and bad checkpoints. */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/sae.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/sae"

static void sh(const char *cmd) {
    if (system(cmd) != 0) fprintf(stderr, "command failed: %s\n", cmd);
}

/* Encodes fixture x and compares with the torch dense codes and decodes. */
static void check_against(const char *ckpt, const char *zkey, const char *xhkey, double tol,
                          int want_short) {
    sf_sae s;
    CHECK(sf_sae_load(&s, ckpt) == 0);
    if (!s.W_enc) return;
    CHECK(s.d == 16 && s.n == 512 && s.k == 8);
    sf_st io;
    CHECK(sf_st_open(&io, FIX "/io.safetensors") == 0);
    int64_t xs[2] = {-1, 16}, zs[2] = {-1, 512};
    float *o1 = NULL, *o2 = NULL, *o3 = NULL;
    const float *x = sf_st_get_f32(&io, "x", 2, xs, &o1);
    const float *z = sf_st_get_f32(&io, zkey, 2, zs, &o2);
    const float *xh = sf_st_get_f32(&io, xhkey, 2, xs, &o3);
    CHECK(x && z && xh);
    const int N = (int)sf_st_find(&io, "x")->shape[0];
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, N, s.k);
    CHECK(sf_sae_encode(&s, x, N, &c) == 0);
    int short_rows = 0;
    for (int b = 0; b < N; b++) {
        int nz = 0;
        for (int j = 0; j < 512; j++)
            nz += z[b * 512 + j] > 0;
        CHECK_MSG(c.cnt[b] == nz, "row %d: %d codes, torch has %d nonzeros", b, c.cnt[b], nz);
        short_rows += nz < s.k;
        for (int u = 0; u < c.cnt[b]; u++) {
            int j = c.idx[b * s.k + u];
            CHECK_MSG(z[b * 512 + j] > 0, "row %d: latent %d not active in torch", b, j);
            CHECK_NEAR(c.val[b * s.k + u], z[b * 512 + j], tol);
            if (u) CHECK(c.idx[b * s.k + u] > c.idx[b * s.k + u - 1]);
        }
    }
    if (want_short) CHECK(short_rows >= 1); /* a row with < k positive pre-activations */
    float *rec = malloc((size_t)N * 16 * sizeof(float));
    sf_sae_decode(&s, &c, rec);
    for (int i = 0; i < N * 16; i++)
        CHECK_NEAR(rec[i], xh[i], tol);
    free(rec);
    sf_sae_codes_free(&c);
    free(o1);
    free(o2);
    free(o3);
    sf_st_close(&io);
    sf_sae_free(&s);
}

TEST(fixture_f32) {
    check_against(FIX "/topk", "z", "x_hat", 2e-5, 1);
}

TEST(fixture_bf16) {
    check_against(FIX "/topk-bf16", "z_bf16", "x_hat_bf16", 2e-5, 0);
    /* extra config keys survive a save */
    sf_sae s;
    CHECK(sf_sae_load(&s, FIX "/topk-bf16") == 0);
    const char *dir = test_tmpdir("sae_bf16_resave");
    CHECK(sf_sae_save(&s, dir) == 0);
    char *cfgp = sf_path_join(dir, "config.json");
    char *txt = sf_read_file(cfgp, NULL);
    CHECK(txt && strstr(txt, "\"note\"") && strstr(txt, "extra key kept"));
    free(txt);
    free(cfgp);
    sf_sae_free(&s);
}

TEST(fixture_surgery) {
    sf_sae s;
    CHECK(sf_sae_load(&s, FIX "/topk") == 0);
    sf_st io;
    CHECK(sf_st_open(&io, FIX "/io.safetensors") == 0);
    int64_t xs[2] = {-1, 16};
    float *o1 = NULL, *o2 = NULL;
    const float *x = sf_st_get_f32(&io, "x", 2, xs, &o1);
    const float *want = sf_st_get_f32(&io, "surgery", 2, xs, &o2);
    CHECK(atoi(sf_st_meta(&io, "surgery_feature")) == 12);
    CHECK(atof(sf_st_meta(&io, "surgery_strength")) == 42.0);
    const int N = (int)sf_st_find(&io, "x")->shape[0];
    float *out = malloc((size_t)N * 16 * sizeof(float));
    CHECK(sf_sae_surgery(&s, x, N, 12, 42.0f, out) == 0);
    for (int i = 0; i < N * 16; i++)
        CHECK_NEAR(out[i], want[i], 1e-4);
    CHECK(sf_sae_surgery(&s, x, N, 512, 1.0f, out) == -1);
    CHECK_ERR_HAS("feature 512 out of range");
    free(out);
    free(o1);
    free(o2);
    sf_st_close(&io);
    sf_sae_free(&s);
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* TopK(ReLU(.)) against a brute-force selection, with the AVX-512 threshold
 * pre-pass (n >= 512) and without it, including ties and masks. */
TEST(topk_brute_force) {
    const int d = 8;
    const int ns[3] = {40, 4096, 12288}, ks[3] = {4, 32, 64};
    for (int t = 0; t < 3; t++) {
        int n = ns[t], k = ks[t];
        sf_sae s;
        CHECK(sf_sae_init(&s, SF_SAE_TOPK, d, n, k, 9 + t) == 0);
        sf_rng r;
        sf_rng_seed(&r, 77);
        for (int j = 0; j < n; j++)
            s.b_enc[j] = 0.1f * sf_rng_normal(&r);
        /* exact ties: duplicate some encoder rows */
        for (int j = 1; j < n; j += 97)
            memcpy(s.W_enc + (size_t)j * d, s.W_enc, d * sizeof(float)), s.b_enc[j] = s.b_enc[0];
        const int B = 50;
        float *x = malloc((size_t)B * d * sizeof(float));
        for (int i = 0; i < B * d; i++)
            x[i] = sf_rng_normal(&r);
        sf_sae_codes c;
        sf_sae_codes_alloc(&c, B, k);
        CHECK(sf_sae_encode(&s, x, B, &c) == 0);
        float *v = malloc((size_t)n * sizeof(float)), *sorted = malloc((size_t)n * sizeof(float));
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < n; j++) {
                double a = s.b_enc[j];
                for (int q = 0; q < d; q++)
                    a += (double)s.W_enc[(size_t)j * d + q] * (x[b * d + q] - s.b_dec[q]);
                v[j] = (float)a;
            }
            /* brute force: sort the positive values, take the k-th largest */
            int npos = 0;
            for (int j = 0; j < n; j++)
                if (v[j] > 0) sorted[npos++] = v[j];
            qsort(sorted, (size_t)npos, sizeof(float), cmp_desc);
            int want = npos < k ? npos : k;
            float kth = want ? sorted[want - 1] : 0;
            CHECK(c.cnt[b] == want);
            for (int u = 0; u < c.cnt[b]; u++) {
                int j = c.idx[b * k + u];
                CHECK_NEAR(c.val[b * k + u], v[j], 1e-4);
                CHECK(v[j] >= kth - 1e-4);
            }
        }
        free(v);
        free(sorted);
        free(x);
        sf_sae_codes_free(&c);
        sf_sae_free(&s);
    }
}

TEST(init_like_torch) {
    sf_sae s;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 64, 256, 8, 5) == 0);
    double bound = 1.0 / 8.0, mx = 0;
    for (int i = 0; i < 64 * 256; i++)
        mx = fmax(mx, fabs(s.W_enc[i]));
    CHECK(mx <= bound && mx > 0.95 * bound);
    for (int j = 0; j < 256; j++) {
        double ss = 0, dot = 0, we = 0;
        for (int q = 0; q < 64; q++) {
            ss += (double)s.W_decT[j * 64 + q] * s.W_decT[j * 64 + q];
            dot += (double)s.W_decT[j * 64 + q] * s.W_enc[j * 64 + q];
            we += (double)s.W_enc[j * 64 + q] * s.W_enc[j * 64 + q];
        }
        CHECK_NEAR(ss, 1.0, 1e-5);
        CHECK_NEAR(dot / sqrt(we), 1.0, 1e-5); /* decoder column j = encoder row j, normalised */
        CHECK(s.b_enc[j] == 0);
    }
    for (int q = 0; q < 64; q++)
        CHECK(s.b_dec[q] == 0);
    sf_sae t;
    CHECK(sf_sae_init(&t, SF_SAE_TOPK, 64, 256, 8, 5) == 0);
    CHECK(memcmp(s.W_enc, t.W_enc, 64 * 256 * sizeof(float)) == 0);
    sf_sae_free(&t);
    sf_sae_free(&s);
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 64, 4, 8, 5) == -1);
    CHECK_ERR_HAS("k <= pages");
}

TEST(round_trip) {
    sf_sae s, t;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 24, 96, 6, 11) == 0);
    for (int j = 0; j < 96; j++)
        s.b_enc[j] = 0.01f * j;
    for (int q = 0; q < 24; q++)
        s.b_dec[q] = -0.1f * q;
    s.W_decT[5] = 3.0f; /* not unit norm: must survive as is */
    sf_sae_config_set_string(&s, "trained_on", "synthetic");
    const char *dir = test_tmpdir("sae_round_trip");
    CHECK(sf_sae_save(&s, dir) == 0);
    CHECK(sf_sae_load(&t, dir) == 0);
    CHECK(t.d == 24 && t.n == 96 && t.k == 6);
    for (int i = 0; i < s.n_params; i++)
        CHECK(memcmp(s.params[i].data, t.params[i].data, s.params[i].numel * sizeof(float)) == 0);
    /* on disk: decoder.weight is [d, n] = W_decT transposed */
    char *mp = sf_path_join(dir, "model.safetensors");
    sf_st f;
    CHECK(sf_st_open(&f, mp) == 0);
    const sf_tensor_info *dw = sf_st_find(&f, "decoder.weight");
    CHECK(dw && dw->shape[0] == 24 && dw->shape[1] == 96 && dw->dtype == SF_DT_F32);
    if (dw)
        CHECK(((const float *)dw->data)[0 * 96 + 0] == s.W_decT[0] &&
              ((const float *)dw->data)[5 * 96 + 0] == 3.0f);
    CHECK(sf_st_find(&f, "encoder.weight") && sf_st_find(&f, "encoder.bias") &&
          sf_st_find(&f, "bias"));
    sf_st_close(&f);
    free(mp);
    char *cp = sf_path_join(dir, "config.json");
    char *txt = sf_read_file(cp, NULL);
    cJSON *cfg = cJSON_Parse(txt);
    CHECK(cJSON_GetObjectItem(cfg, "features")->valueint == 24);
    CHECK(cJSON_GetObjectItem(cfg, "pages")->valueint == 96);
    CHECK(cJSON_GetObjectItem(cfg, "k")->valueint == 6);
    CHECK_STR(cJSON_GetObjectItem(cfg, "trained_on")->valuestring, "synthetic");
    cJSON_Delete(cfg);
    free(txt);
    free(cp);
    sf_sae_free(&s);
    sf_sae_free(&t);
}

/* --save_dtype bf16 / f16: the tensors are stored narrowed (round to nearest
 * even, as torch's .to()), and load back widened to exactly those values. */
TEST(round_trip_half) {
    sf_sae s, t;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 24, 96, 6, 12) == 0);
    for (int j = 0; j < 96; j++)
        s.b_enc[j] = 0.0137f * j - 0.3f;
    for (int half = 1; half <= 2; half++) {
        s.save_half = half;
        const char *dir = test_tmpdir(half == 1 ? "sae_round_trip_bf16" : "sae_round_trip_f16");
        CHECK(sf_sae_save(&s, dir) == 0);
        char *mp = sf_path_join(dir, "model.safetensors");
        sf_st f;
        CHECK(sf_st_open(&f, mp) == 0);
        const sf_tensor_info *ew = sf_st_find(&f, "encoder.weight");
        CHECK(ew && ew->dtype == (half == 1 ? SF_DT_BF16 : SF_DT_F16));
        sf_st_close(&f);
        free(mp);
        CHECK(sf_sae_load(&t, dir) == 0);
        for (int i = 0; i < s.n_params; i++)
            for (size_t e = 0; e < s.params[i].numel; e++) {
                float v = s.params[i].data[e];
                float want =
                    half == 1 ? sf_bf16_to_f32(sf_f32_to_bf16(v)) : sf_f16_to_f32(sf_f32_to_f16(v));
                if (t.params[i].data[e] != want) {
                    CHECK_MSG(0, "%s[%lld]: %g, want %g", s.params[i].name, (long long)e,
                              t.params[i].data[e], want);
                    break;
                }
            }
        sf_sae_free(&t);
    }
    sf_sae_free(&s);
}

TEST(bad_checkpoints) {
    sf_sae s;
    const char *dir = test_tmpdir("sae_bad_ckpt");
    char cmd[8192];
    CHECK(sf_sae_load(&s, "/nonexistent/dir") == -1);
    CHECK_ERR_HAS("config.json: cannot open");
    /* config missing a key */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/a && cp %s/topk/model.safetensors %s/a/ && echo '{\"features\": 16, "
             "\"k\": 8}' > %s/a/config.json",
             dir, FIX, dir, dir);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "%s/a", dir);
    CHECK(sf_sae_load(&s, cmd) == -1);
    CHECK_ERR_HAS("missing key 'pages'");
    /* config shape disagreeing with the tensors */
    snprintf(cmd, sizeof cmd,
             "echo '{\"features\": 32, \"pages\": 512, \"k\": 8}' > %s/a/config.json", dir);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "%s/a", dir);
    CHECK(sf_sae_load(&s, cmd) == -1);
    CHECK_ERR_HAS("encoder.weight");
    /* not JSON */
    snprintf(cmd, sizeof cmd, "echo '{\"features\": 16,' > %s/a/config.json", dir);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "%s/a", dir);
    CHECK(sf_sae_load(&s, cmd) == -1);
    CHECK_ERR_HAS("not a JSON object");
    /* truncated model.safetensors */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/b && cp %s/topk/config.json %s/b/ && head -c 30000 "
             "%s/topk/model.safetensors > %s/b/model.safetensors",
             dir, FIX, dir, FIX, dir);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "%s/b", dir);
    CHECK(sf_sae_load(&s, cmd) == -1);
    CHECK_ERR_HAS("model.safetensors");
    /* missing tensor: a model without 'bias' */
    sf_st_writer *w = sf_stw_new();
    float *buf = calloc(512 * 16, sizeof(float));
    int64_t s1[2] = {512, 16}, s2[1] = {512}, s3[2] = {16, 512};
    sf_stw_add(w, "encoder.weight", SF_DT_F32, 2, s1, buf);
    sf_stw_add(w, "encoder.bias", SF_DT_F32, 1, s2, buf);
    sf_stw_add(w, "decoder.weight", SF_DT_F32, 2, s3, buf);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/c && cp %s/topk/config.json %s/c/", dir, FIX, dir);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "%s/c/model.safetensors", dir);
    CHECK(sf_stw_write(w, cmd) == 0);
    sf_stw_free(w);
    snprintf(cmd, sizeof cmd, "%s/c", dir);
    CHECK(sf_sae_load(&s, cmd) == -1);
    CHECK_ERR_HAS("missing tensor 'bias'");
    /* NaN in a weight */
    w = sf_stw_new();
    float nanb[16] = {0};
    nanb[3] = NAN;
    int64_t s4[1] = {16};
    sf_stw_add(w, "encoder.weight", SF_DT_F32, 2, s1, buf);
    sf_stw_add(w, "encoder.bias", SF_DT_F32, 1, s2, buf);
    sf_stw_add(w, "decoder.weight", SF_DT_F32, 2, s3, buf);
    sf_stw_add(w, "bias", SF_DT_F32, 1, s4, nanb);
    snprintf(cmd, sizeof cmd, "%s/c/model.safetensors", dir);
    CHECK(sf_stw_write(w, cmd) == 0);
    sf_stw_free(w);
    snprintf(cmd, sizeof cmd, "%s/c", dir);
    CHECK(sf_sae_load(&s, cmd) == -1);
    CHECK_ERR_HAS("tensor 'bias': contains NaN");
    free(buf);
    /* unknown architecture in config */
    snprintf(cmd, sizeof cmd,
             "echo '{\"features\": 16, \"pages\": 512, \"k\": 8, \"arch\": \"banana\"}' > "
             "%s/c/config.json",
             dir);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "%s/c", dir);
    CHECK(sf_sae_load(&s, cmd) == -1);
    CHECK_ERR_HAS("unknown architecture");
}

TEST(encode_rejects_nan) {
    sf_sae s;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 8, 32, 4, 1) == 0);
    float x[3 * 8] = {0};
    x[2 * 8 + 5] = INFINITY;
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, 3, 4);
    CHECK(sf_sae_encode(&s, x, 3, &c) == -1);
    CHECK_ERR_HAS("row 2: NaN or Inf");
    sf_sae_codes_free(&c);
    sf_sae_free(&s);
}

/* sf_sae_codes_dense: every entry written (zeros included), the cnt[b]
 * values of each row at their indices, nothing past cnt. */
TEST(codes_dense) {
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, 3, 2);
    const int32_t idx[6] = {1, 4, 0, 2, 3, 3};
    const float val[6] = {1.5f, 2.5f, 3.5f, 9.0f, 4.5f, 9.0f};
    const int32_t cnt[3] = {2, 1, 0};
    memcpy(c.idx, idx, sizeof idx), memcpy(c.val, val, sizeof val), memcpy(c.cnt, cnt, sizeof cnt);
    float z[15];
    for (int i = 0; i < 15; i++)
        z[i] = -1;
    sf_sae_codes_dense(&c, 5, z);
    const float want[15] = {0, 1.5f, 0, 0, 2.5f, 3.5f, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(!memcmp(z, want, sizeof want));
    sf_sae_codes_free(&c);
}

int main(void) {
    RUN(codes_dense);
    RUN(fixture_f32);
    RUN(fixture_bf16);
    RUN(fixture_surgery);
    RUN(topk_brute_force);
    RUN(init_like_torch);
    RUN(round_trip);
    RUN(round_trip_half);
    RUN(bad_checkpoints);
    RUN(encode_rejects_nan);
    return test_summary();
}
