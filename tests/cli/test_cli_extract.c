/* `saeflow extract` end to end: the fixture CLIP model (fixtures/clip/e2e)
 * over the images of fixtures/clip-inputs/images and the captions of
 * fixtures/clip/e2e_captions.txt, against what transformers computes for the
 * same files (fixtures/clip/e2e.expected.safetensors, from
 * tools/make_clip_fixtures.py). Error norm: max |ours - theirs| / max |theirs|
 * per tensor, <= 1e-4. Also resuming, settings mismatch, bad inputs. */
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "saeflow/common.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define CLIPFIX SF_SOURCE_DIR "/fixtures/clip/"
#define IMAGES SF_SOURCE_DIR "/fixtures/clip-inputs/images"

/* Thin views over the safetensors reader for the checks below. */
typedef sf_st stfile;
static int st_open(stfile *f, const char *path) {
    return sf_st_open(f, path);
}
static void st_close(stfile *f) {
    sf_st_close(f);
}
/* Pointer to the data of `name` (copy before use: may be unaligned), its
 * shape in dims[0..1] (dims[1] = 1 for 1-D); NULL if absent or another dtype. */
static const void *st_get(const stfile *f, const char *name, const char *dtype, int64_t dims[2]) {
    const sf_tensor_info *t = sf_st_find(f, name);
    if (!t || strcmp(sf_dtype_name(t->dtype), dtype)) return NULL;
    dims[0] = t->ndim > 0 ? t->shape[0] : 1;
    dims[1] = t->ndim > 1 ? t->shape[1] : 1;
    return t->data;
}
static const char *st_meta(const stfile *f, const char *key) {
    return sf_st_meta(f, key);
}

static double rel_err(const void *a, const void *b, int64_t n) {
    double md = 0, mb = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        float x, y;
        memcpy(&x, (const char *)a + 4 * i, 4);
        memcpy(&y, (const char *)b + 4 * i, 4);
        double d = fabs((double)x - y);
        if (!(d <= md)) md = d;
        if (fabs(y) > mb) mb = fabs(y);
    }
    return md / mb;
}

/* Compares tensor `name` of out with `ename` of the expected file. */
static double compare(const stfile *o, const stfile *x, const char *name, const char *ename,
                      int64_t dims[2]) {
    int64_t d2[2];
    const void *a = st_get(o, name, "F32", dims), *b = st_get(x, ename, "F32", d2);
    if (!a || !b || dims[0] != d2[0] || dims[1] != d2[1]) {
        fprintf(stderr, "%s: missing or shape mismatch\n", name);
        return INFINITY;
    }
    return rel_err(a, b, dims[0] * dims[1]);
}

#define BASE "'" SF_EXE "' extract --model '" CLIPFIX "e2e' "

TEST(images_and_captions) {
    const char *tmp = test_tmpdir("cli_extract_main");
    char out[4096], *log = NULL;
    snprintf(out, sizeof out, "%s/acts.safetensors", tmp);
    /* 20 images in 3 shards of 8 rows, batches of 6 */
    int rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                    "e2e_captions.txt' --out '%s' "
                                    "--shard_rows 8 --batch_size 6 --threads 2",
                               out),
                      &log);
    CHECK_MSG(rc == 0, "%s", log);
    CHECK(strstr(log, "20 rows") != NULL);
    free(log);
    CHECK(!test_file_exists(
        test_fmt("%s.part00000.safetensors", out))); /* parts removed after the merge */
    stfile o, x;
    CHECK(st_open(&o, out) == 0);
    CHECK(st_open(&x, CLIPFIX "e2e.expected.safetensors") == 0);
    if (!o.map || !x.map) return;
    int64_t dims[2];
    double ev = compare(&o, &x, "vision", "vision", dims);
    CHECK_MSG(ev <= 1e-4, "vision hidden_states[-2][:, 0]: rel err %g", ev);
    CHECK(dims[0] == 20 && dims[1] == 32);
    double et = compare(&o, &x, "text", "text", dims);
    CHECK_MSG(et <= 1e-4, "text pooler_output: rel err %g", et);
    CHECK(dims[0] == 20 && dims[1] == 32);
    const int64_t *rows = st_get(&o, "rows", "I64", dims);
    CHECK(rows && dims[0] == 20);
    for (int64_t i = 0; rows && i < 20; i++) {
        int64_t r;
        memcpy(&r, rows + i, 8);
        CHECK(r == i);
    }
    /* ids: the image file names, in row order */
    const char *ids = st_get(&o, "ids", "U8", dims), *names = st_meta(&x, "images");
    CHECK(ids && names && (size_t)dims[0] == strlen(names) + 1 &&
          !memcmp(ids, names, strlen(names)));
    CHECK(st_meta(&o, "saeflow_extract") &&
          strstr(st_meta(&o, "saeflow_extract"), "vision=layer:-2"));
    st_close(&o);

    /* a second run with the same settings does nothing */
    rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                "e2e_captions.txt' --out '%s' "
                                "--shard_rows 8 --batch_size 6 --threads 2",
                           out),
                  &log);
    CHECK(rc == 0 && strstr(log, "already complete"));
    free(log);

    /* BF16 weights: close to the F32 reference, not equal */
    rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                "e2e_captions.txt' --out '%s/bf16.safetensors' "
                                "--dtype bf16",
                           tmp),
                  &log);
    CHECK_MSG(rc == 0, "%s", log);
    free(log);
    if (st_open(&o, test_fmt("%s/bf16.safetensors", tmp)) == 0) {
        double e1 = compare(&o, &x, "vision", "vision", dims),
               e2 = compare(&o, &x, "text", "text", dims);
        CHECK_MSG(e1 < 5e-2 && e2 < 5e-2 && e1 > 0, "bf16: %g %g", e1, e2);
        st_close(&o);
    }
    st_close(&x);
}

