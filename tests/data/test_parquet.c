/* The parquet reader against what pyarrow reads (fixtures/data/expected.json,
 * written by tools/make_data_fixtures.py), plus corrupt-file handling. */
#include <cjson/cJSON.h>
#include <zlib.h>

#include "saeflow/common.h"
#include "saeflow/parquet.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/data/"

static cJSON *load_json(const char *path) {
    char *s = sf_read_file(path, NULL);
    if (!s) {
        fprintf(stderr, "%s\n", sf_errmsg());
        exit(2);
    }
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j) exit(2);
    return j;
}

/* Compares one value against its JSON form. */
static int value_matches(const sf_pq_chunk *c, int64_t v, const cJSON *e) {
    switch (c->type) {
    case SF_PQ_BYTE_ARRAY:
        if (cJSON_IsString(e))
            return strlen(e->valuestring) == c->bytes[v].len &&
                   !memcmp(e->valuestring, c->bytes[v].ptr, c->bytes[v].len);
        if (cJSON_IsObject(e)) { /* binary: {len, crc32} */
            double len = cJSON_GetObjectItem(e, "len")->valuedouble;
            double crc = cJSON_GetObjectItem(e, "crc32")->valuedouble;
            uLong got = crc32(0, c->bytes[v].ptr, c->bytes[v].len);
            return len == c->bytes[v].len && crc == (double)got;
        }
        return 0;
    case SF_PQ_INT32:
        return cJSON_IsNumber(e) && e->valuedouble == c->i32[v];
    case SF_PQ_INT64:
        return cJSON_IsNumber(e) && e->valuedouble == (double)c->i64[v];
    case SF_PQ_DOUBLE:
        return cJSON_IsNumber(e) && e->valuedouble == c->f64[v];
    case SF_PQ_FLOAT:
        return cJSON_IsNumber(e) && e->valuedouble == (double)c->f32[v];
    case SF_PQ_BOOLEAN:
        return cJSON_IsBool(e) && (cJSON_IsTrue(e) ? 1 : 0) == c->b[v];
    default:
        return 0;
    }
}

/* Checks one slot: walks comps[from..] starting at `node` and level `lvl`. */
static int check_slot(const sf_pq_chunk *c, int64_t s, char **comps, int nc, int from,
                      const cJSON *node, int lvl) {
    for (int i = from; i < nc; i++) {
        node = cJSON_GetObjectItemCaseSensitive(node, comps[i]);
        if (!node || cJSON_IsNull(node)) return c->def && c->def[s] == lvl;
        lvl++;
    }
    if ((c->def ? c->def[s] : 0) != c->max_def) return 0;
    return c->vidx[s] >= 0 && value_matches(c, c->vidx[s], node);
}

