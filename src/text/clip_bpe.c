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
 *  3. pre-tokenizer: keep the matches of the CLIP regex (Oniguruma), drop
 *     the rest (only spaces remain to drop after step 2).
 *  The Unicode tables of steps 2-3 (NFC, \p{L}, \p{N}, \s, lowercase) are
 *  the ones tokenizers has, read out of it by tools/make_unicode_tables.py
 *  (clip_unicode.c): system PCRE2 / utf8proc have other Unicode versions.
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

#include <cjson/cJSON.h>

#include "clip_unicode.h"
#include "saeflow/config.h"
#include "saeflow/buf.h"
#include "saeflow/clip_bpe.h"

/* UTF-8 of code point c into b (at least 4 bytes); returns the length */
static size_t utf8_put(uint32_t c, char *b) {
    unsigned char *u = (unsigned char *)b;
    if (c < 0x80) {
        u[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        u[0] = (unsigned char)(0xC0 | c >> 6);
        u[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        u[0] = (unsigned char)(0xE0 | c >> 12);
        u[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | c >> 18);
    u[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
    u[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
    u[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* the code point of the well-formed sequence of length l at s */
static uint32_t utf8_get(const unsigned char *s, int l) {
    static const unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t c = s[0] & lead_mask[l];
    for (int i = 1; i < l; i++)
        c = c << 6 | (s[i] & 0x3F);
    return c;
}

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
        memset(t->byte_char[b], 0, 3);
        utf8_put((uint32_t)cp, t->byte_char[b]);
    }
}

static sf_tokenizer *tok_new(void) {
    sf_tokenizer *t = sf_calloc(1, sizeof *t);
    strmap_init(&t->vocab, 65536);
    strmap_init(&t->cache.index, 1024);
    pthread_mutex_init(&t->lock, NULL);
    init_bytes_to_unicode(t);
    t->bos = t->eos = t->pad = t->unk = -1;
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
    cJSON *j = sf_cfg_load(path);
    if (!j) goto fail;
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

/* Decode n bytes of UTF-8 into code points (a malloc'd array, count in
 * *ncp); NULL if they are not valid UTF-8. */
static uint32_t *decode_utf8(const char *text, size_t n, size_t *ncp) {
    uint32_t *cp = sf_malloc((n ? n : 1) * sizeof(uint32_t));
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int l = sf_utf8_len((const unsigned char *)text + i, n - i);
        if (!l) {
            free(cp);
            return NULL;
        }
        cp[k++] = utf8_get((const unsigned char *)text + i, l);
        i += (size_t)l;
    }
    *ncp = k;
    return cp;
}

/* NFC + whitespace runs -> ' ' + lowercase, on text[0..len). Returns a
 * malloc'd UTF-8 string (length in *olen) or NULL on invalid UTF-8. */
static char *normalize(const char *text, size_t len, size_t *olen) {
    size_t n, nn;
    uint32_t *cp = decode_utf8(text, len, &n);
    if (!cp) return NULL;
    uint32_t *nfc = sf_uni_nfc(cp, n, &nn);
    free(cp);
    char *out = sf_malloc(nn * 8 + 1); /* one code point writes at most 2 x 4 bytes */
    size_t o = 0;
    int in_ws = 0;
    for (size_t i = 0; i < nn; i++) {
        uint32_t c = nfc[i];
        if (sf_uni_class(c) == SF_UNI_WS) {
            if (!in_ws) out[o++] = ' ';
            in_ws = 1;
            continue;
        }
        in_ws = 0;
        uint32_t lc[2];
        int m = sf_uni_lower(c, lc);
        for (int j = 0; j < m; j++)
            o += utf8_put(lc[j], out + o);
    }
    free(nfc);
    out[o] = 0;
    *olen = o;
    return out;
}

/* The CLIP split pattern (transformers CLIPConverter / convert_slow_tokenizer):
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * matched by hand: the leftmost match, and at its start the first
 * alternative that matches (Oniguruma's order). No alternative starts on a
 * \s character, so those are skipped. Finds the next match in s[*pos..n)
 * (valid UTF-8): [*st, *en), *pos moved past it; 0 when there is none. */
static int next_piece(const char *s, size_t n, size_t *pos, size_t *st, size_t *en) {
    static const char *const lits[] = {
        "<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    const unsigned char *u = (const unsigned char *)s;
    size_t p = *pos;
    while (p < n) {
        int l = sf_utf8_len(u + p, n - p);
        int cls = sf_uni_class(utf8_get(u + p, l));
        if (cls == SF_UNI_WS) {
            p += (size_t)l;
            continue;
        }
        size_t e = 0;
        if (s[p] == '<' || s[p] == '\'')
            for (size_t k = 0; k < sizeof lits / sizeof lits[0] && !e; k++) {
                size_t ll = strlen(lits[k]);
                if (ll <= n - p && !memcmp(s + p, lits[k], ll)) e = p + ll;
            }
        if (!e) {
            e = p + (size_t)l;
            if (cls != SF_UNI_N) /* L+ or [^\s L N]+: extend over the same class */
                while (e < n) {
                    int l2 = sf_utf8_len(u + e, n - e);
                    if (sf_uni_class(utf8_get(u + e, l2)) != cls) break;
                    e += (size_t)l2;
                }
        }
        *st = p;
        *en = e;
        *pos = e;
        return 1;
    }
    *pos = n;
    return 0;
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
    size_t pos = 0, st, en;
    while (next_piece(norm, nl, &pos, &st, &en)) {
        const char *piece = norm + st;
        size_t plen = en - st;
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
    }
    free(norm);
    return 0;
}

/* Step 1: split out the special tokens, encode the rest. */
static int encode_all(sf_tokenizer *t, const char *text, ibuf *out) {
    size_t len = strlen(text);
    for (size_t i = 0, l; i < len; i += l)
        if (!(l = (size_t)sf_utf8_len((const unsigned char *)text + i, len - i)))
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
