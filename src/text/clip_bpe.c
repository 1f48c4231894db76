/* The CLIP BPE tokenizer, as transformers' CLIPTokenizerFast (HF tokenizers)
 * runs it. Pipeline and the facts behind each step (docs/inputs.md):
 *
 *  1. added tokens: "<|startoftext|>" / "<|endoftext|>" (and any other
 *     added token: tokenizer.json's added_tokens, a configured pad token)
 *     are found in the RAW text (case-sensitive; normalized=false in CLIP's
 *     tokenizer) and become their ids; the text between them goes through
 *     2-5 separately.
 *  2. normalizer: NFC, then every run of White_Space (\s in Oniguruma: 9-D,
 *     20, 85, A0, 1680, 2000-200A, 2028, 2029, 202F, 205F, 3000) -> " ",
 *     then Lowercase = Rust char::to_lowercase per code point (full case
 *     mapping: U+0130 becomes "i" + U+0307; no final-sigma rule).
 *  3. pre-tokenizer: keep the matches of the CLIP regex (PCRE2, UTF + UCP),
 *     drop the rest (only spaces remain to drop after step 2).
 *  4. ByteLevel: bytes -> GPT-2 bytes_to_unicode characters, after its own
 *     GPT-2 regex re-split, which changes only the pieces "<|startoftext|>"
 *     and "<|endoftext|>" (from upper-case text): "<|", word, "|>".
 *  5. BPE: symbols = characters, "</w>" appended to the last one; repeatedly
 *     merge the adjacent pair with the lowest merge rank (leftmost first).
 *  6. post-processor: BOS + ids + EOS, truncated to fit, padded.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <utf8proc.h>

#include "saeflow/buf.h"
#include "saeflow/clip_bpe.h"

/* ---- string -> int hash map (open addressing, power-of-two capacity) ---- */

typedef struct {
    char **keys; /* owned, NUL-terminated; NULL = empty slot */
    int32_t *vals;
    size_t cap, n;
} strmap;

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001B3ull;
    return h ^ (h >> 29);
}

static void strmap_init(strmap *m, size_t cap) {
    m->cap = 16;
    while (m->cap < cap * 2)
        m->cap <<= 1;
    m->keys = sf_calloc(m->cap, sizeof(char *));
    m->vals = sf_calloc(m->cap, sizeof(int32_t));
    m->n = 0;
}

static void strmap_free(strmap *m) {
    if (!m->keys) return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t strmap_slot(const strmap *m, const char *k, size_t len) {
    size_t i = hash_bytes(k, len) & (m->cap - 1);
    while (m->keys[i] && !(strlen(m->keys[i]) == len && !memcmp(m->keys[i], k, len)))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int strmap_get(const strmap *m, const char *k, size_t len, int32_t *v) {
    size_t i = strmap_slot(m, k, len);
    if (!m->keys[i]) return 0;
    *v = m->vals[i];
    return 1;
}

static void strmap_put(strmap *m, const char *k, size_t len, int32_t v) {
    if ((m->n + 1) * 2 > m->cap) { /* grow */
        strmap old = *m;
        strmap_init(m, old.cap);
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i]) {
                size_t j = strmap_slot(m, old.keys[i], strlen(old.keys[i]));
                m->keys[j] = old.keys[i];
                m->vals[j] = old.vals[i];
                m->n++;
            }
        free(old.keys);
        free(old.vals);
    }
    size_t i = strmap_slot(m, k, len);
    if (!m->keys[i]) {
        char *c = sf_malloc(len + 1);
        memcpy(c, k, len);
        c[len] = 0;
        m->keys[i] = c;
        m->n++;
    }
    m->vals[i] = v;
}

/* ---- merge table: (left id, right id) -> (rank, merged id) ---- */

typedef struct {
    uint64_t key; /* (left + 1) << 32 | (right + 1); 0 = empty */
    int32_t rank, id;
} merge_slot;

typedef struct {
    merge_slot *slots;
    size_t cap;
} mergemap;

static uint64_t merge_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
}

