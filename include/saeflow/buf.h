/* Growable buffers and UTF-8 helpers shared by every layer (sf_core).
 *
 *   sf_sbuf     a growable NUL-terminated string: zero-initialise, append
 *               with sf_sb_put/puts/printf, take the string with
 *               sf_sb_release (or free it with sf_sb_free).
 *   SF_VEC(T)   a growable array { T *v; size_t n, cap; }: zero-initialise,
 *               sf_vec_push(&v, x), sf_vec_append(&v, src, count),
 *               sf_vec_free(&v). Growth doubles, so appends are amortised
 *               O(1).
 *   sf_utf8_*   sequence length / validation, code point count, sanitising.
 */
#ifndef SAEFLOW_BUF_H
#define SAEFLOW_BUF_H

#include <string.h>

#include "saeflow/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *s; /* NULL until the first append; NUL-terminated after it */
    size_t len, cap;
} sf_sbuf;

void sf_sb_put(sf_sbuf *b, const char *s, size_t n);
void sf_sb_puts(sf_sbuf *b, const char *s);
void sf_sb_printf(sf_sbuf *b, const char *fmt, ...) SF_PRINTF(2, 3);
/* The string (never NULL, "" when nothing was appended); the caller frees
 * it and b is empty again. */
char *sf_sb_release(sf_sbuf *b);
void sf_sb_free(sf_sbuf *b);

/* Grows the array p of *cap elements of `elem` bytes so that it holds at
 * least `need` elements (doubling, at least 16); returns the array, which may
 * have moved. The building block of SF_VEC. */
void *sf_grow(void *p, size_t *cap, size_t need, size_t elem);

/* Appends count elements of `elem` bytes from src to the array p of *n
 * (growing it with sf_grow); returns the array. */
void *sf_append(void *p, size_t *n, size_t *cap, const void *src, size_t count, size_t elem);

#define SF_VEC(T)                                                                                  \
    struct {                                                                                       \
        T *v;                                                                                      \
        size_t n, cap;                                                                             \
    }
#define sf_vec_reserve(vec, count)                                                                 \
    ((vec)->v = sf_grow((vec)->v, &(vec)->cap, (vec)->n + (size_t)(count), sizeof *(vec)->v))
#define sf_vec_push(vec, x) (sf_vec_reserve(vec, 1), (vec)->v[(vec)->n++] = (x))
/* Appends count elements from src (src may be NULL when count is 0). */
#define sf_vec_append(vec, src, count)                                                             \
    ((vec)->v =                                                                                    \
         sf_append((vec)->v, &(vec)->n, &(vec)->cap, (src), (size_t)(count), sizeof *(vec)->v))
#define sf_vec_free(vec) (free((vec)->v), (vec)->v = NULL, (vec)->n = (vec)->cap = 0)

/* Length (1..4) of the well-formed UTF-8 sequence at s, of at most `avail`
 * bytes, or 0 if it is not one (overlong forms, surrogates and code points
 * above U+10FFFF are not). */
int sf_utf8_len(const unsigned char *s, size_t avail);
/* Number of code points in n bytes of UTF-8 (bytes that are not
 * continuation bytes). */
size_t sf_utf8_count(const char *s, size_t n);
/* A copy of s with each byte that starts no valid sequence replaced by
 * U+FFFD (NULL for NULL). */
char *sf_utf8_sanitize(const char *s);

#ifdef __cplusplus
}
#endif
#endif
