/* Training end to end: dictionary recovery on synthetic data, determinism,
 * metrics, and bad data (NaN, width mismatch, missing key, truncated file). */
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saeflow/sae_eval.h"
#include "saeflow/sae_train.h"
#include "test.h"

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void make_synth(const char *path, uint64_t seed) {
    sf_synth_opts o;
    sf_synth_opts_default(&o);
    o.d = 32;
    o.n_true = 64;
    o.samples = 8192;
    o.active = 3;
    o.seed = seed;
    CHECK(sf_sae_synth(&o, path, "activations", "dictionary") == 0);
}

static void run_opts(sf_sae_run_opts *ro, const char *outdir) {
    memset(ro, 0, sizeof *ro);
    sf_sae_train_opts_default(&ro->train);
    ro->train.lr = 2e-3;
    ro->train.lr_warmup_steps = 20;
    ro->train.bodycount = 4096;
    ro->batch_size = 128;
    ro->num_epochs = 12;
    ro->seed = 3;
    ro->outdir = outdir;
    ro->quiet = 1;
}

TEST(recovers_dictionary) {
    const char *dir = test_tmpdir("sae_recover");
    char *data = sf_path_join(dir, "synth.safetensors");
    make_synth(data, 1);
    const char *paths[1] = {data};
    sf_sae_data D;
    CHECK(sf_sae_data_open(&D, paths, 1, "activations") == 0);
    CHECK(D.N == 8192 && D.d == 32);
    sf_sae s;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 32, 128, 3, 5) == 0);
    sf_sae_run_opts ro;
    char *out = sf_path_join(dir, "ckpt");
    run_opts(&ro, out);
    sf_sae_metrics m;
    double t0 = sf_now();
    CHECK(sf_sae_train_run(&s, &D, &ro, &m) == 0);
    fprintf(stderr, "trained in %.2f s\n", sf_now() - t0);
    sf_st f;
    CHECK(sf_st_open(&f, data) == 0);
    int64_t ds[2] = {64, 32};
    float *owned = NULL;
    const float *dict = sf_st_get_f32(&f, "dictionary", 2, ds, &owned);
    sf_sae_eval_result r;
    CHECK(sf_sae_evaluate(&s, &D, 0, dict, 64, &r) == 0);
    fprintf(stderr, "MMCS %.4f recovered %.3f FVU %.4f L0 %.2f\n", r.mmcs, r.recovered, r.fvu,
            r.l0);
    CHECK(r.mmcs >= 0.9);
    CHECK(r.fvu < 0.3);
    CHECK_NEAR(r.l0, 3.0, 0.05);
    /* the saved checkpoint is the trained model */
    sf_sae t;
    CHECK(sf_sae_load(&t, out) == 0);
    CHECK_NEAR(sf_sae_mmcs(&t, dict, 64, NULL, NULL), r.mmcs, 1e-9);
    sf_sae_free(&t);
    /* metrics.jsonl: one line per step, every metric present */
    char *mp = sf_path_join(out, "metrics.jsonl");
    char *txt = sf_read_file(mp, NULL);
    CHECK(txt != NULL);
    if (txt) {
        int lines = 0;
        for (char *p = txt; *p; p++)
            lines += *p == '\n';
        CHECK(lines == 12 * (8192 / 128));
        const char *keys[] = {"\"loss\"",
                              "\"l2\"",
                              "\"l2_normalised\"",
                              "\"l1\"",
                              "\"l0\"",
                              "\"cossim\"",
                              "\"alive\"",
                              "\"survival\"",
                              "\"dead\"",
                              "\"auxk\"",
                              "\"log10_density_hist\""};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
            CHECK(strstr(txt, keys[i]) != NULL);
    }
    free(txt);
    free(mp);
    free(owned);
    sf_st_close(&f);
    sf_sae_free(&s);
    sf_sae_data_close(&D);
    free(out);
    free(data);
}

static char *read_all(const char *dir, const char *name, size_t *len) {
    char *p = sf_path_join(dir, name);
    char *b = sf_read_file(p, len);
    free(p);
    return b;
}

/* Trains a short run; returns the model.safetensors bytes. */
static char *train_bytes(const char *data, const char *out, int threads, size_t *len) {
    omp_set_num_threads(threads);
    const char *paths[1] = {data};
    sf_sae_data D;
    CHECK(sf_sae_data_open(&D, paths, 1, "activations") == 0);
    sf_sae s;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 32, 128, 3, 5) == 0);
    sf_sae_run_opts ro;
    run_opts(&ro, out);
    ro.num_epochs = 2;
    ro.train.bodycount = 256; /* AuxK active: its path must be deterministic too */
    ro.train.aux_k = 16;
    ro.train.normalise = 1;
    sf_sae_metrics m;
    CHECK(sf_sae_train_run(&s, &D, &ro, &m) == 0);
    CHECK(m.dead > 0 || m.auxk >= 0);
    sf_sae_free(&s);
    sf_sae_data_close(&D);
    return read_all(out, "model.safetensors", len);
}