static size_t merge_find(const mergemap *m, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

/* ---- the word cache (BPE result per byte-level piece) ---- */

typedef struct {
    strmap index; /* piece -> offset into ids */
    int32_t *ids; /* [len, id, id, ...] records */
    size_t n_ids, cap_ids;
} word_cache;

#define CACHE_MAX_WORDS 100000 /* then it is cleared: memory stays bounded */

struct sf_tokenizer {
    strmap vocab;     /* token string -> id */
    char **id_to_tok; /* id -> token string (NULL for holes) */
    int n_ids;        /* max id + 1 */
    mergemap merges;
    int32_t byte_id[256];     /* id of the byte-level char of each byte */
    int32_t byte_id_eow[256]; /* same with "</w>" */
    char byte_char[256][3];   /* bytes_to_unicode: UTF-8 of each byte's char */
    int bos, eos, pad, unk;
    char *bos_str, *eos_str;
    /* added tokens, matched in the raw text before normalisation (leftmost,
     * longest): the specials, and a pad token named in a config file */
    struct {
        char *s;
        size_t len;
        int id;
    } added[64];
    int n_added;
    uint8_t added_first[256]; /* first bytes of added tokens, for a quick skip */
    pcre2_code *re;
    word_cache cache;
    pthread_mutex_t lock;
};

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 to U+0100 + n in byte order. */
static void init_bytes_to_unicode(sf_tokenizer *t) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable =
            (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : 256 + n++;
        utf8proc_uint8_t buf[4];
        utf8proc_ssize_t k = utf8proc_encode_char(cp, buf);
        memset(t->byte_char[b], 0, 3);
        memcpy(t->byte_char[b], buf, (size_t)k);
    }
}

/* The CLIP split pattern (transformers CLIPConverter / convert_slow_tokenizer):
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * with \s spelled out as Oniguruma's (= Unicode White_Space): PCRE2's UCP \s
 * also matches U+180E (MONGOLIAN VOWEL SEPARATOR, in its legacy \h list),
 * which HF keeps as a character -- found by the random-string test. */
#define WS_CLASS                                                                                   \
    "\\t\\n\\x{0b}\\f\\r "                                                                         \
    "\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
static const char CLIP_PATTERN[] =
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
    "[^" WS_CLASS "\\p{L}\\p{N}]+";

static sf_tokenizer *tok_new(void) {
    sf_tokenizer *t = sf_calloc(1, sizeof *t);
    strmap_init(&t->vocab, 65536);
    strmap_init(&t->cache.index, 1024);
    pthread_mutex_init(&t->lock, NULL);
    init_bytes_to_unicode(t);
    t->bos = t->eos = t->pad = t->unk = -1;
    int err;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)CLIP_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &err, &off, NULL);
    if (t->re) pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional speed-up */
    return t;
}

void sf_tokenizer_free(sf_tokenizer *t) {
    if (!t) return;
    strmap_free(&t->vocab);
    strmap_free(&t->cache.index);
    free(t->cache.ids);
    if (t->id_to_tok) free(t->id_to_tok); /* strings are owned by vocab */
    free(t->merges.slots);
    free(t->bos_str);
    free(t->eos_str);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].s);
    if (t->re) pcre2_code_free(t->re);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static int add_token(sf_tokenizer *t, const char *s, size_t len, int id, const char *src) {
    if (id < 0 || id > 10000000) return sf_error("%s: token id %d out of range", src, id);
    strmap_put(&t->vocab, s, len, id);
    if (id >= t->n_ids) t->n_ids = id + 1;
    return 0;
}

static int add_added(sf_tokenizer *t, const char *s, int id, const char *src) {
    size_t len = strlen(s);
    if (!len) return 0;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && !memcmp(t->added[i].s, s, len)) return 0;
    if (t->n_added == (int)(sizeof t->added / sizeof t->added[0]))
        return sf_error("%s: more than %d added tokens are not supported", src, t->n_added);
    t->added[t->n_added].s = sf_strdup(s);
    t->added[t->n_added].len = len;
    t->added[t->n_added].id = id;
    t->n_added++;
    t->added_first[(unsigned char)s[0]] = 1;
    return 0;
}

