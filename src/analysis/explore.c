/* The explorer site: a static folder that opens from disk (file://) or via
 * `saeflow serve`. Chromium blocks fetch()/XHR of file:// URLs, so every data
 * file is JavaScript that assigns JSON to a global ("JSON in JS") and is
 * loaded with a <script> tag, which file:// allows.
 *
 *   SITE/index.html, assets/app.js, assets/style.css   (embedded in the binary)
 *   SITE/data/index.js   window.SF_INDEX = {...}: per-feature density, max,
 *                        mean, count, top-1 caption/thumbnail; metadata;
 *                        training curves; SAE shape
 *   SITE/data/words.js   window.SF_WORDS = {"word": [[feature, hits], ...]}:
 *                        which features have the word in their top rows'
 *                        captions (hits = how many of those rows)
 *   SITE/data/f/CCCC.js  SF_CHUNK(C, [...]): features 64C .. 64C+63 with their
 *                        top rows (row, value, thumbnail flag, caption; in
 *                        token mode also the best token and the heat map as
 *                        sparse [position, 0..255] pairs), histogram, decoder
 *                        neighbours and co-occurrence neighbours
 *   SITE/img/R.jpg       thumbnail of dataset row R
 */
#include <ctype.h>
#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analysis/internal.h"
#include "saeflow/analysis.h"
#include "saeflow/buf.h"
#include "saeflow/sae.h"

#define CHUNK 64 /* features per data/f file */

/* ---- JSON pieces ---------------------------------------------------------- */

/* A float for JSON: 5 significant digits is plenty for display; non-finite
 * values (not valid JSON) become null. */
void sf_explore_json_num(sf_sbuf *b, double v) {
    if (!isfinite(v)) {
        sf_sb_puts(b, "null");
        return;
    }
    sf_sb_printf(b, "%.5g", v);
}

/* JSON string literal of valid UTF-8 text; also escapes U+2028/2029 (line
 * terminators in older JS) and '<' (so "</script>" can never close a tag
 * should the JSON ever be inlined into HTML). */
void sf_explore_json_str(sf_sbuf *b, const char *s) {
    if (!s) {
        sf_sb_puts(b, "null");
        return;
    }
    sf_sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        if (c == '"')
            sf_sb_puts(b, "\\\"");
        else if (c == '\\')
            sf_sb_puts(b, "\\\\");
        else if (c == '\n')
            sf_sb_puts(b, "\\n");
        else if (c == '\r')
            sf_sb_puts(b, "\\r");
        else if (c == '\t')
            sf_sb_puts(b, "\\t");
        else if (c < 0x20 || c == '<')
            sf_sb_printf(b, "\\u%04x", c);
        else if (c == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)) {
            sf_sb_printf(b, "\\u%04x", p[2] == 0xA8 ? 0x2028 : 0x2029);
            p += 2;
        } else
            sf_sb_put(b, (const char *)p, 1);
    }
    sf_sb_put(b, "\"", 1);
}

static int write_sb(const char *dir, const char *name, const sf_sbuf *b) {
    char *path = sf_path_join(dir, name);
    int rc = sf_write_file_atomic(path, b->s, b->len);
    free(path);
    return rc;
}

/* ---- caption words -> features ------------------------------------------ */

static const char *const STOPWORDS[] = {"a",     "an",   "and",  "are", "as",   "at",   "be",
                                        "by",    "for",  "from", "has", "in",   "into", "is",
                                        "it",    "its",  "of",   "on",  "or",   "that", "the",
                                        "their", "this", "to",   "was", "with", NULL};

static int is_stopword(const char *w) {
    for (int i = 0; STOPWORDS[i]; i++)
        if (!strcmp(w, STOPWORDS[i])) return 1;
    return 0;
}

/* Splits valid UTF-8 text into words: runs of ASCII letters/digits and
 * non-ASCII characters, ASCII lower-cased (the page tokenises queries the
 * same way). Calls fn for each word of >= 2 bytes that is not all digits and
 * not a stopword. */
void sf_explore_caption_words(const char *s, void (*fn)(void *, const char *), void *ctx) {
    char w[128];
    size_t n = 0;
    int digits = 1;
    for (const unsigned char *p = (const unsigned char *)s;; p++) {
        unsigned c = *p;
        if (c && (isalnum(c) || c >= 0x80)) {
            if (n < sizeof w - 1) w[n++] = (char)(c < 0x80 ? tolower((int)c) : (int)c);
            if (!(c >= '0' && c <= '9')) digits = 0;
            continue;
        }
        if (n >= 2 && n < sizeof w - 1 && !digits) {
            w[n] = 0;
            /* a word cut mid-character (n hit the cap) is never emitted */
            if (!is_stopword(w)) fn(ctx, w);
        }
        n = 0;
        digits = 1;
        if (!c) break;
    }
}

typedef struct {
    int32_t feature, hits;
} posting;

typedef struct {
    char *word;
    posting *p;
    int n, cap;
} word_entry;

