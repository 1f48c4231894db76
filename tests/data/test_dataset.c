/* The dataset layer (cc3m parquet, webdataset tar, image folders) against
 * fixtures/data/{expected,datasets}.json from tools/make_data_fixtures.py. */
#include <cjson/cJSON.h>
#include <zlib.h>

#include "saeflow/common.h"
#include "saeflow/dataset.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/data/"

static cJSON *load_json(const char *path) {
    char *s = sf_read_file(path, NULL);
    if (!s) exit(2);
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j) exit(2);
    return j;
}

static int bytes_match(const uint8_t *p, size_t n, const cJSON *e) {
    if (!e || cJSON_IsNull(e)) return p == NULL;
    if (!p) return 0;
    return cJSON_GetObjectItem(e, "len")->valuedouble == (double)n &&
           cJSON_GetObjectItem(e, "crc32")->valuedouble == (double)crc32(0, p, (uInt)n);
}

static int str_match(const char *s, const cJSON *e) {
    if (!e || cJSON_IsNull(e)) return s == NULL;
    return s && !strcmp(s, e->valuestring);
}

/* Sequential pass and random access agree with `rows` (datasets.json form). */
static void check_against(const char *spec, const cJSON *rows) {
    sf_dataset *ds = sf_dataset_open(spec, SF_DS_ALL);
    CHECK_MSG(ds, "%s: %s", spec, sf_errmsg());
    if (!ds) return;
    int n = cJSON_GetArraySize(rows);
    CHECK_MSG(sf_dataset_count(ds) == n, "%s: count %lld vs %d", spec,
              (long long)sf_dataset_count(ds), n);
    sf_sample s;
    int i = 0, r, bad = 0;
    while ((r = sf_dataset_next(ds, &s)) == 1) {
        const cJSON *e = cJSON_GetArrayItem(rows, i);
        int ok = e && s.row == i && str_match(s.id, cJSON_GetObjectItem(e, "id")) &&
                 bytes_match(s.image, s.image_len, cJSON_GetObjectItem(e, "image")) &&
                 str_match(s.image_ext, cJSON_GetObjectItem(e, "ext")) &&
                 str_match(s.caption, cJSON_GetObjectItem(e, "caption")) &&
                 (!s.caption || s.caption_len == strlen(s.caption));
        if (!ok)
            fprintf(stderr, "%s: row %d differs (id %s, caption %s)\n", spec, i, s.id,
                    s.caption ? s.caption : "(null)");
        bad += !ok;
        i++;
    }
    CHECK_MSG(r == 0, "%s: %s", spec, sf_errmsg());
    CHECK(i == n);
    CHECK_MSG(bad == 0, "%s: %d rows differ", spec, bad);
    /* Random access, backwards. */
    for (int k = n - 1; k >= 0; k--) {
        const cJSON *e = cJSON_GetArrayItem(rows, k);
        CHECK_MSG(sf_dataset_get(ds, k, &s) == 0, "%s: get %d: %s", spec, k, sf_errmsg());
        CHECK(s.row == k);
        CHECK(str_match(s.id, cJSON_GetObjectItem(e, "id")));
        CHECK(bytes_match(s.image, s.image_len, cJSON_GetObjectItem(e, "image")));
        CHECK(str_match(s.caption, cJSON_GetObjectItem(e, "caption")));
    }
    CHECK(sf_dataset_get(ds, n, &s) == -1);
    CHECK_ERR_HAS("past the end");
    /* Seek then continue sequentially. */
    CHECK(sf_dataset_seek(ds, n / 2) == 0);
    int cnt = 0;
    while (sf_dataset_next(ds, &s) == 1)
        cnt++;
    CHECK(cnt == n - n / 2);
    sf_dataset_close(ds);
}

