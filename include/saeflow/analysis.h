/* Feature analysis: the online top-k of activating rows per SAE feature, the
 * static explorer site built from it, and the small read-only web server.
 *
 * Top-k ("which inputs make feature j fire the most"):
 *   For every feature j of an SAE with n features, keep the N rows with the
 *   highest activation z[row, j] > 0 seen so far, plus streaming statistics:
 *   firing count (-> density = count / rows), sum (-> mean over firing rows),
 *   max, and a linear histogram of the firing values. Memory is
 *   O(n * (N + bins)), independent of the number of rows streamed.
 *
 *   Order: a candidate (v, r) beats (v', r') when v > v', or v == v' and
 *   r < r' (ties broken by row id: the LOWER row wins). That is a strict total
 *   order on distinct rows, so the kept set is exactly the first N rows of a
 *   full sort, whatever order, batch size or thread count the rows came in.
 *   Rows with z <= 0 (not firing) are never candidates; a feature that fired
 *   on fewer than N rows has its trailing slots set to row -1, value 0.
 *
 *   Histogram: SF_TOPK_HIST_BINS equal bins over [0, hist_max), where
 *   hist_max is the smallest power of two strictly above the feature's max.
 *   The range grows by doubling (merging bin pairs, which is exact), so the
 *   counts equal a direct histogram over the final range, independent of
 *   row order. Only firing values (z > 0) are counted.
 *
 *   Threads: features are split across OpenMP threads; each feature is only
 *   ever touched by one thread, in row order, so sums (kept in double) are
 *   bit-identical for every thread count and batch size.
 *
 * Top-k file (safetensors, what `saeflow topk` writes):
 *   topk_values F32 [n, N]  sorted: best first
 *   topk_rows   I64 [n, N]  row ids (dataset rows), -1 for empty slots
 *   density     F32 [n]     count / rows
 *   count       I64 [n]     rows with z > 0
 *   mean        F32 [n]     mean of z over the rows where it fires (0 if dead)
 *   max         F32 [n]     0 if dead
 *   hist        I64 [n, SF_TOPK_HIST_BINS]
 *   hist_max    F32 [n]     upper edge of the histogram range (0 if dead)
 *   sample_rows   I64 [n, bins * S]  examples across the activation range: per
 *   sample_values F32 [n, bins * S]  histogram bin, the S firing rows with the
 *                                    smallest hash(row, pos) (a sample of the
 *                                    bin independent of row order); -1 empty
 *   token mode only (see sf_topk_set_tokens):
 *   sample_pos  I32 [n, bins * S]  token of each sample
 *   topk_pos    I32 [n, N]     token position of each top example (-1 empty)
 *   topk_heat   U8  [n, N, T]  per-token activation, 255 = the example's value
 *   ex_count    I64 [n]        examples where the feature fires
 *   metadata tokens (T), grid ("H,W"), grid_first, examples
 *   __metadata__: format "saeflow-topk", rows, N, n, hist_bins, and whatever
 *   the caller adds (dataset, activations, key, checkpoint, ...).
 */
#ifndef SAEFLOW_ANALYSIS_H
#define SAEFLOW_ANALYSIS_H

#include "saeflow/common.h"
#include "saeflow/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SF_TOPK_HIST_BINS 32
#define SF_TOPK_SAMPLES 3 /* sampled rows per histogram bin */

typedef struct {
    uint64_t pri; /* hash(row, pos): the S smallest of a bin are kept */
    int64_t row;  /* -1: empty */
    float val;
    int32_t pos; /* token position, -1 without token mode */
} sf_topk_sample;

/* ---- online top-k -------------------------------------------------------- */

typedef struct {
    int64_t n;         /* features */
    int N;             /* rows kept per feature */
    int64_t rows;      /* rows seen so far */
    float *heap_val;   /* (n, N) per-feature min-heap on the "beats" order */
    int64_t *heap_row; /* (n, N) */
    int32_t *heap_len; /* (n) */
    int64_t *count;    /* (n) */
    double *sum;       /* (n) */
    float *max;        /* (n) */
    int64_t *hist;     /* (n, SF_TOPK_HIST_BINS) */
    int32_t *hist_exp; /* (n) hist range is [0, 2^hist_exp); INT32_MIN while empty */
    int64_t *stamp;    /* (n) scratch for the duplicate check */
    int64_t stamp_ctr;
    /* token mode (sf_topk_set_tokens); T == 0 otherwise */
    int T, grid_h, grid_w, grid_first;
    int32_t *heap_pos;  /* (n, N) token position of each heap entry */
    int32_t *heap_slot; /* (n, N) its heat-map slot */
    uint8_t *heat;      /* (n, N, T) slot s of feature j: heat[(j * N + s) * T + pos] */
    int64_t *pend_row;  /* (n) example being collected per feature, -1: none */
    int32_t *pend_len;  /* (n) */
    int32_t *pend_pos;  /* (n, T) firing tokens of that example */
    float *pend_val;    /* (n, T) */
    int64_t *ex_count;  /* (n) examples where the feature fires on some token */
    int64_t examples, last_row;
    sf_topk_sample *samples; /* (n, SF_TOPK_HIST_BINS, SF_TOPK_SAMPLES) */
} sf_topk;

