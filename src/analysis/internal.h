/* Helpers shared by the analysis sources (and their tests); not public API. */
#ifndef SAEFLOW_ANALYSIS_INTERNAL_H
#define SAEFLOW_ANALYSIS_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "saeflow/buf.h"
#include "saeflow/common.h"

/* JSON pieces of the explorer's data files (explore.c): a number with 5
 * significant digits (null when not finite), and a string literal that also
 * escapes '<' and U+2028/2029. */
void sf_explore_json_num(sf_sbuf *b, double v);
void sf_explore_json_str(sf_sbuf *b, const char *s);
/* Calls fn(ctx, word) for each searchable word of a caption (see explore.c). */
void sf_explore_caption_words(const char *s, void (*fn)(void *, const char *), void *ctx);

/* The explorer's static files, embedded from web/ at build time. */
typedef struct {
    const char *path;       /* relative to the site folder */
    const char *data, *end; /* bytes [data, end) */
} sf_web_asset;
extern const sf_web_asset sf_web_assets[];
extern const int sf_web_n_assets;

#endif