TEST(deterministic) {
    const char *dir = test_tmpdir("sae_determinism");
    char *data = sf_path_join(dir, "synth.safetensors");
    make_synth(data, 2);
    char *o1 = sf_path_join(dir, "a"), *o2 = sf_path_join(dir, "b"), *o3 = sf_path_join(dir, "c");
    size_t l1 = 0, l2 = 0, l3 = 0;
    char *b1 = train_bytes(data, o1, 2, &l1), *b2 = train_bytes(data, o2, 2, &l2);
    char *b3 = train_bytes(data, o3, 1, &l3);
    /* Adam's streaming-store path (normally only for large matrices) computes
     * the same bits as the plain one */
    setenv("SAEFLOW_ADAM_STREAM_MIN", "0", 1);
    char *o4 = sf_path_join(dir, "d");
    size_t l4 = 0;
    char *b4 = train_bytes(data, o4, 2, &l4);
    unsetenv("SAEFLOW_ADAM_STREAM_MIN");
    CHECK(b4 && l4 == l1 && b1 && memcmp(b1, b4, l1) == 0);
    free(b4);
    free(o4);
    CHECK(b1 && b2 && b3);
    CHECK(l1 == l2 && b1 && b2 && memcmp(b1, b2, l1) == 0);
    /* the reductions do not depend on the thread count either */
    CHECK(l1 == l3 && b1 && b3 && memcmp(b1, b3, l1) == 0);
    omp_set_num_threads(2);
    free(b1);
    free(b2);
    free(b3);
    free(o1);
    free(o2);
    free(o3);
    free(data);
}

TEST(auxk_revives_dead_latents) {
    /* A model whose latents mostly never fire: with AuxK the dead fraction
     * falls, without it the dead stay dead. */
    const char *dir = test_tmpdir("sae_auxk");
    char *data = sf_path_join(dir, "synth.safetensors");
    make_synth(data, 4);
    const char *paths[1] = {data};
    sf_sae_data D;
    CHECK(sf_sae_data_open(&D, paths, 1, "activations") == 0);
    double dead[2];
    for (int aux = 0; aux < 2; aux++) {
        sf_sae s;
        /* 128 latents for 64 true features, 96 of them silenced: without
         * AuxK only 32 can ever learn anything */
        CHECK(sf_sae_init(&s, SF_SAE_TOPK, 32, 128, 3, 5) == 0);
        for (int j = 32; j < 128; j++)
            s.b_enc[j] = -0.3f;
        sf_sae_run_opts ro;
        char *out = sf_path_join(dir, aux ? "aux" : "noaux");
        run_opts(&ro, out);
        ro.num_epochs = 6;
        ro.train.bodycount = 1024;
        ro.train.aux_k = 64;
        ro.train.auxk_coef = aux ? 1.0 / 32 : 0;
        sf_sae_metrics m;
        CHECK(sf_sae_train_run(&s, &D, &ro, &m) == 0);
        dead[aux] = m.dead;
        if (aux) CHECK(m.auxk > 0 || m.dead == 0);
        sf_sae_free(&s);
        free(out);
    }
    fprintf(stderr, "dead fraction without AuxK %.3f, with %.3f\n", dead[0], dead[1]);
    CHECK(dead[0] > 0.35);
    CHECK(dead[1] < dead[0] - 0.12);
    sf_sae_data_close(&D);
    free(data);
}

