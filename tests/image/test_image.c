/* Image decoding + CLIP preprocessing against fixtures made with Pillow 13 and
 * transformers' CLIPImageProcessor (tools/make_clip_input_fixtures.py):
 * decoded RGB, the resized and cropped uint8 images bit-exact (FNV-1a hashes,
 * per-row sums for diagnosis), pixel_values within 1e-6, Pillow's resize on
 * small random images byte for byte, corrupt files rejected cleanly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/image.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/clip-inputs"

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

static int hash_is(const uint8_t *p, size_t n, const char *hex) {
    char buf[17];
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fnv1a64(p, n));
    return hex && !strcmp(buf, hex);
}

static cJSON *load_json(const char *path) {
    size_t len;
    char *t = sf_read_file(path, &len);
    if (!t) {
        fprintf(stderr, "%s\n", sf_errmsg());
        exit(2);
    }
    cJSON *j = cJSON_ParseWithLength(t, len);
    free(t);
    if (!j) {
        fprintf(stderr, "%s: bad JSON\n", path);
        exit(2);
    }
    return j;
}

static const char *jstr(const cJSON *o, const char *k) {
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}
static double jnum(const cJSON *o, const char *k) {
    return cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* Every case of a resize_cases file (tools/make_clip_input_fixtures.py) must
 * match byte for byte with the given pass order; returns how many cases the
 * other order gets wrong (0 when it matches too). */
static int check_resize_file(const char *path, int legacy_order) {
    size_t len;
    uint8_t *d = (uint8_t *)sf_read_file(path, &len);
    CHECK(d && len > 8 && !memcmp(d, "SFRZ", 4));
    if (!d) return 0;
    uint32_t n;
    memcpy(&n, d + 4, 4);
    size_t pos = 8;
    int other_wrong = 0;
    for (uint32_t c = 0; c < n; c++) {
        uint32_t h[5];
        memcpy(h, d + pos, sizeof h);
        pos += sizeof h;
        sf_image in = {(int)h[0], (int)h[1], d + pos};
        pos += (size_t)h[0] * h[1] * 3;
        const uint8_t *want = d + pos;
        pos += (size_t)h[2] * h[3] * 3;
        CHECK(pos <= len);
        const size_t nb = (size_t)h[2] * h[3] * 3;
        for (int order = 0; order < 2; order++) {
            const int lo = order ? !legacy_order : legacy_order;
            sf_image out;
            int rc = sf_image_resize_compat(&in, (int)h[2], (int)h[3], (sf_resample)h[4], lo, &out);
            CHECK_MSG(rc == 0, "case %u: %s", c, sf_errmsg());
            if (rc) continue;
            size_t bad = 0;
            int maxd = 0;
            for (size_t i = 0; i < nb; i++)
                if (out.rgb[i] != want[i]) {
                    bad++;
                    int dd = abs((int)out.rgb[i] - (int)want[i]);
                    if (dd > maxd) maxd = dd;
                }
            if (order == 0)
                CHECK_MSG(bad == 0,
                          "%s case %u (%ux%u -> %ux%u filter %u): %zu bytes differ, max %d", path,
                          c, h[0], h[1], h[2], h[3], h[4], bad, maxd);
            else
                other_wrong += bad > 0;
            sf_image_free(&out);
        }
    }
    free(d);
    return other_wrong;
}

/* Pillow's resize, byte for byte, on random and scene images (bicubic,
 * bilinear, nearest; up, down, mixed, 1-pixel, identity): Pillow 13. */
TEST(resize_matches_pillow) {
    check_resize_file(FIX "/resize_cases.bin", 0);
}

/* The Pillow <= 12 pass order (the reference project's era) against Pillow
 * 12.3 (tools/make_pillow12_fixture.py): tall shrinks, where the two orders
 * disagree, and cases where they agree. */
TEST(resize_matches_pillow12) {
    int other_wrong = check_resize_file(FIX "/resize_cases_pillow12.bin", 1);
    CHECK_MSG(other_wrong > 0, "no case tells the pass orders apart");
}

/* transformers' rescale + normalize for every byte value, per channel. */
TEST(normalize_table) {
    cJSON *j = load_json(FIX "/normalize.json");
    sf_clip_preproc p;
    sf_clip_preproc_default(&p);
    sf_image im;
    CHECK(sf_image_alloc(&im, 256, 1) == 0);
    for (int v = 0; v < 256; v++)
        im.rgb[3 * v] = im.rgb[3 * v + 1] = im.rgb[3 * v + 2] = (uint8_t)v;
    float px[3 * 256];
    sf_clip_normalize(&p, &im, px);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "table");
    double maxd = 0;
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            double want = cJSON_GetArrayItem(cJSON_GetArrayItem(t, c), v)->valuedouble;
            double d = fabs(want - px[c * 256 + v]);
            if (d > maxd) maxd = d;
        }
    CHECK_MSG(maxd == 0.0, "max difference %g (expected bit-exact)", maxd);
    sf_image_free(&im);
    cJSON_Delete(j);
}

