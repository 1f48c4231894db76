/* A Parquet reader scoped to what image-text datasets need (docs/data.md).
 *
 * Supported: Thrift compact footer and page headers; data page v1 and v2,
 * dictionary pages; PLAIN, RLE / bit-packed hybrid, RLE_DICTIONARY and
 * PLAIN_DICTIONARY; definition and repetition levels (at most one repeated
 * level per leaf: flat columns, struct fields, list<primitive> and
 * list<struct> fields); BOOLEAN, INT32, INT64, FLOAT, DOUBLE, BYTE_ARRAY,
 * FIXED_LEN_BYTE_ARRAY; codecs UNCOMPRESSED, SNAPPY, GZIP, ZSTD.
 * Anything else is an error naming the file, the column and the feature.
 *
 * Reading is per (row group, leaf column): sf_pq_read_chunk() decodes one
 * column chunk, so memory is bounded by one row group of the projected
 * columns, never the file. Files are mmap'ed (or read from a caller's
 * buffer); every offset and length from the file is bounds-checked, and
 * allocations are capped by sf_pq_limits (the fuzz target lowers them).
 *
 * Thread-safety: an sf_pq_file is immutable after open; several threads may
 * call sf_pq_read_chunk on the same file at once (each with its own chunk).
 * sf_pq_read_chunk itself decompresses and decodes the pages of a chunk in
 * parallel with OpenMP.
 */
#ifndef SAEFLOW_PARQUET_H
#define SAEFLOW_PARQUET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Physical types, numbered as in parquet.thrift. */
typedef enum {
    SF_PQ_BOOLEAN = 0,
    SF_PQ_INT32 = 1,
    SF_PQ_INT64 = 2,
    SF_PQ_INT96 = 3, /* not supported */
    SF_PQ_FLOAT = 4,
    SF_PQ_DOUBLE = 5,
    SF_PQ_BYTE_ARRAY = 6,
    SF_PQ_FIXED_LEN_BYTE_ARRAY = 7,
} sf_pq_type;

/* Resource caps applied to what a file claims (pages, value counts). */
typedef struct {
    size_t max_page_bytes;   /* one decompressed page (default 1 GiB) */
    int64_t max_chunk_slots; /* level entries in one column chunk (default 2^26) */
} sf_pq_limits;
/* Process-wide; set before opening files (not synchronised). */
extern sf_pq_limits sf_pq_default_limits;

typedef struct sf_pq_file sf_pq_file;

/* Opens and parses the footer. NULL + sf_error on failure. */
sf_pq_file *sf_pq_open(const char *path);
/* The same from memory; `buf` is not copied and must outlive the file.
 * `name` is used in error messages. */
sf_pq_file *sf_pq_open_mem(const void *buf, size_t len, const char *name);
void sf_pq_close(sf_pq_file *f);

const char *sf_pq_name(const sf_pq_file *f);
int64_t sf_pq_num_rows(const sf_pq_file *f);
int sf_pq_num_row_groups(const sf_pq_file *f);
int64_t sf_pq_row_group_rows(const sf_pq_file *f, int rg);
const char *sf_pq_created_by(const sf_pq_file *f); /* "" if absent */

/* Leaf columns, in schema order. Paths join the schema names with '.', e.g.
 * "image.bytes", "conversations.list.element.value". */
int sf_pq_num_columns(const sf_pq_file *f);
const char *sf_pq_column_path(const sf_pq_file *f, int col);
sf_pq_type sf_pq_column_type(const sf_pq_file *f, int col);
int sf_pq_column_max_def(const sf_pq_file *f, int col);
int sf_pq_column_max_rep(const sf_pq_file *f, int col);
/* Definition level at which the repeated ancestor has an element (rows with a
 * lower level at their single slot are null or empty lists); 0 if none. */
int sf_pq_column_elem_def(const sf_pq_file *f, int col);
/* Index of the leaf with this path, or -1 (no error is set). */
int sf_pq_find_column(const sf_pq_file *f, const char *path);
/* Codec name of a column chunk ("SNAPPY", ...). */
const char *sf_pq_chunk_codec(const sf_pq_file *f, int rg, int col);
const char *sf_pq_type_name(sf_pq_type t);
/* The schema tree as indented text ("optional group image { ... }"). */
void sf_pq_print_schema(const sf_pq_file *f, FILE *out);

/* A byte string inside a page buffer (or the mapped file). */
typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} sf_pq_bytes;

/* One decoded column chunk (one leaf, one row group).
 *
 *   slot s in [0, n_slots): one (def, rep) level pair, as in Dremel.
 *   def[s] == max_def     : the slot holds a value, values index vidx[s].
 *   rows                   : row r (of the chunk; row0 + r of the row group)
 *                            covers slots [row_start[r], row_start[r+1]).
 *                            Without repetition that is exactly slot r.
 * def/rep are NULL when the column's max level is 0 (all zero). */
typedef struct {
    sf_pq_type type;
    int max_def, max_rep, elem_def;
    int64_t n_slots, n_rows, n_values;
    int64_t row0;       /* row group row of the chunk's row 0 (0 unless read by rows) */
    int16_t *def;       /* (n_slots) or NULL */
    int16_t *rep;       /* (n_slots) or NULL */
    int64_t *row_start; /* (n_rows + 1) */
    int64_t *vidx;      /* (n_slots): value index or -1 for null */
    /* Values (n_values), one array according to type: */
    sf_pq_bytes *bytes; /* BYTE_ARRAY, FIXED_LEN_BYTE_ARRAY */
    int32_t *i32;       /* INT32 */
    int64_t *i64;       /* INT64 */
    float *f32;         /* FLOAT */
    double *f64;        /* DOUBLE */
    uint8_t *b;         /* BOOLEAN (0/1) */
    /* Owned page buffers that `bytes` points into. */
    void **bufs;
    int n_bufs;
} sf_pq_chunk;

/* Decodes column `col` of row group `rg`. On error the chunk is left empty
 * and the message names file, row group, column and problem. */
int sf_pq_read_chunk(sf_pq_file *f, int rg, int col, sf_pq_chunk *out);
void sf_pq_chunk_free(sf_pq_chunk *c);
/* Random access: decodes only the pages that hold rows [row_lo, row_hi) of
 * the row group (plus the dictionary), for columns without repetition; a
 * repeated column is decoded whole. The chunk covers rows
 * [out->row0, out->row0 + out->n_rows), a superset of the range (whole
 * pages), or nothing if the range is past the end. */
int sf_pq_read_chunk_rows(sf_pq_file *f, int rg, int col, int64_t row_lo, int64_t row_hi,
                          sf_pq_chunk *out);

/* Convenience for a BYTE_ARRAY chunk: value of row r's slot `k` counted from
 * the row's end (k = 0: last element, the LLaVA-ReCap caption). Returns 1 and
 * sets *out if present, 0 if the row has no such element or it is null. */
int sf_pq_chunk_row_bytes(const sf_pq_chunk *c, int64_t r, int from_end, sf_pq_bytes *out);

#ifdef __cplusplus
}
#endif
#endif
