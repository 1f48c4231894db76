/* The T5 Unigram tokenizer against Hugging Face tokenizers 0.23 (and
 * transformers 5's T5Tokenizer) on a real Unigram model (sentencepiece's
 * botchan test model with T5's special ids and the real nmt_nfkc charsmap),
 * fixtures/t5 from tools/make_t5_fixtures.py: ids exact, padded/truncated and
 * raw, on ~350 strings (whitespace runs, CR/LF/tabs, NBSP, combining marks,
 * grapheme clusters, emoji ZWJ/VS, CJK, fullwidth forms, unknown characters,
 * <extra_id_N> and </s> inline, empty and long text), in both tokenizer.json
 * layouts: the 2024 one FLUX's reference used and transformers 5's. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/t5_tokenizer.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/t5"

static cJSON *load_json(const char *path) {
    size_t len;
    char *t = sf_read_file(path, &len);
    if (!t) {
        fprintf(stderr, "%s\n", sf_errmsg());
        exit(2);
    }
    cJSON *j = cJSON_ParseWithLength(t, len);
    free(t);
    if (!j) exit(2);
    return j;
}

static int same_ids(const int32_t *got, int n, const cJSON *want) {
    if (cJSON_GetArraySize(want) != n) return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != (int32_t)cJSON_GetArrayItem(want, i)->valuedouble) return 0;
    return 1;
}

static void print_ids(const char *what, const int32_t *v, int n) {
    fprintf(stderr, "  %s:", what);
    for (int i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", v[i]);
    fprintf(stderr, "\n");
}

/* layout 0: tokenizer.json (ids, mask, raw_ids); 1: tokenizer_tf5.json */
static void check_cases(const char *tok_json, int tf5) {
    sf_t5_tokenizer *t = sf_t5_tokenizer_load(tok_json);
    CHECK_MSG(t != NULL, "%s", sf_errmsg());
    if (!t) return;
    CHECK(sf_t5_tokenizer_eos(t) == 1 && sf_t5_tokenizer_pad(t) == 0 &&
          sf_t5_tokenizer_unk(t) == 2);
    CHECK(sf_t5_tokenizer_vocab_size(t) == 1100);
    CHECK_STR(sf_t5_tokenizer_token(t, 1099), "<extra_id_0>");
    cJSON *j = load_json(FIX "/tokenizer_cases.json");
    int L = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "max_length"));
    const cJSON *c;
    int n = 0, bad = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "cases")) {
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, tf5 ? "ids_tf5" : "ids");
        const cJSON *raw = cJSON_GetObjectItemCaseSensitive(c, tf5 ? "raw_ids_tf5" : "raw_ids");
        int32_t ids[64], mask[64];
        int used = sf_t5_tokenizer_encode(t, text, L, ids, mask);
        int ok = used >= 1 && same_ids(ids, L, want);
        if (!tf5) {
            const cJSON *wm = cJSON_GetObjectItemCaseSensitive(c, "mask");
            ok = ok && same_ids(mask, L, wm);
        }
        if (!tf5) { /* the normalizer alone, against tokenizers' normalize_str */
            size_t nl;
            char *norm = sf_t5_tokenizer_normalize(t, text, &nl);
            const char *wn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "norm"));
            if (!norm || !wn || strcmp(norm, wn)) {
                ok = 0;
                fprintf(stderr, "normalizer: \"%s\" -> \"%s\", want \"%s\"\n", text,
                        norm ? norm : "(null)", wn ? wn : "(null)");
            }
            free(norm);
        }
        int nraw = cJSON_GetArraySize(raw);
        int32_t *r = sf_malloc((size_t)(nraw + 8) * sizeof(int32_t));
        int got = sf_t5_tokenizer_encode_raw(t, text, r, nraw + 8);
        ok = ok && got == nraw && same_ids(r, nraw, raw);
        if (!ok) {
            if (bad++ < 10) {
                fprintf(stderr, "mismatch (%s) on \"%s\"\n", tf5 ? "tf5" : "2024", text);
                print_ids("got raw", r, got < nraw + 8 ? got : nraw + 8);
                int32_t w[512];
                for (int i = 0; i < nraw && i < 512; i++)
                    w[i] = (int32_t)cJSON_GetArrayItem(raw, i)->valuedouble;
                print_ids("want raw", w, nraw);
            }
        }
        free(r);
        n++;
    }
    CHECK_MSG(bad == 0, "%d of %d strings differ", bad, n);
    CHECK(n > 300);
    cJSON_Delete(j);
    sf_t5_tokenizer_free(t);
}