static void check_images(const cJSON *images, const sf_clip_preproc *p, const char *label) {
    const cJSON *rec;
    int ch = p->crop_height, cw = p->crop_width;
    float *px = sf_malloc(sf_clip_preproc_floats(p) * sizeof(float));
    cJSON_ArrayForEach(rec, images) {
        const char *fn = jstr(rec, "file");
        char path[1024];
        snprintf(path, sizeof path, FIX "/images/%s", fn);
        sf_image im;
        int rc = sf_image_load(path, &im);
        CHECK_MSG(rc == 0, "%s: %s", fn, sf_errmsg());
        if (rc) continue;
        CHECK_MSG(im.width == (int)jnum(rec, "width") && im.height == (int)jnum(rec, "height"),
                  "%s: size %dx%d", fn, im.width, im.height);
        CHECK_MSG(hash_is(im.rgb, (size_t)im.width * im.height * 3, jstr(rec, "decoded_fnv64")),
                  "%s [%s]: decoded RGB differs from Pillow's convert(\"RGB\")", fn,
                  jstr(rec, "pil_mode"));
        int rw, rh;
        sf_clip_resize_size(p, im.width, im.height, &rw, &rh);
        CHECK_MSG(rw == (int)jnum(rec, "resized_width") && rh == (int)jnum(rec, "resized_height"),
                  "%s: resize size %dx%d", fn, rw, rh);
        sf_image rs;
        if (sf_image_resize(&im, rw, rh, p->resample, &rs) == 0) {
            CHECK_MSG(hash_is(rs.rgb, (size_t)rw * rh * 3, jstr(rec, "resized_fnv64")),
                      "%s (%s): resized uint8 image differs from Pillow's", fn, label);
            sf_image_free(&rs);
        }
        sf_image crop;
        rc = sf_clip_resize_crop(p, &im, &crop);
        CHECK_MSG(rc == 0 && crop.width == cw && crop.height == ch, "%s: crop", fn);
        if (rc == 0) {
            CHECK_MSG(hash_is(crop.rgb, (size_t)cw * ch * 3, jstr(rec, "crop_fnv64")),
                      "%s (%s): crop differs", fn, label);
            const cJSON *rows = cJSON_GetObjectItemCaseSensitive(rec, "crop_row_sums");
            int bad_rows = 0, first_bad = -1;
            for (int y = 0; y < ch; y++) {
                long s = 0;
                for (int x = 0; x < cw * 3; x++)
                    s += crop.rgb[(size_t)y * cw * 3 + x];
                if (s != (long)cJSON_GetArrayItem(rows, y)->valuedouble) {
                    if (first_bad < 0) first_bad = y;
                    bad_rows++;
                }
            }
            CHECK_MSG(bad_rows == 0, "%s: %d crop rows differ (first %d)", fn, bad_rows, first_bad);
            sf_image_free(&crop);
        }
        rc = sf_clip_preprocess(p, &im, px);
        CHECK(rc == 0);
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(rec, "pixel_values_idx");
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(rec, "pixel_values_at");
        double maxd = 0, sum = 0;
        for (int i = 0; i < cJSON_GetArraySize(idx); i++) {
            double d = fabs(px[(int)cJSON_GetArrayItem(idx, i)->valuedouble] -
                            cJSON_GetArrayItem(at, i)->valuedouble);
            if (d > maxd) maxd = d;
        }
        for (size_t i = 0; i < sf_clip_preproc_floats(p); i++)
            sum += px[i];
        CHECK_MSG(maxd <= 1e-6, "%s: pixel_values differ by %g", fn, maxd);
        CHECK_MSG(fabs(sum - jnum(rec, "pixel_values_sum")) <= 1e-6 * sf_clip_preproc_floats(p),
                  "%s: pixel_values sum %.6f vs %.6f", fn, sum, jnum(rec, "pixel_values_sum"));
        sf_image_free(&im);
    }
    free(px);
}

TEST(fixture_images_default_config) {
    cJSON *j = load_json(FIX "/images.json");
    sf_clip_preproc p;
    sf_clip_preproc_default(&p);
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(j, "images");
    CHECK(cJSON_GetArraySize(images) >= 15);
    check_images(images, &p, "default");
    cJSON_Delete(j);
}

