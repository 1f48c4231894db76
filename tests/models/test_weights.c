/* The model weight loader (src/models/weights.c): one file, sharded sets in
 * transformers' and diffusers' layouts, prefixes, fused rows, every float
 * dtype as stored and converted, and the error cases. The files are made
 * here with the project's own writer; expected values come from the scalar
 * converters (dtype.h), which tests/io checks against torch. */
#include <unistd.h>

#include "test.h"
#include "models/internal.h"
#include "saeflow/safetensors.h"

/* 4 x 3 matrices with values exact in every dtype used: k/8 - 0.75, so that
 * F8_E4M3 (3 mantissa bits) holds them too. */
static float val(int i) {
    return (float)((i * 5) % 13) / 8.0f - 0.75f;
}

typedef struct {
    float f32[12], bias[4], conv[24];
    double f64[12];
    uint16_t bf16[12], f16[12];
    uint8_t e4m3[12], e5m2[12];
    int8_t i8[2];
} data_t;

static uint8_t to_e4m3(float v) { /* for the exact values above only */
    for (int b = 0; b < 256; b++)
        if (sf_f8e4m3_to_f32((uint8_t)b) == v && !(b == 0x80 && v == 0)) return (uint8_t)b;
    return 0x7f;
}
static uint8_t to_e5m2(float v) {
    for (int b = 0; b < 256; b++)
        if (sf_f8e5m2_to_f32((uint8_t)b) == v && !(b == 0x80 && v == 0)) return (uint8_t)b;
    return 0x7f;
}

static void make_data(data_t *d) {
    for (int i = 0; i < 12; i++) {
        d->f32[i] = val(i);
        d->f64[i] = val(i + 1);
        d->bf16[i] = sf_f32_to_bf16(val(i + 2));
        d->f16[i] = sf_f32_to_f16(val(i + 3) + 0x1p-10f); /* not exact in BF16 */
        d->e4m3[i] = to_e4m3(val(i + 4));
        d->e5m2[i] = to_e5m2(val(i + 5) * 0.5f); /* k/16: 2 mantissa bits suffice */
    }
    for (int i = 0; i < 4; i++)
        d->bias[i] = (float)i - 1.5f;
    for (int i = 0; i < 24; i++)
        d->conv[i] = (float)i;
    d->i8[0] = -3, d->i8[1] = 7;
}

static const int64_t s43[2] = {4, 3}, s4[1] = {4}, s2[1] = {2}, sconv[4] = {2, 3, 2, 2};

/* Adds every tensor of `d` to w; names get `pre` in front. */
static void add_all(sf_st_writer *w, const data_t *d, const char *pre) {
    char n[64];
#define ADD(name, dt, nd, sh, p)                                                                   \
    snprintf(n, sizeof n, "%s%s", pre, name);                                                      \
    CHECK(sf_stw_add(w, n, dt, nd, sh, p) == 0)
    ADD("a.weight", SF_DT_F32, 2, s43, d->f32);
    ADD("a.bias", SF_DT_F32, 1, s4, d->bias);
    ADD("d64", SF_DT_F64, 2, s43, d->f64);
    ADD("b16", SF_DT_BF16, 2, s43, d->bf16);
    ADD("h16", SF_DT_F16, 2, s43, d->f16);
    ADD("e4m3", SF_DT_F8_E4M3, 2, s43, d->e4m3);
    ADD("e5m2", SF_DT_F8_E5M2, 2, s43, d->e5m2);
    ADD("i8", SF_DT_I8, 1, s2, d->i8);
    ADD("conv", SF_DT_F32, 4, sconv, d->conv);
#undef ADD
}

static const char *write_single(const char *dir, const char *name, const data_t *d,
                                const char *pre) {
    static char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    sf_st_writer *w = sf_stw_new();
    add_all(w, d, pre);
    CHECK(sf_stw_write(w, p) == 0);
    sf_stw_free(w);
    return p;
}

/* Element i of a weight, as F32. */
static float at(const sf_weight *w, int64_t i) {
    float f;
    const char *p = (const char *)w->data + i * (int64_t)sf_dtype_size(w->dtype);
    sf_convert_to_f32(w->dtype, p, 1, &f);
    return f;
}

