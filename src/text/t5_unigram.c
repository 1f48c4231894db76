/* The T5 Unigram tokenizer, as Hugging Face `tokenizers` (0.23) runs a T5
 * tokenizer.json. Steps and the facts behind each (checked against the real
 * library by tools/make_t5_fixtures.py):
 *
 *  1. added tokens (all of T5's: special, normalized=false) are matched in
 *     the RAW text, leftmost-longest, and become their ids. The text between
 *     them is a "segment"; each goes through 2-4 on its own, and knows
 *     whether it starts at byte 0 of the text (Metaspace "first" needs it).
 *  2. normalizer, in the order the json lists:
 *     - Precompiled: SentencePiece's charsmap = u32 trie size, a darts-clone
 *       double array, then NUL-terminated replacement strings. HF quirk
 *       (normalizers/precompiled.rs): for each extended grapheme cluster
 *       shorter than 6 bytes, the FIRST (shortest) trie match on the
 *       cluster's bytes replaces the WHOLE cluster ("a" U+0301 U+0302 -> "á",
 *       the second mark is lost; CR LF -> one space); otherwise each code
 *       point is looked up alone. Clusters come from utf8proc.
 *     - Strip: Rust char::is_whitespace (White_Space) from the left/right.
 *     - Replace: a literal or a regex (PCRE2 here, Oniguruma there; T5's
 *       only pattern is " {2,}") -> content ("▁").
 *  3. pre-tokenizer: Metaspace: ' ' -> "▁"; prepend "▁" unless the text
 *     already starts with it ("always"; "first": only on the segment that
 *     starts at byte 0 of the input; an empty segment stays empty); split
 *     before every "▁". WhitespaceSplit (transformers 5) drops White_Space
 *     runs first.
 *  4. Unigram: Viterbi over the vocabulary trie in double precision (the
 *     json's f64 scores); a character that no token of exactly its length
 *     covers gets an unknown node scored min_score - 10; on the best path,
 *     runs of unknown nodes become ONE token (looked up again, else unk_id).
 *     Ties keep the earlier candidate (strict >), longer tokens come later.
 *  5. post-processor: TemplateProcessing "single" = specials around $A
 *     (T5: $A </s>); truncation keeps max_length - #specials tokens.
 */
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <utf8proc.h>

#include "saeflow/config.h"
#include "saeflow/buf.h"
#include "saeflow/t5_tokenizer.h"

/* ---- growable buffers: the core's (saeflow/buf.h) ---- */

typedef sf_sbuf sbuf;
typedef SF_VEC(int32_t) ibuf;

/* ---- byte trie over the vocabulary: (node, byte) -> child in a hash ---- */

typedef struct {
    uint64_t *keys; /* (node + 1) << 8 | byte; 0 = empty */
    int32_t *child;
    size_t cap;
    int32_t *tok; /* node -> vocab id, -1 */
    int32_t n_nodes, cap_nodes;
} trie;

static size_t trie_slot(const trie *T, uint64_t key) {
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (T->cap - 1);
    while (T->keys[i] && T->keys[i] != key)
        i = (i + 1) & (T->cap - 1);
    return i;
}

static int32_t trie_next(const trie *T, int32_t node, unsigned char c) {
    uint64_t key = ((uint64_t)(node + 1) << 8) | c;
    size_t i = trie_slot(T, key);
    return T->keys[i] ? T->child[i] : -1;
}

static void trie_init(trie *T, size_t total_bytes) {
    T->cap = 64;
    while (T->cap < total_bytes * 2 + 64)
        T->cap <<= 1;
    T->keys = sf_calloc(T->cap, sizeof(uint64_t));
    T->child = sf_calloc(T->cap, sizeof(int32_t));
    T->cap_nodes = 1024;
    T->tok = sf_malloc((size_t)T->cap_nodes * sizeof(int32_t));
    T->tok[0] = -1;
    T->n_nodes = 1;
}

/* A later duplicate overwrites the earlier id (HF's HashMap insert). */
static void trie_insert(trie *T, const char *s, size_t len, int32_t id) {
    int32_t node = 0;
    for (size_t k = 0; k < len; k++) {
        uint64_t key = ((uint64_t)(node + 1) << 8) | (unsigned char)s[k];
        size_t i = trie_slot(T, key);
        if (!T->keys[i]) {
            if (T->n_nodes == T->cap_nodes) {
                T->cap_nodes *= 2;
                T->tok = sf_realloc(T->tok, (size_t)T->cap_nodes * sizeof(int32_t));
            }
            T->keys[i] = key;
            T->child[i] = T->n_nodes;
            T->tok[T->n_nodes++] = -1;
        }
        node = T->child[i];
    }
    T->tok[node] = id;
}

