/* sf_st_concat: tensors of several files joined along dim 0 through the
 * writer (sf_stw_add_pieces), byte for byte; mismatches are refused. */
#include "saeflow/safetensors.h"
#include "test.h"

static void write3(const char *path, int64_t n, int16_t base, int extra_dim) {
    int16_t x[64];
    uint8_t b[16];
    for (int i = 0; i < 64; i++)
        x[i] = (int16_t)(base + i);
    for (int i = 0; i < 16; i++)
        b[i] = (uint8_t)(base + i);
    sf_st_writer *w = sf_stw_new();
    int64_t s3[3] = {n, 2, extra_dim}, s1[1] = {n};
    CHECK(sf_stw_add(w, "x", SF_DT_I16, 3, s3, x) == 0);
    CHECK(sf_stw_add(w, "b", SF_DT_U8, 1, s1, b) == 0);
    sf_stw_meta(w, "part", "yes");
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
}

TEST(concat) {
    const char *tmp = test_tmpdir("io_concat");
    char p[4][4096], out[4096];
    for (int i = 0; i < 4; i++)
        snprintf(p[i], sizeof p[i], "%s/p%d.safetensors", tmp, i);
    snprintf(out, sizeof out, "%s/out.safetensors", tmp);
    write3(p[0], 2, 0, 3);
    write3(p[1], 0, 100, 3); /* an empty part */
    write3(p[2], 3, 200, 3);
    write3(p[3], 1, 0, 4); /* other trailing dim */
    sf_st f[4];
    for (int i = 0; i < 4; i++)
        CHECK(sf_st_open(&f[i], p[i]) == 0);
    const char *meta[] = {"k", "v", "rows", "5", NULL};
    CHECK(sf_st_concat(f, 3, out, meta) == 0);
    sf_st o;
    CHECK(sf_st_open(&o, out) == 0);
    if (o.map) {
        const sf_tensor_info *x = sf_st_find(&o, "x"), *b = sf_st_find(&o, "b");
        CHECK(x && x->dtype == SF_DT_I16 && x->ndim == 3 && x->shape[0] == 5 && x->shape[1] == 2 &&
              x->shape[2] == 3);
        CHECK(b && b->ndim == 1 && b->shape[0] == 5);
        CHECK(o.n_tensors == 2 && !strcmp(o.tensors[0].name, "x")); /* first file's order */
        if (x && b) {
            int16_t v[30];
            memcpy(v, x->data, sizeof v);
            CHECK(v[0] == 0 && v[11] == 11 && v[12] == 200 && v[29] == 217);
            const uint8_t *bb = b->data;
            CHECK(bb[0] == 0 && bb[1] == 1 && bb[2] == 200 && bb[4] == 202);
        }
        CHECK_STR(sf_st_meta(&o, "k"), "v");
        CHECK_STR(sf_st_meta(&o, "rows"), "5");
        CHECK(sf_st_meta(&o, "part") == NULL); /* only the metadata given */
        sf_st_close(&o);
    }
    /* a trailing dim that differs: refused, naming the file and the tensor */
    char bad[4096];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", tmp);
    sf_st two[2] = {f[0], f[3]};
    CHECK(sf_st_concat(two, 2, bad, NULL) == -1 && strstr(sf_errmsg(), "p3.safetensors") &&
          strstr(sf_errmsg(), "'x'"));
    CHECK(!test_file_exists(bad));
    CHECK(sf_st_concat(f, 0, bad, NULL) == -1);
    for (int i = 0; i < 4; i++)
        sf_st_close(&f[i]);
    /* pieces must add up to the shape */
    sf_st_writer *w = sf_stw_new();
    int64_t shape[1] = {4};
    const void *data[2] = {"ab", "cd"};
    uint64_t nb[2] = {2, 1};
    CHECK(sf_stw_add_pieces(w, "t", SF_DT_U8, 1, shape, 2, data, nb) == -1);
    nb[1] = 2;
    CHECK(sf_stw_add_pieces(w, "t", SF_DT_U8, 1, shape, 2, data, nb) == 0);
    CHECK(sf_stw_write(w, bad) == 0);
    sf_stw_free(w);
    CHECK(sf_st_open(&o, bad) == 0);
    if (o.map) {
        const sf_tensor_info *t = sf_st_find(&o, "t");
        CHECK(t && !memcmp(t->data, "abcd", 4));
        sf_st_close(&o);
    }
}

int main(void) {
    RUN(concat);
    return test_summary();
}
