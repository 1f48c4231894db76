/* Explorer site builder: decoder neighbours against brute force, JPEG
 * thumbnails, caption tokenising and JSON escaping, and a whole site built
 * from a synthetic top-k file with a fake row source (checked by parsing the
 * data files back). */
#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "analysis/internal.h"
#include "saeflow/analysis.h"
#include "saeflow/image.h"
#include "saeflow/sae.h"
#include "test.h"

TEST(neighbours_brute_force) {
    enum { n = 70, d = 9, m = 5 };
    static float W[n * d];
    sf_rng r;
    sf_rng_seed(&r, 7);
    for (int i = 0; i < n * d; i++)
        W[i] = sf_rng_normal(&r);
    for (int q = 0; q < d; q++) {
        W[3 * d + q] = 2.0f * W[10 * d + q]; /* exact duplicate direction: cosine 1 */
        W[4 * d + q] = W[10 * d + q];
        W[5 * d + q] = 0.0f; /* a zero row: cosine 0 with everything */
    }
    static int32_t idx[n * m];
    static float cs[n * m];
    sf_decoder_neighbours(W, n, d, m, idx, cs);
    for (int i = 0; i < n; i++) {
        /* brute force: all cosines in double, best m by (cos desc, index asc) */
        double c[n];
        for (int j = 0; j < n; j++) {
            double s = 0, a = 0, b = 0;
            for (int q = 0; q < d; q++) {
                s += (double)W[i * d + q] * W[j * d + q];
                a += (double)W[i * d + q] * W[i * d + q];
                b += (double)W[j * d + q] * W[j * d + q];
            }
            c[j] = (a > 0 && b > 0) ? s / sqrt(a * b) : 0;
        }
        c[i] = -INFINITY;
        for (int k = 0; k < m; k++) {
            int best = -1;
            for (int j = 0; j < n; j++)
                if (j != i && (best < 0 || c[j] > c[best] + 1e-5)) best = j;
            /* float GEMM vs double: accept any index within 1e-5 of the best */
            CHECK_MSG(fabs(c[idx[i * m + k]] - c[best]) < 1e-5,
                      "row %d slot %d: got %d (%g) want %d (%g)", i, k, idx[i * m + k],
                      c[idx[i * m + k]], best, c[best]);
            CHECK_NEAR(cs[i * m + k], c[idx[i * m + k]], 1e-5);
            c[idx[i * m + k]] = -INFINITY;
        }
    }
    CHECK(idx[10 * m] == 3 && idx[10 * m + 1] == 4); /* ties at cosine 1: lower index first */
    CHECK_NEAR(cs[10 * m], 1.0, 1e-6);
    CHECK_NEAR(cs[5 * m], 0.0, 0); /* zero row */
    /* n = 1: no neighbours */
    int32_t one[3];
    float onec[3];
    sf_decoder_neighbours(W, 1, d, 3, one, onec);
    CHECK(one[0] == -1 && onec[0] == 0);
}

static uint8_t *make_jpeg(int w, int h, int seed, size_t *len) {
    uint8_t *rgb = sf_malloc((size_t)w * h * 3), *jpg;
    for (int i = 0; i < w * h; i++) {
        rgb[3 * i] = (uint8_t)(seed * 40);
        rgb[3 * i + 1] = (uint8_t)(i % w);
        rgb[3 * i + 2] = (uint8_t)(i / w);
    }
    CHECK(sf_jpeg_encode(rgb, w, h, 90, &jpg, len) == 0);
    free(rgb);
    return jpg;
}