static int32_t trie_find(const trie *T, const char *s, size_t len) {
    int32_t node = 0;
    for (size_t k = 0; k < len && node >= 0; k++)
        node = trie_next(T, node, (unsigned char)s[k]);
    return node > 0 ? T->tok[node] : -1;
}

static void trie_free(trie *T) {
    free(T->keys);
    free(T->child);
    free(T->tok);
}

/* ---- the tokenizer ---- */

enum { NORM_PRECOMPILED, NORM_STRIP, NORM_REPLACE };
enum { PRE_METASPACE, PRE_WHITESPACE_SPLIT };
enum { PREPEND_NEVER, PREPEND_FIRST, PREPEND_ALWAYS };

#define MAX_STEPS 8
#define MAX_POST 8

typedef struct {
    int kind;
    int left, right; /* Strip */
    char *pat;       /* Replace: literal pattern (re == NULL) */
    size_t pat_len;
    pcre2_code *re; /* Replace: regex */
    char *content;
    size_t content_len;
} norm_step;

typedef struct {
    int kind;
    char rep[8]; /* Metaspace replacement (one char, UTF-8) */
    size_t rep_len;
    int prepend, split;
} pre_step;

struct sf_t5_tokenizer {
    int n_vocab;
    char **tok;    /* id -> token string (owned) */
    double *score; /* id -> score */
    double min_score;
    int unk, eos, pad;
    trie trie;
    /* charsmap */
    uint32_t *da;
    size_t n_da;
    char *repl; /* replacement strings, NUL-separated */
    size_t repl_len;
    norm_step norm[MAX_STEPS];
    int n_norm;
    pre_step pre[MAX_STEPS];
    int n_pre;
    /* added tokens, matched in the raw text */
    struct {
        char *s;
        size_t len;
        int id;
    } * added;
    int n_added;
    uint8_t added_first[256];
    int32_t post_before[MAX_POST], post_after[MAX_POST];
    int n_before, n_after;
};

void sf_t5_tokenizer_free(sf_t5_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_vocab; i++)
        free(t->tok[i]);
    free(t->tok);
    free(t->score);
    trie_free(&t->trie);
    free(t->da);
    free(t->repl);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].pat);
        free(t->norm[i].content);
        if (t->norm[i].re) pcre2_code_free(t->norm[i].re);
    }
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].s);
    free(t->added);
    free(t);
}

int sf_t5_tokenizer_eos(const sf_t5_tokenizer *t) {
    return t->eos;
}
int sf_t5_tokenizer_pad(const sf_t5_tokenizer *t) {
    return t->pad;
}
int sf_t5_tokenizer_unk(const sf_t5_tokenizer *t) {
    return t->unk;
}
int sf_t5_tokenizer_vocab_size(const sf_t5_tokenizer *t) {
    return t->n_vocab;
}
const char *sf_t5_tokenizer_token(const sf_t5_tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? t->tok[id] : NULL;
}