/* Other preprocessor_config.json values, read through sf_clip_preproc_load:
 * crop larger than the image (zero padding), non-square crop, bilinear. */
TEST(fixture_images_custom_configs) {
    cJSON *j = load_json(FIX "/images.json");
    const char *dir = test_tmpdir("image_custom");
    const cJSON *c;
    int k = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "custom")) {
        char *txt = cJSON_Print(cJSON_GetObjectItemCaseSensitive(c, "processor"));
        char path[4200];
        snprintf(path, sizeof path, "%s/cfg%d.json", dir, k++);
        CHECK(sf_write_file_atomic(path, txt, strlen(txt)) == 0);
        free(txt);
        sf_clip_preproc p;
        int rc = sf_clip_preproc_load(&p, path);
        CHECK_MSG(rc == 0, "%s", sf_errmsg());
        if (!rc) check_images(cJSON_GetObjectItemCaseSensitive(c, "images"), &p, path);
    }
    CHECK(k == 2);
    cJSON_Delete(j);
}

TEST(corrupt_files_fail_cleanly) {
    /* corrupt/pillow.json: what Pillow makes of each file. Pillow's errors
     * must be ours; a file Pillow decodes (a VP8 stream with flipped bytes
     * still decodes) must decode here too. */
    cJSON *j = load_json(FIX "/corrupt/pillow.json");
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach(e, j) {
        char path[1024];
        snprintf(path, sizeof path, FIX "/corrupt/%s", e->string);
        int pillow_ok = !strcmp(cJSON_GetStringValue(e), "decodes");
        sf_image im = {1, 1, (uint8_t *)1};
        int rc = sf_image_load(path, &im);
        n++;
        if (pillow_ok) {
            CHECK_MSG(rc == 0, "%s: Pillow decodes it, we say: %s", e->string, sf_errmsg());
            sf_image_free(&im);
            continue;
        }
        CHECK_MSG(rc == -1, "%s decoded without error", e->string);
        CHECK(im.rgb == NULL && im.width == 0);
        CHECK_ERR_HAS(e->string);
        fprintf(stderr, "   %s\n", sf_errmsg());
    }
    CHECK(n >= 10);
    cJSON_Delete(j);
    sf_image im;
    CHECK(sf_image_load(FIX "/corrupt/does-not-exist.png", &im) == -1);
    CHECK_ERR_HAS("does-not-exist.png");
    /* every prefix of a small PNG and JPEG: error or success, never a crash */
    const char *srcs[] = {FIX "/images/palette_trns_97x131.png", FIX "/images/cmyk_120x90.jpg"};
    for (int s = 0; s < 2; s++) {
        size_t len;
        char *d = sf_read_file(srcs[s], &len);
        CHECK(d != NULL);
        int ok = 0;
        for (size_t n = 0; d && n < len; n += 1 + n / 64) {
            if (sf_image_decode(d, n, "prefix", &im) == 0) {
                ok++;
                sf_image_free(&im);
            }
        }
        CHECK(d && sf_image_decode(d, len, "full", &im) == 0);
        sf_image_free(&im);
        (void)ok;
        free(d);
    }
}