/* After the vocabulary is in: id -> string table, byte ids, specials. */
static int finish_vocab(sf_tokenizer *t, const char *src) {
    t->id_to_tok = sf_calloc((size_t)t->n_ids, sizeof(char *));
    for (size_t i = 0; i < t->vocab.cap; i++)
        if (t->vocab.keys[i]) t->id_to_tok[t->vocab.vals[i]] = t->vocab.keys[i];
    for (int b = 0; b < 256; b++) {
        char buf[16];
        size_t l = strlen(t->byte_char[b]);
        memcpy(buf, t->byte_char[b], l);
        int32_t id;
        t->byte_id[b] = strmap_get(&t->vocab, buf, l, &id) ? id : -1;
        memcpy(buf + l, "</w>", 4);
        t->byte_id_eow[b] = strmap_get(&t->vocab, buf, l + 4, &id) ? id : -1;
    }
    if (!t->bos_str) t->bos_str = sf_strdup("<|startoftext|>");
    if (!t->eos_str) t->eos_str = sf_strdup("<|endoftext|>");
    int32_t id;
    if (!strmap_get(&t->vocab, t->bos_str, strlen(t->bos_str), &id))
        return sf_error("%s: BOS token '%s' is not in the vocabulary", src, t->bos_str);
    t->bos = id;
    if (!strmap_get(&t->vocab, t->eos_str, strlen(t->eos_str), &id))
        return sf_error("%s: EOS token '%s' is not in the vocabulary", src, t->eos_str);
    t->eos = id;
    if (add_added(t, t->bos_str, t->bos, src) || add_added(t, t->eos_str, t->eos, src)) return -1;
    if (t->pad < 0) t->pad = t->eos; /* CLIP pads with <|endoftext|> */
    if (t->unk < 0) t->unk = t->eos; /* CLIP's unk_token is <|endoftext|> too */
    if (!t->re) return sf_error("%s: cannot compile the CLIP split pattern", src);
    return 0;
}

/* One merge "a b" (a and b are token strings). */
static int add_merge(sf_tokenizer *t, const char *a, size_t la, const char *b, size_t lb, int rank,
                     const char *src, size_t line) {
    int32_t ia, ib, im;
    char *cat = sf_malloc(la + lb + 1);
    memcpy(cat, a, la);
    memcpy(cat + la, b, lb);
    cat[la + lb] = 0;
    int ok = strmap_get(&t->vocab, a, la, &ia) && strmap_get(&t->vocab, b, lb, &ib) &&
             strmap_get(&t->vocab, cat, la + lb, &im);
    if (!ok) {
        sf_error("%s: merge %zu ('%.*s' '%.*s'): token not in the vocabulary", src, line, (int)la,
                 a, (int)lb, b);
        free(cat);
        return -1;
    }
    free(cat);
    size_t i = merge_find(&t->merges, merge_key(ia, ib));
    if (!t->merges.slots[i].key) { /* the first (lowest-rank) occurrence wins */
        t->merges.slots[i].key = merge_key(ia, ib);
        t->merges.slots[i].rank = rank;
        t->merges.slots[i].id = im;
    }
    return 0;
}

static void merges_alloc(sf_tokenizer *t, size_t n) {
    t->merges.cap = 16;
    while (t->merges.cap < n * 2 + 16)
        t->merges.cap <<= 1;
    t->merges.slots = sf_calloc(t->merges.cap, sizeof(merge_slot));
}

static int load_vocab_json(sf_tokenizer *t, const cJSON *obj, const char *src) {
    if (!cJSON_IsObject(obj)) return sf_error("%s: vocabulary is not a JSON object", src);
    for (const cJSON *e = obj->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble != (int)e->valuedouble)
            return sf_error("%s: vocabulary entry '%s' is not an integer id", src, e->string);
        if (add_token(t, e->string, strlen(e->string), (int)e->valuedouble, src)) return -1;
    }
    if (t->vocab.n == 0) return sf_error("%s: empty vocabulary", src);
    return 0;
}