TEST(thumbnails) {
    size_t len, tl;
    uint8_t *jpg = make_jpeg(300, 120, 1, &len), *th;
    CHECK(len > 100 && jpg[0] == 0xFF && jpg[1] == 0xD8);
    CHECK(sf_thumbnail_jpeg(jpg, len, "x", 100, 80, &th, &tl) == 0);
    sf_image im;
    CHECK(sf_image_decode(th, tl, "thumb", &im) == 0);
    CHECK(im.width == 100 && im.height == 40); /* longest edge 100, aspect kept */
    /* the red channel is constant 40: survives resize and JPEG closely */
    CHECK(abs((int)im.rgb[3 * (20 * 100 + 50)] - 40) < 8);
    sf_image_free(&im);
    free(th);
    CHECK(sf_thumbnail_jpeg(jpg, len, "x", 500, 80, &th, &tl) == 0); /* never upscaled */
    CHECK(sf_image_decode(th, tl, "thumb", &im) == 0);
    CHECK(im.width == 300 && im.height == 120);
    sf_image_free(&im);
    free(th);
    CHECK(sf_thumbnail_jpeg("not an image", 12, "bad.jpg", 100, 80, &th, &tl) == -1);
    CHECK_ERR_HAS("bad.jpg");
    CHECK(sf_thumbnail_jpeg(jpg, len / 3, "cut.jpg", 100, 80, &th, &tl) == -1);
    free(jpg);
    CHECK(sf_jpeg_encode(NULL, 0, 5, 80, &th, &tl) == -1);
}

static void collect(void *ctx, const char *w) {
    sf_sbuf *b = ctx;
    sf_sb_puts(b, w);
    sf_sb_puts(b, "|");
}

TEST(words_and_json) {
    sf_sbuf b = {0};
    sf_explore_caption_words("A Red-circle, on the 2 BIG  über 東京 x 1999s 123", collect, &b);
    CHECK_STR(b.s, "red|circle|big|über|東京|1999s|");
    b.len = 0;
    char *s =
        sf_utf8_sanitize("ok \xff\xfe caf\xc3\xa9 \xe2\x80\xa8 \xed\xa0\x80 \xf0\x9f\x99\x82");
    CHECK_STR(s, "ok \xEF\xBF\xBD\xEF\xBF\xBD caf\xc3\xa9 \xe2\x80\xa8 "
                 "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xf0\x9f\x99\x82");
    sf_explore_json_str(&b, s);
    free(s);
    CHECK(strstr(b.s, "\\u2028") != NULL);
    b.len = 0;
    sf_explore_json_str(&b, "q\"b\\s\n</script>\x01");
    CHECK_STR(b.s, "\"q\\\"b\\\\s\\n\\u003c/script>\\u0001\"");
    cJSON *j = cJSON_Parse(b.s);
    CHECK(cJSON_IsString(j) && !strcmp(j->valuestring, "q\"b\\s\n</script>\x01"));
    cJSON_Delete(j);
    b.len = 0;
    sf_explore_json_num(&b, NAN);
    sf_explore_json_num(&b, 0.1234567);
    CHECK_STR(b.s, "null0.12346");
    sf_sb_free(&b);
}

/* ---- a whole site ---- */

enum { NF = 70, ROWS = 300, KEEP = 8, D = 6 };

typedef struct {
    int calls, fail_row;
} fake_ctx;

/* Row r: a JPEG (except r % 50 == 7: garbage bytes, r % 50 == 9: no image)
 * and a caption naming its colour group and one invalid UTF-8 byte. */
static int fake_get(void *ctx, int64_t row, uint8_t **bytes, size_t *len, char **caption) {
    fake_ctx *c = ctx;
    c->calls++;
    if (row == c->fail_row) return sf_error("fake: row %lld unreadable", (long long)row);
    static const char *const colour[] = {"red", "green", "blue"};
    char cap[128];
    snprintf(cap, sizeof cap, "Row %lld is %s \xff and shiny", (long long)row, colour[row % 3]);
    *caption = sf_strdup(cap);
    if (row % 50 == 9) {
        *bytes = NULL;
        *len = 0;
    } else if (row % 50 == 7) {
        *bytes = (uint8_t *)sf_strdup("garbage");
        *len = 7;
    } else {
        *bytes = make_jpeg(40 + (int)(row % 5) * 30, 50, (int)(row % 3), len);
    }
    return 0;
}