TEST(text_tokens_of_a_layer) {
    const char *tmp = test_tmpdir("cli_extract_tokens");
    char out[4096], *log = NULL;
    snprintf(out, sizeof out, "%s/t.safetensors", tmp);
    int rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                    "e2e_captions.txt' --out '%s' "
                                    "--vision none --text layer:1 --tokens all --batch_size 7",
                               out),
                      &log);
    CHECK_MSG(rc == 0, "%s", log);
    free(log);
    stfile o, x;
    CHECK(st_open(&o, out) == 0 && st_open(&x, CLIPFIX "e2e.expected.safetensors") == 0);
    if (!o.map || !x.map) return;
    int64_t dims[2], d2[2];
    CHECK(st_get(&o, "vision", "F32", dims) == NULL);
    double e = compare(&o, &x, "text", "text_l1", dims);
    CHECK_MSG(e <= 1e-4, "text hidden_states[1], non-padding tokens: rel err %g", e);
    const void *r = st_get(&o, "text_rows", "I64", dims),
               *rx = st_get(&x, "text_l1_rows", "I64", d2);
    CHECK(r && rx && dims[0] == d2[0] && !memcmp(r, rx, (size_t)dims[0] * 8));
    const void *p = st_get(&o, "text_pos", "I32", dims), *px = st_get(&x, "text_l1_pos", "I32", d2);
    CHECK(p && px && dims[0] == d2[0] && !memcmp(p, px, (size_t)dims[0] * 4));
    st_close(&o);
    st_close(&x);
}

TEST(resume_after_interruption) {
    const char *tmp = test_tmpdir("cli_extract_resume");
    char out[4096], *log = NULL;
    snprintf(out, sizeof out, "%s/r.safetensors", tmp);
    const char *args = "--shard_rows 6 --batch_size 4 --vision embeds --text embeds";
    /* An "interrupted" run: OUT is a directory, so the final merge cannot
     * rename over it, but every shard is finished and kept. */
    CHECK(mkdir(out, 0755) == 0);
    int rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                    "e2e_captions.txt' --out '%s' %s",
                               out, args),
                      &log);
    CHECK(rc == 1);
    free(log);
    for (int k = 0; k < 4; k++)
        CHECK(test_file_exists(test_fmt("%s.part%05d.safetensors", out, k)));
    /* A half-written part (a crash mid-write leaves only a temp file) is
     * ignored; a missing part is recomputed. */
    CHECK(unlink(test_fmt("%s.part00002.safetensors", out)) == 0);
    FILE *f = fopen(test_fmt("%s.part00002.safetensors.tmp.12345", out), "w");
    fputs("garbage", f);
    fclose(f);
    rmdir(out);
    /* different settings: refused, parts untouched */
    rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                "e2e_captions.txt' --out '%s' --shard_rows 6 "
                                "--vision pooled",
                           out),
                  &log);
    CHECK(rc == 1 && strstr(log, "different settings"));
    free(log);
    CHECK(test_file_exists(test_fmt("%s.part00000.safetensors", out)));
    /* same settings: resumes, computing only the missing shard */
    rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                "e2e_captions.txt' --out '%s' %s",
                           out, args),
                  &log);
    CHECK_MSG(rc == 0 && strstr(log, "1 of 4 shards computed now"), "%s", log);
    free(log);
    /* identical to an uninterrupted run */
    char ref[4096];
    snprintf(ref, sizeof ref, "%s/ref.safetensors", tmp);
    rc = test_run(test_fmt(BASE "--images '" IMAGES "' --captions '" CLIPFIX
                                "e2e_captions.txt' --out '%s' %s",
                           ref, args),
                  &log);
    CHECK(rc == 0);
    free(log);
    stfile a, b;
    CHECK(st_open(&a, out) == 0 && st_open(&b, ref) == 0);
    int64_t d1[2] = {0, 0}, d2[2] = {0, 0};
    for (int i = 0; i < 2 && a.map && b.map; i++) {
        const char *name = i ? "text" : "vision";
        const void *p = st_get(&a, name, "F32", d1), *q = st_get(&b, name, "F32", d2);
        CHECK(p && q && d1[0] == 20 && d1[1] == 16 && d1[0] == d2[0] &&
              !memcmp(p, q, (size_t)(d1[0] * d1[1] * 4)));
    }
    st_close(&a);
    st_close(&b);
}

