/* safetensors reader/writer: files from the real `safetensors` package
 * (fixtures/io, made by tools/make_io_fixtures.py), round trips, and every
 * kind of corrupt header the reader must refuse with a clear message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>

#include "saeflow/safetensors.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/io/"

TEST(reads_reference_file) {
    sf_st f, e;
    CHECK(sf_st_open(&f, FIX "dtypes.safetensors") == 0);
    CHECK(sf_st_open(&e, FIX "dtypes_expected_f64.safetensors") == 0);
    CHECK_STR(sf_st_meta(&f, "format"), "pt");
    CHECK_STR(sf_st_meta(&f, "note"), "saeflow fixture");
    CHECK(sf_st_meta(&f, "absent") == NULL);
    const char *floats[] = {"f32",    "bf16",  "f16",         "f64",
                            "scalar", "empty", "special_f16", "special_bf16"};
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++) {
        float *own1, *own2;
        const sf_tensor_info *t = sf_st_find(&f, floats[i]);
        CHECK_MSG(t != NULL, "%s", floats[i]);
        if (!t) continue;
        const float *a = sf_st_get_f32(&f, floats[i], -1, NULL, &own1);
        const float *b = sf_st_get_f32(&e, floats[i], -1, NULL, &own2);
        CHECK(a && b);
        int64_t n = sf_tensor_numel(t);
        int same = 1;
        for (int64_t j = 0; a && b && j < n; j++)
            if (memcmp(&a[j], &b[j], 4) != 0) same = 0;
        CHECK_MSG(same, "tensor %s differs from its F64 expectation", floats[i]);
        if (!strcmp(floats[i], "f32")) CHECK(own1 == NULL); /* zero-copy */
        free(own1);
        free(own2);
    }
    const sf_tensor_info *t = sf_st_find(&f, "i64");
    CHECK(t && t->dtype == SF_DT_I64 && t->ndim == 1 && t->shape[0] == 6);
    if (t) {
        int64_t v[6];
        memcpy(v, t->data, sizeof v);
        CHECK(v[0] == -3 && v[5] == 2);
    }
    t = sf_st_find(&f, "bool");
    CHECK(t && t->dtype == SF_DT_BOOL && ((const uint8_t *)t->data)[0] == 1 &&
          ((const uint8_t *)t->data)[1] == 0);
    t = sf_st_find(&f, "scalar");
    CHECK(t && t->ndim == 0 && sf_tensor_numel(t) == 1);
    t = sf_st_find(&f, "empty");
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4 && t->nbytes == 0);

    /* shape checks and errors name file and tensor */
    float *own;
    int64_t want[2] = {3, 4};
    CHECK(sf_st_get_f32(&f, "f32", 2, want, &own) == NULL);
    CHECK_ERR_HAS("dtypes.safetensors: tensor 'f32' has shape [3,5], expected [3,4]");
    int64_t wild[2] = {-1, 5};
    CHECK(sf_st_get_f32(&f, "bf16", 2, wild, &own) != NULL);
    free(own);
    CHECK(sf_st_get_f32(&f, "nope", -1, NULL, &own) == NULL);
    CHECK_ERR_HAS("no tensor named 'nope'");
    CHECK(sf_st_get_f32(&f, "i64", -1, NULL, &own) == NULL);
    CHECK_ERR_HAS("dtype I64, expected a float type");

    /* row access on a converted dtype */
    float rows[10], full[15];
    CHECK(sf_tensor_rows_f32(sf_st_find(&f, "bf16"), 1, 2, rows) == 0);
    CHECK(sf_st_read_f32(&f, "bf16", 2, NULL, full) == 0);
    CHECK(memcmp(rows, full + 5, sizeof rows) == 0);
    CHECK(sf_tensor_rows_f32(sf_st_find(&f, "bf16"), 2, 2, rows) == -1);
    sf_st_close(&f);
    sf_st_close(&e);
}