/* Compares a whole chunk (rows [row0, row0 + n_rows) of the file) to JSON. */
static void check_chunk(const sf_pq_chunk *c, const char *path, const cJSON *rows, int64_t row0,
                        const char *file) {
    char buf[256], *comps[16];
    int nc = 0;
    snprintf(buf, sizeof buf, "%s", path);
    for (char *t = strtok(buf, "."); t && nc < 16; t = strtok(NULL, "."))
        comps[nc++] = t;
    int li = -1; /* index of the "list" component */
    for (int i = 0; i + 1 < nc; i++)
        if (!strcmp(comps[i], "list") &&
            (!strcmp(comps[i + 1], "element") || !strcmp(comps[i + 1], "item")))
            li = i;
    /* Fixture schemas: every node optional (def +1 each) except required leaves. */
    CHECK(c->max_def == 0 || c->max_def == nc);
    int bad = 0;
    for (int64_t r = 0; r < c->n_rows; r++) {
        const cJSON *row = cJSON_GetArrayItem(rows, (int)(row0 + r));
        int64_t s0 = c->row_start[r], s1 = c->row_start[r + 1];
        if (c->max_def == 0) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(row, comps[0]);
            bad += !(s1 - s0 == 1 && value_matches(c, c->vidx[s0], e));
            continue;
        }
        if (li < 0) {
            bad += !(s1 - s0 == 1 && check_slot(c, s0, comps, nc, 0, row, 0));
            continue;
        }
        /* List: navigate to the list node. */
        const cJSON *node = row;
        int lvl = 0, done = 0;
        for (int i = 0; i < li; i++) {
            node = cJSON_GetObjectItemCaseSensitive(node, comps[i]);
            if (!node || cJSON_IsNull(node)) {
                bad += !(s1 - s0 == 1 && c->def[s0] == lvl);
                done = 1;
                break;
            }
            lvl++;
        }
        if (done) continue;
        int n = cJSON_GetArraySize(node);
        if (n == 0) {
            bad += !(s1 - s0 == 1 && c->def[s0] == lvl && c->elem_def == lvl + 1);
            continue;
        }
        if (s1 - s0 != n) {
            bad++;
            continue;
        }
        for (int j = 0; j < n; j++) {
            const cJSON *el = cJSON_GetArrayItem(node, j);
            int64_t s = s0 + j;
            if (cJSON_IsNull(el)) {
                bad += c->def[s] != lvl + 1;
            } else if (li + 2 == nc) { /* list<primitive> */
                bad += !(c->def[s] == c->max_def && value_matches(c, c->vidx[s], el));
            } else {
                bad += !check_slot(c, s, comps, nc, li + 2, el, lvl + 2);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: column %s: %d rows differ from pyarrow", file, path, bad);
}

TEST(matches_pyarrow) {
    cJSON *exp = load_json(FIX "expected.json");
    int files = 0;
    cJSON *fe;
    cJSON_ArrayForEach(fe, exp) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", fe->string);
        sf_pq_file *f = sf_pq_open(path);
        CHECK_MSG(f, "%s", sf_errmsg());
        if (!f) continue;
        files++;
        const cJSON *rows = cJSON_GetObjectItem(fe, "rows");
        CHECK(sf_pq_num_rows(f) == cJSON_GetObjectItem(fe, "num_rows")->valueint);
        CHECK(sf_pq_num_row_groups(f) == cJSON_GetObjectItem(fe, "num_row_groups")->valueint);
        int64_t row0 = 0;
        for (int g = 0; g < sf_pq_num_row_groups(f); g++) {
            CHECK(sf_pq_row_group_rows(f, g) ==
                  cJSON_GetArrayItem(cJSON_GetObjectItem(fe, "row_group_rows"), g)->valueint);
            for (int col = 0; col < sf_pq_num_columns(f); col++) {
                sf_pq_chunk c;
                int rc = sf_pq_read_chunk(f, g, col, &c);
                CHECK_MSG(rc == 0, "%s", sf_errmsg());
                if (rc) continue;
                CHECK(c.n_rows == sf_pq_row_group_rows(f, g));
                check_chunk(&c, sf_pq_column_path(f, col), rows, row0, fe->string);
                sf_pq_chunk_free(&c);
            }
            row0 += sf_pq_row_group_rows(f, g);
        }
        sf_pq_close(f);
    }
    CHECK(files >= 10);
    cJSON_Delete(exp);
}

TEST(schema_and_caption) {
    sf_pq_file *f = sf_pq_open(FIX "recap_snappy_dict_v1.parquet");
    CHECK(f);
    if (!f) return;
    int cv = sf_pq_find_column(f, "conversations.list.element.value");
    CHECK(cv >= 0);
    CHECK(sf_pq_column_max_def(f, cv) == 4);
    CHECK(sf_pq_column_max_rep(f, cv) == 1);
    CHECK(sf_pq_column_elem_def(f, cv) == 2);
    CHECK(sf_pq_column_type(f, cv) == SF_PQ_BYTE_ARRAY);
    CHECK(sf_pq_find_column(f, "nope") == -1);
    CHECK_STR(sf_pq_chunk_codec(f, 0, cv), "SNAPPY");
    /* Row group 1 holds rows 7..13: row 7 empty list, 8 null last element,
     * 9 null value, 10 one element, 11 multi-line caption. */
    sf_pq_chunk c;
    CHECK(sf_pq_read_chunk(f, 1, cv, &c) == 0);
    sf_pq_bytes b;
    CHECK(sf_pq_chunk_row_bytes(&c, 0, 0, &b) == 0);
    CHECK(sf_pq_chunk_row_bytes(&c, 1, 0, &b) == 0);
    CHECK(sf_pq_chunk_row_bytes(&c, 1, 1, &b) == 1 && b.len == 17 &&
          !memcmp(b.ptr, "<image>\nDescribe.", 17));
    CHECK(sf_pq_chunk_row_bytes(&c, 2, 0, &b) == 0);
    CHECK(sf_pq_chunk_row_bytes(&c, 3, 1, &b) == 0);
    CHECK(sf_pq_chunk_row_bytes(&c, 4, 0, &b) == 1 && b.len == 29 &&
          !memcmp(b.ptr, "line one\nline two", 17));
    sf_pq_chunk_free(&c);
    char *txt = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&txt, &len);
    sf_pq_print_schema(f, m);
    fclose(m);
    CHECK(strstr(txt, "optional group image {"));
    CHECK(strstr(txt, "repeated group list {"));
    free(txt);
    sf_pq_close(f);
}