/* The stored value of element i of tensor `name` of d, widened to F32. */
static float stored(const data_t *d, const char *name, int i) {
    if (!strcmp(name, "a.weight")) return d->f32[i];
    if (!strcmp(name, "d64")) return (float)d->f64[i];
    if (!strcmp(name, "b16")) return sf_bf16_to_f32(d->bf16[i]);
    if (!strcmp(name, "h16")) return sf_f16_to_f32(d->f16[i]);
    if (!strcmp(name, "e4m3")) return sf_f8e4m3_to_f32(d->e4m3[i]);
    return sf_f8e5m2_to_f32(d->e5m2[i]);
}

static const char *mats[6] = {"a.weight", "d64", "b16", "h16", "e4m3", "e5m2"};

TEST(single_file_dtypes) {
    data_t d;
    make_data(&d);
    const char *dir = test_tmpdir("wl_single");
    const char *path = write_single(dir, "one.safetensors", &d, "");
    /* AS_STORED: F32/BF16/F16 zero-copy, F64 -> F32, F8 -> BF16 exact */
    sf_wl *L = sf_wl_open(path, SF_WL_AS_STORED);
    CHECK_MSG(L != NULL, "%s", sf_errmsg());
    if (!L) return;
    CHECK_STR(sf_wl_path(L), path);
    const sf_dtype as_stored[6] = {SF_DT_F32, SF_DT_F32,  SF_DT_BF16,
                                   SF_DT_F16, SF_DT_BF16, SF_DT_BF16};
    for (int m = 0; m < 6; m++) {
        sf_weight w;
        CHECK(sf_wl_weight(L, &w, 2, s43, "%s", mats[m]) == 0);
        CHECK_MSG(w.dtype == as_stored[m], "%s: %s", mats[m], sf_dtype_name(w.dtype));
        CHECK(w.owned == NULL && w.shape[0] == 4 && w.shape[1] == 3);
        const sf_tensor_info *t = sf_wl_info(L, "%s", mats[m]);
        CHECK(t != NULL);
        if (m == 0 || m == 2 || m == 3) CHECK(w.data == t->data); /* zero-copy */
        int bad = 0;
        for (int i = 0; i < 12; i++)
            bad += at(&w, i) != stored(&d, mats[m], i);
        CHECK_MSG(bad == 0, "%s as stored", mats[m]);
        /* every small-tensor read is exact too */
        const float *f = sf_wl_f32(L, 2, s43, "%s", mats[m]);
        CHECK(f != NULL);
        for (int i = 0; f && i < 12; i++)
            bad += f[i] != stored(&d, mats[m], i);
        CHECK_MSG(bad == 0, "%s as F32", mats[m]);
    }
    /* F16 stays F16: no trip through BF16 */
    sf_weight h;
    CHECK(sf_wl_weight(L, &h, 2, s43, "h16") == 0);
    CHECK(memcmp(h.data, d.f16, sizeof d.f16) == 0);
    /* conv weights are viewed 2-D */
    sf_weight c;
    CHECK(sf_wl_weight(L, &c, 4, sconv, "conv") == 0);
    CHECK(c.ndim == 2 && c.shape[0] == 2 && c.shape[1] == 12 && at(&c, 23) == 23.0f);
    /* a dtype that does not convert: opens, fails when asked for, by name */
    CHECK(sf_wl_has(L, "i8") == 1);
    CHECK(sf_wl_f32(L, -1, NULL, "i8") == NULL);
    CHECK_ERR_HAS("one.safetensors: tensor 'i8' has dtype I8, expected a float type");
    CHECK(sf_wl_weight(L, &c, 1, s2, "i8") == -1);
    CHECK_ERR_HAS("tensor 'i8' has dtype I8");
    /* missing tensor; wrong shape names file, tensor, found and expected */
    CHECK(sf_wl_has(L, "layers.%d.w", 3) == 0);
    CHECK(sf_wl_info(L, "layers.%d.w", 3) == NULL);
    CHECK_ERR_HAS("tensor 'layers.3.w' not found");
    CHECK_ERR_HAS(path);
    const int64_t s34[2] = {3, 4};
    CHECK(sf_wl_weight(L, &c, 2, s34, "a.weight") == -1);
    CHECK_ERR_HAS("one.safetensors: tensor 'a.weight' has shape [4,3], expected [3,4]");
    CHECK(sf_wl_f32(L, 1, s2, "a.bias") == NULL);
    CHECK_ERR_HAS("tensor 'a.bias' has shape [4], expected [2]");
    CHECK(sf_wl_check(L, 2, s34, "b16") == -1);
    CHECK_ERR_HAS("tensor 'b16' has shape [4,3], expected [3,4]");
    CHECK(sf_wl_check(L, 2, s43, "b16") == 0);
    sf_wl_close(L);

    /* converted loads: one rounding from the stored value */
    const sf_dtype want[3] = {SF_DT_F32, SF_DT_BF16, SF_DT_F16};
    for (int k = 0; k < 3; k++) {
        L = sf_wl_open(path, want[k]);
        CHECK(L != NULL && sf_wl_dtype(L) == want[k]);
        if (!L) continue;
        for (int m = 0; m < 6; m++) {
            sf_weight w;
            CHECK(sf_wl_weight(L, &w, 2, s43, "%s", mats[m]) == 0);
            CHECK(w.dtype == want[k]);
            int bad = 0;
            for (int i = 0; i < 12; i++) {
                float s = stored(&d, mats[m], i);
                float e = want[k] == SF_DT_F32    ? s
                          : want[k] == SF_DT_BF16 ? sf_bf16_to_f32(sf_f32_to_bf16(s))
                                                  : sf_f16_to_f32(sf_f32_to_f16(s));
                bad += at(&w, i) != e;
            }
            CHECK_MSG(bad == 0, "%s as %s", mats[m], sf_dtype_name(want[k]));
        }
        sf_wl_close(L);
    }
    /* the F16 value is not exact in BF16: a BF16 load rounds it once */
    CHECK(sf_bf16_to_f32(sf_f32_to_bf16(stored(&d, "h16", 0))) != stored(&d, "h16", 0));
    CHECK(sf_wl_open(path, SF_DT_I32) == NULL);
    CHECK_ERR_HAS("not supported");
}