/* ---- the charsmap (SentencePiece precompiled normalizer) ---- */

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding; NULL on a bad character. */
static unsigned char *b64_decode(const char *s, size_t *out_len) {
    size_t n = strlen(s);
    unsigned char *out = sf_malloc(n / 4 * 3 + 4);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') break;
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

static int load_charsmap(sf_t5_tokenizer *t, const char *b64, const char *src) {
    if (t->da) return sf_error("%s: more than one Precompiled normalizer", src);
    size_t n;
    unsigned char *blob = b64_decode(b64, &n);
    if (!blob) return sf_error("%s: precompiled_charsmap is not base64", src);
    uint32_t trie_bytes = 0;
    if (n >= 4) trie_bytes = blob[0] | blob[1] << 8 | blob[2] << 16 | (uint32_t)blob[3] << 24;
    if (n < 4 || trie_bytes % 4 || trie_bytes < 4 || trie_bytes > n - 4) {
        free(blob);
        return sf_error("%s: precompiled_charsmap: trie size does not fit the %zu bytes", src, n);
    }
    t->n_da = trie_bytes / 4;
    t->da = sf_malloc(trie_bytes);
    for (size_t i = 0; i < t->n_da; i++) {
        const unsigned char *p = blob + 4 + 4 * i;
        t->da[i] = p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
    }
    t->repl_len = n - 4 - trie_bytes;
    t->repl = sf_malloc(t->repl_len + 1);
    memcpy(t->repl, blob + 4 + trie_bytes, t->repl_len);
    t->repl[t->repl_len] = 0;
    free(blob);
    /* HF keeps the strings as one Rust String: they must be UTF-8 */
    if (utf8proc_decompose((const utf8proc_uint8_t *)t->repl, (utf8proc_ssize_t)t->repl_len, NULL,
                           0, 0) < 0)
        return sf_error("%s: precompiled_charsmap: replacement strings are not UTF-8", src);
    return 0;
}

/* darts-clone commonPrefixSearch, first (shortest) hit only: the offset of
 * the replacement string, or -1. Unit layout: leaf flag bit 8, label
 * u & 0x800000FF, offset (u >> 10) << ((u & 0x200) >> 6), value u & 0x7fffffff. */
static int64_t charsmap_lookup(const sf_t5_tokenizer *t, const unsigned char *key, size_t len) {
    const uint32_t *a = t->da;
    size_t pos = 0;
    uint32_t u = a[0];
    pos ^= (size_t)((u >> 10) << ((u & 0x200u) >> 6));
    for (size_t k = 0; k < len; k++) {
        if (key[k] == 0) break;
        pos ^= key[k];
        if (pos >= t->n_da) return -1;
        u = a[pos];
        if ((u & 0x800000FFu) != key[k]) return -1;
        pos ^= (size_t)((u >> 10) << ((u & 0x200u) >> 6));
        if ((u >> 8) & 1) {
            if (pos >= t->n_da) return -1;
            uint32_t v = a[pos] & 0x7fffffffu;
            /* a bad file could point mid-character; HF would panic there */
            if (v >= t->repl_len || ((unsigned char)t->repl[v] & 0xC0) == 0x80) return -1;
            return v;
        }
    }
    return -1;
}

/* Appends the charsmap's replacement for key (if any); returns 1 if found. */
static int charsmap_put(const sf_t5_tokenizer *t, const unsigned char *key, size_t len, sbuf *out) {
    int64_t v = charsmap_lookup(t, key, len);
    if (v < 0) return 0;
    const char *r = t->repl + v;
    sf_sb_put(out, r, strnlen(r, t->repl_len - (size_t)v));
    return 1;
}

/* The Precompiled normalizer (HF's grapheme rule, see the top). */
static void precompiled(const sf_t5_tokenizer *t, const char *s, size_t n, sbuf *out) {
    utf8proc_int32_t state = 0, prev = -1;
    size_t g0 = 0; /* start of the current cluster */
    size_t i = 0;
    for (;;) {
        utf8proc_int32_t c = -1;
        utf8proc_ssize_t k = 0;
        int boundary = 1;
        if (i < n) {
            k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
            if (k <= 0) k = 1, c = 0xFFFD; /* validated earlier; never loop */
            boundary = prev < 0 ? 0 : utf8proc_grapheme_break_stateful(prev, c, &state);
        }
        if (boundary && i > g0) { /* cluster [g0, i) is complete */
            const unsigned char *g = (const unsigned char *)s + g0;
            size_t glen = i - g0;
            if (!(glen < 6 && charsmap_put(t, g, glen, out))) {
                for (size_t j = 0; j < glen;) {
                    utf8proc_int32_t cc;
                    utf8proc_ssize_t kk =
                        utf8proc_iterate(g + j, (utf8proc_ssize_t)(glen - j), &cc);
                    size_t cl = kk > 0 ? (size_t)kk : 1;
                    if (!charsmap_put(t, g + j, cl, out)) sf_sb_put(out, (const char *)g + j, cl);
                    j += cl;
                }
            }
            g0 = i;
        }
        if (i >= n) break;
        prev = c;
        i += (size_t)k;
    }
}

/* Rust char::is_whitespace: the White_Space property. */
static int is_ws(int32_t c) {
    return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Length in bytes of the trailing White_Space run of s[0..n). */
static size_t ws_suffix(const char *s, size_t n) {
    size_t e = n;
    while (e > 0) {
        size_t b = e - 1;
        while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
            b--;
        utf8proc_int32_t c;
        if (utf8proc_iterate((const utf8proc_uint8_t *)s + b, (utf8proc_ssize_t)(e - b), &c) <= 0 ||
            !is_ws(c))
            break;
        e = b;
    }
    return n - e;
}

static size_t ws_prefix(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0 || !is_ws(c)) break;
        i += (size_t)k;
    }
    return i;
}