int sf_topk_init(sf_topk *t, int64_t n, int N);
/* The sampling priority of a row (and token position, -1 without). */
uint64_t sf_topk_sample_pri(int64_t row, int32_t pos);
void sf_topk_free(sf_topk *t);

/* Adds B rows of sparse codes: row b has cnt[b] (or k, when cnt is NULL)
 * entries (idx[b*k + i], val[b*k + i]). Its row id is rows[b], or row0 + b
 * when rows is NULL. Entries with val <= 0 are ignored; an index outside
 * [0, n), a non-finite value or a feature listed twice in one row is an
 * error (-1, nothing added). Row ids must be distinct across all calls for
 * the determinism promise above. */
int sf_topk_add_sparse(sf_topk *t, int64_t B, int k, const int32_t *idx, const float *val,
                       const int32_t *cnt, int64_t row0, const int64_t *rows);
/* Token mode, for activations with one row per token (CLIP patches, FLUX
 * image and text tokens): call once after init, before adding rows. Every
 * example (dataset row) has T token positions; the ones in [grid_first,
 * grid_first + grid_h * grid_w) form a row-major grid_h x grid_w patch grid
 * (0 x 0: no grid; CLIP: T = 1 + g*g, CLS at 0, grid_first 1; FLUX at 256 px:
 * 512 text tokens then a 16 x 16 image grid, grid_first 512).
 * Then the top-N keeps EXAMPLES, not token rows: an example's value is its
 * largest token activation, its position the token holding it (ties: lower
 * position), and with it a heat map: every token's activation as
 * round(255 * z / value) (U8, 0 where the feature does not fire). The order
 * and determinism rules above apply to examples. count / mean / hist /
 * density stay per token row; ex_count counts examples. */
int sf_topk_set_tokens(sf_topk *t, int T, int grid_h, int grid_w, int grid_first);
/* Adds B token rows of sparse codes (as sf_topk_add_sparse) with their
 * dataset rows rows[b] and token positions pos[b] in [0, T). An example's
 * tokens must come together: rows never decrease across calls (-1 otherwise,
 * nothing added). */
int sf_topk_add_tokens(sf_topk *t, int64_t B, int k, const int32_t *idx, const float *val,
                       const int32_t *cnt, const int64_t *rows, const int32_t *pos);
/* Dense activations z (B, n); same rules. */
int sf_topk_add_dense(sf_topk *t, const float *z, int64_t B, int64_t row0, const int64_t *rows);

/* The sorted result (best first): values, rows (n, N). Empty slots: row -1,
 * value 0. In token mode also pos (n, N) (-1 when empty) and heat (n, N, T)
 * (either may be NULL); the examples still being collected are added first. */
void sf_topk_sorted(sf_topk *t, float *values, int64_t *rows);
void sf_topk_sorted_tokens(sf_topk *t, float *values, int64_t *rows, int32_t *pos, uint8_t *heat);

/* Writes the top-k file atomically. meta: NULL-terminated key/value pairs
 * (may be NULL). */
int sf_topk_write(sf_topk *t, const char *path, const char *const *meta);

/* A top-k file, opened and validated (shapes agree, rows in range). The
 * arrays point into the mapping or into owned copies. */
typedef struct {
    sf_st st;
    int64_t n, rows;
    int N, bins;
    const float *values;                          /* (n, N) */
    const int64_t *row_ids;                       /* (n, N) */
    const float *density, *mean, *max, *hist_max; /* (n) */
    const int64_t *count;                         /* (n) */
    const int64_t *hist;                          /* (n, bins) */
    /* token mode (NULL / 0 otherwise) */
    int T, grid_h, grid_w, grid_first;
    const int32_t *pos;      /* (n, N) */
    const uint8_t *heat;     /* (n, N, T) */
    const int64_t *ex_count; /* (n) */
    int64_t examples;
    /* samples across the range (NULL when absent): (n, bins * S) */
    int S;
    const int64_t *sample_rows;
    const float *sample_values;
    const int32_t *sample_pos; /* token mode */
    void *owned[6];            /* aligned copies of the I64 / I32 tensors */
} sf_topk_file;
int sf_topk_open(sf_topk_file *f, const char *path);
void sf_topk_close(sf_topk_file *f);