/* cc3m rows from expected.json: caption = last conversation value. */
static cJSON *recap_rows(const cJSON *exp, const char *const *files, int nf) {
    cJSON *out = cJSON_CreateArray();
    for (int f = 0; f < nf; f++) {
        const cJSON *rows = cJSON_GetObjectItem(cJSON_GetObjectItem(exp, files[f]), "rows");
        const cJSON *row;
        cJSON_ArrayForEach(row, rows) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToObject(o, "id", cJSON_Duplicate(cJSON_GetObjectItem(row, "id"), 1));
            const cJSON *img = cJSON_GetObjectItem(row, "image");
            const cJSON *b = cJSON_IsNull(img) ? NULL : cJSON_GetObjectItem(img, "bytes");
            if (b && !cJSON_IsNull(b)) {
                cJSON_AddItemToObject(o, "image", cJSON_Duplicate(b, 1));
                cJSON_AddStringToObject(o, "ext", "jpg");
            }
            const cJSON *conv = cJSON_GetObjectItem(row, "conversations");
            int n = cJSON_IsArray(conv) ? cJSON_GetArraySize(conv) : 0;
            const cJSON *last = n ? cJSON_GetArrayItem(conv, n - 1) : NULL;
            const cJSON *v =
                last && !cJSON_IsNull(last) ? cJSON_GetObjectItem(last, "value") : NULL;
            if (v && cJSON_IsString(v)) cJSON_AddStringToObject(o, "caption", v->valuestring);
            cJSON_AddItemToArray(out, o);
        }
    }
    return out;
}

TEST(cc3m_parquet) {
    cJSON *exp = load_json(FIX "expected.json");
    const char *files[] = {"recap_gzip_dict_v2.parquet", "recap_none_plain_v1.parquet",
                           "recap_snappy_dict_v1.parquet", "recap_snappy_dictfallback_v2.parquet",
                           "recap_zstd_plain_v2.parquet"};
    cJSON *rows = recap_rows(exp, files, 5);
    check_against("cc3m:" FIX "recap_*.parquet", rows);
    cJSON *one = recap_rows(exp, files + 2, 1);
    check_against(FIX "recap_snappy_dict_v1.parquet", one); /* no prefix: by extension */
    cJSON_Delete(one);
    /* The legacy list element name "item" (pyarrow < 13, Spark). */
    const char *legacy[] = {"legacy_item_recap.parquet"};
    one = recap_rows(exp, legacy, 1);
    CHECK(cJSON_GetArraySize(one) == 23);
    check_against("cc3m:" FIX "legacy_item_recap.parquet", one);
    cJSON_Delete(one);

    /* Projection: captions only never touches the image column. */
    sf_dataset *ds = sf_dataset_open("cc3m:" FIX "recap_zstd_plain_v2.parquet", SF_DS_CAPTIONS);
    CHECK(ds);
    sf_sample s;
    CHECK(sf_dataset_get(ds, 0, &s) == 0 && s.image == NULL && s.caption != NULL);
    sf_dataset_close(ds);
    /* A file without the needed columns. */
    ds = sf_dataset_open("cc3m:" FIX "types_zstd_plain_v2.parquet", SF_DS_IMAGES);
    CHECK(ds == NULL);
    CHECK_ERR_HAS("types_zstd_plain_v2.parquet: no image column");
    /* `name` is no caption column; flat `caption`/`text`/`txt` would be. */
    ds = sf_dataset_open("cc3m:" FIX "types_zstd_plain_v2.parquet", SF_DS_CAPTIONS);
    CHECK(ds == NULL);
    CHECK_ERR_HAS("no caption column");
    cJSON_Delete(rows);
    cJSON_Delete(exp);
}