/* Replace every match of the step's pattern in s with its content. */
static int replace_all(const norm_step *st, const char *s, size_t n, sbuf *out) {
    size_t pos = 0;
    if (!st->re) {
        if (st->pat_len == 0) { /* HF: an empty literal never matches */
            sf_sb_put(out, s, n);
            return 0;
        }
        while (pos < n) {
            const char *hit = memmem(s + pos, n - pos, st->pat, st->pat_len);
            if (!hit) break;
            sf_sb_put(out, s + pos, (size_t)(hit - (s + pos)));
            sf_sb_put(out, st->content, st->content_len);
            pos = (size_t)(hit - s) + st->pat_len;
        }
        sf_sb_put(out, s + pos, n - pos);
        return 0;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(st->re, NULL);
    size_t copied = 0;
    while (pos <= n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            pcre2_match_data_free(md);
            return sf_error("t5 tokenizer: Replace regex failed (%d)", rc);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        sf_sb_put(out, s + copied, ov[0] - copied);
        sf_sb_put(out, st->content, st->content_len);
        copied = ov[1];
        if (ov[1] == ov[0]) { /* empty match: step over one character */
            if (ov[1] >= n) break;
            size_t k = 1;
            while (ov[1] + k < n && ((unsigned char)s[ov[1] + k] & 0xC0) == 0x80)
                k++;
            sf_sb_put(out, s + ov[1], k);
            copied = ov[1] + k;
            pos = copied;
        } else {
            pos = ov[1];
        }
    }
    if (copied < n) sf_sb_put(out, s + copied, n - copied);
    pcre2_match_data_free(md);
    return 0;
}

/* Step 2 on one segment: returns a malloc'd string (length *olen). */
static char *normalize_segment(const sf_t5_tokenizer *t, const char *s, size_t n, size_t *olen) {
    sbuf cur = {0};
    sf_sb_put(&cur, s, n);
    for (int k = 0; k < t->n_norm; k++) {
        const norm_step *st = &t->norm[k];
        sbuf nxt = {0};
        sf_sb_put(&nxt, "", 0);
        if (st->kind == NORM_PRECOMPILED) {
            precompiled(t, cur.s, cur.len, &nxt);
        } else if (st->kind == NORM_STRIP) {
            size_t a = st->left ? ws_prefix(cur.s, cur.len) : 0;
            size_t b = st->right ? ws_suffix(cur.s + a, cur.len - a) : 0;
            sf_sb_put(&nxt, cur.s + a, cur.len - a - b);
        } else if (replace_all(st, cur.s, cur.len, &nxt)) {
            free(cur.s);
            free(nxt.s);
            return NULL;
        }
        free(cur.s);
        cur = nxt;
    }
    *olen = cur.len;
    return cur.s;
}

char *sf_t5_tokenizer_normalize(const sf_t5_tokenizer *t, const char *text, size_t *len) {
    size_t n = strlen(text);
    if (utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n, NULL, 0, 0) < 0) {
        sf_error("t5 tokenizer: invalid UTF-8 in text");
        return NULL;
    }
    return normalize_segment(t, text, n, len);
}

/* ---- Unigram ---- */

typedef struct {
    double score;
    int32_t start; /* -1: not reached */
    int32_t id;
} vnode;

