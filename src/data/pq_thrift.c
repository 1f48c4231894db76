/* Thrift compact protocol, just enough for parquet.thrift's FileMetaData and
 * PageHeader. Written for hostile input: every read is bounds-checked, list
 * lengths are capped by the bytes left (each element takes >= 1 byte), and
 * nesting depth is capped. Field numbers follow parquet-format's
 * parquet.thrift; unknown fields are skipped by type. */
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "data/pq_internal.h"
#include "saeflow/common.h"

enum {
    CT_STOP = 0,
    CT_TRUE = 1,
    CT_FALSE = 2,
    CT_BYTE = 3,
    CT_I16 = 4,
    CT_I32 = 5,
    CT_I64 = 6,
    CT_DOUBLE = 7,
    CT_BINARY = 8,
    CT_LIST = 9,
    CT_SET = 10,
    CT_MAP = 11,
    CT_STRUCT = 12,
};
#define TC_MAX_DEPTH 32

static int tc_fail(pq_tc *r, const char *what) {
    if (!r->err) {
        r->err = 1;
        sf_error("thrift: %s", what);
    }
    r->p = r->end;
    return -1;
}

static uint64_t tc_varint(pq_tc *r) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) {
            tc_fail(r, "truncated varint");
            return 0;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    tc_fail(r, "varint longer than 10 bytes");
    return 0;
}

