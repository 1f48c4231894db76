/* The CLIP tokenizer against transformers' CLIPTokenizerFast (tokenizers
 * 0.23) with the real CLIP vocabulary: ids and attention masks of a caption
 * set with Unicode (accents, NFC/NFD, CJK, Cyrillic, Greek, Turkish I,
 * combining marks, emoji, fullwidth), punctuation, numbers, contractions,
 * whitespace runs, special-token strings, empty text and long text. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/clip_bpe.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/clip-inputs"

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

static sf_tokenizer *tok;

static void check_captions(sf_tokenizer *t, const char *fixture) {
    cJSON *j = load_json(fixture);
    int ctx = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "context_length"));
    const cJSON *c;
    int n = 0, bad = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "captions")) {
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids");
        const cJSON *wmask = cJSON_GetObjectItemCaseSensitive(c, "mask");
        int32_t ids[512], mask[512];
        int used = sf_tokenizer_encode(t, text, ctx, ids, mask);
        CHECK_MSG(used >= 2, "%s", sf_errmsg());
        int ok = 1, nmask = 0;
        for (int i = 0; i < ctx; i++) {
            if (ids[i] != (int32_t)cJSON_GetArrayItem(want, i)->valuedouble) ok = 0;
            if (mask[i] != (int32_t)cJSON_GetArrayItem(wmask, i)->valuedouble) ok = 0;
            nmask += mask[i];
        }
        CHECK(nmask == used);
        /* the untruncated ids too */
        const cJSON *raw = cJSON_GetObjectItemCaseSensitive(c, "raw_ids");
        int nraw = cJSON_GetArraySize(raw);
        int32_t *r = sf_malloc((size_t)(nraw + 8) * sizeof(int32_t));
        int got = sf_tokenizer_encode_raw(t, text, r, nraw + 8);
        if (got != nraw) ok = 0;
        for (int i = 0; ok && i < nraw; i++)
            if (r[i] != (int32_t)cJSON_GetArrayItem(raw, i)->valuedouble) ok = 0;
        free(r);
        if (!ok) {
            bad++;
            fprintf(stderr, "mismatch for \"%.60s\"\n  got ", text);
            for (int i = 0; i < 20 && i < used; i++)
                fprintf(stderr, "%d ", ids[i]);
            fprintf(stderr, "\n want ");
            for (int i = 0; i < 20; i++)
                fprintf(stderr, "%d ", (int)cJSON_GetArrayItem(want, i)->valuedouble);
            fprintf(stderr, "\n");
        }
        n++;
    }
    CHECK_MSG(bad == 0, "%d of %d captions differ", bad, n);
    CHECK(n >= 10);
    cJSON_Delete(j);
}

TEST(captions_match_fast_tokenizer) {
    check_captions(tok, FIX "/captions.json");
}

/* Strings of a fixture's "random" list (raw ids, no specials/padding). */
static void check_random(const char *fixture, int min_n) {
    cJSON *j = load_json(fixture);
    const cJSON *c;
    int n = 0, bad = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "random")) {
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
        const cJSON *raw = cJSON_GetObjectItemCaseSensitive(c, "raw_ids");
        int nraw = cJSON_GetArraySize(raw);
        int32_t r[1024];
        int got = sf_tokenizer_encode_raw(tok, text, r, 1024);
        int ok = got == nraw;
        for (int i = 0; ok && i < nraw; i++)
            if (r[i] != (int32_t)cJSON_GetArrayItem(raw, i)->valuedouble) ok = 0;
        if (!ok && bad++ < 5) {
            fprintf(stderr, "mismatch for \"%s\" (", text);
            for (const unsigned char *p = (const unsigned char *)text; *p; p++)
                fprintf(stderr, "%02x", *p);
            fprintf(stderr, ")\n  got ");
            for (int i = 0; i < got && i < 30; i++)
                fprintf(stderr, "%d ", r[i]);
            fprintf(stderr, "\n want ");
            for (int i = 0; i < nraw && i < 30; i++)
                fprintf(stderr, "%d ", (int)cJSON_GetArrayItem(raw, i)->valuedouble);
            fprintf(stderr, "\n");
        }
        n++;
    }
    CHECK_MSG(bad == 0, "%d of %d random strings differ", bad, n);
    CHECK(n >= min_n);
    cJSON_Delete(j);
}

/* Random strings over many scripts. */
TEST(random_strings_match_fast_tokenizer) {
    check_random(FIX "/captions.json", 100);
}

/* Every general category in every Unicode version band (sampled), marks,
 * case pairs, compositions, and issue 17's captions (Unicode 15-16 letters
 * and digits, Unicode 10+ marks): tools/make_unicode_fixtures.py. */
TEST(unicode_classes_match_fast_tokenizer) {
    check_captions(tok, FIX "/unicode.json");
    check_random(FIX "/unicode.json", 4000);
}

/* tokenizer.json path: a small real tokenizers file (truncated vocabulary). */
TEST(tokenizer_json) {
    sf_tokenizer *t = sf_tokenizer_load_dir(FIX "/small-tokenizer");
    CHECK_MSG(t != NULL, "%s", sf_errmsg());
    if (!t) return;
    check_captions(t, FIX "/small-tokenizer/captions.json");
    sf_tokenizer_free(t);
}