sf_tokenizer *sf_tokenizer_load(const char *vocab_json, const char *merges_txt) {
    sf_tokenizer *t = tok_new();
    size_t len;
    char *txt = sf_read_file(vocab_json, &len);
    if (!txt) goto fail;
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!j) {
        sf_error("%s: not valid JSON", vocab_json);
        goto fail;
    }
    int rc = load_vocab_json(t, j, vocab_json);
    cJSON_Delete(j);
    if (rc) goto fail;
    if (finish_vocab(t, vocab_json)) goto fail;
    txt = sf_read_file(merges_txt, &len);
    if (!txt) goto fail;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += txt[i] == '\n';
    merges_alloc(t, lines);
    int rank = 0;
    size_t lineno = 0;
    for (char *p = txt, *end = txt + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        size_t ll = (size_t)(le - p);
        if (ll && p[ll - 1] == '\r') ll--;
        /* "#version: 0.2" header; blank lines are skipped like HF does */
        if (ll && !(lineno == 1 && p[0] == '#')) {
            char *sp = memchr(p, ' ', ll);
            if (!sp || memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - p))) {
                sf_error("%s: line %zu: expected two tokens separated by one space", merges_txt,
                         lineno);
                free(txt);
                goto fail;
            }
            if (add_merge(t, p, (size_t)(sp - p), sp + 1, ll - (size_t)(sp + 1 - p), rank++,
                          merges_txt, lineno)) {
                free(txt);
                goto fail;
            }
        }
        p = nl ? nl + 1 : end;
    }
    free(txt);
    return t;
fail:
    sf_tokenizer_free(t);
    return NULL;
}

static char *special_str(const cJSON *v) {
    if (cJSON_IsString(v)) return sf_strdup(v->valuestring);
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return sf_strdup(c->valuestring);
    }
    return NULL;
}

sf_tokenizer *sf_tokenizer_load_json(const char *path) {
    sf_tokenizer *t = tok_new();
    size_t len;
    cJSON *j = NULL;
    char *txt = sf_read_file(path, &len);
    if (!txt) goto fail;
    j = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!j) {
        sf_error("%s: not valid JSON", path);
        goto fail;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "type"));
    const char *eow =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix"));
    if (!type || strcmp(type, "BPE")) {
        sf_error("%s: model.type is '%s', expected 'BPE'", path, type ? type : "(missing)");
        goto fail;
    }
    if (!eow || strcmp(eow, "</w>")) {
        sf_error("%s: model.end_of_word_suffix is '%s', expected '</w>' (not a CLIP tokenizer)",
                 path, eow ? eow : "(missing)");
        goto fail;
    }
    if (load_vocab_json(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), path)) goto fail;
    /* added tokens (the specials) may be outside model.vocab */
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "added_tokens")) {
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "content"));
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (c && cJSON_IsNumber(id) &&
            (add_token(t, c, strlen(c), (int)id->valuedouble, path) ||
             add_added(t, c, (int)id->valuedouble, path)))
            goto fail;
    }
    /* the post-processor names the BOS (cls) and EOS (sep) tokens */
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(j, "post_processor");
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(pp, "cls"),
                *sep = cJSON_GetObjectItemCaseSensitive(pp, "sep");
    if (cJSON_IsArray(cls) && cJSON_IsString(cJSON_GetArrayItem(cls, 0)))
        t->bos_str = sf_strdup(cJSON_GetArrayItem(cls, 0)->valuestring);
    if (cJSON_IsArray(sep) && cJSON_IsString(cJSON_GetArrayItem(sep, 0)))
        t->eos_str = sf_strdup(cJSON_GetArrayItem(sep, 0)->valuestring);
    const char *unk = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "unk_token"));
    int32_t uid;
    if (unk && strmap_get(&t->vocab, unk, strlen(unk), &uid)) t->unk = uid;
    if (finish_vocab(t, path)) goto fail;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) {
        sf_error("%s: model.merges is not a list", path);
        goto fail;
    }
    merges_alloc(t, (size_t)cJSON_GetArraySize(merges));
    int rank = 0;
    cJSON_ArrayForEach(e, merges) {
        /* "a b" (older files) or ["a", "b"] (tokenizers >= 0.20) */
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                sf_error("%s: merge %d '%s' is not two tokens", path, rank, s);
                goto fail;
            }
            if (add_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank, path, (size_t)rank))
                goto fail;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            const char *a = cJSON_GetArrayItem(e, 0)->valuestring,
                       *b = cJSON_GetArrayItem(e, 1)->valuestring;
            if (add_merge(t, a, strlen(a), b, strlen(b), rank, path, (size_t)rank)) goto fail;
        } else {
            sf_error("%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
            goto fail;
        }
        rank++;
    }
    cJSON_Delete(j);
    return t;