static uint32_t crc32_(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

/* A valid PNG header claiming 20000 x 20000 pixels (> SF_IMAGE_MAX_PIXELS)
 * is refused before any pixel buffer is allocated. */
TEST(huge_dimensions_refused) {
    /* signature, IHDR chunk, then the start of an (empty) IDAT so that
     * png_read_info returns with the header parsed */
    uint8_t png[8 + 25 + 8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                               0,    0,   0,   13,  'I',  'H',  'D',  'R'};
    uint32_t w = 20000, h = 20000;
    uint8_t *d = png + 16;
    d[0] = (uint8_t)(w >> 24), d[1] = (uint8_t)(w >> 16), d[2] = (uint8_t)(w >> 8),
    d[3] = (uint8_t)w;
    d[4] = (uint8_t)(h >> 24), d[5] = (uint8_t)(h >> 16), d[6] = (uint8_t)(h >> 8),
    d[7] = (uint8_t)h;
    d[8] = 8, d[9] = 2, d[10] = d[11] = d[12] = 0; /* 8-bit RGB */
    uint32_t c = crc32_(png + 12, 17);
    png[29] = (uint8_t)(c >> 24), png[30] = (uint8_t)(c >> 16), png[31] = (uint8_t)(c >> 8),
    png[32] = (uint8_t)c;
    memcpy(png + 37, "IDAT", 4);
    sf_image im;
    CHECK(sf_image_decode(png, sizeof png, "huge.png", &im) == -1);
    CHECK_ERR_HAS("out of range");
    CHECK(im.rgb == NULL);
}

TEST(sniff) {
    CHECK(sf_image_sniff("\xff\xd8\xff\xe0", 4) == SF_IMAGE_JPEG);
    CHECK(sf_image_sniff("\x89PNG\r\n\x1a\n", 8) == SF_IMAGE_PNG);
    CHECK(sf_image_sniff("RIFF\0\0\0\0WEBPVP8 ", 16) == SF_IMAGE_WEBP);
    CHECK(sf_image_sniff("GIF89a", 6) == SF_IMAGE_UNKNOWN);
    CHECK(!strcmp(sf_image_format_name(SF_IMAGE_WEBP), "webp"));
}

TEST(config_loading) {
    const char *dir = test_tmpdir("image_cfg");
    char path[4200];
    sf_clip_preproc p;
    /* a model directory with an old-style config: ints for size/crop_size */
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    const char *old =
        "{\"crop_size\": 336, \"size\": 336, \"do_center_crop\": true, \"resample\": 3,"
        " \"image_mean\": [0.5, 0.25, 0.125], \"feature_extractor_type\": "
        "\"CLIPFeatureExtractor\"}";
    CHECK(sf_write_file_atomic(path, old, strlen(old)) == 0);
    CHECK(sf_clip_preproc_load(&p, dir) == 0);
    CHECK(p.shortest_edge == 336 && p.crop_height == 336 && p.crop_width == 336);
    CHECK(p.mean[1] == 0.25f && p.std[0] == (float)0.26862954);
    CHECK(sf_clip_preproc_floats(&p) == 3 * 336 * 336);
    /* size as height/width: exact resize */
    snprintf(path, sizeof path, "%s/hw.json", dir);
    const char *hw = "{\"size\": {\"height\": 64, \"width\": 32}, \"crop_size\": {\"height\": 32, "
                     "\"width\": 32}}";
    CHECK(sf_write_file_atomic(path, hw, strlen(hw)) == 0);
    CHECK(sf_clip_preproc_load(&p, path) == 0);
    int w, h;
    sf_clip_resize_size(&p, 640, 480, &w, &h);
    CHECK(w == 32 && h == 64);
    /* errors name the key */
    const char *bad[][2] = {{"{\"resample\": 1}", "resample"},
                            {"{\"size\": {\"longest_edge\": 5}}", "longest_edge"},
                            {"{\"image_std\": [1, 0, 1]}", "image_std"},
                            {"{\"crop_size\": -3}", "crop_size"},
                            {"[1]", "not a JSON object"},
                            {"{\"do_resize\": 3}", "do_resize"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(path, sizeof path, "%s/bad%zu.json", dir, i);
        CHECK(sf_write_file_atomic(path, bad[i][0], strlen(bad[i][0])) == 0);
        CHECK(sf_clip_preproc_load(&p, path) == -1);
        CHECK_ERR_HAS(bad[i][1]);
    }
    /* default sizes: landscape, portrait, square, truncation of the long edge */
    sf_clip_preproc_default(&p);
    sf_clip_resize_size(&p, 640, 480, &w, &h);
    CHECK(w == 298 && h == 224);
    sf_clip_resize_size(&p, 300, 451, &w, &h);
    CHECK(w == 224 && h == 336);
    sf_clip_resize_size(&p, 5, 5, &w, &h);
    CHECK(w == 224 && h == 224);
}

/* transformers 5's convert_to_rgb (alpha / tRNS composited onto white):
 * decoded image and the crop equal, pixel_values sum close. */
TEST(alpha_white_matches_transformers5) {
    cJSON *j = load_json(FIX "/images.json");
    sf_clip_preproc p;
    sf_clip_preproc_default(&p);
    float *px = sf_malloc(sf_clip_preproc_floats(&p) * sizeof(float));
    const cJSON *rec;
    int n_differs = 0;
    cJSON_ArrayForEach(rec, cJSON_GetObjectItemCaseSensitive(j, "images")) {
        const char *fn = jstr(rec, "file");
        char path[1024];
        snprintf(path, sizeof path, FIX "/images/%s", fn);
        sf_image im;
        int rc = sf_image_load_ex(path, SF_IMAGE_ALPHA_WHITE, &im);
        CHECK_MSG(rc == 0, "%s: %s", fn, sf_errmsg());
        if (rc) continue;
        n_differs +=
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "transformers_convert_differs"));
        CHECK_MSG(
            hash_is(im.rgb, (size_t)im.width * im.height * 3, jstr(rec, "white_decoded_fnv64")),
            "%s [%s]: white-composited RGB differs from transformers' convert_to_rgb", fn,
            jstr(rec, "pil_mode"));
        sf_image crop;
        if (sf_clip_resize_crop(&p, &im, &crop) == 0) {
            CHECK_MSG(hash_is(crop.rgb, (size_t)crop.width * crop.height * 3,
                              jstr(rec, "white_crop_fnv64")),
                      "%s: white crop differs", fn);
            sf_image_free(&crop);
        }
        CHECK(sf_clip_preprocess(&p, &im, px) == 0);
        double sum = 0;
        for (size_t i = 0; i < sf_clip_preproc_floats(&p); i++)
            sum += px[i];
        CHECK_MSG(
            fabs(sum - jnum(rec, "white_pixel_values_sum")) <= 1e-6 * sf_clip_preproc_floats(&p),
            "%s: pixel_values sum %.6f vs %.6f", fn, sum, jnum(rec, "white_pixel_values_sum"));
        sf_image_free(&im);
    }
    CHECK(n_differs >= 4);
    free(px);
    cJSON_Delete(j);
}