/* Viterbi over one pre-tokenized piece p[0..n); appends ids. */
static void unigram(const sf_t5_tokenizer *t, const char *p, size_t n, ibuf *out) {
    if (n == 0) return;
    vnode *best = sf_malloc((n + 1) * sizeof(vnode));
    for (size_t i = 0; i <= n; i++)
        best[i] = (vnode){0.0, -1, -1};
    best[0].start = 0;
    const double unk_score = t->min_score - 10.0;
    for (size_t s = 0; s < n;) {
        size_t mblen = 1;
        while (s + mblen < n && ((unsigned char)p[s + mblen] & 0xC0) == 0x80)
            mblen++;
        double here = best[s].score;
        int single = 0;
        int32_t node = 0;
        for (size_t e = s; e < n; e++) {
            node = trie_next(&t->trie, node, (unsigned char)p[e]);
            if (node < 0) break;
            int32_t id = t->trie.tok[node];
            if (id < 0) continue;
            size_t end = e + 1;
            double cand = t->score[id] + here;
            if (best[end].start < 0 || cand > best[end].score)
                best[end] = (vnode){cand, (int32_t)s, id};
            if (end - s == mblen) single = 1;
        }
        if (!single) {
            double cand = unk_score + here;
            vnode *b = &best[s + mblen];
            if (b->start < 0 || cand > b->score) *b = (vnode){cand, (int32_t)s, t->unk};
        }
        s += mblen;
    }
    /* back-track, fusing runs of unknowns; ids come out reversed */
    size_t first = out->n;
    size_t end = n, unk_end = 0;
    int in_unk = 0;
    while (end > 0) {
        const vnode *b = &best[end];
        size_t st = (size_t)b->start;
        if (b->id == t->unk) {
            if (!in_unk) unk_end = end;
            in_unk = 1;
        } else {
            if (in_unk) {
                int32_t id = trie_find(&t->trie, p + end, unk_end - end);
                sf_vec_push(out, id >= 0 ? id : t->unk);
                in_unk = 0;
            }
            sf_vec_push(out, b->id);
        }
        end = st;
    }
    if (in_unk) {
        int32_t id = trie_find(&t->trie, p, unk_end);
        sf_vec_push(out, id >= 0 ? id : t->unk);
    }
    for (size_t a = first, z = out->n; a + 1 < z; a++, z--) {
        int32_t tmp = out->v[a];
        out->v[a] = out->v[z - 1];
        out->v[z - 1] = tmp;
    }
    free(best);
}

/* ---- pre-tokenization and segments ---- */

/* Metaspace (and what follows it) on s[0..n); `first`: the piece starts at
 * byte 0 of the input. */
static void pre_and_model(const sf_t5_tokenizer *t, int k, const char *s, size_t n, int first,
                          ibuf *out) {
    if (k == t->n_pre) {
        unigram(t, s, n, out);
        return;
    }
    const pre_step *st = &t->pre[k];
    if (st->kind == PRE_WHITESPACE_SPLIT) {
        size_t i = 0;
        while (i < n) {
            i += ws_prefix(s + i, n - i);
            size_t j = i;
            while (j < n) {
                utf8proc_int32_t c;
                utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + j,
                                                      (utf8proc_ssize_t)(n - j), &c);
                if (l <= 0 || is_ws(c)) break;
                j += (size_t)l;
            }
            if (j > i) pre_and_model(t, k + 1, s + i, j - i, first && i == 0, out);
            i = j;
        }
        return;
    }
    if (n == 0) return; /* HF's prepend leaves an empty string empty */
    sbuf b = {0};
    /* after ' ' -> replacement, does the text start with the replacement? */
    int starts = s[0] == ' ' || (n >= st->rep_len && !memcmp(s, st->rep, st->rep_len));
    if (!starts && (st->prepend == PREPEND_ALWAYS || (st->prepend == PREPEND_FIRST && first)))
        sf_sb_put(&b, st->rep, st->rep_len);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ')
            sf_sb_put(&b, st->rep, st->rep_len);
        else
            sf_sb_put(&b, s + i, 1);
    }
    if (!st->split) {
        pre_and_model(t, k + 1, b.s, b.len, first, out);
    } else { /* split before every replacement (MergedWithNext) */
        size_t a = 0;
        for (size_t i = 1; i + st->rep_len <= b.len; i++)
            if (!memcmp(b.s + i, st->rep, st->rep_len)) {
                pre_and_model(t, k + 1, b.s + a, i - a, first && a == 0, out);
                a = i;
            }
        pre_and_model(t, k + 1, b.s + a, b.len - a, first && a == 0, out);
    }
    free(b.s);
}

static int encode_segment(const sf_t5_tokenizer *t, const char *s, size_t n, int first, ibuf *out) {
    if (n == 0) return 0;
    size_t nl;
    char *norm = normalize_segment(t, s, n, &nl);
    if (!norm) return -1;
    pre_and_model(t, 0, norm, nl, first, out);
    free(norm);
    return 0;
}

static int encode_all(const sf_t5_tokenizer *t, const char *text, ibuf *out) {
    size_t len = strlen(text);
    if (utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, NULL, 0, 0) < 0)
        return sf_error("t5 tokenizer: invalid UTF-8 in text");
    size_t seg = 0, i = 0;
    while (i < len) {
        if (t->added_first[(unsigned char)text[i]]) {
            int hit = -1;
            size_t best = 0;
            for (int k = 0; k < t->n_added; k++) {
                size_t l = t->added[k].len;
                if (l > best && l <= len - i && !memcmp(text + i, t->added[k].s, l)) {
                    best = l;
                    hit = k;
                }
            }
            if (hit >= 0) {
                if (encode_segment(t, text + seg, i - seg, seg == 0, out)) return -1;
                sf_vec_push(out, t->added[hit].id);
                i += best;
                seg = i;
                continue;
            }
        }
        i++;
    }
    return encode_segment(t, text + seg, len - seg, seg == 0, out);
}