static int64_t tc_zigzag(pq_tc *r) {
    uint64_t v = tc_varint(r);
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static uint8_t tc_byte(pq_tc *r) {
    if (r->p >= r->end) {
        tc_fail(r, "truncated");
        return 0;
    }
    return *r->p++;
}

/* Reads an integer field of any integer wire type. */
static int64_t tc_int(pq_tc *r, int type) {
    switch (type) {
    case CT_BYTE:
        return (int8_t)tc_byte(r);
    case CT_I16:
    case CT_I32:
    case CT_I64:
        return tc_zigzag(r);
    default:
        tc_fail(r, "expected an integer field");
        return 0;
    }
}

static int tc_i32(pq_tc *r, int type, int32_t *out) {
    int64_t v = tc_int(r, type);
    if (v < INT32_MIN || v > INT32_MAX) return tc_fail(r, "i32 out of range");
    *out = (int32_t)v;
    return 0;
}

/* Binary/string: pointer into the buffer, length checked against what is left. */
static const uint8_t *tc_binary(pq_tc *r, size_t *len) {
    uint64_t n = tc_varint(r);
    if (r->err) return NULL;
    if (n > (uint64_t)(r->end - r->p)) {
        tc_fail(r, "string length past the end");
        return NULL;
    }
    const uint8_t *s = r->p;
    r->p += n;
    *len = (size_t)n;
    return s;
}

static char *tc_string(pq_tc *r) {
    size_t n = 0;
    const uint8_t *s = tc_binary(r, &n);
    if (!s) return NULL;
    char *out = sf_malloc(n + 1);
    memcpy(out, s, n);
    out[n] = 0;
    return out;
}

/* List header: element type and count (capped by remaining bytes). */
static int64_t tc_list(pq_tc *r, int *etype) {
    uint8_t h = tc_byte(r);
    int64_t n = h >> 4;
    *etype = h & 15;
    if (n == 15) {
        uint64_t v = tc_varint(r);
        if (v > (uint64_t)(r->end - r->p)) {
            tc_fail(r, "list longer than the bytes left");
            return 0;
        }
        n = (int64_t)v;
    }
    /* Every element except bools-in-struct takes >= 1 byte. */
    if (n > r->end - r->p) {
        tc_fail(r, "list longer than the bytes left");
        return 0;
    }
    return r->err ? 0 : n;
}

/* Field header: returns 0 at STOP, else 1 with *type and *id. */
static int tc_field(pq_tc *r, int16_t *last, int *type, int *id) {
    uint8_t h = tc_byte(r);
    if (r->err || h == CT_STOP) return 0;
    *type = h & 15;
    int delta = h >> 4;
    if (delta)
        *id = *last + delta;
    else
        *id = (int)tc_zigzag(r);
    *last = (int16_t)*id;
    return !r->err;
}

static void tc_skip(pq_tc *r, int type);

static void tc_skip_struct(pq_tc *r) {
    if (++r->depth > TC_MAX_DEPTH) {
        tc_fail(r, "nesting too deep");
        return;
    }
    int16_t last = 0;
    int type, id;
    while (!r->err && tc_field(r, &last, &type, &id))
        tc_skip(r, type);
    r->depth--;
}

static void tc_skip(pq_tc *r, int type) {
    size_t n;
    switch (type) {
    case CT_TRUE:
    case CT_FALSE:
        break; /* value is in the field header */
    case CT_BYTE:
        tc_byte(r);
        break;
    case CT_I16:
    case CT_I32:
    case CT_I64:
        tc_varint(r);
        break;
    case CT_DOUBLE:
        if (r->end - r->p < 8)
            tc_fail(r, "truncated double");
        else
            r->p += 8;
        break;
    case CT_BINARY:
        tc_binary(r, &n);
        break;
    case CT_LIST:
    case CT_SET: {
        int et;
        int64_t cnt = tc_list(r, &et);
        if (++r->depth > TC_MAX_DEPTH) {
            tc_fail(r, "nesting too deep");
            return;
        }
        for (int64_t i = 0; i < cnt && !r->err; i++) {
            if (et == CT_TRUE || et == CT_FALSE)
                tc_byte(r); /* bools in collections take one byte */
            else
                tc_skip(r, et);
        }
        r->depth--;
        break;
    }
    case CT_MAP: {
        uint64_t cnt = tc_varint(r);
        if (cnt == 0) break;
        uint8_t kv = tc_byte(r);
        if (cnt > (uint64_t)(r->end - r->p)) {
            tc_fail(r, "map longer than the bytes left");
            return;
        }
        if (++r->depth > TC_MAX_DEPTH) {
            tc_fail(r, "nesting too deep");
            return;
        }
        for (uint64_t i = 0; i < cnt && !r->err; i++) {
            int kt = kv >> 4, vt = kv & 15;
            if (kt == CT_TRUE || kt == CT_FALSE)
                tc_byte(r);
            else
                tc_skip(r, kt);
            if (vt == CT_TRUE || vt == CT_FALSE)
                tc_byte(r);
            else
                tc_skip(r, vt);
        }
        r->depth--;
        break;
    }
    case CT_STRUCT:
        tc_skip_struct(r);
        break;
    default:
        tc_fail(r, "unknown field type");
        break;
    }
}

/* ---- SchemaElement ---- */
static void parse_schema_el(pq_tc *r, pq_schema_el *e) {
    memset(e, 0, sizeof *e);
    e->type = -1;
    e->repetition = -1;
    e->num_children = -1;
    e->converted_type = -1;
    int16_t last = 0;
    int type, id;
    int32_t v;
    while (!r->err && tc_field(r, &last, &type, &id)) {
        switch (id) {
        case 1:
            if (!tc_i32(r, type, &v)) e->type = v;
            break;
        case 2:
            tc_i32(r, type, &e->type_length);
            break;
        case 3:
            if (!tc_i32(r, type, &v)) e->repetition = v;
            break;
        case 4:
            if (type != CT_BINARY) {
                tc_skip(r, type);
                break;
            }
            free(e->name);
            e->name = tc_string(r);
            break;
        case 5:
            tc_i32(r, type, &e->num_children);
            break;
        case 6:
            if (!tc_i32(r, type, &v)) e->converted_type = v;
            break;
        default:
            tc_skip(r, type);
            break;
        }
    }
    if (!r->err && !e->name) tc_fail(r, "schema element without a name");
}

/* ---- ColumnMetaData ---- */
static void parse_col_meta(pq_tc *r, pq_colchunk *c) {
    int16_t last = 0;
    int type, id;
    int32_t v;
    c->dict_page_offset = -1;
    c->has_meta = 1;
    while (!r->err && tc_field(r, &last, &type, &id)) {
        switch (id) {
        case 1:
            if (!tc_i32(r, type, &v)) c->type = v;
            break;
        case 3: {
            if (type != CT_LIST) {
                tc_skip(r, type);
                break;
            }
            int et;
            int64_t n = tc_list(r, &et);
            size_t cap = 1, used = 0;
            char *path = sf_malloc(cap);
            path[0] = 0;
            for (int64_t i = 0; i < n && !r->err; i++) {
                size_t len = 0;
                const uint8_t *s = et == CT_BINARY ? tc_binary(r, &len) : NULL;
                if (!s) {
                    tc_fail(r, "path_in_schema: expected strings");
                    break;
                }
                if (used + len + 2 > cap) path = sf_realloc(path, cap = used + len + 2);
                if (i) path[used++] = '.';
                memcpy(path + used, s, len);
                used += len;
                path[used] = 0;
            }
            free(c->path);
            c->path = path;
            break;
        }
        case 4:
            if (!tc_i32(r, type, &v)) c->codec = v;
            break;
        case 5:
            c->num_values = tc_int(r, type);
            break;
        case 6:
            c->total_uncompressed = tc_int(r, type);
            break;
        case 7:
            c->total_compressed = tc_int(r, type);
            break;
        case 9:
            c->data_page_offset = tc_int(r, type);
            break;
        case 11:
            c->dict_page_offset = tc_int(r, type);
            break;
        default:
            tc_skip(r, type);
            break;
        }
    }
}

static void parse_col_chunk(pq_tc *r, pq_colchunk *c) {
    memset(c, 0, sizeof *c);
    c->dict_page_offset = -1;
    int16_t last = 0;
    int type, id;
    while (!r->err && tc_field(r, &last, &type, &id)) {
        if (id == 1 && type == CT_BINARY) {
            size_t n;
            tc_binary(r, &n);
            c->external = 1;
        } else if (id == 3 && type == CT_STRUCT) {
            if (++r->depth > TC_MAX_DEPTH) {
                tc_fail(r, "nesting too deep");
                return;
            }
            parse_col_meta(r, c);
            r->depth--;
        } else {
            tc_skip(r, type);
        }
    }
}

static void parse_row_group(pq_tc *r, pq_rowgroup *g) {
    memset(g, 0, sizeof *g);
    int16_t last = 0;
    int type, id;
    while (!r->err && tc_field(r, &last, &type, &id)) {
        if (id == 1 && type == CT_LIST && !g->cols) {
            int et;
            int64_t n = tc_list(r, &et);
            if (r->err) break;
            if (et != CT_STRUCT) {
                tc_fail(r, "RowGroup.columns: expected structs");
                break;
            }
            g->cols = sf_calloc((size_t)n + 1, sizeof *g->cols);
            if (++r->depth > TC_MAX_DEPTH) {
                tc_fail(r, "nesting too deep");
                break;
            }
            for (int64_t i = 0; i < n && !r->err; i++) {
                parse_col_chunk(r, &g->cols[i]);
                g->n_cols = (int)i + 1;
            }
            r->depth--;
        } else if (id == 3) {
            g->num_rows = tc_int(r, type);
        } else {
            tc_skip(r, type);
        }
    }
}

void pq_meta_free(pq_meta *m) {
    for (int i = 0; i < m->n_schema; i++)
        free(m->schema[i].name);
    free(m->schema);
    for (int g = 0; g < m->n_rgs; g++) {
        for (int c = 0; c < m->rgs[g].n_cols; c++)
            free(m->rgs[g].cols[c].path);
        free(m->rgs[g].cols);
    }
    free(m->rgs);
    free(m->created_by);
    memset(m, 0, sizeof *m);
}

int pq_parse_meta(const uint8_t *buf, size_t len, pq_meta *m) {
    memset(m, 0, sizeof *m);
    pq_tc r = {buf, buf + len, 0, 1};
    int16_t last = 0;
    int type, id, seen_schema = 0, seen_rgs = 0, seen_rows = 0;
    while (!r.err && tc_field(&r, &last, &type, &id)) {
        if (id == 1) {
            tc_i32(&r, type, &m->version);
        } else if (id == 2 && type == CT_LIST && !seen_schema) {
            int et;
            int64_t n = tc_list(&r, &et);
            if (r.err) break;
            if (et != CT_STRUCT) {
                tc_fail(&r, "schema: expected structs");
                break;
            }
            m->schema = sf_calloc((size_t)n + 1, sizeof *m->schema);
            for (int64_t i = 0; i < n && !r.err; i++) {
                m->n_schema = (int)i + 1;
                parse_schema_el(&r, &m->schema[i]);
            }
            seen_schema = 1;
        } else if (id == 3) {
            m->num_rows = tc_int(&r, type);
            seen_rows = 1;
        } else if (id == 4 && type == CT_LIST && !seen_rgs) {
            int et;
            int64_t n = tc_list(&r, &et);
            if (r.err) break;
            if (et != CT_STRUCT) {
                tc_fail(&r, "row_groups: expected structs");
                break;
            }
            m->rgs = sf_calloc((size_t)n + 1, sizeof *m->rgs);
            for (int64_t i = 0; i < n && !r.err; i++) {
                m->n_rgs = (int)i + 1;
                parse_row_group(&r, &m->rgs[i]);
            }
            seen_rgs = 1;
        } else if (id == 6 && type == CT_BINARY && !m->created_by) {
            m->created_by = tc_string(&r);
        } else {
            tc_skip(&r, type);
        }
    }
    if (!r.err && (!seen_schema || !seen_rows || !seen_rgs)) {
        tc_fail(&r, !seen_schema ? "FileMetaData without schema"
                    : !seen_rows ? "FileMetaData without num_rows"
                                 : "FileMetaData without row_groups");
    }
    if (r.err) {
        pq_meta_free(m);
        return -1;
    }
    return 0;
}

/* ---- PageHeader ---- */

/* The three page kinds' headers are flat lists of i32 fields (and one
 * bool): one table-driven reader, field id -> int32_t member of
 * pq_page_header. */
typedef struct {
    int16_t id;
    uint8_t is_bool;
    size_t off;
} tc_i32_field;

static void tc_i32_fields(pq_tc *r, pq_page_header *h, const tc_i32_field *f, int nf) {
    int16_t last = 0;
    int type, id;
    while (!r->err && tc_field(r, &last, &type, &id)) {
        int k = 0;
        while (k < nf && f[k].id != id)
            k++;
        int32_t *dst = k < nf ? (int32_t *)(void *)((char *)h + f[k].off) : NULL;
        if (dst && f[k].is_bool && (type == CT_TRUE || type == CT_FALSE))
            *dst = type == CT_TRUE;
        else if (dst && !f[k].is_bool)
            tc_i32(r, type, dst);
        else
            tc_skip(r, type);
    }
}

#define PH(id, member)                                                                             \
    { id, 0, offsetof(pq_page_header, member) }
static const tc_i32_field dp1_fields[] = {PH(1, num_values), PH(2, encoding), PH(3, def_enc),
                                          PH(4, rep_enc)};
static const tc_i32_field dict_fields[] = {PH(1, num_values), PH(2, encoding)};
static const tc_i32_field dp2_fields[] = {PH(1, num_values),
                                          PH(2, num_nulls),
                                          PH(3, num_rows),
                                          PH(4, encoding),
                                          PH(5, def_len),
                                          PH(6, rep_len),
                                          {7, 1, offsetof(pq_page_header, is_compressed)}};
#undef PH

int pq_parse_page_header(const uint8_t *buf, size_t len, pq_page_header *h, size_t *used) {
    memset(h, 0, sizeof *h);
    h->type = -1;
    h->is_compressed = 1;
    pq_tc r = {buf, buf + len, 0, 1};
    int16_t last = 0;
    int type, id, seen_sizes = 0;
    int32_t v;
    while (!r.err && tc_field(&r, &last, &type, &id)) {
        switch (id) {
        case 1:
            if (!tc_i32(&r, type, &v)) h->type = v;
            break;
        case 2:
            tc_i32(&r, type, &h->uncompressed);
            seen_sizes |= 1;
            break;
        case 3:
            tc_i32(&r, type, &h->compressed);
            seen_sizes |= 2;
            break;
        case 5: /* DataPageHeader */
            if (type == CT_STRUCT) {
                h->has_v1 = 1;
                tc_i32_fields(&r, h, dp1_fields, sizeof dp1_fields / sizeof dp1_fields[0]);
            } else {
                tc_skip(&r, type);
            }
            break;
        case 7: /* DictionaryPageHeader */
            if (type == CT_STRUCT) {
                h->has_dict = 1;
                tc_i32_fields(&r, h, dict_fields, sizeof dict_fields / sizeof dict_fields[0]);
            } else {
                tc_skip(&r, type);
            }
            break;
        case 8: /* DataPageHeaderV2 */
            if (type == CT_STRUCT) {
                h->has_v2 = 1;
                tc_i32_fields(&r, h, dp2_fields, sizeof dp2_fields / sizeof dp2_fields[0]);
            } else {
                tc_skip(&r, type);
            }
            break;
        default:
            tc_skip(&r, type);
            break;
        }
    }
    if (!r.err && (h->type < 0 || seen_sizes != 3)) tc_fail(&r, "page header lacks type or sizes");
    if (r.err) return -1;
    *used = (size_t)(r.p - buf);
    return 0;
}