typedef struct {
    word_entry *e; /* open addressing, power-of-two size */
    size_t size, used;
} word_map;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static word_entry *wm_get(word_map *m, const char *w) {
    if ((m->used + 1) * 2 > m->size) { /* grow at 50% load */
        size_t ns = m->size ? m->size * 2 : 1024;
        word_entry *ne = sf_calloc(ns, sizeof *ne);
        for (size_t i = 0; i < m->size; i++) {
            if (!m->e[i].word) continue;
            size_t h = hash_str(m->e[i].word) & (ns - 1);
            while (ne[h].word)
                h = (h + 1) & (ns - 1);
            ne[h] = m->e[i];
        }
        free(m->e);
        m->e = ne;
        m->size = ns;
    }
    size_t h = hash_str(w) & (m->size - 1);
    while (m->e[h].word && strcmp(m->e[h].word, w))
        h = (h + 1) & (m->size - 1);
    if (!m->e[h].word) {
        m->e[h].word = sf_strdup(w);
        m->used++;
    }
    return &m->e[h];
}

typedef struct {
    word_map *m;
    int32_t feature;
} word_ctx;

/* One occurrence of word w in a top row of `feature`. Features are visited in
 * order, so the feature's posting, if any, is the last one. Each row counts
 * once per word (rows are de-duplicated by the caller's per-row set). */
static void add_word(void *ctx, const char *w) {
    word_ctx *c = ctx;
    word_entry *e = wm_get(c->m, w);
    if (e->n && e->p[e->n - 1].feature == c->feature) {
        e->p[e->n - 1].hits++;
        return;
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 4;
        e->p = sf_realloc(e->p, (size_t)e->cap * sizeof(posting));
    }
    e->p[e->n].feature = c->feature;
    e->p[e->n].hits = 1;
    e->n++;
}

/* Words of one caption, each once (so hits counts rows, not repetitions). */
typedef struct {
    char **w;
    int n, cap;
} word_set;
static void ws_add(void *ctx, const char *w) {
    word_set *s = ctx;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->w[i], w)) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->w = sf_realloc(s->w, (size_t)s->cap * sizeof(char *));
    }
    s->w[s->n++] = sf_strdup(w);
}
static void ws_clear(word_set *s) {
    for (int i = 0; i < s->n; i++)
        free(s->w[i]);
    s->n = 0;
}

static int posting_cmp(const void *a, const void *b) {
    const posting *x = a, *y = b;
    if (x->hits != y->hits) return y->hits - x->hits;
    return (x->feature > y->feature) - (x->feature < y->feature);
}
static int entry_cmp(const void *a, const void *b) {
    const word_entry *x = a, *y = b;
    return strcmp(x->word, y->word);
}

/* ---- rows: unique dataset rows of all top-k lists ------------------------- */

static int i64_cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t row_pos(const int64_t *u, int64_t nu, int64_t r) {
    int64_t lo = 0, hi = nu;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (u[mid] < r)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nu && u[lo] == r ? lo : -1;
}

/* ---- training log ----------------------------------------------------------- */

typedef struct {
    double *v[5]; /* step, loss, fvu, l0, dead */
    int n, cap;
} curves;