TEST(prefix_and_fused_rows) {
    data_t d;
    make_data(&d);
    const char *dir = test_tmpdir("wl_prefix");
    const char *path = write_single(dir, "p.safetensors", &d, "model.diffusion_model.");
    sf_wl *L = sf_wl_open(path, SF_DT_F32);
    CHECK(L != NULL);
    if (!L) return;
    CHECK(sf_wl_has(L, "a.weight") == 0);
    sf_wl_set_prefix(L, "model.diffusion_model.");
    CHECK(sf_wl_has(L, "a.weight") == 1);
    CHECK(sf_wl_has(L, "model.diffusion_model.a.weight") == 1); /* plain name as fallback */
    CHECK(sf_wl_info(L, "nope") == NULL);
    CHECK_ERR_HAS("tensor 'model.diffusion_model.nope' not found");

    /* q;k;v-style: all of a.weight, rows [1,3) of b16, rows [2,4) of h16 */
    sf_wl_part parts[3] = {{"a.weight", 0, -1}, {"b16", 1, 2}, {"h16", 2, -1}};
    sf_weight w;
    CHECK(sf_wl_fused(L, &w, 3, 3, parts) == 0);
    CHECK(w.dtype == SF_DT_F32 && w.shape[0] == 8 && w.shape[1] == 3 && w.owned == NULL);
    int bad = 0;
    for (int i = 0; i < 12; i++)
        bad += at(&w, i) != stored(&d, "a.weight", i);
    for (int i = 0; i < 6; i++)
        bad += at(&w, 12 + i) != stored(&d, "b16", 3 + i);
    for (int i = 0; i < 6; i++)
        bad += at(&w, 18 + i) != stored(&d, "h16", 6 + i);
    CHECK(bad == 0);
    /* the swapped halves of BFL's final_layer.adaLN_modulation (shift, scale
     * -> scale, shift) */
    sf_wl_part sw[2] = {{"a.weight", 2, 2}, {"a.weight", 0, 2}};
    CHECK(sf_wl_fused(L, &w, 3, 2, sw) == 0);
    CHECK(w.shape[0] == 4);
    for (int i = 0; i < 6; i++)
        bad += at(&w, i) != d.f32[6 + i] || at(&w, 6 + i) != d.f32[i];
    CHECK(bad == 0);
    /* 1-D: biases */
    sf_wl_part bp[2] = {{"a.bias", 2, -1}, {"a.bias", 0, 1}};
    const float *b = sf_wl_fused_f32(L, 2, bp);
    CHECK(b && b[0] == d.bias[2] && b[1] == d.bias[3] && b[2] == d.bias[0]);
    /* errors: wrong column count, rows outside, missing part, 2-D as 1-D */
    CHECK(sf_wl_fused(L, &w, 4, 3, parts) == -1);
    CHECK_ERR_HAS("tensor 'model.diffusion_model.a.weight' has shape [4,3], expected [*,4]");
    sf_wl_part out[1] = {{"b16", 3, 2}};
    CHECK(sf_wl_fused(L, &w, 3, 1, out) == -1);
    CHECK_ERR_HAS("tensor 'model.diffusion_model.b16': rows [3, 5) outside its 4 rows");
    sf_wl_part miss[2] = {{"a.weight", 0, -1}, {"gone", 0, -1}};
    CHECK(sf_wl_fused(L, &w, 3, 2, miss) == -1);
    CHECK_ERR_HAS("tensor 'model.diffusion_model.gone' not found");
    CHECK(sf_wl_fused_f32(L, 1, parts) == NULL);
    CHECK_ERR_HAS("has shape [4,3], expected [*]");
    sf_wl_close(L);

    /* AS_STORED: same-dtype parts keep it, mixed ones become F32 */
    L = sf_wl_open(path, SF_WL_AS_STORED);
    sf_wl_set_prefix(L, "model.diffusion_model.");
    sf_wl_part b2[2] = {{"b16", 0, 1}, {"e4m3", 0, 1}}; /* BF16 and F8 -> BF16 */
    CHECK(sf_wl_fused(L, &w, 3, 2, b2) == 0 && w.dtype == SF_DT_BF16);
    CHECK(at(&w, 0) == stored(&d, "b16", 0) && at(&w, 3) == stored(&d, "e4m3", 0));
    CHECK(sf_wl_fused(L, &w, 3, 3, parts) == 0 && w.dtype == SF_DT_F32);
    sf_wl_set_prefix(L, NULL);
    CHECK(sf_wl_has(L, "a.weight") == 0);
    sf_wl_close(L);
}

