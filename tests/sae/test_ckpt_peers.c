/* Checkpoints written by the peers' own code (tools/make_format_fixtures.py:
 * SAELens and sparsify from PyPI, the reference's autoencoder.py restated,
 * saved by the real PyTorchModelHubMixin): every case of
 * fixtures/formats/cases.json loads, encodes to the codes that project
 * computes, decodes its codes to its reconstructions; a save in every layout
 * that can hold it reloads to identical codes; the folds (decoder norms,
 * rescale_acts_by_decoder_norm) and the architecture inference. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "saeflow/config.h"
#include "saeflow/sae_formats.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FX SF_SOURCE_DIR "/fixtures/formats"

/* F32 arithmetic on values of order 1 with d = 16 terms: the peers' and
 * saeflow's sums differ in order only (a few ulp of the largest term). */
#define TOL 1e-6

static float *read2(const sf_st *f, const char *name, int64_t r, int64_t c) {
    int64_t shape[2] = {r, c};
    float *p = malloc((size_t)r * c * sizeof(float));
    if (sf_st_read_f32(f, name, 2, shape, p)) {
        free(p);
        return NULL;
    }
    return p;
}

static void dense(const sf_sae_codes *c, int n, float *z) {
    memset(z, 0, (size_t)c->B * n * sizeof(float));
    for (int64_t b = 0; b < c->B; b++)
        for (int u = 0; u < c->cnt[b]; u++)
            z[b * n + c->idx[b * c->k + u]] = c->val[b * c->k + u];
}

/* codes of x under s, dense (B, n) */
static float *codes_of(const sf_sae *s, const float *x, int B) {
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, B, s->k);
    float *z = malloc((size_t)B * s->n * sizeof(float));
    CHECK_MSG(sf_sae_encode(s, x, B, &c) == 0, "%s", sf_errmsg());
    dense(&c, s->n, z);
    sf_sae_codes_free(&c);
    return z;
}

/* dense codes (B, n) -> reconstructions (B, d) through sf_sae_decode */
static void decode_dense(const sf_sae *s, const float *z, int B, float *xh) {
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, B, s->n);
    for (int b = 0; b < B; b++) {
        c.cnt[b] = 0;
        for (int j = 0; j < s->n; j++)
            if (z[b * s->n + j] != 0) {
                c.idx[b * s->n + c.cnt[b]] = j;
                c.val[b * s->n + c.cnt[b]++] = z[b * s->n + j];
            }
    }
    sf_sae_decode(s, &c, xh);
    sf_sae_codes_free(&c);
}

static double max_rel(const float *a, const float *b, size_t m) {
    double w = 0;
    for (size_t i = 0; i < m; i++) {
        double e = fabs((double)a[i] - b[i]) / (1 + fabs((double)b[i]));
        if (!(e <= w)) w = e; /* NaN counts as worst */
    }
    return w;
}

/* Reconstructions: x_hat = b + sum_j z_j w_j in F32 is exact to a few ulp of
 * the terms' magnitude, not of the result (terms cancel), so the error of
 * element (b, q) is measured against 1 + |b_q| + sum_j |z_bj w_jq|. */
static double recon_err(const sf_sae *s, const float *z, const float *a, const float *b, int B) {
    double w = 0;
    for (int r = 0; r < B; r++)
        for (int q = 0; q < s->d; q++) {
            double m = 1 + fabs(s->b_dec[q]);
            for (int j = 0; j < s->n; j++)
                m += fabs((double)z[r * s->n + j] * s->W_decT[(size_t)j * s->d + q]);
            double e = fabs((double)a[r * s->d + q] - b[r * s->d + q]) / m;
            if (!(e <= w)) w = e;
        }
    return w;
}

static int can_hold(sf_sae_format f, const sf_sae *s) {
    return f != SF_FMT_SPARSIFY || s->arch == SF_SAE_TOPK;
}