fail:
    cJSON_Delete(j);
    sf_tokenizer_free(t);
    return NULL;
}

static int file_exists(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* pad/bos/eos overrides from tokenizer_config.json or special_tokens_map.json */
static int read_special_overrides(sf_tokenizer *t, const char *dir) {
    const char *names[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (int k = 0; k < 2; k++) {
        char *p = sf_path_join(dir, names[k]);
        if (!file_exists(p)) {
            free(p);
            continue;
        }
        size_t len;
        char *txt = sf_read_file(p, &len);
        cJSON *j = txt ? cJSON_ParseWithLength(txt, len) : NULL;
        free(txt);
        if (!j) {
            sf_error("%s: not valid JSON", p);
            free(p);
            return -1;
        }
        char *pad = special_str(cJSON_GetObjectItemCaseSensitive(j, "pad_token"));
        if (pad) {
            int32_t id;
            if (!strmap_get(&t->vocab, pad, strlen(pad), &id)) {
                sf_error("%s: pad_token '%s' is not in the vocabulary", p, pad);
                free(pad);
                cJSON_Delete(j);
                free(p);
                return -1;
            }
            t->pad = id;
            /* transformers registers the pad token as a special (added) token */
            int rc = add_added(t, pad, id, p);
            free(pad);
            if (rc) {
                cJSON_Delete(j);
                free(p);
                return -1;
            }
        }
        cJSON_Delete(j);
        free(p);
    }
    return 0;
}

sf_tokenizer *sf_tokenizer_load_dir(const char *dir) {
    char *tj = sf_path_join(dir, "tokenizer.json");
    sf_tokenizer *t = NULL;
    if (file_exists(tj)) {
        t = sf_tokenizer_load_json(tj);
    } else {
        char *v = sf_path_join(dir, "vocab.json"), *m = sf_path_join(dir, "merges.txt");
        if (!file_exists(v))
            sf_error("%s: no tokenizer.json or vocab.json + merges.txt", dir);
        else
            t = sf_tokenizer_load(v, m);
        free(v);
        free(m);
    }
    free(tj);
    if (t && read_special_overrides(t, dir)) {
        sf_tokenizer_free(t);
        return NULL;
    }
    return t;
}

int sf_tokenizer_bos(const sf_tokenizer *t) {
    return t->bos;
}
int sf_tokenizer_eos(const sf_tokenizer *t) {
    return t->eos;
}
int sf_tokenizer_pad(const sf_tokenizer *t) {
    return t->pad;
}
int sf_tokenizer_vocab_size(const sf_tokenizer *t) {
    return t->n_ids;
}
const char *sf_tokenizer_token(const sf_tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids ? t->id_to_tok[id] : NULL;
}

/* ---- normalisation ---- */

typedef SF_VEC(int32_t) ibuf; /* token ids */

static int is_white_space(int32_t c) {
    return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Case pairs of Unicode 16 that utf8proc 2.8 (Unicode 15) lacks, sorted. */
static const int32_t LOWER_U16[][2] = {
    {0x1C89, 0x1C8A},   {0xA7CB, 0x0264},   {0xA7CC, 0xA7CD},   {0xA7CE, 0xA7CF},
    {0xA7D2, 0xA7D3},   {0xA7D4, 0xA7D5},   {0xA7DA, 0xA7DB},   {0xA7DC, 0x019B},
    {0x10D50, 0x10D70}, {0x10D51, 0x10D71}, {0x10D52, 0x10D72}, {0x10D53, 0x10D73},
    {0x10D54, 0x10D74}, {0x10D55, 0x10D75}, {0x10D56, 0x10D76}, {0x10D57, 0x10D77},
    {0x10D58, 0x10D78}, {0x10D59, 0x10D79}, {0x10D5A, 0x10D7A}, {0x10D5B, 0x10D7B},
    {0x10D5C, 0x10D7C}, {0x10D5D, 0x10D7D}, {0x10D5E, 0x10D7E}, {0x10D5F, 0x10D7F},
    {0x10D60, 0x10D80}, {0x10D61, 0x10D81}, {0x10D62, 0x10D82}, {0x10D63, 0x10D83},
    {0x10D64, 0x10D84}, {0x10D65, 0x10D85}, {0x16EA0, 0x16EBB}, {0x16EA1, 0x16EBC},
    {0x16EA2, 0x16EBD}, {0x16EA3, 0x16EBE}, {0x16EA4, 0x16EBF}, {0x16EA5, 0x16EC0},
    {0x16EA6, 0x16EC1}, {0x16EA7, 0x16EC2}, {0x16EA8, 0x16EC3}, {0x16EA9, 0x16EC4},
    {0x16EAA, 0x16EC5}, {0x16EAB, 0x16EC6}, {0x16EAC, 0x16EC7}, {0x16EAD, 0x16EC8},
    {0x16EAE, 0x16EC9}, {0x16EAF, 0x16ECA}, {0x16EB0, 0x16ECB}, {0x16EB1, 0x16ECC},
    {0x16EB2, 0x16ECD}, {0x16EB3, 0x16ECE}, {0x16EB4, 0x16ECF}, {0x16EB5, 0x16ED0},
    {0x16EB6, 0x16ED1}, {0x16EB7, 0x16ED2}, {0x16EB8, 0x16ED3},
};

/* Rust's char::to_lowercase (what tokenizers' Lowercase uses), built on
 * utf8proc's simple lowercase mapping. Compared over all code points with
 * tokenizers 0.23 (docs/inputs.md): the only differences are U+0130, whose
 * full mapping is two characters, and the Unicode 16 pairs above. */
static int lower_full(int32_t c, int32_t out[2]) {
    if (c == 0x130) {
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    if (c >= 0x1C89) {
        size_t lo = 0, hi = sizeof LOWER_U16 / sizeof LOWER_U16[0];
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (LOWER_U16[mid][0] == c) {
                out[0] = LOWER_U16[mid][1];
                return 1;
            }
            if (LOWER_U16[mid][0] < c)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    out[0] = utf8proc_tolower(c);
    return 1;
}

/* NFC + whitespace runs -> ' ' + lowercase, on text[0..len). Returns a
 * malloc'd UTF-8 string (length in *olen) or NULL on invalid UTF-8. */
static char *normalize(const char *text, size_t len, size_t *olen) {
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) return NULL;
    size_t cap = (size_t)n + 16, o = 0;
    char *out = sf_malloc(cap);
    int in_ws = 0;
    for (utf8proc_ssize_t i = 0; i < n;) {
        if (o + 16 > cap) { /* one code point writes at most 2 x 4 bytes */
            cap *= 2;
            out = sf_realloc(out, cap);
        }
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(nfc + i, n - i, &c);
        if (k <= 0) {
            free(nfc);
            free(out);
            return NULL;
        }
        i += k;
        if (is_white_space(c)) {
            if (!in_ws) out[o++] = ' ';
            in_ws = 1;
            continue;
        }
        in_ws = 0;
        int32_t lc[2];
        int m = lower_full(c, lc);
        for (int j = 0; j < m; j++)
            o += (size_t)utf8proc_encode_char(lc[j], (utf8proc_uint8_t *)out + o);
    }
    free(nfc);
    out[o] = 0;
    *olen = o;
    return out;
}

/* ---- BPE ---- */

typedef struct {
    int32_t id, prev, next; /* prev/next: symbol indices, -1 at the ends */
    int alive;
} sym;

typedef struct {
    int32_t rank, pos, left_id, right_id;
} cand;

static int cand_less(const cand *a, const cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(cand *h, size_t *n, cand c) {
    size_t i = (*n)++;
    h[i] = c;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&h[i], &h[p])) break;
        cand t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static cand heap_pop(cand *h, size_t *n) {
    cand top = h[0];
    h[0] = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && cand_less(&h[l], &h[m])) m = l;
        if (r < *n && cand_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
    return top;
}

static const merge_slot *merge_get(const sf_tokenizer *t, int32_t a, int32_t b) {
    if (a < 0 || b < 0) return NULL;
    size_t i = merge_find(&t->merges, merge_key(a, b));
    return t->merges.slots[i].key ? &t->merges.slots[i] : NULL;
}

/* BPE of one piece (raw bytes p[0..n)); appends ids to out. Symbols are
 * the byte-level characters, i.e. one per byte (bytes_to_unicode is 1:1). */
static void bpe_piece(const sf_tokenizer *t, const unsigned char *p, size_t n, ibuf *out) {
    if (n == 0) return;
    sym *s = sf_malloc(n * sizeof(sym));
    cand *heap = sf_malloc((2 * n + 1) * sizeof(cand));
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = i + 1 == n ? t->byte_id_eow[p[i]] : t->byte_id[p[i]];
        s[i].id = id < 0 ? t->unk : id; /* a vocabulary without the byte: unk, as HF */
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        s[i].alive = 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_slot *m = merge_get(t, s[i].id, s[i + 1].id);
        if (m) heap_push(heap, &hn, (cand){m->rank, (int32_t)i, s[i].id, s[i + 1].id});
    }
    while (hn) {
        cand c = heap_pop(heap, &hn);
        sym *a = &s[c.pos];
        /* stale: the left symbol was merged away or changed, or its right
         * neighbour is no longer the pair this candidate was made for */
        if (!a->alive || a->id != c.left_id || a->next < 0 || s[a->next].id != c.right_id) continue;
        const merge_slot *m = merge_get(t, c.left_id, c.right_id);
        sym *b = &s[a->next];
        a->id = m->id;
        b->alive = 0;
        a->next = b->next;
        if (b->next >= 0) s[b->next].prev = c.pos;
        if (a->prev >= 0) {
            const merge_slot *ml = merge_get(t, s[a->prev].id, a->id);
            if (ml) heap_push(heap, &hn, (cand){ml->rank, a->prev, s[a->prev].id, a->id});
        }
        if (a->next >= 0) {
            const merge_slot *mr = merge_get(t, a->id, s[a->next].id);
            if (mr) heap_push(heap, &hn, (cand){mr->rank, c.pos, a->id, s[a->next].id});
        }
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        sf_vec_push(out, s[i].id);
    free(s);
    free(heap);
}

/* Cached BPE: the cache is keyed by the piece's bytes. */
static void bpe_cached(sf_tokenizer *t, const unsigned char *p, size_t n, ibuf *out) {
    int32_t off;
    pthread_mutex_lock(&t->lock);
    if (strmap_get(&t->cache.index, (const char *)p, n, &off)) {
        int32_t len = t->cache.ids[off];
        for (int32_t i = 0; i < len; i++)
            sf_vec_push(out, t->cache.ids[off + 1 + i]);
        pthread_mutex_unlock(&t->lock);
        return;
    }
    pthread_mutex_unlock(&t->lock);
    size_t start = out->n;
    bpe_piece(t, p, n, out);
    size_t len = out->n - start;
    if (n > 256) return; /* do not cache pathological long words */
    pthread_mutex_lock(&t->lock);
    word_cache *c = &t->cache;
    if (c->index.n >= CACHE_MAX_WORDS) { /* clear: bounded memory */
        strmap_free(&c->index);
        strmap_init(&c->index, 1024);
        c->n_ids = 0;
    }
    c->ids = sf_grow(c->ids, &c->cap_ids, c->n_ids + len + 1, sizeof(int32_t));
    off = (int32_t)c->n_ids;
    c->ids[c->n_ids++] = (int32_t)len;
    memcpy(c->ids + c->n_ids, out->v + start, len * sizeof(int32_t));
    c->n_ids += len;
    strmap_put(&c->index, (const char *)p, n, off);
    pthread_mutex_unlock(&t->lock);
}

/* Steps 2-5 on one segment without special tokens. */
static int encode_segment(sf_tokenizer *t, const char *text, size_t len, ibuf *out) {
    if (!len) return 0;
    size_t nl;
    char *norm = normalize(text, len, &nl);
    if (!norm) return sf_error("tokenizer: invalid UTF-8 in text");
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    PCRE2_SIZE pos = 0;
    while (pos < nl) {
        /* NO_UTF_CHECK: utf8proc produced valid UTF-8, and PCRE2 would
         * otherwise re-validate the whole subject on every call (O(n^2)) */
        int rc = pcre2_match(t->re, (PCRE2_SPTR)norm, nl, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            pcre2_match_data_free(md);
            free(norm);
            return sf_error("tokenizer: regex match failed (%d)", rc);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) { /* cannot happen with this pattern; never loop */
            pos = ov[1] + 1;
            continue;
        }
        const char *piece = norm + ov[0];
        size_t plen = ov[1] - ov[0];
        /* ByteLevel's GPT-2 re-split only changes the two literal
         * special-token alternatives of the CLIP pattern (e.g. a lowercased
         * "<|ENDOFTEXT|>"): "<|", "endoftext", "|>". */
        if ((plen == 13 && !memcmp(piece, "<|endoftext|>", 13)) ||
            (plen == 15 && !memcmp(piece, "<|startoftext|>", 15))) {
            bpe_cached(t, (const unsigned char *)piece, 2, out);
            bpe_cached(t, (const unsigned char *)piece + 2, plen - 4, out);
            bpe_cached(t, (const unsigned char *)piece + plen - 2, 2, out);
        } else {
            bpe_cached(t, (const unsigned char *)piece, plen, out);
        }
        pos = ov[1];
    }
    pcre2_match_data_free(md);
    free(norm);
    return 0;
}

/* Step 1: split out the special tokens, encode the rest. */
static int encode_all(sf_tokenizer *t, const char *text, ibuf *out) {
    size_t len = strlen(text);
    if (utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, NULL, 0, 0) < 0)
        return sf_error("tokenizer: invalid UTF-8 in text");
    size_t seg = 0, i = 0;
    while (i < len) {
        int hit = -1;
        if (t->added_first[(unsigned char)text[i]]) {
            size_t best = 0;
            for (int k = 0; k < t->n_added; k++) {
                size_t l = t->added[k].len;
                if (l > best && l <= len - i && !memcmp(text + i, t->added[k].s, l)) {
                    best = l;
                    hit = k;
                }
            }
            if (hit >= 0) {
                if (encode_segment(t, text + seg, i - seg, out)) return -1;
                sf_vec_push(out, t->added[hit].id);
                i += best;
                seg = i;
                continue;
            }
        }
        i++;
    }
    return encode_segment(t, text + seg, len - seg, out);
}

int sf_tokenizer_encode_raw(sf_tokenizer *t, const char *text, int32_t *ids, int cap) {
    ibuf b = {0};
    if (encode_all(t, text, &b)) {
        free(b.v);
        return -1;
    }
    for (size_t i = 0; i < b.n && (int)i < cap; i++)
        ids[i] = b.v[i];
    int n = (int)b.n;
    free(b.v);
    return n;
}

int sf_tokenizer_encode(sf_tokenizer *t, const char *text, int context_length, int32_t *ids,
                        int32_t *mask) {
    if (context_length < 2) return sf_error("tokenizer: context length %d < 2", context_length);
    ibuf b = {0};
    if (encode_all(t, text, &b)) {
        free(b.v);
        return -1;
    }
    /* truncation keeps the first context_length - 2 tokens (HF: longest_first
     * on a single sequence, from the right) */
    size_t keep = b.n < (size_t)context_length - 2 ? b.n : (size_t)context_length - 2;
    int n = 0;
    ids[n++] = t->bos;
    for (size_t i = 0; i < keep; i++)
        ids[n++] = b.v[i];
    ids[n++] = t->eos;
    int used = n;
    while (n < context_length)
        ids[n++] = t->pad;
    if (mask)
        for (int i = 0; i < context_length; i++)
            mask[i] = i < used;
    free(b.v);
    return used;
}