TEST(datasets_and_errors) {
    const char *tmp = test_tmpdir("cli_extract_errors");
    char *log = NULL;
    /* a folder dataset with captions.tsv (one image has none: skipped) */
    int rc = test_run(test_fmt(BASE "--dataset 'folder:" SF_SOURCE_DIR
                                    "/fixtures/data/folder_tsv' --out '%s/d.safetensors'",
                               tmp),
                      &log);
    CHECK_MSG(rc == 0 && strstr(log, "skipped: no caption") && strstr(log, "5 rows"), "%s", log);
    free(log);
    /* undecodable images are skipped with their error */
    rc = test_run(test_fmt(BASE
                           "--images '" SF_SOURCE_DIR
                           "/fixtures/clip-inputs/corrupt' --text none --out '%s/c.safetensors'",
                           tmp),
                  &log);
    CHECK_MSG(rc == 0 && strstr(log, "truncated") && strstr(log, "1 rows"), "%s", log);
    free(log);
    /* images without captions and text wanted: nothing to write */
    rc = test_run(test_fmt(BASE "--images '" IMAGES "' --out '%s/n.safetensors' --limit 3", tmp),
                  &log);
    CHECK(rc == 1 && strstr(log, "no row of 3"));
    CHECK(!test_file_exists(test_fmt("%s/n.safetensors", tmp)) &&
          !test_file_exists(test_fmt("%s/n.safetensors.part00000.safetensors", tmp)));
    free(log);
    /* usage errors */
    CHECK(test_run(BASE "--images x", NULL) == 2);
    CHECK(test_run(BASE "--images x --dataset y --out z", NULL) == 2);
    CHECK(test_run(BASE "--images x --out z --dtype f16", NULL) == 2);
    CHECK(test_run(BASE "--images x --out z --tokens some", NULL) == 2);
    CHECK(test_run(BASE "--images x --out z --vision layer:x", NULL) == 2);
    /* a .bin-only model directory */
    FILE *f = fopen(test_fmt("%s/config.json", tmp), "w");
    fputs("{\"model_type\": \"clip\"}", f);
    fclose(f);
    f = fopen(test_fmt("%s/pytorch_model.bin", tmp), "w");
    fputs("pickle", f);
    fclose(f);
    rc = test_run(test_fmt("'%s' extract --model '%s' --images '" IMAGES
                           "' --out '%s/b.safetensors'",
                           SF_EXE, tmp, tmp),
                  &log);
    CHECK(rc == 1 && strstr(log, "safetensors") && strstr(log, "Convert"));
    free(log);
    /* a layer the model does not have */
    rc = test_run(test_fmt(BASE "--images '" IMAGES
                                "' --text none --vision-layer 7 --out '%s/l.safetensors'",
                           tmp),
                  &log);
    CHECK(rc == 1 && strstr(log, "out of range"));
    free(log);
    CHECK(test_run("'" SF_EXE "' extract --help", NULL) == 0);
    CHECK(test_run(BASE "--images x --out z --pillow new", NULL) == 2);
}

/* --pillow 12: the resize pass order of Pillow <= 12. A tall image (230x520
 * -> 224x506: the height shrinks more than twice as much as the width) is
 * where the orders differ; the activations move a little, not a lot. */