TEST(peer_cases) {
    cJSON *root = sf_cfg_load(FX "/cases.json");
    const cJSON *cases = root ? cJSON_GetObjectItem(root, "cases") : NULL;
    CHECK_MSG(cJSON_IsArray(cases), "%s", sf_errmsg());
    if (!cJSON_IsArray(cases)) {
        cJSON_Delete(root);
        return;
    }
    sf_st in;
    CHECK(sf_st_open(&in, FX "/expected.safetensors") == 0);
    const sf_tensor_info *xi = sf_st_find(&in, "x");
    CHECK(xi && xi->ndim == 2);
    const int R = (int)xi->shape[0], D = (int)xi->shape[1];
    float *x = read2(&in, "x", R, D);
    int ncases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        const cJSON *sub = cJSON_GetObjectItem(c, "dir");
        const char *want = cJSON_GetObjectItem(c, "arch")->valuestring;
        char dir[1024], key[256];
        snprintf(dir, sizeof dir, "%s/%s", FX, sub ? sub->valuestring : name);
        sf_sae s;
        if (sf_sae_load(&s, dir)) {
            CHECK_MSG(0, "%s: %s", name, sf_errmsg());
            continue;
        }
        CHECK_MSG(!strcmp(sf_sae_arch_name(s.arch), want), "%s: arch %s, want %s", name,
                  sf_sae_arch_name(s.arch), want);
        const int n = s.n;
        snprintf(key, sizeof key, "%s.codes", name);
        float *zw = read2(&in, key, R, n);
        snprintf(key, sizeof key, "%s.recon", name);
        float *hw = read2(&in, key, R, D);
        CHECK(zw && hw && s.d == D);
        float *z = codes_of(&s, x, R), *xh = malloc((size_t)R * D * sizeof(float));
        /* the same latents, the same values */
        int same_support = 1;
        for (int i = 0; i < R * n; i++)
            same_support &= (z[i] != 0) == (zw[i] != 0);
        CHECK_MSG(same_support, "%s: active latents differ", name);
        double ez = max_rel(z, zw, (size_t)R * n);
        CHECK_MSG(ez <= TOL, "%s: codes differ by %.2e", name, ez);
        decode_dense(&s, z, R, xh);
        double eh = recon_err(&s, z, xh, hw, R);
        CHECK_MSG(eh <= TOL, "%s: reconstructions differ by %.2e", name, eh);
        /* the peer's own codes decode to the peer's reconstructions */
        decode_dense(&s, zw, R, xh);
        double ep = recon_err(&s, zw, xh, hw, R);
        CHECK_MSG(ep <= TOL, "%s: decode of the peer's codes differs by %.2e", name, ep);
        fprintf(stderr, "%-34s %-9s codes %.1e  recon %.1e  decode(peer codes) %.1e\n", name, want,
                ez, eh, ep);
        /* saved in every layout that holds it and reloaded: identical codes */
        for (int f = 0; f < SF_FMT_COUNT; f++) {
            if (!can_hold((sf_sae_format)f, &s)) continue;
            char out[2400];
            snprintf(out, sizeof out, "%s/tmp/ckpt_peers/%s.%s", SF_BINARY_DIR, name,
                     sf_sae_format_name((sf_sae_format)f));
            sf_sae L, F;
            CHECK_MSG(sf_sae_save_as(&s, out, (sf_sae_format)f) == 0, "%s", sf_errmsg());
            CHECK_MSG(sf_sae_load(&L, out) == 0, "%s", sf_errmsg());
            /* what was written: s with standard / gated decoder norms folded */
            CHECK(sae_copy(&F, &s) == 0);
            sf_sae_fold_decoder_norms(&F);
            float *z1 = codes_of(&F, x, R), *z2 = codes_of(&L, x, R);
            CHECK_MSG(!memcmp(z1, z2, (size_t)R * n * sizeof(float)), "%s -> %s: codes differ",
                      name, sf_sae_format_name((sf_sae_format)f));
            /* and the reconstructions are the source's */
            decode_dense(&L, z2, R, xh);
            double er = recon_err(&L, z2, xh, hw, R);
            CHECK_MSG(er <= TOL, "%s -> %s: reconstructions differ by %.2e", name,
                      sf_sae_format_name((sf_sae_format)f), er);
            free(z1);
            free(z2);
            sf_sae_free(&F);
            sf_sae_free(&L);
        }
        free(z);
        free(xh);
        free(zw);
        free(hw);
        sf_sae_free(&s);
        ncases++;
    }
    CHECK(ncases >= 20);
    free(x);
    sf_st_close(&in);
    cJSON_Delete(root);
}