TEST(basics) {
    CHECK(sf_tokenizer_bos(tok) == SF_CLIP_BOS && sf_tokenizer_eos(tok) == SF_CLIP_EOS);
    CHECK(sf_tokenizer_pad(tok) == SF_CLIP_EOS);
    CHECK(sf_tokenizer_vocab_size(tok) == 49408);
    CHECK_STR(sf_tokenizer_token(tok, 320), "a</w>");
    CHECK(sf_tokenizer_token(tok, 49408) == NULL);
    int32_t ids[77], mask[77];
    CHECK(sf_tokenizer_encode(tok, "a photo of a cat", 77, ids, mask) == 7);
    CHECK(ids[0] == 49406 && ids[1] == 320 && ids[5] == 2368 && ids[6] == 49407 &&
          ids[76] == 49407);
    CHECK(mask[6] == 1 && mask[7] == 0);
    /* short contexts: BOS + EOS only, then one token */
    CHECK(sf_tokenizer_encode(tok, "a photo", 2, ids, NULL) == 2 && ids[1] == 49407);
    CHECK(sf_tokenizer_encode(tok, "a photo", 3, ids, NULL) == 3 && ids[1] == 320 &&
          ids[2] == 49407);
    CHECK(sf_tokenizer_encode(tok, "x", 1, ids, NULL) == -1);
    /* invalid UTF-8 is an error, not garbage */
    CHECK(sf_tokenizer_encode(tok, "bad \xC3\x28 utf8", 77, ids, mask) == -1);
    CHECK_ERR_HAS("invalid UTF-8");
    CHECK(sf_tokenizer_encode(tok, "\xED\xA0\x80 surrogate", 77, ids, mask) == -1);
    /* cached and uncached paths agree: encode twice */
    int32_t a[77], b[77], one[77];
    int k = sf_tokenizer_encode(tok, "repetitiveness", 77, one, NULL) - 2;
    CHECK(sf_tokenizer_encode(tok, "repetitiveness repetitiveness repetitiveness", 77, a, NULL) ==
          3 * k + 2);
    sf_tokenizer_encode(tok, "repetitiveness repetitiveness repetitiveness", 77, b, NULL);
    CHECK(!memcmp(a, b, sizeof a));
    for (int r = 0; r < 3; r++)
        CHECK(!memcmp(a + 1 + r * k, one + 1, (size_t)k * sizeof(int32_t)));
}

TEST(load_errors) {
    CHECK(sf_tokenizer_load(FIX "/missing.json", FIX "/merges.txt") == NULL);
    CHECK_ERR_HAS("missing.json");
    const char *dir = test_tmpdir("tok_err");
    char v[4200], m[4200];
    snprintf(v, sizeof v, "%s/vocab.json", dir);
    snprintf(m, sizeof m, "%s/merges.txt", dir);
    const char *vj =
        "{\"a\": 0, \"b\": 1, \"ab</w>\": 2, \"<|startoftext|>\": 3, \"<|endoftext|>\": 4}";
    CHECK(sf_write_file_atomic(v, vj, strlen(vj)) == 0);
    const char *mt = "#version: 0.2\na b</w>\n";
    CHECK(sf_write_file_atomic(m, mt, strlen(mt)) == 0);
    CHECK(sf_tokenizer_load(v, m) == NULL);
    CHECK_ERR_HAS("merges.txt: merge 2 ('a' 'b</w>')");
    const char *mt2 = "#version: 0.2\na b c\n";
    CHECK(sf_write_file_atomic(m, mt2, strlen(mt2)) == 0);
    CHECK(sf_tokenizer_load(v, m) == NULL);
    CHECK_ERR_HAS("line 2");
    const char *vj2 = "{\"a\": 0}";
    CHECK(sf_write_file_atomic(v, vj2, strlen(vj2)) == 0);
    CHECK(sf_tokenizer_load(v, m) == NULL);
    CHECK_ERR_HAS("BOS token");
    CHECK(sf_tokenizer_load_dir(SF_SOURCE_DIR "/include") == NULL);
    CHECK_ERR_HAS("no tokenizer.json");
}

/* A long single word and a long text: BPE stays fast (heap, no O(n^2)). */
TEST(long_inputs) {
    size_t n = 200000;
    char *s = sf_malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        s[i] = "abcdefghij"[i * 7 % 10];
    s[n] = 0;
    int32_t ids[77];
    double t0 = sf_now();
    CHECK(sf_tokenizer_encode(tok, s, 77, ids, NULL) == 77);
    for (size_t i = 5; i < n; i += 6)
        s[i] = ' ';
    CHECK(sf_tokenizer_encode(tok, s, 77, ids, NULL) == 77);
    double dt = sf_now() - t0;
    CHECK_MSG(dt < 5.0, "%.2f s", dt);
    free(s);
}

int main(void) {
    tok = sf_tokenizer_load(FIX "/vocab.json", FIX "/merges.txt");
    if (!tok) {
        fprintf(stderr, "load: %s\n", sf_errmsg());
        return 1;
    }
    RUN(basics);
    RUN(captions_match_fast_tokenizer);
    RUN(random_strings_match_fast_tokenizer);
    RUN(unicode_classes_match_fast_tokenizer);
    RUN(tokenizer_json);
    RUN(load_errors);
    RUN(long_inputs);
    sf_tokenizer_free(tok);
    return test_summary();
}
