/* Parquet dataset source (cc3m:): LLaVA-ReCap-CC3M layout and simple flat
 * layouts. Column choice, per file, first match wins:
 *   image:   image.bytes | image | jpg | jpeg | png | webp      (BYTE_ARRAY)
 *   caption: conversations.list.element.value (last element)
 *            | conversations.list.item.value (the legacy list naming of
 *              pyarrow < 13 and Spark, in files that exist in the wild)
 *            | caption | text | txt                             (BYTE_ARRAY)
 *   id:      id | key | __key__   (else the global row number)
 * Only the needed columns are read, one row group at a time; the decoded
 * row group stays cached so get() on nearby rows is cheap. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "data/ds_internal.h"
#include "saeflow/common.h"
#include "saeflow/parquet.h"

typedef struct {
    sf_pq_file *f;
    int col_id, col_img, col_cap; /* -1 if absent / not needed */
    int cap_is_list;
    int64_t row0;     /* global row of the file's first row */
    int64_t *rg_row0; /* (n_rg + 1) */
} pq_part;

typedef struct {
    pq_part *parts;
    int64_t total;
    int64_t pos;
    int cur_file, cur_rg; /* loaded row group, -1 if none */
    sf_pq_chunk ch_id, ch_img, ch_cap;
    char *id_buf, *cap_buf;
    size_t id_cap, cap_cap;
} pq_src;

static int find_bytes_col(sf_pq_file *f, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        int c = sf_pq_find_column(f, names[i]);
        if (c >= 0 && sf_pq_column_type(f, c) == SF_PQ_BYTE_ARRAY) return c;
    }
    return -1;
}

static const char *const IMG_COLS[] = {"image.bytes", "image", "jpg", "jpeg", "png", "webp"};
static const char *const CAP_COLS[] = {"conversations.list.element.value",
                                       "conversations.list.item.value", "caption", "text", "txt"};
static const char *const ID_COLS[] = {"id", "key", "__key__"};

static int resolve_columns(sf_dataset *ds, pq_part *p) {
    sf_pq_file *f = p->f;
    p->col_img = p->col_cap = -1;
    p->col_id = find_bytes_col(f, ID_COLS, 3);
    if (p->col_id >= 0 && sf_pq_column_max_rep(f, p->col_id) > 0) p->col_id = -1;
    if (ds->flags & SF_DS_IMAGES) {
        p->col_img = find_bytes_col(f, IMG_COLS, 6);
        if (p->col_img < 0 || sf_pq_column_max_rep(f, p->col_img) > 0)
            return sf_error(
                "%s: no image column (looked for image.bytes, image, jpg, jpeg, png, webp as "
                "non-repeated BYTE_ARRAY)",
                sf_pq_name(f));
    }
    if (ds->flags & SF_DS_CAPTIONS) {
        p->col_cap = find_bytes_col(f, CAP_COLS, 5);
        if (p->col_cap < 0)
            return sf_error("%s: no caption column (looked for conversations.list.element.value, "
                            "conversations.list.item.value, caption, text, txt as BYTE_ARRAY)",
                            sf_pq_name(f));
        p->cap_is_list = sf_pq_column_max_rep(f, p->col_cap) > 0;
    }
    return 0;
}

static void unload(pq_src *s) {
    sf_pq_chunk_free(&s->ch_id);
    sf_pq_chunk_free(&s->ch_img);
    sf_pq_chunk_free(&s->ch_cap);
    s->cur_file = s->cur_rg = -1;
}

/* Makes row `r` of row group `rg` of file `fi` available. Sequential reads
 * decode whole row groups; random access (`sparse`) decodes only the image
 * pages holding the row, since images dominate a row group's bytes (the
 * small id and caption chunks are decoded whole and cached). */
static int load(pq_src *s, int fi, int rg, int64_t r, int sparse) {
    pq_part *p = &s->parts[fi];
    if (s->cur_file != fi || s->cur_rg != rg) {
        unload(s);
        if (p->col_id >= 0 && sf_pq_read_chunk(p->f, rg, p->col_id, &s->ch_id)) return -1;
        if (p->col_cap >= 0 && sf_pq_read_chunk(p->f, rg, p->col_cap, &s->ch_cap)) {
            unload(s);
            return -1;
        }
        s->cur_file = fi;
        s->cur_rg = rg;
    } else if (p->col_img < 0 || (r >= s->ch_img.row0 && r < s->ch_img.row0 + s->ch_img.n_rows)) {
        return 0;
    }
    if (p->col_img >= 0) {
        sf_pq_chunk_free(&s->ch_img);
        int rc = sparse ? sf_pq_read_chunk_rows(p->f, rg, p->col_img, r, r + 1, &s->ch_img)
                        : sf_pq_read_chunk(p->f, rg, p->col_img, &s->ch_img);
        if (rc) {
            unload(s);
            return -1;
        }
    }
    return 0;
}

/* Largest i in [0, n) with a[i] <= x (a ascending, a[0] <= x). */
static int64_t upper_index(const int64_t *a, int64_t n, int64_t x) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (a[mid] <= x)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static const char *copy_str(char **buf, size_t *cap, const uint8_t *p, size_t n) {
    if (n + 1 > *cap) {
        *cap = n + 1 > 2 * *cap ? n + 1 : 2 * *cap;
        free(*buf);
        *buf = sf_malloc(*cap);
    }
    memcpy(*buf, p, n);
    (*buf)[n] = 0;
    return *buf;
}