int sf_t5_tokenizer_encode_raw(sf_t5_tokenizer *t, const char *text, int32_t *ids, int cap) {
    ibuf b = {0};
    if (encode_all(t, text, &b)) {
        free(b.v);
        return -1;
    }
    for (size_t i = 0; i < b.n && (int)i < cap; i++)
        ids[i] = b.v[i];
    int n = b.n > (size_t)0x7fffffff ? 0x7fffffff : (int)b.n;
    free(b.v);
    return n;
}

int sf_t5_tokenizer_encode(sf_t5_tokenizer *t, const char *text, int max_length, int32_t *ids,
                           int32_t *mask) {
    int nspec = t->n_before + t->n_after;
    if (max_length < nspec || max_length < 1)
        return sf_error("t5 tokenizer: max_length %d leaves no room for %d special token(s)",
                        max_length, nspec);
    ibuf b = {0};
    if (encode_all(t, text, &b)) {
        free(b.v);
        return -1;
    }
    size_t room = (size_t)(max_length - nspec);
    size_t keep = b.n < room ? b.n : room;
    int n = 0;
    for (int i = 0; i < t->n_before; i++)
        ids[n++] = t->post_before[i];
    for (size_t i = 0; i < keep; i++)
        ids[n++] = b.v[i];
    for (int i = 0; i < t->n_after; i++)
        ids[n++] = t->post_after[i];
    int used = n;
    while (n < max_length)
        ids[n++] = t->pad;
    if (mask)
        for (int i = 0; i < max_length; i++)
            mask[i] = i < used;
    free(b.v);
    return used;
}

/* ---- loading ---- */

static const cJSON *get(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static int load_vocab(sf_t5_tokenizer *t, const cJSON *model, const char *src) {
    const cJSON *vocab = get(model, "vocab");
    int n = cJSON_GetArraySize(vocab);
    if (!cJSON_IsArray(vocab) || n <= 0)
        return sf_error("%s: model.vocab is not a non-empty list", src);
    t->tok = sf_calloc((size_t)n, sizeof(char *));
    t->score = sf_malloc((size_t)n * sizeof(double));
    size_t total = 0;
    const cJSON *e;
    t->min_score = 1e300;
    cJSON_ArrayForEach(e, vocab) {
        const cJSON *s = cJSON_GetArrayItem(e, 0), *sc = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || !cJSON_IsString(s) || !cJSON_IsNumber(sc))
            return sf_error("%s: model.vocab[%d] is not [\"piece\", score]", src, t->n_vocab);
        t->tok[t->n_vocab] = sf_strdup(s->valuestring);
        t->score[t->n_vocab] = sc->valuedouble;
        if (sc->valuedouble < t->min_score) t->min_score = sc->valuedouble;
        total += strlen(s->valuestring);
        t->n_vocab++;
    }
    trie_init(&t->trie, total);
    for (int i = 0; i < t->n_vocab; i++)
        trie_insert(&t->trie, t->tok[i], strlen(t->tok[i]), i);
    return 0;
}

static int id_of(const sf_t5_tokenizer *t, const char *s) {
    return trie_find(&t->trie, s, strlen(s));
}

