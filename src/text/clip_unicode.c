/* Unicode lookups and NFC for the CLIP tokenizer, on the tables that
 * tools/make_unicode_tables.py reads out of Hugging Face tokenizers. The
 * point of having them: tokenizers' three Unicode sources (the regex engine,
 * the NFC crate and Rust's case mapping) each have their own Unicode version,
 * and a system PCRE2 / utf8proc never has the same three (issue 17: Unicode
 * 15-16 letters and Unicode 10+ marks gave other ids). NFC follows UAX #15:
 * full canonical decomposition (Hangul by arithmetic), stable canonical
 * ordering, then canonical composition; the generator checks a Python copy
 * of exactly this code against tokenizers on every code point. */
#include <stdlib.h>
#include <string.h>

#include "clip_unicode.h"
#include "saeflow/buf.h"

#include "clip_unicode_nfc.h"
#include "clip_unicode_tables.h"

#define NROWS(a) (sizeof(a) / sizeof((a)[0]))

/* value of the {first, last, value} range holding c, 0 if none */
static uint32_t range_lookup(const uint32_t (*r)[3], size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid][0])
            hi = mid;
        else if (c > r[mid][1])
            lo = mid + 1;
        else
            return r[mid][2];
    }
    return 0;
}

int sf_uni_class(uint32_t c) {
    if (c < 0x80) { /* ASCII, the common case */
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return SF_UNI_L;
        if (c >= '0' && c <= '9') return SF_UNI_N;
        if (c == ' ' || (c >= 0x9 && c <= 0xD)) return SF_UNI_WS;
        return SF_UNI_OTHER;
    }
    return (int)range_lookup(UNI_CLASS, NROWS(UNI_CLASS), c);
}

int sf_uni_ccc(uint32_t c) {
    return c < 0x300 ? 0 : (int)range_lookup(UNI_CCC, NROWS(UNI_CCC), c);
}

/* row of the table (sorted by its first column) whose first column is c */
static const uint32_t *row_lookup(const uint32_t *tab, size_t n, size_t width, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t k = tab[mid * width];
        if (k == c) return tab + mid * width;
        if (k < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int sf_uni_lower(uint32_t c, uint32_t out[2]) {
    if (c < 0x80) {
        out[0] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        return 1;
    }
    const uint32_t *r = row_lookup(&UNI_LOWER[0][0], NROWS(UNI_LOWER), 3, c);
    if (!r) {
        out[0] = c;
        return 1;
    }
    out[0] = r[1];
    out[1] = r[2];
    return r[2] ? 2 : 1;
}

#define SBASE 0xAC00u
#define LBASE 0x1100u
#define VBASE 0x1161u
#define TBASE 0x11A7u
#define LCOUNT 19u
#define VCOUNT 21u
#define TCOUNT 28u
#define SCOUNT (LCOUNT * VCOUNT * TCOUNT)

typedef SF_VEC(uint32_t) cpbuf;

static void decompose(uint32_t c, cpbuf *out) {
    if (c - SBASE < SCOUNT) {
        uint32_t s = c - SBASE;
        sf_vec_push(out, LBASE + s / (VCOUNT * TCOUNT));
        sf_vec_push(out, VBASE + s % (VCOUNT * TCOUNT) / TCOUNT);
        if (s % TCOUNT) sf_vec_push(out, TBASE + s % TCOUNT);
        return;
    }
    const uint32_t *r = c < 0xC0 ? NULL : row_lookup(&UNI_DECOMP[0][0], NROWS(UNI_DECOMP), 5, c);
    if (!r) {
        sf_vec_push(out, c);
        return;
    }
    for (int i = 1; i < 5 && r[i]; i++)
        sf_vec_push(out, r[i]);
}

/* primary composite of (a, b), 0 if none */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a - LBASE < LCOUNT && b - VBASE < VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a - SBASE < SCOUNT && (a - SBASE) % TCOUNT == 0 && b - TBASE - 1 < TCOUNT - 1)
        return a + (b - TBASE);
    size_t lo = 0, hi = NROWS(UNI_COMP);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *r = UNI_COMP[mid];
        if (r[0] == a && r[1] == b) return r[2];
        if (r[0] < a || (r[0] == a && r[1] < b))
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

uint32_t *sf_uni_nfc(const uint32_t *cp, size_t n, size_t *on) {
    /* below U+0300 nothing decomposes for good, combines or reorders */
    size_t i = 0;
    while (i < n && cp[i] < 0x300)
        i++;
    if (i == n) {
        uint32_t *o = sf_malloc((n ? n : 1) * sizeof(uint32_t));
        memcpy(o, cp, n * sizeof(uint32_t));
        *on = n;
        return o;
    }
    cpbuf d = {0};
    for (i = 0; i < n; i++)
        decompose(cp[i], &d);
    /* canonical ordering: stable insertion sort of each run of non-starters */
    for (size_t s = 0; s < d.n;) {
        if (!sf_uni_ccc(d.v[s])) {
            s++;
            continue;
        }
        size_t e = s;
        while (e < d.n && sf_uni_ccc(d.v[e]))
            e++;
        for (size_t j = s + 1; j < e; j++) {
            uint32_t x = d.v[j];
            int cx = sf_uni_ccc(x);
            size_t k = j;
            while (k > s && sf_uni_ccc(d.v[k - 1]) > cx) {
                d.v[k] = d.v[k - 1];
                k--;
            }
            d.v[k] = x;
        }
        s = e;
    }
    /* canonical composition: a character joins the last starter unless a
     * character between them has a combining class >= its own */
    size_t o = 0, starter = 0;
    int have_starter = 0, last_ccc = -1; /* -1: nothing since the starter */
    for (i = 0; i < d.n; i++) {
        uint32_t c = d.v[i];
        int cc = sf_uni_ccc(c);
        if (have_starter && (last_ccc < 0 || last_ccc < cc)) {
            uint32_t p = compose(d.v[starter], c);
            if (p) {
                d.v[starter] = p;
                continue;
            }
        }
        if (cc == 0) {
            starter = o;
            have_starter = 1;
            last_ccc = -1;
        } else {
            last_ccc = cc;
        }
        d.v[o++] = c;
    }
    *on = o;
    return d.v;
}