static int pq_next(sf_dataset *ds, sf_sample *out) {
    pq_src *s = ds->impl;
    if (s->pos >= s->total) return 0;
    int64_t row = s->pos;
    /* Find the file (parts have ascending row0), then the row group. */
    int lo = 0, hi = ds->n_files - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (s->parts[mid].row0 <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    /* Skip empty files that share row0 with the next one. */
    while (lo + 1 < ds->n_files && s->parts[lo + 1].row0 <= row)
        lo++;
    pq_part *p = &s->parts[lo];
    int64_t in_file = row - p->row0;
    int n_rg = sf_pq_num_row_groups(p->f);
    int rg = (int)upper_index(p->rg_row0, n_rg, in_file);
    while (rg + 1 < n_rg && p->rg_row0[rg + 1] <= in_file)
        rg++;
    int64_t r = in_file - p->rg_row0[rg];
    if (load(s, lo, rg, r, ds->random_access)) return -1;
    out->row = row;
    sf_pq_bytes b;
    if (p->col_id >= 0 && sf_pq_chunk_row_bytes(&s->ch_id, r, 0, &b))
        out->id = copy_str(&s->id_buf, &s->id_cap, b.ptr, b.len);
    else {
        char num[32];
        snprintf(num, sizeof num, "%" PRId64, row);
        out->id = copy_str(&s->id_buf, &s->id_cap, (const uint8_t *)num, strlen(num));
    }
    if (p->col_img >= 0 && sf_pq_chunk_row_bytes(&s->ch_img, r - s->ch_img.row0, 0, &b)) {
        out->image = b.ptr;
        out->image_len = b.len;
        out->image_ext = sf_image_ext_from_magic(b.ptr, b.len);
    }
    if (p->col_cap >= 0 && sf_pq_chunk_row_bytes(&s->ch_cap, r, 0, &b)) {
        out->caption = copy_str(&s->cap_buf, &s->cap_cap, b.ptr, b.len);
        out->caption_len = b.len;
    }
    s->pos++;
    return 1;
}

static int pq_seek(sf_dataset *ds, int64_t row) {
    pq_src *s = ds->impl;
    if (row > s->total)
        return sf_error("row %lld: dataset has %lld rows", (long long)row, (long long)s->total);
    s->pos = row;
    return 0;
}

static int64_t pq_count(sf_dataset *ds) {
    return ((pq_src *)ds->impl)->total;
}

static int pq_describe(sf_dataset *ds, FILE *out) {
    pq_src *s = ds->impl;
    int64_t rgs = 0;
    for (int i = 0; i < ds->n_files; i++)
        rgs += sf_pq_num_row_groups(s->parts[i].f);
    fprintf(out, "source:     parquet (%d file%s, %lld row groups)\n", ds->n_files,
            ds->n_files == 1 ? "" : "s", (long long)rgs);
    fprintf(out, "rows:       %lld\n", (long long)s->total);
    pq_part *p = &s->parts[0];
    fprintf(out, "created_by: %s\n", sf_pq_created_by(p->f));
    fprintf(out, "columns (%s):\n", sf_pq_name(p->f));
    for (int c = 0; c < sf_pq_num_columns(p->f); c++) {
        const char *use = c == p->col_img ? "  <- image"
                          : c == p->col_cap
                              ? (p->cap_is_list ? "  <- caption (last element)" : "  <- caption")
                          : c == p->col_id ? "  <- id"
                                           : "";
        fprintf(out, "  %-40s %-10s %s%s\n", sf_pq_column_path(p->f, c),
                sf_pq_type_name(sf_pq_column_type(p->f, c)),
                sf_pq_num_row_groups(p->f) ? sf_pq_chunk_codec(p->f, 0, c) : "", use);
    }
    fprintf(out, "schema:\n");
    sf_pq_print_schema(p->f, out);
    return 0;
}

static void pq_close(sf_dataset *ds) {
    pq_src *s = ds->impl;
    if (!s) return;
    unload(s);
    for (int i = 0; i < ds->n_files; i++) {
        sf_pq_close(s->parts[i].f);
        free(s->parts[i].rg_row0);
    }
    free(s->parts);
    free(s->id_buf);
    free(s->cap_buf);
    free(s);
    ds->impl = NULL;
}

static const ds_ops PQ_OPS = {pq_count, pq_next, pq_seek, pq_describe, pq_close};

int ds_parquet_init(sf_dataset *ds) {
    pq_src *s = sf_calloc(1, sizeof *s);
    s->parts = sf_calloc((size_t)ds->n_files, sizeof *s->parts);
    s->cur_file = s->cur_rg = -1;
    ds->impl = s;
    ds->ops = &PQ_OPS;
    int64_t total = 0;
    for (int i = 0; i < ds->n_files; i++) {
        pq_part *p = &s->parts[i];
        p->f =
            ds->mem ? sf_pq_open_mem(ds->mem, ds->mem_len, ds->files[i]) : sf_pq_open(ds->files[i]);
        if (!p->f || resolve_columns(ds, p)) {
            pq_close(ds);
            return -1;
        }
        int n = sf_pq_num_row_groups(p->f);
        p->rg_row0 = sf_malloc(((size_t)n + 1) * sizeof *p->rg_row0);
        p->rg_row0[0] = 0;
        for (int g = 0; g < n; g++)
            p->rg_row0[g + 1] = p->rg_row0[g] + sf_pq_row_group_rows(p->f, g);
        p->row0 = total;
        total += p->rg_row0[n];
    }
    s->total = total;
    return 0;
}
