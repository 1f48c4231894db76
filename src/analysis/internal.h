/* Helpers shared by the analysis sources (and their tests); not public API. */
#ifndef SAEFLOW_ANALYSIS_INTERNAL_H
#define SAEFLOW_ANALYSIS_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "saeflow/common.h"

/* A growable NUL-terminated string. */
typedef struct {
    char *s;
    size_t len, cap;
} sbuf;
void sb_init(sbuf *b);
void sb_free(sbuf *b);
void sb_put(sbuf *b, const char *s, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_printf(sbuf *b, const char *fmt, ...) SF_PRINTF(2, 3);
void sb_num(sbuf *b, double v);
void sb_json_str(sbuf *b, const char *s);

/* Copy of s with invalid UTF-8 bytes replaced by U+FFFD (NULL for NULL). */
char *utf8_sanitize(const char *s);
/* Calls fn(ctx, word) for each searchable word of a caption (see explore.c). */
void caption_words(const char *s, void (*fn)(void *, const char *), void *ctx);

/* The explorer's static files, embedded from web/ at build time. */
typedef struct {
    const char *path;       /* relative to the site folder */
    const char *data, *end; /* bytes [data, end) */
} sf_web_asset;
extern const sf_web_asset sf_web_assets[];
extern const int sf_web_n_assets;

#endif