TEST(wds_and_folders) {
    cJSON *d = load_json(FIX "datasets.json");
    check_against("wds:" FIX "wds/{00000.tar,00001.tar,00002.tar.gz}",
                  cJSON_GetObjectItem(d, "wds"));
    check_against("wds:" FIX "wds_pax/*.tar", cJSON_GetObjectItem(d, "wds_pax"));
    check_against("folder:" FIX "folder_tsv", cJSON_GetObjectItem(d, "folder_tsv"));
    check_against("folder:" FIX "folder_jsonl", cJSON_GetObjectItem(d, "folder_jsonl"));
    check_against(FIX "folder_txt", cJSON_GetObjectItem(d, "folder_txt"));

    /* Brace range with zero padding selects the two plain shards (7 samples). */
    sf_dataset *ds = sf_dataset_open("wds:" FIX "wds/{00000..00001}.tar", SF_DS_CAPTIONS);
    CHECK(ds && sf_dataset_num_files(ds) == 2 && sf_dataset_count(ds) == 7);
    sf_dataset_close(ds);
    /* A directory: all *.tar in it (not the .tar.gz). */
    ds = sf_dataset_open("wds:" FIX "wds", SF_DS_CAPTIONS);
    CHECK(ds && sf_dataset_num_files(ds) == 2);
    sf_dataset_close(ds);
    cJSON_Delete(d);
}

TEST(spec_errors) {
    CHECK(sf_dataset_open("cc3m:" FIX "nothing-*.parquet", SF_DS_ALL) == NULL);
    CHECK_ERR_HAS("no files match");
    CHECK(sf_dataset_open("wds:" FIX "wds/{00005..00006}.tar", SF_DS_ALL) == NULL);
    CHECK_ERR_HAS("00005.tar");
    CHECK(sf_dataset_open("folder:" FIX "nope", SF_DS_ALL) == NULL);
    CHECK_ERR_HAS("not a directory");
    CHECK(sf_dataset_open("what.csv", SF_DS_ALL) == NULL);
    CHECK_ERR_HAS("expected cc3m:PATTERN");
    CHECK(sf_dataset_open("folder:" FIX "wds", SF_DS_ALL) == NULL);
    CHECK_ERR_HAS("no images");
    CHECK(sf_dataset_open("wds:" FIX "{0..99999999}.tar", SF_DS_ALL) == NULL);
    CHECK_ERR_HAS("too large");
    CHECK(sf_dataset_open("cc3m:" FIX "wds/00000.tar", SF_DS_ALL) == NULL);
    CHECK_ERR_HAS("00000.tar: not a parquet file");
}

TEST(corrupt_tar) {
    size_t len;
    char *good = sf_read_file(FIX "wds/00000.tar", &len);
    CHECK(good);
    if (!good) return;
    /* Truncations: either fewer samples or a clear error naming the file. */
    int errors = 0;
    for (size_t n = 0; n < len; n += 331) {
        sf_dataset *ds = sf_dataset_open_mem("tar", good, n, SF_DS_ALL);
        if (!ds) {
            errors++;
            continue;
        }
        sf_sample s;
        int r;
        while ((r = sf_dataset_next(ds, &s)) == 1) {
        }
        if (r < 0) {
            errors++;
            CHECK_MSG(strstr(sf_errmsg(), "(memory).tar") != NULL, "%s", sf_errmsg());
        }
        sf_dataset_close(ds);
    }
    CHECK(errors > 0);
    /* Byte flips anywhere. */
    uint8_t *buf = sf_malloc(len);
    sf_rng rng;
    sf_rng_seed(&rng, 9);
    for (int t = 0; t < 400; t++) {
        memcpy(buf, good, len);
        for (int k = 0; k < 4; k++)
            buf[sf_rng_below(&rng, len)] ^= (uint8_t)(1 + sf_rng_below(&rng, 255));
        sf_dataset *ds = sf_dataset_open_mem("tar", buf, len, SF_DS_ALL);
        if (!ds) continue;
        sf_sample s;
        int64_t n = sf_dataset_count(ds);
        while (sf_dataset_next(ds, &s) == 1) {
        }
        for (int64_t i = 0; i < n; i++)
            sf_dataset_get(ds, i, &s);
        sf_dataset_close(ds);
    }
    free(buf);
    free(good);
}

int main(void) {
    RUN(cc3m_parquet);
    RUN(wds_and_folders);
    RUN(spec_errors);
    RUN(corrupt_tar);
    return test_summary();
}
