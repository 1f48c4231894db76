/* Growable strings and arrays, UTF-8 helpers (saeflow/buf.h). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/buf.h"

void *sf_grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    size_t bytes;
    if (sf_mul_size(c, elem, &bytes)) bytes = SIZE_MAX; /* sf_realloc reports it */
    p = sf_realloc(p, bytes);
    *cap = c;
    return p;
}

void *sf_append(void *p, size_t *n, size_t *cap, const void *src, size_t count, size_t elem) {
    p = sf_grow(p, cap, *n + count, elem);
    if (count) memcpy((char *)p + *n * elem, src, count * elem);
    *n += count;
    return p;
}

static void sb_reserve(sf_sbuf *b, size_t extra) {
    b->s = sf_grow(b->s, &b->cap, b->len + extra + 1, 1);
}

void sf_sb_put(sf_sbuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (n) memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void sf_sb_puts(sf_sbuf *b, const char *s) {
    sf_sb_put(b, s, strlen(s));
}

void sf_sb_printf(sf_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *sf_sb_release(sf_sbuf *b) {
    if (!b->s) sb_reserve(b, 0), b->s[0] = 0;
    char *s = b->s;
    memset(b, 0, sizeof *b);
    return s;
}

void sf_sb_free(sf_sbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

int sf_utf8_len(const unsigned char *s, size_t avail) {
    if (!avail) return 0;
    unsigned c = s[0];
    int n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    if ((size_t)n > avail) return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

size_t sf_utf8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

char *sf_utf8_sanitize(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s);
    sf_sbuf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int l = sf_utf8_len(u + i, n - i);
        if (l == 0) {
            sf_sb_puts(&b, "\xEF\xBF\xBD"); /* U+FFFD */
            i++;
        } else {
            sf_sb_put(&b, s + i, (size_t)l);
            i += (size_t)l;
        }
    }
    return sf_sb_release(&b);
}