TEST(pillow_pass_order) {
    const char *tmp = test_tmpdir("cli_extract_pillow");
    CHECK(system(test_fmt("mkdir -p '%s/img' && cp '" IMAGES "/tall_230x520.jpg' '%s/img/'", tmp,
                          tmp)) == 0);
    const char *ver[2] = {"13", "12"};
    float *v[2] = {NULL, NULL};
    int64_t nv = 0;
    for (int i = 0; i < 2; i++) {
        char *log = NULL;
        int rc = test_run(test_fmt(BASE "--images '%s/img' --text none --pillow %s "
                                        "--out '%s/p%s.safetensors'",
                                   tmp, ver[i], tmp, ver[i]),
                          &log);
        CHECK_MSG(rc == 0, "%s", log);
        free(log);
        sf_st f;
        if (sf_st_open(&f, test_fmt("%s/p%s.safetensors", tmp, ver[i])) != 0) continue;
        const sf_tensor_info *t = sf_st_find(&f, "vision");
        CHECK(t && t->dtype == SF_DT_F32);
        if (t) {
            nv = t->shape[0] * t->shape[1];
            v[i] = malloc((size_t)nv * sizeof(float));
            memcpy(v[i], t->data, (size_t)nv * sizeof(float));
        }
        sf_st_close(&f);
    }
    if (v[0] && v[1]) {
        double diff = 0, mag = 0;
        for (int64_t i = 0; i < nv; i++) {
            diff = fmax(diff, fabs((double)v[0][i] - v[1][i]));
            mag = fmax(mag, fabs((double)v[0][i]));
        }
        CHECK_MSG(diff > 0 && diff < 0.05 * mag, "max diff %g of %g", diff, mag);
    }
    free(v[0]);
    free(v[1]);
}

/* --alpha white: transparent images composited onto white (transformers 5)
 * instead of alpha dropped (transformers 4, Pillow convert("RGB"): the
 * default). The decode + preprocessing of both is checked against
 * transformers / Pillow in tests/image/test_image.c; here: the flag reaches
 * the images with alpha only, and the fingerprint records it (so a resume
 * with the other setting is refused), but only when set. */
TEST(alpha_option) {
    const char *tmp = test_tmpdir("cli_extract_alpha");
    CHECK(system(test_fmt("mkdir -p '%s/img' && cp '" IMAGES "/rgba_160x210.png' '" IMAGES
                          "/exact_224x224.jpg' '%s/img/'",
                          tmp, tmp)) == 0);
    const char *mode[2] = {"drop", "white"};
    float *v[2] = {NULL, NULL};
    int64_t dims[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        char *log = NULL;
        int rc = test_run(test_fmt(BASE "--images '%s/img' --text none %s%s "
                                        "--out '%s/a%d.safetensors'",
                                   tmp, i ? "--alpha " : "", i ? mode[i] : "", tmp, i),
                          &log);
        CHECK_MSG(rc == 0, "%s", log);
        free(log);
        sf_st f;
        if (sf_st_open(&f, test_fmt("%s/a%d.safetensors", tmp, i)) != 0) continue;
        const char *fp = sf_st_meta(&f, "saeflow_extract");
        CHECK(fp && (strstr(fp, "alpha=white") != NULL) == i);
        const sf_tensor_info *t = sf_st_find(&f, "vision");
        CHECK(t && t->dtype == SF_DT_F32 && t->shape[0] == 2);
        if (t) {
            dims[0] = t->shape[0], dims[1] = t->shape[1];
            v[i] = malloc((size_t)(dims[0] * dims[1]) * sizeof(float));
            memcpy(v[i], t->data, (size_t)(dims[0] * dims[1]) * sizeof(float));
        }
        sf_st_close(&f);
    }
    /* rows in file-name order: exact_224x224.jpg (opaque), rgba_160x210.png */
    if (v[0] && v[1]) {
        size_t d = (size_t)dims[1];
        CHECK(!memcmp(v[0], v[1], d * sizeof(float)));
        CHECK(memcmp(v[0] + d, v[1] + d, d * sizeof(float)) != 0);
    }
    free(v[0]);
    free(v[1]);
    CHECK(test_run(BASE "--images x --out z --alpha black", NULL) == 2);
}

int main(void) {
    RUN(images_and_captions);
    RUN(text_tokens_of_a_layer);
    RUN(resume_after_interruption);
    RUN(datasets_and_errors);
    RUN(pillow_pass_order);
    RUN(alpha_option);
    return test_summary();
}