/* Reading a row range decodes a subset of pages with the same values. */
TEST(row_ranges) {
    const char *files[] = {FIX "recap_none_plain_v1.parquet",
                           FIX "recap_snappy_dictfallback_v2.parquet",
                           FIX "recap_zstd_plain_v2.parquet", FIX "types_none_dict_v2.parquet"};
    for (int fi = 0; fi < 4; fi++) {
        sf_pq_file *f = sf_pq_open(files[fi]);
        CHECK(f);
        if (!f) continue;
        int partial = 0;
        for (int g = 0; g < sf_pq_num_row_groups(f); g++)
            for (int col = 0; col < sf_pq_num_columns(f); col++) {
                sf_pq_chunk full, part;
                CHECK(sf_pq_read_chunk(f, g, col, &full) == 0);
                for (int64_t r = 0; r < full.n_rows; r++) {
                    CHECK(sf_pq_read_chunk_rows(f, g, col, r, r + 1, &part) == 0);
                    int64_t k = r - part.row0;
                    CHECK(k >= 0 && k < part.n_rows);
                    partial += part.n_rows < full.n_rows;
                    int64_t sf = full.row_start[r], sp = part.row_start[k];
                    CHECK(full.row_start[r + 1] - sf == part.row_start[k + 1] - sp);
                    for (int64_t j = 0; j < full.row_start[r + 1] - sf; j++) {
                        int64_t vf = full.vidx[sf + j], vp = part.vidx[sp + j];
                        CHECK((vf < 0) == (vp < 0));
                        if (vf < 0 || vp < 0) continue;
                        if (full.bytes)
                            CHECK(full.bytes[vf].len == part.bytes[vp].len &&
                                  !memcmp(full.bytes[vf].ptr, part.bytes[vp].ptr,
                                          full.bytes[vf].len));
                        if (full.i32) CHECK(full.i32[vf] == part.i32[vp]);
                        if (full.i64) CHECK(full.i64[vf] == part.i64[vp]);
                    }
                    sf_pq_chunk_free(&part);
                }
                sf_pq_chunk_free(&full);
            }
        CHECK_MSG(partial > 0, "%s: no partial read",
                  files[fi]); /* some reads really skipped pages */
        sf_pq_close(f);
    }
}

/* Features outside the scope: errors name file, row group, column, feature. */
TEST(unsupported) {
    static const char *cases[][2] = {
        {FIX "unsupported_delta.parquet",
         "unsupported_delta.parquet: row group 0: column 'id': page 0: value encoding "
         "DELTA_BINARY_PACKED not supported"},
        {FIX "unsupported_lz4.parquet", "unsupported_lz4.parquet: row group 0: column 'id': "
                                        "compression codec LZ4_RAW not supported"},
        {FIX "unsupported_int96.parquet",
         "unsupported_int96.parquet: row group 0: column 't': type INT96 not supported"},
        {FIX "unsupported_nested.parquet", "column 'll.list.element.list.element': nested repeated "
                                           "fields (max repetition level 2) not supported"},
    };
    for (int i = 0; i < 4; i++) {
        sf_pq_file *f = sf_pq_open(cases[i][0]);
        CHECK_MSG(f, "%s", sf_errmsg());
        if (!f) continue;
        sf_pq_chunk c;
        CHECK(sf_pq_read_chunk(f, 0, 0, &c) == -1);
        CHECK_ERR_HAS(cases[i][1]);
        sf_pq_close(f);
    }
}