TEST(half_conversions_exhaustive) {
    int bad16 = 0, badbf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = sf_f16_to_f32((uint16_t)h);
        if (x == x && sf_f32_to_f16(x) != h) bad16++;
        float y = sf_bf16_to_f32((uint16_t)h);
        if (y == y && sf_f32_to_bf16(y) != h) badbf++;
    }
    CHECK(bad16 == 0);
    CHECK(badbf == 0);
    /* round to nearest even */
    CHECK(sf_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);     /* tie -> even (down) */
    CHECK(sf_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82); /* tie -> even (up) */
    CHECK(sf_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);
    CHECK(sf_f32_to_f16(65520.0f) == 0x7c00); /* rounds to inf */
    CHECK(sf_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(sf_f32_to_f16(0x1p-25f) == 0); /* tie with 0 -> even */
    CHECK(sf_f32_to_f16(0x1.8p-25f) == 1);
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

TEST(write_round_trip) {
    const char *dir = test_tmpdir("st_roundtrip");
    char path[4200];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, -6};
    int64_t idx[3] = {7, 8, 9};
    uint16_t h[2] = {sf_f32_to_bf16(1.5f), sf_f32_to_bf16(-2.0f)};
    sf_st_writer *w = sf_stw_new();
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s2[1] = {2};
    CHECK(sf_stw_add(w, "weird \"name\"\n", SF_DT_F32, 2, s23, a) == 0);
    CHECK(sf_stw_add(w, "idx", SF_DT_I64, 1, s3, idx) == 0);
    CHECK(sf_stw_add(w, "h", SF_DT_BF16, 1, s2, h) == 0);
    CHECK(sf_stw_add(w, "idx", SF_DT_I64, 1, s3, idx) == -1);
    sf_stw_meta(w, "k", "v\"q");
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    CHECK(count_tmp_files(dir) == 0);
    sf_st f;
    CHECK(sf_st_open(&f, path) == 0);
    CHECK(f.n_tensors == 3);
    CHECK_STR(sf_st_meta(&f, "k"), "v\"q");
    float b[6];
    CHECK(sf_st_read_f32(&f, "weird \"name\"\n", 2, s23, b) == 0);
    CHECK(memcmp(a, b, sizeof a) == 0);
    float hb[2];
    CHECK(sf_st_read_f32(&f, "h", 1, s2, hb) == 0);
    CHECK(hb[0] == 1.5f && hb[1] == -2.0f);
    CHECK(((uintptr_t)f.buf & 7) == 0); /* header padded to 8 bytes */
    sf_st_close(&f);

    /* a write into a missing folder fails cleanly */
    w = sf_stw_new();
    sf_stw_add(w, "x", SF_DT_F32, 2, s23, a);
    CHECK(sf_stw_write(w, "/nonexistent-dir/x.safetensors") == -1);
    CHECK_ERR_HAS("/nonexistent-dir/x.safetensors");
    sf_stw_free(w);
}

/* Writes an 8-byte length + header + `datalen` zero bytes. */
static const char *write_raw(const char *dir, const char *name, const char *hdr,
                             uint64_t hlen_claim, size_t datalen) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    uint64_t hl = hlen_claim ? hlen_claim : strlen(hdr);
    fwrite(&hl, 8, 1, fp);
    fwrite(hdr, 1, strlen(hdr), fp);
    for (size_t i = 0; i < datalen; i++)
        fputc(0, fp);
    fclose(fp);
    return path;
}

static void expect_bad(const char *dir, const char *hdr, uint64_t claim, size_t datalen,
                       const char *msg) {
    sf_st f;
    const char *p = write_raw(dir, "bad.safetensors", hdr, claim, datalen);
    int rc = sf_st_open(&f, p);
    CHECK_MSG(rc == -1, "accepted: %s", hdr);
    if (rc == 0) {
        sf_st_close(&f);
        return;
    }
    CHECK_ERR_HAS("bad.safetensors");
    CHECK_ERR_HAS(msg);
}