/* The reference's units: a standard / gated SAE with decoder columns off unit
 * norm saves with codes times ||w_j|| and the same reconstructions; a zero
 * column is left as it is; training state (the in-memory model) is untouched. */
TEST(fold_decoder_norms) {
    const sf_sae_arch archs[] = {SF_SAE_STANDARD, SF_SAE_GATED};
    enum { d = 8, n = 20, B = 9 };
    sf_rng r;
    sf_rng_seed(&r, 11);
    float x[B * d];
    for (int i = 0; i < B * d; i++)
        x[i] = sf_rng_normal(&r);
    for (int a = 0; a < 2; a++) {
        sf_sae s, L;
        CHECK(sf_sae_init(&s, archs[a], d, n, 1, 4) == 0);
        for (int i = 0; i < s.n_params; i++)
            for (size_t e = 0; e < s.params[i].numel; e++)
                s.params[i].data[e] += 0.1f * sf_rng_normal(&r);
        double nrm[n];
        for (int j = 0; j < n; j++) {
            float sc = j == 3 ? 0.0f : 0.2f + 0.1f * (float)j; /* latent 3: a zero column */
            double ss = 0;
            for (int q = 0; q < d; q++) {
                s.W_decT[j * d + q] *= sc;
                ss += (double)s.W_decT[j * d + q] * s.W_decT[j * d + q];
            }
            nrm[j] = sqrt(ss);
        }
        float enc3[d];
        memcpy(enc3, s.W_enc + 3 * d, sizeof enc3);
        float *before = malloc(s.n_params * sizeof(float));
        for (int i = 0; i < s.n_params; i++)
            before[i] = s.params[i].data[1];
        char dir[2400];
        snprintf(dir, sizeof dir, "%s/tmp/ckpt_peers/fold_%s", SF_BINARY_DIR,
                 sf_sae_arch_name(archs[a]));
        CHECK(sf_sae_save(&s, dir) == 0);
        for (int i = 0; i < s.n_params; i++) /* save works on a copy */
            CHECK(before[i] == s.params[i].data[1]);
        free(before);
        CHECK(sf_sae_load(&L, dir) == 0);
        float *z0 = codes_of(&s, x, B), *z1 = codes_of(&L, x, B);
        float h0[B * d], h1[B * d];
        decode_dense(&s, z0, B, h0);
        decode_dense(&L, z1, B, h1);
        int checked = 0;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++) {
                double want = j == 3 ? z0[b * n + j] : z0[b * n + j] * nrm[j];
                CHECK_NEAR(z1[b * n + j], want, 1e-6 * (1 + fabs(want)));
                checked += z0[b * n + j] != 0;
            }
        CHECK(checked > B);
        CHECK(max_rel(h1, h0, (size_t)B * d) <= 1e-6);
        for (int j = 0; j < n; j++) {
            double ss = 0;
            for (int q = 0; q < d; q++)
                ss += (double)L.W_decT[j * d + q] * L.W_decT[j * d + q];
            CHECK_NEAR(ss, j == 3 ? 0.0 : 1.0, 1e-6);
        }
        CHECK(!memcmp(enc3, L.W_enc + 3 * d, sizeof enc3));
        /* the L1 x decoder norm term is the same number (gated's gate scales alike) */
        double l1a = 0, l1b = 0;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++) {
                l1a += z0[b * n + j] * nrm[j];
                l1b += z1[b * n + j] * (j == 3 ? 0.0 : 1.0);
            }
        CHECK_NEAR(l1a, l1b, 1e-6 * (1 + l1a));
        free(z0);
        free(z1);
        sf_sae_free(&s);
        sf_sae_free(&L);
    }
}