/* sf_png_write -> the PNG decoder gives the same pixels; bad sizes and
 * unwritable paths fail without leaving a file. */
TEST(png_write_roundtrip) {
    const int w = 37, h = 11;
    uint8_t *rgb = malloc((size_t)(w * h * 3));
    for (int i = 0; i < w * h * 3; i++)
        rgb[i] = (uint8_t)(i * 7 + (i / 3) % 5);
    char path[1024];
    snprintf(path, sizeof path, "%s/rt.png", test_tmpdir("png_write"));
    CHECK_MSG(sf_png_write(path, rgb, w, h) == 0, "%s", sf_errmsg());
    sf_image im;
    CHECK(sf_image_load(path, &im) == 0);
    CHECK(im.width == w && im.height == h);
    if (im.width == w && im.height == h) CHECK(memcmp(im.rgb, rgb, (size_t)(w * h * 3)) == 0);
    sf_image_free(&im);
    CHECK(sf_png_write(path, rgb, 0, h) == -1);
    CHECK(sf_png_write("/nonexistent-dir/x.png", rgb, w, h) == -1);
    free(rgb);
}

/* Binary PPM/PGM: the pixels as they are (grey replicated), comments in the
 * header; maxval other than 255, truncation and junk refused cleanly. */
TEST(ppm_decode) {
    const char ppm[] = "P6\n# made by a test\n2 1\n255\n\x01\x02\x03\xfa\xfb\xfc";
    sf_image im;
    CHECK(sf_image_sniff(ppm, sizeof ppm - 1) == SF_IMAGE_PPM);
    CHECK_MSG(sf_image_decode(ppm, sizeof ppm - 1, "a.ppm", &im) == 0, "%s", sf_errmsg());
    CHECK(im.width == 2 && im.height == 1);
    if (im.rgb) CHECK(!memcmp(im.rgb, "\x01\x02\x03\xfa\xfb\xfc", 6));
    sf_image_free(&im);
    const char pgm[] = "P5 2 2 255 \x00\x10\x20\xff";
    CHECK(sf_image_decode(pgm, sizeof pgm - 1, NULL, &im) == 0);
    if (im.rgb)
        CHECK(im.rgb[3] == 0x10 && im.rgb[4] == 0x10 && im.rgb[5] == 0x10 && im.rgb[11] == 0xff);
    sf_image_free(&im);
    const char *bad[][2] = {{"P6\n2 1\n65535\n\x01\x02", "maxval"},
                            {"P6\n2 1\n255\n\x01\x02", "truncated"},
                            {"P6\n2 x\n255\n", "bad header"},
                            {"P6\n0 1\n255\n", "not positive"},
                            {"P6\n99999 99999\n255\n", "pixels"},
                            {"P6\n99999999999 1\n255\n", "too large"},
                            {"P6 ", "bad header"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_MSG(sf_image_decode(bad[i][0], strlen(bad[i][0]), "x.ppm", &im) == -1, "%zu", i);
        CHECK_ERR_HAS(bad[i][1]);
        CHECK(im.rgb == NULL);
    }
}

int main(void) {
    RUN(sniff);
    RUN(ppm_decode);
    RUN(png_write_roundtrip);
    RUN(huge_dimensions_refused);
    RUN(resize_matches_pillow);
    RUN(resize_matches_pillow12);
    RUN(normalize_table);
    RUN(fixture_images_default_config);
    RUN(fixture_images_custom_configs);
    RUN(alpha_white_matches_transformers5);
    RUN(corrupt_files_fail_cleanly);
    RUN(config_loading);
    return test_summary();
}