/* Writes `text` to dir/name. */
static void put(const char *dir, const char *name, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    CHECK(sf_write_file_atomic(p, text, strlen(text)) == 0);
}

/* Two shards of the tensors of `d`, and an index, in dir with base name. */
static void write_sharded(const char *dir, const char *base, const data_t *d) {
    char p[4200], idx[2048];
    sf_st_writer *w = sf_stw_new();
    CHECK(sf_stw_add(w, "a.weight", SF_DT_F32, 2, s43, d->f32) == 0);
    CHECK(sf_stw_add(w, "b16", SF_DT_BF16, 2, s43, d->bf16) == 0);
    snprintf(p, sizeof p, "%s/%s-00001-of-00002.safetensors", dir, base);
    CHECK(sf_stw_write(w, p) == 0);
    sf_stw_free(w);
    w = sf_stw_new();
    CHECK(sf_stw_add(w, "h16", SF_DT_F16, 2, s43, d->f16) == 0);
    CHECK(sf_stw_add(w, "a.bias", SF_DT_F32, 1, s4, d->bias) == 0);
    snprintf(p, sizeof p, "%s/%s-00002-of-00002.safetensors", dir, base);
    CHECK(sf_stw_write(w, p) == 0);
    sf_stw_free(w);
    snprintf(idx, sizeof idx,
             "{\"metadata\": {\"total_size\": 128}, \"weight_map\": {"
             "\"a.weight\": \"%s-00001-of-00002.safetensors\", "
             "\"b16\": \"%s-00001-of-00002.safetensors\", "
             "\"h16\": \"%s-00002-of-00002.safetensors\", "
             "\"a.bias\": \"%s-00002-of-00002.safetensors\"}}",
             base, base, base, base);
    snprintf(p, sizeof p, "%s.safetensors.index.json", base);
    put(dir, p, idx);
}