TEST(bad_data) {
    const char *dir = test_tmpdir("sae_bad_data");
    char path[4096], out[4096];
    sf_sae_data D;
    /* NaN in the data: clear error, no checkpoint directory */
    snprintf(path, sizeof path, "%s/nan.safetensors", dir);
    float *x = calloc(64 * 8, sizeof(float));
    for (int i = 0; i < 64 * 8; i++)
        x[i] = (float)(i % 7) - 3;
    x[37 * 8 + 2] = NAN;
    sf_st_writer *w = sf_stw_new();
    int64_t sh[2] = {64, 8};
    sf_stw_add(w, "activations", SF_DT_F32, 2, sh, x);
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    const char *paths[2] = {path, NULL};
    CHECK(sf_sae_data_open(&D, paths, 1, "activations") == 0);
    sf_sae s;
    CHECK(sf_sae_init(&s, SF_SAE_TOPK, 8, 16, 2, 1) == 0);
    sf_sae_run_opts ro;
    snprintf(out, sizeof out, "%s/nan_ckpt", dir);
    run_opts(&ro, out);
    CHECK(sf_sae_train_run(&s, &D, &ro, NULL) == -1);
    CHECK_ERR_HAS("nan.safetensors: tensor 'activations': row 37 contains NaN");
    CHECK(!exists(out));
    sf_sae_data_close(&D);
    /* width mismatch between data and model */
    x[37 * 8 + 2] = 0;
    snprintf(path, sizeof path, "%s/ok.safetensors", dir);
    w = sf_stw_new();
    sf_stw_add(w, "activations", SF_DT_F32, 2, sh, x);
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    CHECK(sf_sae_data_open(&D, paths, 1, "activations") == 0);
    sf_sae s12;
    CHECK(sf_sae_init(&s12, SF_SAE_TOPK, 12, 24, 2, 1) == 0);
    snprintf(out, sizeof out, "%s/mismatch_ckpt", dir);
    run_opts(&ro, out);
    CHECK(sf_sae_train_run(&s12, &D, &ro, NULL) == -1);
    CHECK_ERR_HAS("data width 8");
    CHECK_ERR_HAS("features 12");
    CHECK(!exists(out));
    sf_sae_eval_result r;
    CHECK(sf_sae_evaluate(&s12, &D, 0, NULL, 0, &r) == -1);
    CHECK_ERR_HAS("does not match");
    sf_sae_free(&s12);
    sf_sae_data_close(&D);
    /* missing key */
    CHECK(sf_sae_data_open(&D, paths, 1, "vision") == -1);
    CHECK_ERR_HAS("no tensor 'vision'");
    /* two files of different widths */
    char path2[4096];
    snprintf(path2, sizeof path2, "%s/w4.safetensors", dir);
    w = sf_stw_new();
    int64_t sh4[2] = {128, 4};
    sf_stw_add(w, "activations", SF_DT_F32, 2, sh4, x);
    CHECK(sf_stw_write(w, path2) == 0);
    sf_stw_free(w);
    paths[1] = path2;
    CHECK(sf_sae_data_open(&D, paths, 2, "activations") == -1);
    CHECK_ERR_HAS("width 4 differs from 8");
    /* truncated file */
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "head -c 200 %s > %s/trunc.safetensors", path, dir);
    CHECK(system(cmd) == 0);
    snprintf(path2, sizeof path2, "%s/trunc.safetensors", dir);
    paths[0] = path2;
    CHECK(sf_sae_data_open(&D, paths, 1, "activations") == -1);
    CHECK_ERR_HAS("trunc.safetensors");
    /* an integer tensor is not activations */
    snprintf(path2, sizeof path2, "%s/int.safetensors", dir);
    w = sf_stw_new();
    sf_stw_add(w, "activations", SF_DT_I32, 2, sh, x);
    CHECK(sf_stw_write(w, path2) == 0);
    sf_stw_free(w);
    CHECK(sf_sae_data_open(&D, paths, 1, "activations") == -1);
    CHECK_ERR_HAS("not a float type");
    sf_sae_free(&s);
    free(x);
}

TEST(multi_file_bf16_data) {
    /* rows split over two files, one BF16: read as one dataset */
    const char *dir = test_tmpdir("sae_multi");
    char p1[4096], p2[4096];
    snprintf(p1, sizeof p1, "%s/a.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/b.safetensors", dir);
    float a[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint16_t bb[2 * 4];
    for (int i = 0; i < 8; i++)
        bb[i] = sf_f32_to_bf16(100.0f + i);
    sf_st_writer *w = sf_stw_new();
    int64_t s1[2] = {3, 4}, s2[2] = {2, 4};
    sf_stw_add(w, "x", SF_DT_F32, 2, s1, a);
    CHECK(sf_stw_write(w, p1) == 0);
    sf_stw_free(w);
    w = sf_stw_new();
    sf_stw_add(w, "x", SF_DT_BF16, 2, s2, bb);
    CHECK(sf_stw_write(w, p2) == 0);
    sf_stw_free(w);
    const char *paths[2] = {p1, p2};
    sf_sae_data D;
    CHECK(sf_sae_data_open(&D, paths, 2, "x") == 0);
    CHECK(D.N == 5 && D.d == 4);
    int64_t rows[3] = {4, 0, 3};
    float out[12];
    CHECK(sf_sae_data_gather(&D, rows, 3, out) == 0);
    CHECK(out[0] == 104.0f && out[3] == 107.0f && out[4] == 1.0f && out[8] == 100.0f);
    sf_sae_data_close(&D);
}

int main(void) {
    omp_set_num_threads(2);
    RUN(recovers_dictionary);
    RUN(deterministic);
    RUN(auxk_revives_dead_latents);
    RUN(bad_data);
    RUN(multi_file_bf16_data);
    return test_summary();
}
