/* Internal to the Parquet reader: Thrift compact-protocol decoding of the
 * footer (FileMetaData) and of page headers into plain structs. Only the
 * fields the reader uses are kept; everything else is skipped. */
#ifndef SF_PQ_INTERNAL_H
#define SF_PQ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Bounded cursor over Thrift bytes. Any out-of-range read sets err and
 * makes further reads return zeros, so parsers check err once at the end. */
typedef struct {
    const uint8_t *p, *end;
    int err;   /* 0 ok, else set with a message via sf_error */
    int depth; /* struct nesting, capped (hostile input recursion) */
} pq_tc;

typedef struct {
    int type; /* physical type, -1 for groups */
    int32_t type_length;
    int repetition; /* 0 required, 1 optional, 2 repeated, -1 absent */
    char *name;
    int32_t num_children; /* -1 absent (leaf) */
    int converted_type;   /* -1 absent */
} pq_schema_el;

typedef struct {
    int type, codec;
    int64_t num_values, total_uncompressed, total_compressed;
    int64_t data_page_offset, dict_page_offset; /* dict -1 if absent */
    char *path;                                 /* path_in_schema joined with '.' */
    int has_meta, external;                     /* external: file_path set (data in another file) */
} pq_colchunk;

typedef struct {
    pq_colchunk *cols;
    int n_cols;
    int64_t num_rows;
} pq_rowgroup;

typedef struct {
    int32_t version;
    int64_t num_rows;
    pq_schema_el *schema;
    int n_schema;
    pq_rowgroup *rgs;
    int n_rgs;
    char *created_by;
} pq_meta;

enum { PQ_DATA_PAGE = 0, PQ_INDEX_PAGE = 1, PQ_DICT_PAGE = 2, PQ_DATA_PAGE_V2 = 3 };

typedef struct {
    int type;
    int32_t uncompressed, compressed;
    int has_v1, has_v2, has_dict;
    int32_t num_values; /* v1, v2 and dictionary */
    int32_t encoding;
    int32_t def_enc, rep_enc;                      /* v1 */
    int32_t num_nulls, num_rows, def_len, rep_len; /* v2 */
    int32_t is_compressed;                         /* v2, default 1 */
} pq_page_header;

/* Parses FileMetaData from buf[0, len). Returns 0 or -1 with sf_error. */
int pq_parse_meta(const uint8_t *buf, size_t len, pq_meta *m);
void pq_meta_free(pq_meta *m);
/* Parses one PageHeader at buf; *used is its encoded size. */
int pq_parse_page_header(const uint8_t *buf, size_t len, pq_page_header *h, size_t *used);

#endif