static int add_norm(sf_t5_tokenizer *t, const cJSON *n, const char *src) {
    const char *type = cJSON_GetStringValue(get(n, "type"));
    if (!type) return sf_error("%s: normalizer without a type", src);
    if (!strcmp(type, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, get(n, "normalizers")) if (add_norm(t, e, src)) return -1;
        return 0;
    }
    if (t->n_norm == MAX_STEPS) return sf_error("%s: more than %d normalizers", src, MAX_STEPS);
    norm_step *st = &t->norm[t->n_norm];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "Precompiled")) {
        const char *cm = cJSON_GetStringValue(get(n, "precompiled_charsmap"));
        if (!cm) return sf_error("%s: Precompiled normalizer without precompiled_charsmap", src);
        if (load_charsmap(t, cm, src)) return -1;
        st->kind = NORM_PRECOMPILED;
    } else if (!strcmp(type, "Strip")) {
        st->kind = NORM_STRIP;
        st->left = cJSON_IsTrue(get(n, "strip_left"));
        st->right = cJSON_IsTrue(get(n, "strip_right"));
    } else if (!strcmp(type, "Replace")) {
        const cJSON *pat = get(n, "pattern");
        const char *lit = cJSON_GetStringValue(get(pat, "String"));
        const char *rx = cJSON_GetStringValue(get(pat, "Regex"));
        const char *content = cJSON_GetStringValue(get(n, "content"));
        if ((!lit && !rx) || !content)
            return sf_error("%s: Replace normalizer needs pattern.String/Regex and content", src);
        st->kind = NORM_REPLACE;
        st->content = sf_strdup(content);
        st->content_len = strlen(content);
        if (lit) {
            st->pat = sf_strdup(lit);
            st->pat_len = strlen(lit);
        } else {
            int err;
            PCRE2_SIZE off;
            st->re = pcre2_compile((PCRE2_SPTR)rx, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &err, &off, NULL);
            if (!st->re) {
                /* n_norm is not advanced for a failed step, so the tokenizer's
                 * free never sees this one: release what it holds here. */
                free(st->content);
                st->content = NULL;
                return sf_error("%s: Replace regex '%s' does not compile", src, rx);
            }
        }
    } else {
        return sf_error("%s: normalizer '%s' is not supported (Precompiled, Strip, Replace)", src,
                        type);
    }
    t->n_norm++;
    return 0;
}

static int add_pre(sf_t5_tokenizer *t, const cJSON *p, const char *src) {
    const char *type = cJSON_GetStringValue(get(p, "type"));
    if (!type) return sf_error("%s: pre_tokenizer without a type", src);
    if (!strcmp(type, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, get(p, "pretokenizers")) if (add_pre(t, e, src)) return -1;
        return 0;
    }
    if (t->n_pre == MAX_STEPS) return sf_error("%s: more than %d pre-tokenizers", src, MAX_STEPS);
    pre_step *st = &t->pre[t->n_pre];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "WhitespaceSplit")) {
        st->kind = PRE_WHITESPACE_SPLIT;
    } else if (!strcmp(type, "Metaspace")) {
        st->kind = PRE_METASPACE;
        const char *rep = cJSON_GetStringValue(get(p, "replacement"));
        utf8proc_int32_t c;
        if (!rep || !rep[0] || strlen(rep) >= sizeof st->rep ||
            utf8proc_iterate((const utf8proc_uint8_t *)rep, -1, &c) !=
                (utf8proc_ssize_t)strlen(rep))
            return sf_error("%s: Metaspace replacement must be one character", src);
        memcpy(st->rep, rep, strlen(rep));
        st->rep_len = strlen(rep);
        /* tokenizers >= 0.19: prepend_scheme; older files: add_prefix_space */
        const char *ps = cJSON_GetStringValue(get(p, "prepend_scheme"));
        const cJSON *aps = get(p, "add_prefix_space");
        if (ps && !strcmp(ps, "always"))
            st->prepend = PREPEND_ALWAYS;
        else if (ps && !strcmp(ps, "first"))
            st->prepend = PREPEND_FIRST;
        else if (ps && !strcmp(ps, "never"))
            st->prepend = PREPEND_NEVER;
        else if (ps)
            return sf_error("%s: Metaspace prepend_scheme '%s' is unknown", src, ps);
        else
            st->prepend = !aps || cJSON_IsTrue(aps) ? PREPEND_ALWAYS : PREPEND_NEVER;
        const cJSON *split = get(p, "split");
        st->split = !split || cJSON_IsTrue(split);
    } else {
        return sf_error("%s: pre_tokenizer '%s' is not supported (Metaspace, WhitespaceSplit)", src,
                        type);
    }
    t->n_pre++;
    return 0;
}

static int add_added(sf_t5_tokenizer *t, const cJSON *e, const char *src) {
    const char *c = cJSON_GetStringValue(get(e, "content"));
    const cJSON *id = get(e, "id");
    if (!c || !c[0] || !cJSON_IsNumber(id) || id->valuedouble < 0 ||
        id->valuedouble >= t->n_vocab || id->valuedouble != (int)id->valuedouble)
        return sf_error("%s: added_tokens entry without content or a vocabulary id", src);
    if (cJSON_IsTrue(get(e, "lstrip")) || cJSON_IsTrue(get(e, "rstrip")) ||
        cJSON_IsTrue(get(e, "single_word")))
        return sf_error("%s: added token '%s': lstrip/rstrip/single_word are not supported", src,
                        c);
    if (!cJSON_IsTrue(get(e, "special")) && !cJSON_IsFalse(get(e, "normalized")))
        return sf_error("%s: added token '%s': normalized (non-special) added tokens are not "
                        "supported",
                        src, c);
    t->added = sf_realloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
    t->added[t->n_added].s = sf_strdup(c);
    t->added[t->n_added].len = strlen(c);
    t->added[t->n_added].id = (int)id->valuedouble;
    t->n_added++;
    t->added_first[(unsigned char)c[0]] = 1;
    return 0;
}