TEST(rejects_corrupt_headers) {
    const char *dir = test_tmpdir("st_corrupt");
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    sf_st f;
    CHECK(sf_st_open(&f, write_raw(dir, "ok.safetensors", ok, 0, 8)) == 0);
    sf_st_close(&f);
    expect_bad(dir, ok, 0, 4, "run past the end of the file"); /* truncated data */
    expect_bad(dir, ok, 1000, 8, "longer than the file");      /* header longer than file */
    expect_bad(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
               "tensor 'a': shape [3] of F32 needs"); /* lying shape */
    expect_bad(dir, "{\"a\":{\"dtype\":\"F48\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8,
               "unknown dtype 'F48'");
    expect_bad(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 0, 8,
               "not valid JSON");
    expect_bad(dir, "[1,2]", 0, 0, "does not start with '{'");
    expect_bad(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8,
               "shape[0] is not a non-negative integer");
    expect_bad(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8,
               "end 0 < begin 8");
    expect_bad(dir,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               0, 12, "overlaps");
    expect_bad(dir,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
               0, 16, "gap in the data buffer");
    expect_bad(dir, ok, 0, 12, "tensors cover 8");
    expect_bad(dir,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
               0, 16, "appears twice");
    expect_bad(dir, "{\"__metadata__\":{\"k\":1}}", 0, 0, "is not a string");
    expect_bad(dir,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
               "\"data_offsets\":[0,8]}}",
               0, 8, "needs more than 2^64 bytes");
    expect_bad(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", 0, 8,
               "not non-negative integers");
    /* a file shorter than the length prefix */
    char p[4200];
    snprintf(p, sizeof p, "%s/tiny.safetensors", dir);
    FILE *fp = fopen(p, "wb");
    fputs("abc", fp);
    fclose(fp);
    CHECK(sf_st_open(&f, p) == -1);
    CHECK_ERR_HAS("truncated");
    CHECK(sf_st_open(&f, "/no/such/file.safetensors") == -1);
    CHECK_ERR_HAS("/no/such/file.safetensors: cannot open");
}

TEST(sharded_sets) {
    const char *dir = test_tmpdir("st_sharded");
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    int64_t s2[1] = {2}, s3[1] = {3};
    char p[4200];
    sf_st_writer *w = sf_stw_new();
    sf_stw_add(w, "x.weight", SF_DT_F32, 1, s2, a);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    CHECK(sf_stw_write(w, p) == 0);
    sf_stw_free(w);
    w = sf_stw_new();
    sf_stw_add(w, "y.weight", SF_DT_F32, 1, s3, b);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(sf_stw_write(w, p) == 0);
    sf_stw_free(w);
    const char *idx =
        "{\"metadata\":{\"total_size\":20},\"weight_map\":{\"x.weight\":\"model-00001-of-00002."
        "safetensors\",\"y.weight\":\"model-00002-of-00002.safetensors\"}}";
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(sf_write_file_atomic(p, idx, strlen(idx)) == 0);
    sf_st_set s;
    CHECK(sf_st_set_open_dir(&s, dir, "model") == 0);
    CHECK(s.n_files == 2);
    const sf_st *fl;
    const sf_tensor_info *t = sf_st_set_find(&s, "y.weight", &fl);
    CHECK(t && t->shape[0] == 3 && strstr(fl->path, "00002"));
    CHECK(sf_st_set_find(&s, "z", NULL) == NULL);
    sf_st_set_close(&s);

    /* index naming a tensor its shard lacks */
    const char *bad = "{\"weight_map\":{\"x.weight\":\"model-00002-of-00002.safetensors\"}}";
    CHECK(sf_write_file_atomic(p, bad, strlen(bad)) == 0);
    CHECK(sf_st_set_open_dir(&s, dir, "model") == -1);
    CHECK_ERR_HAS("tensor 'x.weight' is not in shard");

    /* pickle-only folder */
    const char *dir2 = test_tmpdir("st_binonly");
    snprintf(p, sizeof p, "%s/pytorch_model.bin", dir2);
    CHECK(sf_write_file_atomic(p, "x", 1) == 0);
    CHECK(sf_st_set_open_dir(&s, dir2, "model") == -1);
    CHECK_ERR_HAS("safe_serialization=True");
}

/* F8 files written by safetensors from torch (tools/make_f8_fixtures.py):
 * all 256 patterns of each format, converted by torch to F32 and BF16. */
static int same_f32(float a, float b) {
    return (a != a && b != b) || memcmp(&a, &b, 4) == 0;
}