static cJSON *parse_js(const char *path, const char *prefix, const char *suffix) {
    size_t len;
    char *t = sf_read_file(path, &len);
    if (!t) return NULL;
    size_t pl = strlen(prefix), sl = strlen(suffix);
    cJSON *j = NULL;
    if (len > pl + sl && !strncmp(t, prefix, pl) && !strcmp(t + len - sl, suffix)) {
        t[len - sl] = 0;
        j = cJSON_Parse(t + pl);
    }
    free(t);
    return j;
}

static int exists(const char *dir, const char *name) {
    char p[8192];
    struct stat st;
    snprintf(p, sizeof p, "%.4000s/%.4000s", dir, name);
    return stat(p, &st) == 0;
}

TEST(site) {
    const char *tmp = test_tmpdir("analysis_explore");
    char dir[2048], topk[4096], ckpt[4096], site[4096], path[8192];
    snprintf(dir, sizeof dir, "%.2000s", tmp);
    snprintf(topk, sizeof topk, "%s/topk.safetensors", dir);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    snprintf(site, sizeof site, "%s/site", dir);
    /* activations: feature j fires on rows r with r % 7 == j % 7 (j < 60);
     * features 60..69 are dead */
    sf_topk t;
    CHECK(sf_topk_init(&t, NF, KEEP) == 0);
    static float z[ROWS * NF];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < 60; j++)
            if (r % 7 == j % 7) z[r * NF + j] = (float)((r * 31 + j * 17) % 97) / 10.0f;
    CHECK(sf_topk_add_dense(&t, z, ROWS, 0, NULL) == 0);
    const char *meta[] = {"dataset", "fake:", "checkpoint", ckpt, NULL};
    CHECK(sf_topk_write(&t, topk, meta) == 0);
    /* a checkpoint with the same n, and a training log */
    sf_sae sae;
    CHECK(sf_sae_init(&sae, SF_SAE_TOPK, D, NF, 3, 1) == 0);
    CHECK(sf_sae_save(&sae, ckpt) == 0);
    sf_sae_free(&sae);
    snprintf(path, sizeof path, "%.4000s/metrics.jsonl", ckpt);
    const char *log =
        "{\"step\": 1, \"loss\": 4.5, \"l2_normalised\": 0.9, \"l0\": 3, \"dead\": 0}\n"
        "{\"step\": 2, \"loss\": 2.5, \"l2_normalised\": 0.5, \"l0\": 3, \"dead\": 0.25}\n"
        "{\"step\": 3, \"loss\": 1.5, \"l2_n";
    CHECK(sf_write_file_atomic(path, log, strlen(log)) == 0);

    fake_ctx fc = {0, -1};
    sf_row_source src = {fake_get, &fc, NULL};
    sf_explore_opts o;
    memset(&o, 0, sizeof o);
    o.topk_path = topk;
    o.out_dir = site;
    o.checkpoint = ckpt;
    o.rows = &src;
    o.thumb_size = 64;
    o.neighbours = 10;
    o.min_word_rows = 1;
    o.quiet = 1;
    CHECK(sf_explore_build(&o) == 0);
    CHECK(exists(site, "index.html") && exists(site, "assets/app.js") &&
          exists(site, "assets/style.css"));
    CHECK(exists(site, "data/f/0000.js") && exists(site, "data/f/0001.js") &&
          !exists(site, "data/f/0002.js"));

    snprintf(path, sizeof path, "%.4000s/index.html", site);
    char *html = sf_read_file(path, NULL);
    CHECK(html && strstr(html, "data/index.js") && strstr(html, "assets/app.js") &&
          !strstr(html, "http"));
    free(html);

    snprintf(path, sizeof path, "%.4000s/data/index.js", site);
    cJSON *ix = parse_js(path, "window.SF_INDEX = ", ";\n");
    CHECK(ix != NULL);
    if (ix) {
        CHECK(cJSON_GetObjectItem(ix, "n")->valueint == NF);
        CHECK(cJSON_GetObjectItem(ix, "rows")->valueint == ROWS);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(ix, "density")) == NF);
        CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(ix, "count"), 65)->valueint == 0);
        CHECK_NEAR(cJSON_GetArrayItem(cJSON_GetObjectItem(ix, "density"), 3)->valuedouble,
                   t.count[3] / 300.0, 1e-4);
        CHECK_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(ix, "meta"), "dataset")->valuestring,
                  "fake:");
        cJSON *cv = cJSON_GetObjectItem(ix, "curves");
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cv, "loss")) ==
              2); /* the cut last line is skipped */
        CHECK_NEAR(cJSON_GetArrayItem(cJSON_GetObjectItem(cv, "fvu"), 1)->valuedouble, 0.5, 1e-9);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(ix, "neighbours")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(ix, "tokens")));
        CHECK(cJSON_GetObjectItem(ix, "thumbs")->valueint > 0);
        cJSON *top3 = cJSON_GetArrayItem(cJSON_GetObjectItem(ix, "top"), 3);
        CHECK(cJSON_GetArraySize(top3) == 3);
        CHECK(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(ix, "top"), 61)));
        /* the invalid byte in the caption became U+FFFD */
        CHECK(strstr(cJSON_GetArrayItem(top3, 2)->valuestring, "\xEF\xBF\xBD") != NULL);
        cJSON_Delete(ix);
    }
    snprintf(path, sizeof path, "%.4000s/data/words.js", site);
    cJSON *w;
    size_t wl;
    char *wt = sf_read_file(path, &wl);
    CHECK(wt && strncmp(wt, "window.SF_WORDS = ", 18) == 0);
    if (wt) {
        wt[wl - 2] = 0;
        w = cJSON_Parse(wt + 18);
        CHECK(w != NULL);
        /* "red" rows are r % 3 == 0; every alive feature has some in its top 8 */
        cJSON *red = cJSON_GetObjectItem(w, "red");
        CHECK(cJSON_GetArraySize(red) == 60);
        CHECK(cJSON_GetObjectItem(w, "shiny") &&
              cJSON_GetArraySize(cJSON_GetObjectItem(w, "shiny")) == 60);
        CHECK(cJSON_GetObjectItem(w, "the") == NULL &&
              cJSON_GetObjectItem(w, "and") == NULL); /* stopwords */
        /* postings sorted by hits desc: hits of the first >= hits of the last */
        int h0 = cJSON_GetArrayItem(cJSON_GetArrayItem(red, 0), 1)->valueint;
        int hl = cJSON_GetArrayItem(cJSON_GetArrayItem(red, 59), 1)->valueint;
        CHECK(h0 >= hl && h0 <= KEEP);
        cJSON_Delete(w);
    }
    free(wt);
    snprintf(path, sizeof path, "%.4000s/data/f/0000.js", site);
    cJSON *ch = parse_js(path, "SF_CHUNK(0,", ");\n");
    CHECK(cJSON_GetArraySize(ch) == 64);
    if (ch) {
        cJSON *f3 = cJSON_GetArrayItem(ch, 3);
        cJSON *top = cJSON_GetObjectItem(f3, "top");
        CHECK(cJSON_GetArraySize(top) == KEEP);
        float vals[NF * KEEP];
        int64_t rows[NF * KEEP];
        sf_topk_sorted(&t, vals, rows);
        int imgs = 0;
        for (int i = 0; i < KEEP; i++) {
            cJSON *e = cJSON_GetArrayItem(top, i);
            int64_t r = (int64_t)cJSON_GetArrayItem(e, 0)->valuedouble;
            CHECK(r == rows[3 * KEEP + i]);
            CHECK_NEAR(cJSON_GetArrayItem(e, 1)->valuedouble, vals[3 * KEEP + i], 1e-4);
            int has = cJSON_GetArrayItem(e, 2)->valueint;
            CHECK(has == (r % 50 != 7 && r % 50 != 9));
            snprintf(path, sizeof path, "img/%lld.jpg", (long long)r);
            CHECK(exists(site, path) == has);
            imgs += has;
        }
        CHECK(imgs > 0);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(f3, "nb")) == 10);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(f3, "hist")) == SF_TOPK_HIST_BINS);
        /* co-occurrence against a brute-force count of shared top rows */
        int shared[NF] = {0};
        for (int f = 0; f < NF; f++)
            for (int i = 0; f != 3 && i < KEEP; i++)
                for (int q = 0; q < KEEP; q++)
                    shared[f] +=
                        rows[3 * KEEP + i] >= 0 && rows[3 * KEEP + i] == rows[f * KEEP + q];
        cJSON *co = cJSON_GetObjectItem(f3, "co");
        int n_co = 0;
        for (int f = 0; f < NF; f++)
            n_co += shared[f] > 0;
        CHECK(n_co >= 1 && cJSON_GetArraySize(co) == (n_co < 10 ? n_co : 10));
        for (int i = 0; i < cJSON_GetArraySize(co); i++) {
            int f = cJSON_GetArrayItem(cJSON_GetArrayItem(co, i), 0)->valueint;
            int c = cJSON_GetArrayItem(cJSON_GetArrayItem(co, i), 1)->valueint;
            int better = 0; /* features ranked above f: more shared rows, or as many and lower id */
            for (int g = 0; g < NF; g++)
                better += shared[g] > shared[f] || (shared[g] == shared[f] && g < f && shared[g]);
            CHECK_MSG(c == shared[f] && better == i, "co %d: feature %d shares %d (%d)", i, f, c,
                      shared[f]);
        }
        /* range examples: 4 quartiles, rows where feature 3 fires, with their
         * values, inside the quartile's value range, ascending */
        cJSON *range = cJSON_GetObjectItem(f3, "range");
        CHECK(cJSON_GetArraySize(range) == 4);
        int picked = 0;
        double prev = 0;
        for (int q = 0; q < cJSON_GetArraySize(range); q++) {
            cJSON *rq = cJSON_GetArrayItem(range, q);
            double lo = cJSON_GetArrayItem(rq, 0)->valuedouble,
                   hi = cJSON_GetArrayItem(rq, 1)->valuedouble;
            cJSON *ex = cJSON_GetArrayItem(rq, 2);
            CHECK(cJSON_GetArraySize(ex) <= 3);
            for (int i = 0; i < cJSON_GetArraySize(ex); i++) {
                cJSON *e = cJSON_GetArrayItem(ex, i);
                int r = cJSON_GetArrayItem(e, 0)->valueint;
                double v = cJSON_GetArrayItem(e, 1)->valuedouble;
                CHECK(r >= 0 && r < ROWS && r % 7 == 3);
                CHECK_NEAR(v, z[r * NF + 3], 1e-4);
                CHECK(v >= lo - 1e-6 && v < hi + 1e-6 && v >= prev - 1e-6);
                prev = v;
                picked++;
            }
        }
        CHECK(picked >= 8);
        cJSON_Delete(ch);
    }
    /* a source error fails the build, naming the row */
    {
        static float v2[NF * KEEP];
        static int64_t r2[NF * KEEP];
        sf_topk_sorted(&t, v2, r2);
        fc.fail_row = r2[0];
    }
    o.quiet = 1;
    CHECK(sf_explore_build(&o) == -1);
    CHECK_ERR_HAS("unreadable");
    /* a checkpoint of the wrong size */
    CHECK(sf_sae_init(&sae, SF_SAE_TOPK, D, NF + 1, 3, 1) == 0);
    snprintf(path, sizeof path, "%.4000s/ck2", dir);
    CHECK(sf_sae_save(&sae, path) == 0);
    sf_sae_free(&sae);
    o.checkpoint = path;
    o.rows = NULL;
    CHECK(sf_explore_build(&o) == -1);
    CHECK_ERR_HAS("71 features");
    /* no rows, no checkpoint: still a site */
    o.checkpoint = NULL;
    CHECK(sf_explore_build(&o) == 0);
    sf_topk_free(&t);
}

int main(void) {
    RUN(neighbours_brute_force);
    RUN(thumbnails);
    RUN(words_and_json);
    RUN(site);
    return test_summary();
}