/* TemplateProcessing "single": SpecialToken items around one Sequence. */
static int load_post(sf_t5_tokenizer *t, const cJSON *pp, const char *src) {
    if (!pp || cJSON_IsNull(pp)) return 0;
    const char *type = cJSON_GetStringValue(get(pp, "type"));
    if (!type || strcmp(type, "TemplateProcessing"))
        return sf_error("%s: post_processor '%s' is not supported (TemplateProcessing)", src,
                        type ? type : "?");
    const cJSON *e;
    int seen_seq = 0;
    cJSON_ArrayForEach(e, get(pp, "single")) {
        if (get(e, "Sequence")) {
            seen_seq++;
            continue;
        }
        const char *name = cJSON_GetStringValue(get(get(e, "SpecialToken"), "id"));
        const cJSON *ids = get(get(get(pp, "special_tokens"), name ? name : ""), "ids");
        if (!name || !cJSON_IsArray(ids))
            return sf_error("%s: post_processor: special token without ids", src);
        const cJSON *x;
        cJSON_ArrayForEach(x, ids) {
            int id = (int)cJSON_GetNumberValue(x);
            if (!cJSON_IsNumber(x) || id < 0 || id >= t->n_vocab)
                return sf_error("%s: post_processor: '%s' id out of range", src, name);
            if (seen_seq ? t->n_after == MAX_POST : t->n_before == MAX_POST)
                return sf_error("%s: post_processor: too many special tokens", src);
            if (seen_seq)
                t->post_after[t->n_after++] = id;
            else
                t->post_before[t->n_before++] = id;
        }
    }
    if (seen_seq != 1) return sf_error("%s: post_processor: 'single' needs one $A", src);
    return 0;
}

sf_t5_tokenizer *sf_t5_tokenizer_load(const char *path) {
    sf_t5_tokenizer *t = sf_calloc(1, sizeof *t);
    cJSON *j = sf_cfg_load(path);
    if (!j) goto fail;
    const cJSON *model = get(j, "model");
    const char *type = cJSON_GetStringValue(get(model, "type"));
    if (!type || strcmp(type, "Unigram")) {
        sf_error("%s: model.type is '%s', expected 'Unigram'", path, type ? type : "(missing)");
        goto fail;
    }
    if (cJSON_IsTrue(get(model, "byte_fallback"))) {
        sf_error("%s: Unigram byte_fallback is not supported", path);
        goto fail;
    }
    if (load_vocab(t, model, path)) goto fail;
    const cJSON *unk = get(model, "unk_id");
    if (!cJSON_IsNumber(unk) || unk->valuedouble < 0 || unk->valuedouble >= t->n_vocab) {
        sf_error("%s: model.unk_id missing or out of range", path);
        goto fail;
    }
    t->unk = (int)unk->valuedouble;
    const cJSON *e;
    cJSON_ArrayForEach(e, get(j, "added_tokens")) if (add_added(t, e, path)) goto fail;
    const cJSON *nz = get(j, "normalizer");
    if (nz && !cJSON_IsNull(nz) && add_norm(t, nz, path)) goto fail;
    const cJSON *pt = get(j, "pre_tokenizer");
    if (pt && !cJSON_IsNull(pt) && add_pre(t, pt, path)) goto fail;
    if (load_post(t, get(j, "post_processor"), path)) goto fail;
    t->eos = id_of(t, "</s>");
    t->pad = id_of(t, "<pad>");
    if (t->pad < 0) t->pad = 0; /* T5's pad id */
    cJSON_Delete(j);
    return t;
fail:
    cJSON_Delete(j);
    sf_t5_tokenizer_free(t);
    return NULL;
}

sf_t5_tokenizer *sf_t5_tokenizer_load_dir(const char *dir) {
    char *p = sf_path_join(dir, "tokenizer.json");
    sf_t5_tokenizer *t = sf_t5_tokenizer_load(p);
    free(p);
    return t;
}