static double jnum(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (!cJSON_IsNumber(x) && b) x = cJSON_GetObjectItemCaseSensitive(o, b);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

/* Reads a JSON-lines log ("step", "loss", "l2_normalised" or "fvu", "l0",
 * "dead" per line, as `saeflow train` writes metrics.jsonl). Lines that are
 * not JSON objects are skipped (a log being written may end mid-line).
 * Long logs are thinned to ~2000 points by keeping every s-th line. */
static int read_curves(const char *path, curves *c) {
    memset(c, 0, sizeof *c);
    size_t len;
    char *txt = sf_read_file(path, &len);
    if (!txt) return -1;
    int lines = 0;
    for (char *p = txt; *p; p++)
        lines += *p == '\n';
    int stride = lines > 2000 ? (lines + 1999) / 2000 : 1, li = 0;
    for (char *line = txt; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (li++ % stride == 0 || !nl || !nl[1]) {
            cJSON *o = cJSON_Parse(line);
            if (cJSON_IsObject(o)) {
                if (c->n == c->cap) {
                    c->cap = c->cap ? c->cap * 2 : 256;
                    for (int k = 0; k < 5; k++)
                        c->v[k] = sf_realloc(c->v[k], (size_t)c->cap * sizeof(double));
                }
                double step = jnum(o, "step", NULL);
                c->v[0][c->n] = isfinite(step) ? step : c->n;
                c->v[1][c->n] = jnum(o, "loss", NULL);
                c->v[2][c->n] = jnum(o, "fvu", "l2_normalised");
                c->v[3][c->n] = jnum(o, "l0", NULL);
                c->v[4][c->n] = jnum(o, "dead", "dead_fraction");
                c->n++;
            }
            cJSON_Delete(o);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(txt);
    return 0;
}

static void curves_free(curves *c) {
    for (int k = 0; k < 5; k++)
        free(c->v[k]);
    memset(c, 0, sizeof *c);
}

/* ---- the build ------------------------------------------------------------------ */

typedef struct {
    char *caption; /* sanitised UTF-8 or NULL */
    int has_img;
    char **toks; /* token strings (sf_row_source.tokens), sanitised; NULL if none */
    int n_toks;
} row_info;

static void json_arr_f32(sf_sbuf *b, const float *v, int64_t n) {
    sf_sb_put(b, "[", 1);
    for (int64_t i = 0; i < n; i++) {
        if (i) sf_sb_put(b, ",", 1);
        sf_explore_json_num(b, v[i]);
    }
    sf_sb_put(b, "]", 1);
}

/* Co-occurrence neighbours, from the top-k lists: the CO_M features that
 * share the most top rows (examples) with feature j (ties: lower id). An
 * approximation of "fires on the same rows" that needs no second pass over
 * the activations: it sees only the rows some feature kept. co_idx / co_cnt
 * (n, CO_M), -1 / 0 beyond the features that share any row. */
#define CO_M 10
static void cooccurrence(const sf_topk_file *tk, const int64_t *urows, int64_t nu, int32_t *co_idx,
                         int32_t *co_cnt) {
    const int64_t n = tk->n;
    const int N = tk->N;
    /* row -> features that keep it (CSR over the unique rows) */
    int64_t *start = sf_calloc((size_t)nu + 2, sizeof(int64_t));
    int32_t *feat = sf_malloc((size_t)(n * N) * sizeof(int32_t) + 4);
    for (int64_t i = 0; i < n * N; i++)
        if (tk->row_ids[i] >= 0) start[row_pos(urows, nu, tk->row_ids[i]) + 2]++;
    for (int64_t u = 0; u < nu; u++)
        start[u + 2] += start[u + 1];
    for (int64_t j = 0; j < n; j++) /* ascending j: each row's list is sorted */
        for (int i = 0; i < N; i++)
            if (tk->row_ids[j * N + i] >= 0)
                feat[start[row_pos(urows, nu, tk->row_ids[j * N + i]) + 1]++] = (int32_t)j;
#pragma omp parallel
    {
        int32_t *cnt = sf_calloc((size_t)n, sizeof(int32_t));
        int32_t *touched = sf_malloc((size_t)(n + 1) * sizeof(int32_t));
#pragma omp for schedule(dynamic, 16)
        for (int64_t j = 0; j < n; j++) {
            int nt = 0;
            for (int i = 0; i < N; i++) {
                int64_t r = tk->row_ids[j * N + i];
                if (r < 0) break;
                int64_t u = row_pos(urows, nu, r);
                for (int64_t q = start[u]; q < start[u + 1]; q++) {
                    int32_t f = feat[q];
                    if (f == j) continue;
                    if (!cnt[f]++) touched[nt++] = f;
                }
            }
            for (int m = 0; m < CO_M; m++) { /* selection of the CO_M best */
                int best = -1;
                for (int t = 0; t < nt; t++) {
                    int32_t f = touched[t];
                    if (cnt[f] <= 0) continue;
                    if (best < 0 || cnt[f] > cnt[touched[best]] ||
                        (cnt[f] == cnt[touched[best]] && f < touched[best]))
                        best = t;
                }
                co_idx[j * CO_M + m] = best < 0 ? -1 : touched[best];
                co_cnt[j * CO_M + m] = best < 0 ? 0 : cnt[touched[best]];
                if (best >= 0) cnt[touched[best]] = -cnt[touched[best]]; /* taken */
            }
            for (int t = 0; t < nt; t++)
                cnt[touched[t]] = 0;
        }
        free(cnt);
        free(touched);
    }
    free(start);
    free(feat);
}

/* Examples across the activation range: the firing rows of a feature split
 * into quartiles by the histogram (a bin goes to the quartile holding its
 * middle row), and from the samples of each quartile's bins (see
 * sf_topk_sample) up to per_q rows spread over its values. */
typedef struct {
    int64_t row;
    float val;
    int32_t pos;
} range_pick;
typedef struct {
    double lo, hi; /* value range of the quartile's bins */
    int n;         /* picks */
} range_q;

static int pick_cmp(const void *a, const void *b) {
    const range_pick *x = a, *y = b;
    if (x->val != y->val) return x->val < y->val ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

static void range_select(const sf_topk_file *tk, int64_t j, int per_q, range_q *qs,
                         range_pick *out) {
    const int bins = tk->bins, S = tk->S;
    const int64_t *h = tk->hist + j * bins;
    int64_t total = 0;
    for (int b = 0; b < bins; b++)
        total += h[b];
    const double w = tk->hist_max[j] / bins;
    range_pick *all = sf_malloc((size_t)(bins * S) * sizeof(range_pick) + 1);
    for (int q = 0; q < 4; q++)
        qs[q] = (range_q){0, 0, 0};
    int64_t cum = 0;
    int q_of[4096];
    for (int b = 0; b < bins; b++) {
        q_of[b] = total ? (int)((4 * (2 * cum + h[b])) / (2 * total)) : 0;
        if (q_of[b] > 3) q_of[b] = 3;
        cum += h[b];
    }
    for (int q = 0; q < 4; q++) {
        int m = 0, first = 1;
        for (int b = 0; b < bins; b++) {
            if (q_of[b] != q || !h[b]) continue;
            if (first) qs[q].lo = b * w, first = 0;
            qs[q].hi = (b + 1) * w;
            for (int i = 0; i < S; i++) {
                int64_t k = j * bins * S + (int64_t)b * S + i;
                if (tk->sample_rows[k] < 0) continue;
                all[m++] = (range_pick){tk->sample_rows[k], tk->sample_values[k],
                                        tk->sample_pos ? tk->sample_pos[k] : -1};
            }
        }
        qsort(all, (size_t)m, sizeof(range_pick), pick_cmp);
        int take = m < per_q ? m : per_q;
        for (int i = 0; i < take; i++) /* evenly over the sorted values */
            out[q * per_q + i] = all[take > 1 ? (int64_t)i * (m - 1) / (take - 1) : m / 2];
        qs[q].n = take;
    }
    free(all);
}

static int range_per_q(const sf_explore_opts *o) {
    return o->range_per_quartile == 0 ? 3 : o->range_per_quartile > 0 ? o->range_per_quartile : 0;
}

/* The distinct rows the site shows (top-k lists, range examples), ascending,
 * and the range picks (n, 4, per_q) / quartiles (n, 4) when per_q > 0. */
static void collect_rows(const sf_topk_file *tk, int per_q, int64_t **rows, int64_t *nrows,
                         range_pick **picks_out, range_q **quart_out) {
    const int64_t n = tk->n, N = tk->N;
    const int64_t sw = tk->sample_rows && per_q ? (int64_t)tk->bins * tk->S : 0;
    int64_t *urows = sf_malloc((size_t)(n * (N + sw)) * sizeof(int64_t) + 8), nu = 0;
    for (int64_t i = 0; i < n * N; i++)
        if (tk->row_ids[i] >= 0) urows[nu++] = tk->row_ids[i];
    range_pick *picks = sw ? sf_malloc((size_t)n * 4 * (size_t)per_q * sizeof(range_pick)) : NULL;
    range_q *quart = sw ? sf_malloc((size_t)n * 4 * sizeof(range_q)) : NULL;
    for (int64_t j = 0; sw && j < n; j++) {
        range_select(tk, j, per_q, quart + j * 4, picks + j * 4 * per_q);
        for (int q = 0; q < 4; q++)
            for (int i = 0; i < quart[j * 4 + q].n; i++)
                urows[nu++] = picks[(j * 4 + q) * per_q + i].row;
    }
    qsort(urows, (size_t)nu, sizeof(int64_t), i64_cmp);
    int64_t w = 0;
    for (int64_t i = 0; i < nu; i++)
        if (!w || urows[w - 1] != urows[i]) urows[w++] = urows[i];
    *rows = urows, *nrows = w;
    if (picks_out)
        *picks_out = picks;
    else
        free(picks);
    if (quart_out)
        *quart_out = quart;
    else
        free(quart);
}

int sf_explore_rows(const sf_explore_opts *o, int64_t **rows, int64_t *n) {
    sf_topk_file tk;
    if (sf_topk_open(&tk, o->topk_path)) return -1;
    collect_rows(&tk, range_per_q(o), rows, n, NULL, NULL);
    sf_topk_close(&tk);
    return 0;
}

/* "<digits>" + suffix at s: the number, else -1. */
static int64_t feature_number(const char *s, const char *suffix) {
    char *end;
    if (*s < '0' || *s > '9') return -1;
    long long v = strtoll(s, &end, 10);
    return strcmp(end, suffix) ? -1 : v;
}

/* The steering grid of every feature j < n in STEER, from one listing of the
 * folder: feature_<j>.png if it is a file, else the grid `flux generate
 * --steer-grid` wrote for it, row<R>_f<j>_grid.png (the lowest prompt row,
 * i.e. the first name, when there are several). (n) new strings, NULL where
 * a feature has none (every entry when STEER cannot be listed). */
static char **steer_grids(const char *steer_dir, int64_t n) {
    char **grid = sf_calloc((size_t)n, sizeof(char *));
    uint8_t *exact = sf_calloc((size_t)n, 1); /* grid[j] is feature_<j>.png */
    DIR *d = opendir(steer_dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        const char *nm = e->d_name;
        int64_t j = -1;
        int is_exact = !strncmp(nm, "feature_", 8);
        if (is_exact) {
            j = feature_number(nm + 8, ".png");
        } else if (!strncmp(nm, "row", 3)) {
            const char *f = strstr(nm + 3, "_f");
            while (f && strstr(f + 2, "_f"))
                f = strstr(f + 2, "_f");
            j = f ? feature_number(f + 2, "_grid.png") : -1;
        }
        if (j < 0 || j >= n || exact[j]) continue;
        char *path = sf_path_join(steer_dir, nm);
        if (is_exact ? sf_is_file(path) : !grid[j] || strcmp(path, grid[j]) < 0) {
            free(grid[j]);
            grid[j] = path, exact[j] = (uint8_t)is_exact;
        } else {
            free(path);
        }
    }
    if (d) closedir(d);
    free(exact);
    return grid;
}

/* Copies a steering grid (steer_grids) into the site as steer/feature_<j>.png;
 * 1 when there is one, 0 when not, -1 on error. */
static int copy_steer(const char *src, const char *out, int64_t j) {
    if (!src) return 0;
    char name[64];
    snprintf(name, sizeof name, "feature_%lld.png", (long long)j);
    size_t len;
    char *data = sf_read_file(src, &len);
    char *sd = sf_path_join(out, "steer"), *dst = sf_path_join(sd, name);
    int rc = data && !sf_mkdirs(sd) && !sf_write_file_atomic(dst, data, len) ? 1 : -1;
    free(data), free(sd), free(dst);
    return rc;
}

int sf_explore_build(const sf_explore_opts *o) {
    const char *out = o->out_dir;
    int thumb = o->thumb_size > 0 ? o->thumb_size : 160;
    int quality = o->jpeg_quality > 0 ? o->jpeg_quality : 85;
    int m_nb = o->neighbours > 0 ? o->neighbours : 0; /* 0: none */
    sf_topk_file tk;
    if (sf_topk_open(&tk, o->topk_path)) return -1;
    const int64_t n = tk.n;
    const int N = tk.N;
    int rc = -1;
    int32_t *nb_idx = NULL;
    float *nb_cos = NULL;
    int64_t *urows = NULL, nu = 0;
    row_info *ri = NULL;
    curves cv = {0};
    char *log_path = NULL;
    int sae_d = 0, sae_k = 0, have_nb = 0, n_badimg = 0;
    int64_t n_thumbs = 0, n_steer = 0;
    char **steer = NULL; /* (n) each feature's steering grid, or NULL */
    int32_t *co_idx = NULL, *co_cnt = NULL;
    range_pick *picks = NULL;
    range_q *quart = NULL;
    size_t n_words = 0;
    sf_sbuf b = {0};
    word_map wm = {0};

    /* folders and static assets */
    char *p_data = sf_path_join(out, "data"), *p_f = sf_path_join(p_data, "f");
    char *p_img = sf_path_join(out, "img"), *p_assets = sf_path_join(out, "assets");
    if (sf_mkdirs(p_f) || sf_mkdirs(p_img) || sf_mkdirs(p_assets)) goto done;
    if (o->steer_dir) steer = steer_grids(o->steer_dir, n);
    for (int i = 0; i < sf_web_n_assets; i++) {
        char *pth = sf_path_join(out, sf_web_assets[i].path);
        int r = sf_write_file_atomic(pth, sf_web_assets[i].data,
                                     (size_t)(sf_web_assets[i].end - sf_web_assets[i].data));
        free(pth);
        if (r) goto done;
    }

    /* decoder neighbours from the checkpoint */
    if (o->checkpoint) {
        sf_sae sae;
        if (sf_sae_load(&sae, o->checkpoint)) goto done;
        if (sae.n != n) {
            sf_error("%s: SAE has %d features, top-k file %s has %lld", o->checkpoint, sae.n,
                     o->topk_path, (long long)n);
            sf_sae_free(&sae);
            goto done;
        }
        sae_d = sae.d;
        sae_k = sae.k;
        if (m_nb > 0) { /* W_decT rows are the decoder columns */
            nb_idx = sf_malloc((size_t)n * (size_t)m_nb * sizeof(int32_t));
            nb_cos = sf_malloc((size_t)n * (size_t)m_nb * sizeof(float));
            sf_decoder_neighbours(sae.W_decT, n, sae.d, m_nb, nb_idx, nb_cos);
            have_nb = 1;
        }
        sf_sae_free(&sae);
    }
    /* training log */
    if (o->train_log)
        log_path = sf_strdup(o->train_log);
    else if (o->checkpoint) {
        log_path = sf_path_join(o->checkpoint, "metrics.jsonl");
        if (!sf_is_file(log_path)) {
            free(log_path);
            log_path = NULL;
        }
    }
    if (log_path && read_curves(log_path, &cv)) goto done;

    /* unique rows of all top-k lists and of the range samples shown */
    const int per_q = range_per_q(o);
    const int64_t sw = tk.sample_rows && per_q ? (int64_t)tk.bins * tk.S : 0;
    collect_rows(&tk, per_q, &urows, &nu, &picks, &quart);
    ri = sf_calloc((size_t)nu + 1, sizeof(row_info));

    /* captions and thumbnails; the source is called under a lock, decoding,
     * resizing and encoding run in parallel */
    if (o->rows) {
        sf_progress pg;
        sf_progress_start(&pg, "thumbnails", (uint64_t)nu, "img");
        if (o->quiet) pg.enabled = 0;
        int failed = 0;
        int64_t done_ = 0;
        char errbuf[1024] = "";
#pragma omp parallel for schedule(dynamic, 4)
        for (int64_t i = 0; i < nu; i++) {
            int skip;
#pragma omp atomic read
            skip = failed;
            if (skip) continue;
            uint8_t *bytes = NULL;
            size_t len = 0;
            char *cap = NULL;
            int r;
#pragma omp critical(sf_explore_source)
            {
                r = o->rows->get(o->rows->ctx, urows[i], &bytes, &len, &cap);
                if (!r && o->rows->tokens)
                    r = o->rows->tokens(o->rows->ctx, urows[i], &ri[i].toks, &ri[i].n_toks);
                if (r) snprintf(errbuf, sizeof errbuf, "%s", sf_errmsg());
            }
            if (r) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            ri[i].caption = sf_utf8_sanitize(cap);
            free(cap);
            for (int q = 0; q < ri[i].n_toks; q++) {
                char *t = sf_utf8_sanitize(ri[i].toks[q]);
                free(ri[i].toks[q]);
                ri[i].toks[q] = t;
            }
            if (bytes) {
                char name[64];
                snprintf(name, sizeof name, "row %lld", (long long)urows[i]);
                uint8_t *jpg;
                size_t jl;
                if (sf_thumbnail_jpeg(bytes, len, name, thumb, quality, &jpg, &jl) == 0) {
                    char fn[64];
                    snprintf(fn, sizeof fn, "img/%lld.jpg", (long long)urows[i]);
                    char *pth = sf_path_join(out, fn);
                    if (sf_write_file_atomic(pth, jpg, jl) == 0)
                        ri[i].has_img = 1;
                    else {
#pragma omp critical(sf_explore_source)
                        snprintf(errbuf, sizeof errbuf, "%s", sf_errmsg());
#pragma omp atomic write
                        failed = 1;
                    }
                    free(pth);
                    free(jpg);
                } else {
                    /* one undecodable image should not sink the site */
#pragma omp critical(sf_explore_source)
                    {
                        if (n_badimg++ < 5) fprintf(stderr, "explore: warning: %s\n", sf_errmsg());
                    }
                }
                free(bytes);
            }
#pragma omp critical(sf_explore_progress)
            sf_progress_update(&pg, (uint64_t)++done_, NULL);
        }
        sf_progress_finish(&pg, NULL);
        if (failed) {
            sf_error("%s", errbuf);
            goto done;
        }
        if (n_badimg > 5)
            fprintf(stderr, "explore: warning: %d images could not be decoded\n", n_badimg);
        for (int64_t i = 0; i < nu; i++)
            n_thumbs += ri[i].has_img;
    }
    co_idx = sf_malloc((size_t)n * CO_M * sizeof(int32_t));
    co_cnt = sf_malloc((size_t)n * CO_M * sizeof(int32_t));
    cooccurrence(&tk, urows, nu, co_idx, co_cnt);

    /* words -> features */
    {
        word_set ws = {0};
        word_ctx wc = {&wm, 0};
        for (int64_t j = 0; j < n; j++) {
            wc.feature = (int32_t)j;
            for (int i = 0; i < N; i++) {
                int64_t p = row_pos(urows, nu, tk.row_ids[j * N + i]);
                if (p < 0 || !ri[p].caption) continue;
                ws_clear(&ws);
                sf_explore_caption_words(ri[p].caption, ws_add, &ws);
                for (int q = 0; q < ws.n; q++)
                    add_word(&wc, ws.w[q]);
            }
        }
        ws_clear(&ws);
        free(ws.w);
    }

    /* data/index.js */
    {
        sf_sb_puts(&b, "window.SF_INDEX = {\"version\":1,");
        sf_sb_printf(&b, "\"n\":%lld,\"N\":%d,\"rows\":%lld,\"bins\":%d,\"d\":%d,\"k\":%d,",
                     (long long)n, N, (long long)tk.rows, tk.bins, sae_d, sae_k);
        sf_sb_puts(&b, "\"title\":");
        sf_explore_json_str(&b, o->title && *o->title ? o->title : "saeflow explorer");
        sf_sb_puts(&b, ",\"meta\":{");
        for (int i = 0; i < tk.st.n_meta; i++) {
            char *k = sf_utf8_sanitize(tk.st.meta_keys[i]),
                 *v = sf_utf8_sanitize(tk.st.meta_vals[i]);
            if (i) sf_sb_put(&b, ",", 1);
            sf_explore_json_str(&b, k);
            sf_sb_put(&b, ":", 1);
            sf_explore_json_str(&b, v);
            free(k);
            free(v);
        }
        sf_sb_puts(&b, "},\"density\":");
        json_arr_f32(&b, tk.density, n);
        sf_sb_puts(&b, ",\"max\":");
        json_arr_f32(&b, tk.max, n);
        sf_sb_puts(&b, ",\"mean\":");
        json_arr_f32(&b, tk.mean, n);
        sf_sb_puts(&b, ",\"count\":[");
        for (int64_t j = 0; j < n; j++)
            sf_sb_printf(&b, "%s%lld", j ? "," : "", (long long)tk.count[j]);
        /* top-1 row per feature: thumbnail flag and caption, for the list */
        sf_sb_puts(&b, "],\"top\":[");
        for (int64_t j = 0; j < n; j++) {
            if (j) sf_sb_put(&b, ",", 1);
            int64_t r = tk.row_ids[j * N];
            int64_t p = r >= 0 ? row_pos(urows, nu, r) : -1;
            if (p < 0) {
                sf_sb_puts(&b, "null");
                continue;
            }
            sf_sb_printf(&b, "[%lld,%d,", (long long)r, ri[p].has_img);
            /* the list shows one line: keep index.js small for long captions */
            const char *cap = ri[p].caption;
            if (cap && strlen(cap) > 160) {
                size_t cut = 160;
                while (cut > 0 && ((unsigned char)cap[cut] & 0xC0) == 0x80)
                    cut--; /* UTF-8 boundary */
                char *sh = sf_malloc(cut + 4);
                memcpy(sh, cap, cut);
                memcpy(sh + cut, "\xE2\x80\xA6", 4); /* U+2026 and NUL */
                sf_explore_json_str(&b, sh);
                free(sh);
            } else {
                sf_explore_json_str(&b, cap);
            }
            sf_sb_put(&b, "]", 1);
        }
        sf_sb_puts(&b, "],\"curves\":");
        if (cv.n) {
            static const char *const names[5] = {"step", "loss", "fvu", "l0", "dead"};
            sf_sb_put(&b, "{", 1);
            for (int k = 0; k < 5; k++) {
                sf_sb_printf(&b, "%s\"%s\":[", k ? "," : "", names[k]);
                for (int i = 0; i < cv.n; i++) {
                    if (i) sf_sb_put(&b, ",", 1);
                    sf_explore_json_num(&b, cv.v[k][i]);
                }
                sf_sb_put(&b, "]", 1);
            }
            sf_sb_put(&b, "}", 1);
        } else {
            sf_sb_puts(&b, "null");
        }
        /* token mode: the layout the heat maps are drawn on */
        if (tk.T) {
            sf_sb_printf(&b,
                         ",\"tokens\":{\"T\":%d,\"grid\":[%d,%d],\"first\":%d,\"examples\":%lld},"
                         "\"ex_count\":[",
                         tk.T, tk.grid_h, tk.grid_w, tk.grid_first, (long long)tk.examples);
            for (int64_t j = 0; j < n; j++)
                sf_sb_printf(&b, "%s%lld", j ? "," : "", (long long)tk.ex_count[j]);
            sf_sb_put(&b, "]", 1);
        } else {
            sf_sb_puts(&b, ",\"tokens\":null");
        }
        sf_sb_printf(&b, ",\"neighbours\":%s,\"has_rows\":%s,\"thumbs\":%lld,\"bad_images\":%d};\n",
                     have_nb ? "true" : "false", o->rows ? "true" : "false", (long long)n_thumbs,
                     n_badimg);
        if (write_sb(p_data, "index.js", &b)) goto done;
    }

    /* data/words.js */
    {
        b.len = 0;
        word_entry *es = sf_malloc((wm.used + 1) * sizeof(word_entry));
        size_t ne = 0;
        for (size_t i = 0; i < wm.size; i++)
            if (wm.e[i].word) es[ne++] = wm.e[i];
        qsort(es, ne, sizeof(word_entry), entry_cmp);
        /* A word counts for a feature when it is in at least min_rows of the
         * feature's top captions (default 2 when N >= 8): one incidental
         * mention says little, and with long captions it would multiply the
         * file size. At most the best 1000 features per word are kept. */
        int min_rows = o->min_word_rows > 0 ? o->min_word_rows : (N >= 8 ? 2 : 1);
        sf_sb_puts(&b, "window.SF_WORDS = {");
        size_t written = 0;
        for (size_t i = 0; i < ne; i++) {
            qsort(es[i].p, (size_t)es[i].n, sizeof(posting), posting_cmp);
            int lim = es[i].n < 1000 ? es[i].n : 1000;
            while (lim > 0 && es[i].p[lim - 1].hits < min_rows)
                lim--; /* sorted by hits desc */
            if (!lim) continue;
            if (written++) sf_sb_puts(&b, ",\n");
            sf_explore_json_str(&b, es[i].word);
            sf_sb_put(&b, ":[", 2);
            for (int q = 0; q < lim; q++)
                sf_sb_printf(&b, "%s[%d,%d]", q ? "," : "", es[i].p[q].feature, es[i].p[q].hits);
            sf_sb_put(&b, "]", 1);
        }
        n_words = written;
        sf_sb_puts(&b, "};\n");
        free(es);
        if (write_sb(p_data, "words.js", &b)) goto done;
    }

    /* data/f/CCCC.js */
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
        b.len = 0;
        sf_sb_printf(&b, "SF_CHUNK(%lld,[", (long long)(c0 / CHUNK));
        for (int64_t j = c0; j < n && j < c0 + CHUNK; j++) {
            if (j > c0) sf_sb_puts(&b, ",\n");
            sf_sb_printf(&b, "{\"id\":%lld,\"hist_max\":", (long long)j);
            sf_explore_json_num(&b, tk.hist_max[j]);
            sf_sb_puts(&b, ",\"hist\":[");
            for (int q = 0; q < tk.bins; q++)
                sf_sb_printf(&b, "%s%lld", q ? "," : "", (long long)tk.hist[j * tk.bins + q]);
            sf_sb_puts(&b, "],\"top\":[");
            int first = 1;
            for (int i = 0; i < N; i++) {
                int64_t r = tk.row_ids[j * N + i];
                if (r < 0) break;
                int64_t p = row_pos(urows, nu, r);
                sf_sb_printf(&b, "%s[%lld,", first ? "" : ",", (long long)r);
                first = 0;
                sf_explore_json_num(&b, tk.values[j * N + i]);
                sf_sb_printf(&b, ",%d,", p >= 0 && ri[p].has_img);
                sf_explore_json_str(&b, p >= 0 ? ri[p].caption : NULL);
                if (tk.T) { /* best token, then the heat map's nonzero tokens */
                    sf_sb_printf(&b, ",%d,[", tk.pos[j * N + i]);
                    const uint8_t *h = tk.heat + ((size_t)j * N + (size_t)i) * (size_t)tk.T;
                    int any = 0;
                    for (int q = 0; q < tk.T; q++)
                        if (h[q]) sf_sb_printf(&b, "%s%d,%d", any++ ? "," : "", q, h[q]);
                    sf_sb_put(&b, "]", 1);
                    if (p >= 0 && ri[p].n_toks) { /* the text tokens, from position 0 */
                        sf_sb_puts(&b, ",[");
                        for (int q = 0; q < ri[p].n_toks; q++) {
                            if (q) sf_sb_put(&b, ",", 1);
                            sf_explore_json_str(&b, ri[p].toks[q]);
                        }
                        sf_sb_put(&b, "]", 1);
                    }
                }
                sf_sb_put(&b, "]", 1);
            }
            sf_sb_puts(&b, "],\"nb\":[");
            if (have_nb)
                for (int q = 0; q < m_nb && nb_idx[j * m_nb + q] >= 0; q++) {
                    sf_sb_printf(&b, "%s[%d,", q ? "," : "", nb_idx[j * m_nb + q]);
                    sf_explore_json_num(&b, nb_cos[j * m_nb + q]);
                    sf_sb_put(&b, "]", 1);
                }
            if (sw) { /* [[lo, hi, [[row, value, has_img, caption(, pos)], ...]], x4] */
                sf_sb_puts(&b, "],\"range\":[");
                for (int q = 0; q < 4; q++) {
                    const range_q *rq = &quart[j * 4 + q];
                    sf_sb_puts(&b, q ? ",[" : "[");
                    sf_explore_json_num(&b, rq->lo);
                    sf_sb_put(&b, ",", 1);
                    sf_explore_json_num(&b, rq->hi);
                    sf_sb_puts(&b, ",[");
                    for (int i = 0; i < rq->n; i++) {
                        const range_pick *pk = &picks[(j * 4 + q) * per_q + i];
                        int64_t p = row_pos(urows, nu, pk->row);
                        sf_sb_printf(&b, "%s[%lld,", i ? "," : "", (long long)pk->row);
                        sf_explore_json_num(&b, pk->val);
                        sf_sb_printf(&b, ",%d,", p >= 0 && ri[p].has_img);
                        sf_explore_json_str(&b, p >= 0 ? ri[p].caption : NULL);
                        if (tk.T) sf_sb_printf(&b, ",%d", pk->pos);
                        sf_sb_put(&b, "]", 1);
                    }
                    sf_sb_puts(&b, "]]");
                }
            }
            if (o->steer_dir) { /* a steering grid made for this feature */
                int st = copy_steer(steer[j], out, j);
                if (st < 0) goto done;
                if (st) sf_sb_printf(&b, "],\"steer\":\"steer/feature_%lld.png", (long long)j);
                if (st) n_steer++;
                sf_sb_puts(&b, st ? "\",\"co\":[" : "],\"co\":[");
            } else {
                sf_sb_puts(&b, "],\"co\":[");
            }
            for (int q = 0; q < CO_M && co_idx[j * CO_M + q] >= 0; q++)
                sf_sb_printf(&b, "%s[%d,%d]", q ? "," : "", co_idx[j * CO_M + q],
                             co_cnt[j * CO_M + q]);
            sf_sb_puts(&b, "]}");
        }
        sf_sb_puts(&b, "]);\n");
        char name[32];
        snprintf(name, sizeof name, "%04lld.js", (long long)(c0 / CHUNK));
        if (write_sb(p_f, name, &b)) goto done;
    }
    if (!o->quiet)
        printf("explore: %lld features, %lld top rows, %lld thumbnails written (%d images could "
               "not be decoded), %zu searchable caption words%s; site in %s/index.html\n",
               (long long)n, (long long)nu, (long long)n_thumbs, n_badimg, n_words,
               n_steer ? ", steering grids" : "", out);
    rc = 0;
done:
    for (size_t i = 0; i < wm.size; i++) {
        free(wm.e[i].word);
        free(wm.e[i].p);
    }
    free(wm.e);
    for (int64_t i = 0; ri && i < nu; i++) {
        free(ri[i].caption);
        for (int q = 0; q < ri[i].n_toks; q++)
            free(ri[i].toks[q]);
        free(ri[i].toks);
    }
    free(ri);
    free(urows);
    free(nb_idx);
    free(nb_cos);
    free(co_idx);
    free(co_cnt);
    free(picks);
    free(quart);
    free(log_path);
    curves_free(&cv);
    sf_sb_free(&b);
    free(p_data);
    free(p_f);
    free(p_img);
    free(p_assets);
    for (int64_t j = 0; steer && j < n; j++)
        free(steer[j]);
    free(steer);
    sf_topk_close(&tk);
    return rc;
}