/* ---- explorer site --------------------------------------------------------- */

/* Where explore gets images and captions: `get` returns the encoded image
 * bytes of a dataset row (malloc'd, *bytes may be NULL when the row has no
 * image) and its caption (malloc'd or NULL). -1 with sf_error on failure.
 * Called from one thread at a time. */
typedef struct {
    int (*get)(void *ctx, int64_t row, uint8_t **bytes, size_t *len, char **caption);
    void *ctx;
    /* optional (NULL): the token strings of a row's text tokens, positions
     * 0.. (FLUX: the T5 tokens of the prompt), malloc'd array of malloc'd
     * strings, *n of them (0: none). Called right after get, same lock. */
    int (*tokens)(void *ctx, int64_t row, char ***toks, int *n);
} sf_row_source;

typedef struct {
    const char *topk_path;  /* input top-k file */
    const char *out_dir;    /* site folder (created; existing files replaced) */
    const char *checkpoint; /* SAE checkpoint dir (decoder neighbours, training log); may be NULL */
    const char *train_log;  /* JSON-lines training log; NULL: look in checkpoint dir */
    const char *title;      /* page title; NULL: "saeflow explorer" */
    const sf_row_source *rows; /* may be NULL: no thumbnails/captions */
    int thumb_size;            /* longest thumbnail edge in pixels (default 160) */
    int jpeg_quality;          /* default 85 */
    int neighbours;            /* decoder-cosine neighbours per feature (0: none; CLI default 10) */
    int min_word_rows;         /* search: a word must be in this many of a feature's top
                                  captions (0: 2 when N >= 8, else 1) */
    int quiet;                 /* no progress output */
    int range_per_quartile;    /* examples shown per activation quartile, from the top-k
                                  file's samples (0: 3; < 0: none) */
    const char *steer_dir;     /* steering grids: DIR/feature_<j>.png, copied into the site
                                  (steer/) and shown on feature j's page; NULL: none */
} sf_explore_opts;

int sf_explore_build(const sf_explore_opts *o);
/* The distinct dataset rows a site built with these options shows (top-k
 * lists and range examples), ascending: what the row source will be asked
 * for (a caller that makes images, FLUX, makes these first). New array. */
int sf_explore_rows(const sf_explore_opts *o, int64_t **rows, int64_t *n);

/* Decoder-direction cosine neighbours: W (n, d) rows are directions; for
 * every row the m most similar other rows by cosine, best first (ties: lower
 * index). nb_idx (n, m), nb_cos (n, m); rows beyond n - 1 get -1 / 0.
 * Zero rows have cosine 0 with everything. Blocked GEMM, O(n * block) memory. */
void sf_decoder_neighbours(const float *W, int64_t n, int64_t d, int m, int32_t *nb_idx,
                           float *nb_cos);

/* Thumbnail: decodes an image, scales it so the longest edge is at most
 * `size` (never up), encodes JPEG. *jpg is malloc'd. */
int sf_thumbnail_jpeg(const void *data, size_t len, const char *name, int size, int quality,
                      uint8_t **jpg, size_t *jpg_len);
/* RGB (h, w, 3) -> JPEG in memory (libjpeg). */
int sf_jpeg_encode(const uint8_t *rgb, int w, int h, int quality, uint8_t **jpg, size_t *jpg_len);

/* ---- server ---------------------------------------------------------------- */

/* Maps a request path (already percent-decoded, as libmicrohttpd hands it
 * over) to a file inside root_real (a realpath). Returns the HTTP status:
 * 200 with *out (malloc'd real path of a regular file), 400 for malformed
 * paths (no leading '/', "..", NUL, backslash), 403 for files escaping the
 * root via symlinks or not regular files, 404 when absent. "/" and paths
 * ending in "/" map to index.html in that folder. */
int sf_site_resolve(const char *root_real, const char *url, char **out);
/* Content type for a file name by extension ("application/octet-stream"
 * when unknown). */
const char *sf_content_type(const char *path);

typedef struct sf_server sf_server;
/* Starts serving `dir` on host:port (port 0: any free port) with its own
 * thread(s). host is an IPv4 or IPv6 literal (e.g. "127.0.0.1", "::1"). */
sf_server *sf_server_start(const char *dir, const char *host, int port);
int sf_server_port(const sf_server *s);
void sf_server_stop(sf_server *s);

#ifdef __cplusplus
}
#endif
#endif