static void write_model(const char *dir, const char *cfg, const char *const *names, int count) {
    char path[2400];
    CHECK(sf_mkdirs(dir) == 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(sf_write_file_atomic(path, cfg, strlen(cfg)) == 0);
    sf_st_writer *w = sf_stw_new();
    static float buf[8 * 16];
    for (int i = 0; i < count; i++) {
        int64_t shape[2] = {16, 8};
        int nd = 2;
        if (!strcmp(names[i], "decoder.weight")) {
            shape[0] = 8;
            shape[1] = 16;
        } else if (!strcmp(names[i], "bias") || !strcmp(names[i], "decoder_bias")) {
            shape[0] = 8;
            nd = 1;
        } else if (strcmp(names[i], "encoder.weight")) {
            nd = 1;
        }
        sf_stw_add(w, names[i], SF_DT_F32, nd, shape, buf);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
}

/* config.json without "arch" (the reference's save_pretrained): the tensors tell. */
TEST(infer_arch) {
    const char *base = test_tmpdir("ckpt_infer");
    char dir[2400];
    const char *lin[] = {"encoder.weight", "encoder.bias", "decoder.weight", "bias"};
    const char *gated[] = {"decoder_bias", "encoder.weight", "r_mag",
                           "gate_bias",    "mag_bias",       "decoder.weight"};
    const char *jump[] = {"bias", "encoder.weight", "encoder.bias", "decoder.weight", "logthres"};
    const char *both[] = {"encoder.weight", "decoder.weight", "logthres", "r_mag"};
    const char *none[] = {"W_enc", "W_dec"};
    sf_sae s;
    snprintf(dir, sizeof dir, "%s/std", base);
    write_model(dir, "{\"features\": 8, \"pages\": 16}", lin, 4);
    CHECK_MSG(sf_sae_load(&s, dir) == 0, "%s", sf_errmsg());
    CHECK(s.arch == SF_SAE_STANDARD && s.k == 16);
    sf_sae_free(&s);
    snprintf(dir, sizeof dir, "%s/topk", base);
    write_model(dir, "{\"features\": 8, \"pages\": 16, \"k\": 3}", lin, 4);
    CHECK(sf_sae_load(&s, dir) == 0);
    CHECK(s.arch == SF_SAE_TOPK && s.k == 3);
    sf_sae_free(&s);
    snprintf(dir, sizeof dir, "%s/gated", base);
    write_model(dir, "{\"features\": 8, \"pages\": 16, \"device\": null}", gated, 6);
    CHECK_MSG(sf_sae_load(&s, dir) == 0, "%s", sf_errmsg());
    CHECK(s.arch == SF_SAE_GATED);
    sf_sae_free(&s);
    snprintf(dir, sizeof dir, "%s/jump", base);
    write_model(dir,
                "{\"features\": 8, \"pages\": 16, \"bandwidth\": 0.001, \"jumpthreshold\": "
                "0.001}",
                jump, 5);
    CHECK_MSG(sf_sae_load(&s, dir) == 0, "%s", sf_errmsg());
    CHECK(s.arch == SF_SAE_JUMPRELU);
    sf_sae_free(&s);
    snprintf(dir, sizeof dir, "%s/both", base);
    write_model(dir, "{\"features\": 8, \"pages\": 16}", both, 4);
    CHECK(sf_sae_load(&s, dir) == -1);
    CHECK_ERR_HAS("no key 'arch'");
    CHECK_ERR_HAS("'logthres', 'r_mag'");
    CHECK_ERR_HAS("match both gated and jumprelu");
    snprintf(dir, sizeof dir, "%s/none", base);
    write_model(dir, "{\"features\": 8, \"pages\": 16}", none, 2);
    CHECK(sf_sae_load(&s, dir) == -1);
    CHECK_ERR_HAS("('W_enc', 'W_dec') match no architecture");
    /* a gated file missing one tensor: the load names it */
    snprintf(dir, sizeof dir, "%s/gated5", base);
    write_model(dir, "{\"features\": 8, \"pages\": 16}", gated, 5);
    CHECK(sf_sae_load(&s, dir) == -1);
    CHECK_ERR_HAS("missing tensor 'decoder.weight'");
}

/* SAELens keys saeflow does not implement are refused, naming the key. */
TEST(saelens_refused) {
    const char *dir = test_tmpdir("ckpt_refuse");
    char src[1024], cmd[4096], path[2400];
    snprintf(src, sizeof src, "%s/saelens_topk", FX);
    snprintf(cmd, sizeof cmd, "cp %s/sae_weights.safetensors %s/", src, dir);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    const struct {
        const char *cfg, *msg;
    } bad[] = {
        {"{\"architecture\": \"topk\", \"d_in\": 16, \"d_sae\": 48, \"k\": 5, "
         "\"normalize_activations\": \"layer_norm\"}",
         "normalize_activations 'layer_norm' is not supported"},
        {"{\"architecture\": \"abstopk\", \"d_in\": 16, \"d_sae\": 48, \"k\": 5}",
         "architecture 'abstopk' is not supported"},
        {"{\"architecture\": \"jumprelu_transcoder\", \"d_in\": 16, \"d_sae\": 48, "
         "\"d_out\": 16}",
         "architecture 'jumprelu_transcoder' is not supported"},
        {"{\"architecture\": \"batchtopk\", \"d_in\": 16, \"d_sae\": 48, \"k\": 5}",
         "topk_threshold"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sf_sae s;
        CHECK(sf_write_file_atomic(path, bad[i].cfg, strlen(bad[i].cfg)) == 0);
        CHECK(sf_sae_load(&s, dir) == -1);
        CHECK_ERR_HAS(bad[i].msg);
    }
}

/* Legacy SAELens finetuning_scaling_factor: decode (z * sf) W_dec, folded into W_dec. */
TEST(saelens_scaling_factor) {
    const char *dir = test_tmpdir("ckpt_scaling");
    sf_st f;
    CHECK(sf_st_open(&f, FX "/saelens_topk/sae_weights.safetensors") == 0);
    sf_st_writer *w = sf_stw_new();
    for (int i = 0; i < f.n_tensors; i++) {
        const sf_tensor_info *t = &f.tensors[i];
        sf_stw_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    float sf[48];
    for (int j = 0; j < 48; j++)
        sf[j] = 0.5f + 0.05f * (float)j;
    int64_t sn[1] = {48};
    sf_stw_add(w, "scaling_factor", SF_DT_F32, 1, sn, sf);
    char path[2400];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    sf_st_close(&f);
    const char *cfg = "{\"architecture\": \"topk\", \"d_in\": 16, \"d_sae\": 48, \"k\": 5, "
                      "\"finetuning_scaling_factor\": true}";
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    CHECK(sf_write_file_atomic(path, cfg, strlen(cfg)) == 0);
    sf_sae a, b;
    CHECK(sf_sae_load(&a, FX "/saelens_topk") == 0);
    CHECK_MSG(sf_sae_load(&b, dir) == 0, "%s", sf_errmsg());
    CHECK(!memcmp(a.W_enc, b.W_enc, 48 * 16 * sizeof(float)));
    for (int j = 0; j < 48; j++)
        for (int q = 0; q < 16; q++)
            CHECK(b.W_decT[j * 16 + q] == a.W_decT[j * 16 + q] * sf[j]);
    sf_sae_free(&a);
    sf_sae_free(&b);
}

int main(void) {
    RUN(peer_cases);
    RUN(fold_decoder_norms);
    RUN(infer_arch);
    RUN(saelens_refused);
    RUN(saelens_scaling_factor);
    return test_summary();
}