static void check_sharded(sf_wl *L, const data_t *d) {
    CHECK_MSG(L != NULL, "%s", sf_errmsg());
    if (!L) return;
    CHECK(sf_wl_set(L)->n_files == 2);
    sf_weight w;
    sf_wl_part parts[2] = {{"b16", 0, 1}, {"h16", 3, 1}}; /* across shards */
    CHECK(sf_wl_fused(L, &w, 3, 2, parts) == 0);
    CHECK(w.dtype == SF_DT_F32 && at(&w, 0) == stored(d, "b16", 0) &&
          at(&w, 5) == stored(d, "h16", 11));
    const float *b = sf_wl_f32(L, 1, s4, "a.bias");
    CHECK(b && b[3] == d->bias[3]);
    CHECK(sf_wl_weight(L, &w, 2, s43, "a.weight") == 0 && at(&w, 7) == d->f32[7]);
    sf_wl_close(L);
}

TEST(sharded_sets) {
    data_t d;
    make_data(&d);
    char p[4200], cmd[9000];
    /* transformers' layout: open the folder, or the index itself */
    const char *tf = test_tmpdir("wl_sharded_tf");
    write_sharded(tf, "model", &d);
    check_sharded(sf_wl_open(tf, SF_DT_F32), &d);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", tf);
    check_sharded(sf_wl_open(p, SF_DT_F32), &d);
    /* diffusers' layout */
    const char *df = test_tmpdir("wl_sharded_diffusers");
    write_sharded(df, "diffusion_pytorch_model", &d);
    check_sharded(sf_wl_open(df, SF_DT_F32), &d);
    /* a folder with one diffusers file */
    const char *one = test_tmpdir("wl_single_diffusers");
    write_single(one, "diffusion_pytorch_model.safetensors", &d, "");
    sf_wl *L = sf_wl_open(one, SF_DT_BF16);
    CHECK(L && sf_wl_has(L, "e5m2"));
    sf_wl_close(L);
    /* nothing there */
    const char *empty = test_tmpdir("wl_empty");
    CHECK(sf_wl_open(empty, SF_DT_F32) == NULL);
    CHECK_ERR_HAS("no model.safetensors or diffusion_pytorch_model.safetensors");

    /* a shard the index lists is missing */
    const char *ms = test_tmpdir("wl_missing_shard");
    write_sharded(ms, "model", &d);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", ms);
    CHECK(unlink(p) == 0);
    CHECK(sf_wl_open(ms, SF_DT_F32) == NULL);
    CHECK_ERR_HAS("model.safetensors.index.json: shard model-00002-of-00002.safetensors (holds "
                  "tensor 'h16')");
    CHECK_ERR_HAS("cannot open");
    /* a truncated shard */
    const char *tr = test_tmpdir("wl_truncated_shard");
    write_sharded(tr, "model", &d);
    snprintf(cmd, sizeof cmd, "truncate -s -20 '%s/model-00001-of-00002.safetensors'", tr);
    CHECK(system(cmd) == 0);
    CHECK(sf_wl_open(tr, SF_DT_F32) == NULL);
    CHECK_ERR_HAS("shard model-00001-of-00002.safetensors (holds tensor 'a.weight')");
    CHECK_ERR_HAS("model-00001-of-00002.safetensors: tensor 'b16': data_offsets");
    CHECK_ERR_HAS("run past the end of the file");
    /* the index names a tensor its shard lacks */
    const char *ab = test_tmpdir("wl_absent_tensor");
    write_sharded(ab, "model", &d);
    put(ab, "model.safetensors.index.json",
        "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", "
        "\"ghost\": \"model-00002-of-00002.safetensors\"}}");
    CHECK(sf_wl_open(ab, SF_DT_F32) == NULL);
    CHECK_ERR_HAS("model.safetensors.index.json: tensor 'ghost' is not in shard "
                  "model-00002-of-00002.safetensors");
}

int main(void) {
    RUN(single_file_dtypes);
    RUN(prefix_and_fused_rows);
    RUN(sharded_sets);
    return test_summary();
}