TEST(ids_2024_layout) {
    check_cases(FIX "/tokenizer.json", 0);
}

TEST(ids_transformers5_layout) {
    check_cases(FIX "/tokenizer_tf5.json", 1);
}

TEST(errors) {
    sf_t5_tokenizer *t = sf_t5_tokenizer_load(FIX "/tokenizer.json");
    CHECK(t != NULL);
    if (!t) return;
    int32_t ids[4];
    CHECK(sf_t5_tokenizer_encode(t, "ok", 0, ids, NULL) == -1);
    CHECK(sf_t5_tokenizer_encode(t, "bad \xff utf8", 4, ids, NULL) == -1);
    CHECK_ERR_HAS("UTF-8");
    /* max_length 1: only </s> */
    CHECK(sf_t5_tokenizer_encode(t, "hello", 1, ids, NULL) == 1 && ids[0] == 1);
    size_t len;
    char *s = sf_t5_tokenizer_normalize(t, "a\r\nb\n\rc  d ", &len);
    CHECK_STR(s, "a b\xe2\x96\x81"
                 "c\xe2\x96\x81"
                 "d"); /* CRLF: one space; LFCR: two, -> ▁ */
    free(s);
    sf_t5_tokenizer_free(t);
    CHECK(sf_t5_tokenizer_load(FIX "/missing.json") == NULL);
}

/* Hand-made tokenizer.json files: a garbage charsmap trie must give lookups
 * that stay inside the arrays (ASan build), bad fields must be errors. */
static sf_t5_tokenizer *load_text(const char *json) {
    const char *path = SF_BINARY_DIR "/t5tok_tmp.json";
    FILE *f = fopen(path, "wb");
    fputs(json, f);
    fclose(f);
    return sf_t5_tokenizer_load(path);
}

#define VOCAB                                                                                      \
    "\"model\": {\"type\": \"Unigram\", \"unk_id\": 2, \"vocab\": [[\"<pad>\", 0], "               \
    "[\"</s>\", 0], [\"<unk>\", 0], [\"\\u2581\", -2], [\"a\", -3], [\"\\u2581a\", -2.5]]}"

TEST(hand_made_files) {
    /* trie of 3 units (12 bytes) with junk offsets, then "x\0": base64 */
    const char *junk = "DAAAAP////8AAQAAEjRWeHgA";
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"%s\"}, "
             "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\"}, " VOCAB
             "}",
             junk);
    sf_t5_tokenizer *t = load_text(buf);
    CHECK_MSG(t != NULL, "%s", sf_errmsg());
    if (t) {
        int32_t ids[8];
        int n = sf_t5_tokenizer_encode_raw(t, "a a\t\xc3\xa9 \xe2\x80\x8b", ids, 8);
        CHECK(n > 0);
        CHECK(ids[0] == 5); /* "▁a" */
        sf_t5_tokenizer_free(t);
    }
    snprintf(
        buf, sizeof buf,
        "{\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"AAAA\"}, " VOCAB
        "}");
    CHECK(load_text(buf) == NULL);
    CHECK_ERR_HAS("trie size");
    snprintf(buf, sizeof buf, "{\"normalizer\": {\"type\": \"NFKC\"}, " VOCAB "}");
    CHECK(load_text(buf) == NULL);
    CHECK_ERR_HAS("not supported");
    snprintf(buf, sizeof buf,
             "{\"added_tokens\": [{\"id\": 1, \"content\": \"</s>\", \"lstrip\": true, "
             "\"special\": true}], " VOCAB "}");
    CHECK(load_text(buf) == NULL);
    CHECK_ERR_HAS("lstrip");
    /* no post-processor: no </s>; max_length 0 is then fine for nothing */
    snprintf(buf, sizeof buf, "{" VOCAB "}");
    t = load_text(buf);
    CHECK(t != NULL);
    if (t) {
        int32_t ids[4];
        CHECK(sf_t5_tokenizer_encode(t, "a", 4, ids, NULL) == 1 && ids[0] == 4 && ids[1] == 0);
        sf_t5_tokenizer_free(t);
    }
}

int main(void) {
    RUN(ids_2024_layout);
    RUN(ids_transformers5_layout);
    RUN(errors);
    RUN(hand_made_files);
    return test_summary();
}