/* Corruptions generated from a good file must give errors, never crashes. */
TEST(corrupt_files) {
    size_t len;
    char *good = sf_read_file(FIX "recap_gzip_dict_v2.parquet", &len);
    CHECK(good);
    if (!good) return;
    uint8_t *buf = sf_malloc(len);

    /* Bad magic at the start. */
    memcpy(buf, good, len);
    buf[0] = 'X';
    CHECK(sf_pq_open_mem(buf, len, "bad.parquet") == NULL);
    CHECK_ERR_HAS("bad.parquet: not a parquet file");

    /* Truncated: end magic missing. */
    CHECK(sf_pq_open_mem(good, len - 3, "trunc.parquet") == NULL);
    CHECK_ERR_HAS("trunc.parquet");
    CHECK(sf_pq_open_mem(good, 7, "tiny.parquet") == NULL);
    CHECK_ERR_HAS("too short");

    /* Footer length larger than the file. */
    memcpy(buf, good, len);
    buf[len - 5] = 0x7f;
    CHECK(sf_pq_open_mem(buf, len, "flen.parquet") == NULL);
    CHECK_ERR_HAS("footer length");

    /* Every truncation that keeps a valid tail: cut the middle out. */
    int opened = 0, failed = 0;
    for (size_t cut = 1; cut < len; cut += 97) {
        size_t n = len - cut;
        memcpy(buf, good, 4);
        memcpy(buf + 4, good + 4 + cut, n - 4);
        sf_pq_file *f = sf_pq_open_mem(buf, n, "cut.parquet");
        if (!f) {
            failed++;
            continue;
        }
        opened++;
        for (int g = 0; g < sf_pq_num_row_groups(f); g++)
            for (int col = 0; col < sf_pq_num_columns(f); col++) {
                sf_pq_chunk c;
                if (sf_pq_read_chunk(f, g, col, &c) == 0) sf_pq_chunk_free(&c);
            }
        sf_pq_close(f);
    }
    CHECK(failed + opened > 0);

    /* Byte flips in the footer and in the pages: errors are allowed, crashes not;
     * the error names the file. */
    uint32_t flen;
    memcpy(&flen, good + len - 8, 4);
    sf_rng rng;
    sf_rng_seed(&rng, 5);
    int errors = 0;
    for (int t = 0; t < 3000; t++) {
        memcpy(buf, good, len);
        size_t at = t % 2 ? len - 8 - flen + sf_rng_below(&rng, flen)
                          : 4 + sf_rng_below(&rng, len - 12 - flen);
        buf[at] ^= (uint8_t)(1 + sf_rng_below(&rng, 255));
        sf_pq_file *f = sf_pq_open_mem(buf, len, "flip.parquet");
        if (!f) {
            errors++;
            CHECK(strstr(sf_errmsg(), "flip.parquet") != NULL);
            continue;
        }
        for (int g = 0; g < sf_pq_num_row_groups(f); g++)
            for (int col = 0; col < sf_pq_num_columns(f); col++) {
                sf_pq_chunk c;
                if (sf_pq_read_chunk(f, g, col, &c) == 0)
                    sf_pq_chunk_free(&c);
                else if (!strstr(sf_errmsg(), "flip.parquet: row group"))
                    CHECK_MSG(0, "error lacks context: %s", sf_errmsg());
            }
        sf_pq_close(f);
    }
    CHECK(errors > 0);
    free(buf);
    free(good);

    CHECK(sf_pq_open(FIX "does-not-exist.parquet") == NULL);
    CHECK_ERR_HAS("cannot open");
}

int main(void) {
    RUN(matches_pyarrow);
    RUN(schema_and_caption);
    RUN(row_ranges);
    RUN(unsupported);
    RUN(corrupt_files);
    return test_summary();
}