TEST(f8_against_torch) {
    sf_st f;
    CHECK(sf_st_open(&f, FIX "f8.safetensors") == 0);
    const char *fmts[2] = {"e4m3", "e5m2"};
    for (int k = 0; k < 2; k++) {
        char n32[32], n16[32];
        snprintf(n32, sizeof n32, "%s_f32", fmts[k]);
        snprintf(n16, sizeof n16, "%s_bf16", fmts[k]);
        const sf_tensor_info *t = sf_st_find(&f, fmts[k]);
        CHECK(t && t->dtype == (k ? SF_DT_F8_E5M2 : SF_DT_F8_E4M3) && t->shape[0] == 256);
        float want[256], got[256];
        uint16_t wantb[256], gotb[256];
        CHECK(sf_st_read_f32(&f, n32, 1, NULL, want) == 0);
        CHECK(sf_st_read_f32(&f, fmts[k], 1, NULL, got) == 0); /* bulk path */
        memcpy(wantb, sf_st_find(&f, n16)->data, sizeof wantb);
        CHECK(sf_convert(SF_DT_BF16, gotb, t->dtype, t->data, 256) == 0);
        int bad = 0, badb = 0, nans = 0;
        for (int i = 0; i < 256; i++) {
            uint8_t byte = ((const uint8_t *)t->data)[i];
            float s = k ? sf_f8e5m2_to_f32(byte) : sf_f8e4m3_to_f32(byte); /* scalar */
            bad += !same_f32(got[i], want[i]) || !same_f32(s, want[i]);
            float wb = sf_bf16_to_f32(wantb[i]), gb = sf_bf16_to_f32(gotb[i]);
            badb += !same_f32(wb, gb) || !same_f32(gb, want[i]); /* exact in BF16 */
            nans += want[i] != want[i];
        }
        CHECK_MSG(bad == 0, "%s: %d patterns differ from torch", fmts[k], bad);
        CHECK_MSG(badb == 0, "%s -> BF16: %d patterns differ from torch", fmts[k], badb);
        /* E4M3FN: NaN only at 0x7F / 0xFF, no infinities; E5M2: 0x7D-0x7F per sign */
        CHECK(nans == (k ? 6 : 2));
    }
    CHECK(sf_f8e4m3_to_f32(0x7e) == 448.0f && sf_f8e4m3_to_f32(0x01) == 0x1p-9f);
    CHECK(sf_f8e5m2_to_f32(0x7c) == INFINITY && sf_f8e5m2_to_f32(0x01) == 0x1p-16f);
    /* a dtype that does not convert opens fine and fails only when asked for */
    float *own;
    CHECK(sf_st_find(&f, "i8") != NULL);
    CHECK(sf_st_get_f32(&f, "i8", -1, NULL, &own) == NULL);
    CHECK_ERR_HAS("f8.safetensors: tensor 'i8' has dtype I8, expected a float type");
    sf_st_close(&f);
}

/* Files with dtypes saeflow reads but cannot convert (F8_E8M0, C64, U8)
 * open; only asking for them as float fails. */
TEST(unconvertible_dtypes_open) {
    const char *dir = test_tmpdir("st_dtypes");
    const char *hdr = "{\"s\":{\"dtype\":\"F8_E8M0\",\"shape\":[2],\"data_offsets\":[0,2]},"
                      "\"c\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[2,10]},"
                      "\"u\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12]}}";
    sf_st f;
    CHECK(sf_st_open(&f, write_raw(dir, "mixed.safetensors", hdr, 0, 12)) == 0);
    CHECK(f.n_tensors == 3);
    float out[4];
    const char *names[3] = {"s", "c", "u"}, *dts[3] = {"F8_E8M0", "C64", "U8"};
    for (int i = 0; i < 3; i++) {
        CHECK(sf_st_read_f32(&f, names[i], -1, NULL, out) == -1);
        char want[128];
        snprintf(want, sizeof want, "mixed.safetensors: tensor '%s' has dtype %s", names[i],
                 dts[i]);
        CHECK_ERR_HAS(want);
    }
    sf_st_close(&f);
}

int main(void) {
    RUN(reads_reference_file);
    RUN(half_conversions_exhaustive);
    RUN(write_round_trip);
    RUN(rejects_corrupt_headers);
    RUN(sharded_sets);
    RUN(f8_against_torch);
    RUN(unconvertible_dtypes_open);
    return test_summary();
}
