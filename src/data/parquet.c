/* Parquet reader: file/footer handling, schema levels, and column-chunk
 * decoding (pages -> levels -> values). See include/saeflow/parquet.h for the
 * scope and docs/data.md for the format notes.
 *
 * A column chunk is decoded in three passes so pages can be processed in
 * parallel while values stay in file order:
 *   1. (serial)   walk the page headers, decode the dictionary page;
 *   2. (parallel) per data page: decompress, decode def/rep levels into the
 *                 chunk's level arrays at the page's slot offset, count values;
 *   3. (serial)   prefix-sum value counts, find row starts from rep levels;
 *   4. (parallel) per data page: decode values at the page's value offset.
 * BYTE_ARRAY values are not copied: they point into the decompressed page
 * buffers (owned by the chunk) or, for uncompressed pages, into the mapping. */
#include <errno.h>
#include <fcntl.h>
#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "data/pq_internal.h"
#include "saeflow/common.h"
#include "saeflow/parquet.h"

/* 2^26 level slots: ~800 MB of level/index/value arrays at most, far above
 * any image-text row group (CC3M captions: 2 slots per row). */
sf_pq_limits sf_pq_default_limits = {(size_t)1 << 30, (int64_t)1 << 26};

enum { ENC_PLAIN = 0, ENC_PLAIN_DICT = 2, ENC_RLE = 3, ENC_BIT_PACKED = 4, ENC_RLE_DICT = 8 };
enum { CODEC_NONE = 0, CODEC_SNAPPY = 1, CODEC_GZIP = 2, CODEC_ZSTD = 6 };

static const char *encoding_name(int e) {
    static const char *names[] = {
        "PLAIN",          "GROUP_VAR_INT",       "PLAIN_DICTIONARY",        "RLE",
        "BIT_PACKED",     "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
        "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
    return e >= 0 && e < 10 ? names[e] : "unknown encoding";
}

static const char *codec_name(int c) {
    static const char *names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO",
                                  "BROTLI",       "LZ4",    "ZSTD", "LZ4_RAW"};
    return c >= 0 && c < 8 ? names[c] : "unknown codec";
}

const char *sf_pq_type_name(sf_pq_type t) {
    static const char *names[] = {"BOOLEAN", "INT32",  "INT64",      "INT96",
                                  "FLOAT",   "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"};
    return (int)t >= 0 && (int)t < 8 ? names[t] : "unknown type";
}

typedef struct {
    char *path;
    int type, type_length;
    int max_def, max_rep, elem_def;
    int schema_index;
} pq_leaf;

struct sf_pq_file {
    char *name;
    const uint8_t *data;
    size_t len;
    int mapped;
    size_t data_end; /* start of the footer: column chunks must lie before it */
    pq_meta meta;
    pq_leaf *leaves;
    int n_leaves;
    sf_pq_limits limits;
};

/* ---- schema ---- */

typedef struct {
    sf_pq_file *f;
    int next; /* next schema element to consume */
} schema_walk;

static int walk_schema(schema_walk *w, int n_children, const char *prefix, int def, int rep,
                       int elem_def, int depth) {
    pq_meta *m = &w->f->meta;
    if (depth > 32) return sf_error("%s: schema nested deeper than 32 levels", w->f->name);
    for (int c = 0; c < n_children; c++) {
        if (w->next >= m->n_schema)
            return sf_error("%s: schema: num_children exceeds the element count", w->f->name);
        int idx = w->next++;
        pq_schema_el *e = &m->schema[idx];
        int d = def, r = rep, ed = elem_def;
        if (e->repetition == 1) d++;
        if (e->repetition == 2) {
            d++;
            r++;
            ed = d;
        }
        size_t plen = strlen(prefix) + strlen(e->name) + 2;
        char *path = sf_malloc(plen);
        snprintf(path, plen, "%s%s%s", prefix, *prefix ? "." : "", e->name);
        int rc = 0;
        if (e->num_children > 0) {
            rc = walk_schema(w, e->num_children, path, d, r, ed, depth + 1);
            free(path);
        } else {
            if (e->type < 0) {
                free(path);
                return sf_error("%s: schema: leaf '%s' has no type", w->f->name, e->name);
            }
            pq_leaf *l = &w->f->leaves[w->f->n_leaves++];
            l->path = path;
            l->type = e->type;
            l->type_length = e->type_length;
            l->max_def = d;
            l->max_rep = r;
            l->elem_def = ed;
            l->schema_index = idx;
        }
        if (rc) return rc;
    }
    return 0;
}

static int build_schema(sf_pq_file *f) {
    pq_meta *m = &f->meta;
    if (m->n_schema < 1) return sf_error("%s: empty schema", f->name);
    if (m->schema[0].num_children < 0 || m->schema[0].num_children >= m->n_schema)
        return sf_error("%s: schema root: bad num_children %d", f->name,
                        (int)m->schema[0].num_children);
    f->leaves = sf_calloc((size_t)m->n_schema, sizeof *f->leaves);
    schema_walk w = {f, 1};
    if (walk_schema(&w, m->schema[0].num_children, "", 0, 0, 0, 0)) return -1;
    if (w.next != m->n_schema)
        return sf_error("%s: schema: %d elements, tree uses %d", f->name, m->n_schema, w.next);
    /* Row groups must describe exactly these leaves. */
    int64_t total = 0;
    for (int g = 0; g < m->n_rgs; g++) {
        pq_rowgroup *rg = &m->rgs[g];
        if (rg->n_cols != f->n_leaves)
            return sf_error("%s: row group %d has %d columns, schema has %d leaves", f->name, g,
                            rg->n_cols, f->n_leaves);
        if (rg->num_rows < 0) return sf_error("%s: row group %d: negative num_rows", f->name, g);
        total += rg->num_rows;
        if (total < 0 || total > ((int64_t)1 << 48))
            return sf_error("%s: row counts overflow", f->name);
        for (int c = 0; c < rg->n_cols; c++) {
            pq_colchunk *cc = &rg->cols[c];
            if (cc->external)
                return sf_error(
                    "%s: column '%s': column data in a separate file (file_path) is not supported",
                    f->name, f->leaves[c].path);
            if (!cc->has_meta)
                return sf_error(
                    "%s: column '%s': row group %d lacks column metadata (encrypted columns are "
                    "not supported)",
                    f->name, f->leaves[c].path, g);
            if (cc->type != f->leaves[c].type)
                return sf_error("%s: column '%s': row group %d type %s differs from schema type %s",
                                f->name, f->leaves[c].path, g, sf_pq_type_name(cc->type),
                                sf_pq_type_name(f->leaves[c].type));
        }
    }
    if (total != m->num_rows)
        return sf_error("%s: footer says %lld rows, row groups hold %lld", f->name,
                        (long long)m->num_rows, (long long)total);
    return 0;
}

/* ---- open / close ---- */

static sf_pq_file *open_common(sf_pq_file *f) {
    f->limits = sf_pq_default_limits;
    if (f->len < 12) {
        sf_error("%s: not a parquet file (%zu bytes, too short)", f->name, f->len);
        goto fail;
    }
    if (memcmp(f->data, "PAR1", 4) != 0) {
        sf_error("%s: not a parquet file (bad magic at start)", f->name);
        goto fail;
    }
    const uint8_t *tail = f->data + f->len - 4;
    if (memcmp(tail, "PARE", 4) == 0) {
        sf_error("%s: encrypted parquet files are not supported", f->name);
        goto fail;
    }
    if (memcmp(tail, "PAR1", 4) != 0) {
        sf_error("%s: not a parquet file or truncated (bad magic at end)", f->name);
        goto fail;
    }
    uint32_t flen = (uint32_t)tail[-4] | (uint32_t)tail[-3] << 8 | (uint32_t)tail[-2] << 16 |
                    (uint32_t)tail[-1] << 24;
    if ((size_t)flen > f->len - 12) {
        sf_error("%s: footer length %u exceeds the file (%zu bytes)", f->name, flen, f->len);
        goto fail;
    }
    f->data_end = f->len - 8 - flen;
    if (pq_parse_meta(f->data + f->data_end, flen, &f->meta)) {
        sf_error_prefix("%s: footer", f->name);
        goto fail;
    }
    if (build_schema(f)) goto fail;
    return f;
fail:
    sf_pq_close(f);
    return NULL;
}

sf_pq_file *sf_pq_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sf_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        sf_error("%s: not a regular file", path);
        return NULL;
    }
    sf_pq_file *f = sf_calloc(1, sizeof *f);
    f->name = sf_strdup(path);
    f->len = (size_t)st.st_size;
    if (f->len > 0) {
        void *p = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(f->name);
            free(f);
            sf_error("%s: mmap failed: %s", path, strerror(e));
            return NULL;
        }
        f->data = p;
        f->mapped = 1;
    }
    close(fd);
    return open_common(f);
}

sf_pq_file *sf_pq_open_mem(const void *buf, size_t len, const char *name) {
    sf_pq_file *f = sf_calloc(1, sizeof *f);
    f->name = sf_strdup(name ? name : "(memory)");
    f->data = buf;
    f->len = len;
    return open_common(f);
}

void sf_pq_close(sf_pq_file *f) {
    if (!f) return;
    if (f->mapped) munmap((void *)f->data, f->len);
    for (int i = 0; i < f->n_leaves; i++)
        free(f->leaves[i].path);
    free(f->leaves);
    pq_meta_free(&f->meta);
    free(f->name);
    free(f);
}

const char *sf_pq_name(const sf_pq_file *f) {
    return f->name;
}
int64_t sf_pq_num_rows(const sf_pq_file *f) {
    return f->meta.num_rows;
}
int sf_pq_num_row_groups(const sf_pq_file *f) {
    return f->meta.n_rgs;
}
int64_t sf_pq_row_group_rows(const sf_pq_file *f, int rg) {
    return rg >= 0 && rg < f->meta.n_rgs ? f->meta.rgs[rg].num_rows : -1;
}
const char *sf_pq_created_by(const sf_pq_file *f) {
    return f->meta.created_by ? f->meta.created_by : "";
}
int sf_pq_num_columns(const sf_pq_file *f) {
    return f->n_leaves;
}
const char *sf_pq_column_path(const sf_pq_file *f, int c) {
    return f->leaves[c].path;
}
sf_pq_type sf_pq_column_type(const sf_pq_file *f, int c) {
    return (sf_pq_type)f->leaves[c].type;
}
int sf_pq_column_max_def(const sf_pq_file *f, int c) {
    return f->leaves[c].max_def;
}
int sf_pq_column_max_rep(const sf_pq_file *f, int c) {
    return f->leaves[c].max_rep;
}
int sf_pq_column_elem_def(const sf_pq_file *f, int c) {
    return f->leaves[c].elem_def;
}
int sf_pq_find_column(const sf_pq_file *f, const char *path) {
    for (int i = 0; i < f->n_leaves; i++)
        if (!strcmp(f->leaves[i].path, path)) return i;
    return -1;
}
const char *sf_pq_chunk_codec(const sf_pq_file *f, int rg, int col) {
    return codec_name(f->meta.rgs[rg].cols[col].codec);
}

static void print_el(const sf_pq_file *f, FILE *out, int *idx, int depth) {
    const pq_schema_el *e = &f->meta.schema[(*idx)++];
    static const char *reps[] = {"required", "optional", "repeated"};
    const char *rep = e->repetition >= 0 && e->repetition < 3 ? reps[e->repetition] : "required";
    fprintf(out, "%*s%s ", 2 * depth, "", rep);
    if (e->num_children > 0) {
        fprintf(out, "group %s {\n", e->name);
        for (int c = 0; c < e->num_children && *idx < f->meta.n_schema; c++)
            print_el(f, out, idx, depth + 1);
        fprintf(out, "%*s}\n", 2 * depth, "");
    } else {
        fprintf(out, "%s %s;\n", sf_pq_type_name((sf_pq_type)e->type), e->name);
    }
}

void sf_pq_print_schema(const sf_pq_file *f, FILE *out) {
    int idx = 1;
    fprintf(out, "message %s {\n", f->meta.schema[0].name);
    for (int c = 0; c < f->meta.schema[0].num_children && idx < f->meta.n_schema; c++)
        print_el(f, out, &idx, 1);
    fprintf(out, "}\n");
}

/* ---- decompression ---- */

/* Decompresses src into a new buffer of exactly `n` bytes (+8 slack). */
static uint8_t *decompress(int codec, const uint8_t *src, size_t src_len, size_t n,
                           const char **err) {
    uint8_t *dst = sf_malloc(n + 8);
    switch (codec) {
    case CODEC_SNAPPY: {
        size_t want = 0;
        if (snappy_uncompressed_length((const char *)src, src_len, &want) != SNAPPY_OK ||
            want != n) {
            *err = "snappy: bad header or size mismatch";
            break;
        }
        size_t got = n;
        if (snappy_uncompress((const char *)src, src_len, (char *)dst, &got) != SNAPPY_OK ||
            got != n) {
            *err = "snappy: corrupt data";
            break;
        }
        return dst;
    }
    case CODEC_GZIP: {
        z_stream z;
        memset(&z, 0, sizeof z);
        if (inflateInit2(&z, 15 + 32) != Z_OK) { /* +32: accept gzip or zlib headers */
            *err = "gzip: inflateInit failed";
            break;
        }
        z.next_in = (Bytef *)src;
        z.next_out = dst;
        size_t in_left = src_len, out_left = n;
        int rc = Z_OK;
        /* zlib counts in uInt: feed in <= 1 GiB steps. */
        while (rc == Z_OK) {
            z.avail_in = (uInt)(in_left < (1u << 30) ? in_left : (1u << 30));
            z.avail_out = (uInt)(out_left < (1u << 30) ? out_left : (1u << 30));
            uInt ai = z.avail_in, ao = z.avail_out;
            rc = inflate(&z, Z_FINISH);
            in_left -= ai - z.avail_in;
            out_left -= ao - z.avail_out;
            if (rc == Z_BUF_ERROR && (in_left == 0 || out_left == 0)) break;
            if (rc == Z_BUF_ERROR) rc = Z_OK;
        }
        inflateEnd(&z);
        if (rc != Z_STREAM_END || out_left != 0) {
            *err = "gzip: corrupt data or size mismatch";
            break;
        }
        return dst;
    }
    case CODEC_ZSTD: {
        size_t got = ZSTD_decompress(dst, n, src, src_len);
        if (ZSTD_isError(got) || got != n) {
            *err = "zstd: corrupt data or size mismatch";
            break;
        }
        return dst;
    }
    default:
        *err = "unsupported codec";
        break;
    }
    free(dst);
    return NULL;
}

/* ---- RLE / bit-packed hybrid ---- */

typedef struct {
    const uint8_t *p, *end;
} rd;

static int rd_varint(rd *r, uint64_t *v) {
    *v = 0;
    for (int s = 0; s < 64; s += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

/* Reads `bw` bits at bit offset `bit` of p[0, nbytes); bw <= 32. */
static inline uint32_t get_bits(const uint8_t *p, size_t nbytes, uint64_t bit, int bw) {
    size_t byte = (size_t)(bit >> 3);
    uint64_t w = 0;
    if (byte + 8 <= nbytes) {
        memcpy(&w, p + byte, 8);
    } else {
        for (size_t i = 0; byte + i < nbytes && i < 8; i++)
            w |= (uint64_t)p[byte + i] << (8 * i);
    }
    w >>= bit & 7;
    return (uint32_t)(w & ((bw == 32) ? 0xffffffffu : ((1u << bw) - 1)));
}

/* Decodes n values of width bw (0..32) into out. Returns 0, or -1 if the
 * stream ends early. */
static int rle_decode(const uint8_t *p, size_t len, int bw, uint32_t *out, int64_t n) {
    rd r = {p, p + len};
    int64_t got = 0;
    int vbytes = (bw + 7) / 8;
    while (got < n) {
        uint64_t h;
        if (rd_varint(&r, &h)) return -1;
        if (!(h & 1)) { /* RLE run: count << 1, then the value in ceil(bw/8) bytes */
            uint64_t run = h >> 1;
            if ((size_t)(r.end - r.p) < (size_t)vbytes) return -1;
            uint32_t v = 0;
            for (int i = 0; i < vbytes; i++)
                v |= (uint32_t)r.p[i] << (8 * i);
            r.p += vbytes;
            int64_t k = run < (uint64_t)(n - got) ? (int64_t)run : n - got;
            for (int64_t i = 0; i < k; i++)
                out[got + i] = v;
            got += k;
        } else { /* bit-packed run: (groups of 8) << 1 | 1, then groups * bw bytes */
            uint64_t groups = h >> 1;
            if (groups > ((uint64_t)1 << 40)) return -1;
            uint64_t count = groups * 8;
            uint64_t bytes = groups * (uint64_t)bw;
            size_t avail = (size_t)(r.end - r.p);
            /* A final run may be cut short after the last needed value. */
            size_t have = bytes < avail ? (size_t)bytes : avail;
            uint64_t can = bw ? (uint64_t)have * 8 / (uint64_t)bw : count;
            if (can > count) can = count;
            int64_t k = count < (uint64_t)(n - got) ? (int64_t)count : n - got;
            if ((uint64_t)k > can) return -1;
            if (bw == 0) {
                memset(out + got, 0, (size_t)k * sizeof *out);
            } else {
                for (int64_t i = 0; i < k; i++)
                    out[got + i] = get_bits(r.p, have, (uint64_t)i * (uint64_t)bw, bw);
            }
            got += k;
            r.p += have;
        }
    }
    return 0;
}

static int bit_width(int max) {
    int w = 0;
    while ((1 << w) <= max)
        w++;
    return w;
}

/* ---- column chunk ---- */

typedef struct {
    pq_page_header h;
    const uint8_t *payload; /* compressed page body inside the file */
    size_t payload_len;
    int64_t slot0, n_slots, val0, n_vals;
    uint8_t *owned;      /* decompressed body (or NULL if used in place) */
    const uint8_t *vals; /* value section */
    size_t vals_len;
    char *err;
} pq_page;

typedef struct {
    int type, type_length;
    int64_t n;
    sf_pq_bytes *bytes;
    uint8_t *raw; /* fixed-width values, type width each */
} pq_dict;

static int type_width(int type, int type_length) {
    switch (type) {
    case SF_PQ_INT32:
    case SF_PQ_FLOAT:
        return 4;
    case SF_PQ_INT64:
    case SF_PQ_DOUBLE:
        return 8;
    case SF_PQ_FIXED_LEN_BYTE_ARRAY:
        return type_length;
    default:
        return 0;
    }
}

/* PLAIN-decodes n values of the chunk's type into `out` at index `at`. */
static int decode_plain(sf_pq_chunk *c, int type_length, const uint8_t *p, size_t len, int64_t at,
                        int64_t n) {
    switch (c->type) {
    case SF_PQ_BOOLEAN:
        if ((uint64_t)len * 8 < (uint64_t)n)
            return sf_error("PLAIN BOOLEAN: %lld values need more than %zu bytes", (long long)n,
                            len);
        for (int64_t i = 0; i < n; i++)
            c->b[at + i] = (p[i >> 3] >> (i & 7)) & 1;
        return 0;
    case SF_PQ_INT32:
    case SF_PQ_FLOAT:
    case SF_PQ_INT64:
    case SF_PQ_DOUBLE: {
        size_t w = (size_t)type_width(c->type, 0);
        if ((uint64_t)len < (uint64_t)n * w)
            return sf_error("PLAIN %s: %lld values need %llu bytes, page has %zu",
                            sf_pq_type_name(c->type), (long long)n,
                            (unsigned long long)((uint64_t)n * w), len);
        void *dst = c->type == SF_PQ_INT32   ? (void *)(c->i32 + at)
                    : c->type == SF_PQ_FLOAT ? (void *)(c->f32 + at)
                    : c->type == SF_PQ_INT64 ? (void *)(c->i64 + at)
                                             : (void *)(c->f64 + at);
        if (n) memcpy(dst, p, (size_t)n * w); /* little-endian host assumed (x86_64, arm64) */
        return 0;
    }
    case SF_PQ_BYTE_ARRAY: {
        size_t off = 0;
        for (int64_t i = 0; i < n; i++) {
            if (len - off < 4)
                return sf_error("PLAIN BYTE_ARRAY: value %lld: length past the page end",
                                (long long)i);
            uint32_t l;
            memcpy(&l, p + off, 4);
            off += 4;
            if (l > len - off)
                return sf_error("PLAIN BYTE_ARRAY: value %lld: %u bytes past the page end",
                                (long long)i, l);
            c->bytes[at + i].ptr = p + off;
            c->bytes[at + i].len = l;
            off += l;
        }
        return 0;
    }
    case SF_PQ_FIXED_LEN_BYTE_ARRAY: {
        if (type_length <= 0)
            return sf_error("FIXED_LEN_BYTE_ARRAY without a positive type_length");
        if ((uint64_t)len < (uint64_t)n * (uint64_t)type_length)
            return sf_error("PLAIN FIXED_LEN_BYTE_ARRAY: values past the page end");
        for (int64_t i = 0; i < n; i++) {
            c->bytes[at + i].ptr = p + (size_t)i * (size_t)type_length;
            c->bytes[at + i].len = (uint32_t)type_length;
        }
        return 0;
    }
    default:
        return sf_error("type %s not supported", sf_pq_type_name(c->type));
    }
}

static int decode_dict_values(sf_pq_chunk *c, const pq_dict *d, const uint8_t *p, size_t len,
                              int64_t at, int64_t n, uint32_t *tmp) {
    if (n == 0) return 0;
    if (len < 1) return sf_error("dictionary indices: empty page");
    int bw = p[0];
    if (bw > 32) return sf_error("dictionary indices: bit width %d > 32", bw);
    if (rle_decode(p + 1, len - 1, bw, tmp, n))
        return sf_error("dictionary indices: truncated RLE data");
    if (!d) return sf_error("dictionary-encoded page without a dictionary page");
    for (int64_t i = 0; i < n; i++)
        if (tmp[i] >= (uint64_t)d->n)
            return sf_error("dictionary index %u out of range (dictionary has %lld entries)",
                            tmp[i], (long long)d->n);
    if (c->bytes) {
        for (int64_t i = 0; i < n; i++)
            c->bytes[at + i] = d->bytes[tmp[i]];
    } else if (c->type == SF_PQ_BOOLEAN) {
        for (int64_t i = 0; i < n; i++)
            c->b[at + i] = d->raw[tmp[i]];
    } else {
        size_t w = (size_t)type_width(c->type, 0);
        uint8_t *dst = c->type == SF_PQ_INT32   ? (uint8_t *)(c->i32 + at)
                       : c->type == SF_PQ_FLOAT ? (uint8_t *)(c->f32 + at)
                       : c->type == SF_PQ_INT64 ? (uint8_t *)(c->i64 + at)
                                                : (uint8_t *)(c->f64 + at);
        for (int64_t i = 0; i < n; i++)
            memcpy(dst + (size_t)i * w, d->raw + (size_t)tmp[i] * w, w);
    }
    return 0;
}

/* One kind of levels of a page (RLE/bit-packed hybrid, n of them, each <=
 * max) into dst; nothing when max is 0 (the column has no such level). */
static int decode_levels(const char *what, const uint8_t *p, size_t len, int max, int16_t *dst,
                         size_t n, uint32_t **tmp, size_t *tmp_cap) {
    if (max <= 0) return 0;
    if (n > *tmp_cap) {
        free(*tmp);
        *tmp = sf_malloc(n * sizeof **tmp);
        *tmp_cap = n;
    }
    if (rle_decode(p, len, bit_width(max), *tmp, (int64_t)n))
        return sf_error("%s levels: truncated RLE data", what);
    for (size_t i = 0; i < n; i++) {
        if ((*tmp)[i] > (uint32_t)max)
            return sf_error("%s level %u > max %d", what, (*tmp)[i], max);
        dst[i] = (int16_t)(*tmp)[i];
    }
    return 0;
}

/* Pass 2 for one page: decompress, decode levels. */
static int page_levels(sf_pq_file *f, pq_colchunk *cc, const pq_leaf *leaf, sf_pq_chunk *c,
                       pq_page *pg, uint32_t **tmp, size_t *tmp_cap) {
    const pq_page_header *h = &pg->h;
    size_t n = (size_t)pg->n_slots;
    const uint8_t *body = pg->payload;
    size_t body_len = pg->payload_len;
    const uint8_t *rep = NULL, *def = NULL; /* the level runs (v2: never compressed) */
    size_t rep_len = 0, def_len = 0;
    if (h->type == PQ_DATA_PAGE_V2) {
        if (h->rep_len < 0 || h->def_len < 0 ||
            (size_t)h->rep_len + (size_t)h->def_len > body_len ||
            (size_t)h->rep_len + (size_t)h->def_len > (size_t)h->uncompressed)
            return sf_error("data page v2: level lengths exceed the page");
        rep_len = (size_t)h->rep_len;
        def_len = (size_t)h->def_len;
        rep = body;
        def = body + rep_len;
        body += rep_len + def_len;
        body_len -= rep_len + def_len;
        size_t ulen = (size_t)h->uncompressed - rep_len - def_len;
        if (cc->codec != CODEC_NONE && h->is_compressed) {
            const char *err = NULL;
            pg->owned = decompress(cc->codec, body, body_len, ulen, &err);
            if (!pg->owned) return sf_error("%s", err);
            pg->vals = pg->owned;
            pg->vals_len = ulen;
        } else {
            if (ulen != body_len)
                return sf_error("data page v2: uncompressed size %zu != stored %zu", ulen,
                                body_len);
            pg->vals = body;
            pg->vals_len = body_len;
        }
    } else {
        const uint8_t *u = body;
        size_t ulen = (size_t)h->uncompressed;
        if (cc->codec != CODEC_NONE) {
            const char *err = NULL;
            pg->owned = decompress(cc->codec, body, body_len, ulen, &err);
            if (!pg->owned) return sf_error("%s", err);
            u = pg->owned;
        } else if (ulen != body_len) {
            return sf_error("uncompressed page: sizes %zu and %zu differ", ulen, body_len);
        }
        /* v1: [rep: u32 len + RLE][def: u32 len + RLE][values] */
        size_t off = 0;
        if (leaf->max_rep > 0) {
            if (h->rep_enc != ENC_RLE)
                return sf_error("repetition levels: encoding %s not supported",
                                encoding_name(h->rep_enc));
            if (ulen < 4) return sf_error("repetition levels: page too short");
            uint32_t l;
            memcpy(&l, u, 4);
            if (l > ulen - 4) return sf_error("repetition levels: length %u past the page end", l);
            rep = u + 4;
            rep_len = l;
            off = 4 + l;
        }
        if (leaf->max_def > 0) {
            if (h->def_enc != ENC_RLE)
                return sf_error("definition levels: encoding %s not supported",
                                encoding_name(h->def_enc));
            if (ulen - off < 4) return sf_error("definition levels: page too short");
            uint32_t l;
            memcpy(&l, u + off, 4);
            if (l > ulen - off - 4)
                return sf_error("definition levels: length %u past the page end", l);
            def = u + off + 4;
            def_len = l;
            off += 4 + l;
        }
        pg->vals = u + off;
        pg->vals_len = ulen - off;
    }
    if (decode_levels("repetition", rep, rep_len, leaf->max_rep, c->rep + pg->slot0, n, tmp,
                      tmp_cap) ||
        decode_levels("definition", def, def_len, leaf->max_def, c->def + pg->slot0, n, tmp,
                      tmp_cap))
        return -1;
    /* Count values. */
    int64_t nv = 0;
    if (leaf->max_def > 0) {
        const int16_t *d = c->def + pg->slot0;
        int16_t md = (int16_t)leaf->max_def;
        for (size_t i = 0; i < n; i++)
            nv += d[i] == md;
    } else {
        nv = (int64_t)n;
    }
    pg->n_vals = nv;
    (void)f;
    return 0;
}

/* Pass 4 for one page: decode values and fill vidx. */
static int page_values(const pq_leaf *leaf, sf_pq_chunk *c, pq_page *pg, const pq_dict *dict,
                       uint32_t **tmp, size_t *tmp_cap) {
    int64_t at = pg->val0, n = pg->n_vals;
    int enc = pg->h.encoding;
    int rc;
    if (enc == ENC_PLAIN) {
        rc = decode_plain(c, leaf->type_length, pg->vals, pg->vals_len, at, n);
    } else if (enc == ENC_PLAIN_DICT || enc == ENC_RLE_DICT) {
        if ((size_t)n > *tmp_cap) {
            free(*tmp);
            *tmp = sf_malloc((size_t)n * sizeof **tmp + 1);
            *tmp_cap = (size_t)n;
        }
        rc = decode_dict_values(c, dict, pg->vals, pg->vals_len, at, n, *tmp);
    } else if (enc == ENC_RLE && c->type == SF_PQ_BOOLEAN) {
        /* v2 booleans: u32 length, then RLE/bit-packed hybrid of width 1. */
        if (pg->vals_len < 4) return sf_error("RLE BOOLEAN: page too short");
        uint32_t l;
        memcpy(&l, pg->vals, 4);
        if (l > pg->vals_len - 4) return sf_error("RLE BOOLEAN: length %u past the page end", l);
        if ((size_t)n > *tmp_cap) {
            free(*tmp);
            *tmp = sf_malloc((size_t)n * sizeof **tmp + 1);
            *tmp_cap = (size_t)n;
        }
        if (rle_decode(pg->vals + 4, l, 1, *tmp, n)) return sf_error("RLE BOOLEAN: truncated data");
        for (int64_t i = 0; i < n; i++)
            c->b[at + i] = (uint8_t)(*tmp)[i];
        rc = 0;
    } else {
        return sf_error("value encoding %s not supported", encoding_name(enc));
    }
    if (rc) return rc;
    int64_t v = at;
    if (leaf->max_def > 0) {
        const int16_t *d = c->def + pg->slot0;
        int16_t md = (int16_t)leaf->max_def;
        for (int64_t i = 0; i < pg->n_slots; i++)
            c->vidx[pg->slot0 + i] = d[i] == md ? v++ : -1;
    } else {
        for (int64_t i = 0; i < pg->n_slots; i++)
            c->vidx[pg->slot0 + i] = v++;
    }
    return 0;
}

static void chunk_add_buf(sf_pq_chunk *c, void *p) {
    if (!p) return;
    c->bufs = sf_realloc(c->bufs, (size_t)(c->n_bufs + 1) * sizeof *c->bufs);
    c->bufs[c->n_bufs++] = p;
}

void sf_pq_chunk_free(sf_pq_chunk *c) {
    if (!c) return;
    free(c->def);
    free(c->rep);
    free(c->row_start);
    free(c->vidx);
    free(c->bytes);
    free(c->i32);
    free(c->i64);
    free(c->f32);
    free(c->f64);
    free(c->b);
    for (int i = 0; i < c->n_bufs; i++)
        free(c->bufs[i]);
    free(c->bufs);
    memset(c, 0, sizeof *c);
}

static int decode_dictionary(sf_pq_file *f, pq_colchunk *cc, const pq_leaf *leaf, pq_page *pg,
                             pq_dict *d, sf_pq_chunk *c) {
    const pq_page_header *h = &pg->h;
    if (h->encoding != ENC_PLAIN && h->encoding != ENC_PLAIN_DICT)
        return sf_error("dictionary page encoding %s not supported", encoding_name(h->encoding));
    if (h->num_values < 0) return sf_error("dictionary page: negative value count");
    const uint8_t *u = pg->payload;
    size_t ulen = (size_t)h->uncompressed;
    if (cc->codec != CODEC_NONE) {
        const char *err = NULL;
        uint8_t *buf = decompress(cc->codec, pg->payload, pg->payload_len, ulen, &err);
        if (!buf) return sf_error("dictionary page: %s", err);
        chunk_add_buf(c, buf);
        u = buf;
    } else if (ulen != pg->payload_len) {
        return sf_error("dictionary page: sizes %zu and %zu differ", ulen, pg->payload_len);
    }
    int64_t n = h->num_values;
    /* Every PLAIN value takes >= 1 byte (BOOLEAN: 1 bit); caps the allocation. */
    if ((uint64_t)n > (leaf->type == SF_PQ_BOOLEAN ? (uint64_t)ulen * 8 : (uint64_t)ulen))
        return sf_error("dictionary page: %lld values in %zu bytes", (long long)n, ulen);
    d->n = n;
    d->type = leaf->type;
    /* Decode through a scratch chunk view of the same type. */
    sf_pq_chunk tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.type = (sf_pq_type)leaf->type;
    size_t w = (size_t)type_width(leaf->type, leaf->type_length);
    if (leaf->type == SF_PQ_BYTE_ARRAY || leaf->type == SF_PQ_FIXED_LEN_BYTE_ARRAY) {
        d->bytes = tmp.bytes = sf_malloc((size_t)n * sizeof *d->bytes + 1);
    } else if (leaf->type == SF_PQ_BOOLEAN) {
        d->raw = tmp.b = sf_malloc((size_t)n + 1);
    } else {
        d->raw = sf_malloc((size_t)n * w + 1);
        if (leaf->type == SF_PQ_INT32) tmp.i32 = (int32_t *)(void *)d->raw;
        if (leaf->type == SF_PQ_FLOAT) tmp.f32 = (float *)(void *)d->raw;
        if (leaf->type == SF_PQ_INT64) tmp.i64 = (int64_t *)(void *)d->raw;
        if (leaf->type == SF_PQ_DOUBLE) tmp.f64 = (double *)(void *)d->raw;
    }
    (void)f;
    return decode_plain(&tmp, leaf->type_length, u, ulen, 0, n);
}

static int read_chunk(sf_pq_file *f, int rg, int col, int64_t lo, int64_t hi, sf_pq_chunk *out);

int sf_pq_read_chunk(sf_pq_file *f, int rg, int col, sf_pq_chunk *out) {
    return read_chunk(f, rg, col, -1, -1, out);
}

int sf_pq_read_chunk_rows(sf_pq_file *f, int rg, int col, int64_t row_lo, int64_t row_hi,
                          sf_pq_chunk *out) {
    if (row_lo < 0 || row_hi < row_lo) {
        memset(out, 0, sizeof *out);
        return sf_error("%s: row range [%lld, %lld) invalid", f->name, (long long)row_lo,
                        (long long)row_hi);
    }
    return read_chunk(f, rg, col, row_lo, row_hi, out);
}

/* lo < 0: the whole chunk; else only the data pages holding rows [lo, hi)
 * (for columns without repetition, where page slots are rows). */
static int read_chunk(sf_pq_file *f, int rg, int col, int64_t lo, int64_t hi, sf_pq_chunk *out) {
    memset(out, 0, sizeof *out);
    if (rg < 0 || rg >= f->meta.n_rgs || col < 0 || col >= f->n_leaves)
        return sf_error("%s: row group %d / column %d out of range", f->name, rg, col);
    pq_colchunk *cc = &f->meta.rgs[rg].cols[col];
    const pq_leaf *leaf = &f->leaves[col];
    sf_pq_chunk *c = out;
    pq_page *pages = NULL;
    int n_pages = 0, cap_pages = 0, rc = -1, dict_page = -1;
    pq_dict dict;
    memset(&dict, 0, sizeof dict);
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        sf_error(__VA_ARGS__);                                                                     \
        goto done;                                                                                 \
    } while (0)

    c->type = (sf_pq_type)leaf->type;
    c->max_def = leaf->max_def;
    c->max_rep = leaf->max_rep;
    c->elem_def = leaf->elem_def;
    if (leaf->type == SF_PQ_INT96) FAIL("type INT96 not supported");
    if (leaf->max_rep > 1)
        FAIL("nested repeated fields (max repetition level %d) not supported", leaf->max_rep);
    if (cc->codec != CODEC_NONE && cc->codec != CODEC_SNAPPY && cc->codec != CODEC_GZIP &&
        cc->codec != CODEC_ZSTD)
        FAIL("compression codec %s not supported", codec_name(cc->codec));
    int64_t start = cc->data_page_offset;
    if (cc->dict_page_offset > 0 && cc->dict_page_offset < start) start = cc->dict_page_offset;
    if (start < 4 || cc->total_compressed < 0 || (uint64_t)start > f->data_end ||
        (uint64_t)cc->total_compressed > f->data_end - (uint64_t)start)
        FAIL("column chunk range [%lld, +%lld) outside the data section", (long long)start,
             (long long)cc->total_compressed);
    if (cc->num_values < 0 || cc->num_values > f->limits.max_chunk_slots)
        FAIL("column chunk claims %lld values (limit %lld)", (long long)cc->num_values,
             (long long)f->limits.max_chunk_slots);
    /* Without repetition there is one slot per row: check before allocating. */
    if (leaf->max_rep == 0 && cc->num_values != f->meta.rgs[rg].num_rows)
        FAIL("column chunk has %lld values, row group has %lld rows", (long long)cc->num_values,
             (long long)f->meta.rgs[rg].num_rows);

    /* Pass 1: page headers. */
    size_t pos = (size_t)start, end = (size_t)start + (size_t)cc->total_compressed;
    int64_t slots = 0;
    while (pos < end && slots < cc->num_values) {
        pq_page_header h;
        size_t used;
        if (pq_parse_page_header(f->data + pos, end - pos, &h, &used)) {
            sf_error_prefix("page header at offset %zu", pos);
            goto done;
        }
        pos += used;
        if (h.compressed < 0 || (size_t)h.compressed > end - pos)
            FAIL("page at offset %zu: compressed size %d past the column chunk end", pos,
                 h.compressed);
        if (h.uncompressed < 0 || (size_t)h.uncompressed > f->limits.max_page_bytes)
            FAIL("page at offset %zu: uncompressed size %d over the limit", pos, h.uncompressed);
        const uint8_t *payload = f->data + pos;
        pos += (size_t)h.compressed;
        if (h.type == PQ_INDEX_PAGE) continue;
        if (h.type != PQ_DATA_PAGE && h.type != PQ_DATA_PAGE_V2 && h.type != PQ_DICT_PAGE)
            FAIL("page type %d not supported", h.type);
        if (h.type == PQ_DICT_PAGE) {
            if (n_pages > 0 || dict_page >= 0) FAIL("dictionary page after data pages");
            if (!h.has_dict) FAIL("dictionary page without a dictionary header");
        } else {
            if (h.type == PQ_DATA_PAGE && !h.has_v1) FAIL("data page without a data page header");
            if (h.type == PQ_DATA_PAGE_V2 && !h.has_v2) FAIL("data page v2 without its header");
            if (h.num_values < 0 || h.num_values > cc->num_values - slots)
                FAIL("page at offset %zu: %d values, chunk has %lld left", pos, h.num_values,
                     (long long)(cc->num_values - slots));
        }
        if (n_pages == cap_pages)
            pages = sf_realloc(pages, (size_t)(cap_pages = cap_pages * 2 + 8) * sizeof *pages);
        pq_page *pg = &pages[n_pages];
        memset(pg, 0, sizeof *pg);
        pg->h = h;
        pg->payload = payload;
        pg->payload_len = (size_t)h.compressed;
        if (h.type == PQ_DICT_PAGE) {
            dict_page = n_pages;
        } else {
            pg->slot0 = slots;
            pg->n_slots = h.num_values;
            slots += h.num_values;
        }
        n_pages++;
    }
    if (slots != cc->num_values)
        FAIL("column chunk claims %lld values, its pages hold %lld", (long long)cc->num_values,
             (long long)slots);

    /* Row range: keep the dictionary page and the data pages overlapping
     * [lo, hi); their slots are renumbered from 0 and c->row0 is the first
     * kept row. (Page headers were still all walked and checked above.) */
    int64_t want_rows = f->meta.rgs[rg].num_rows;
    if (lo >= 0 && leaf->max_rep == 0) {
        int w = dict_page >= 0 ? 1 : 0;
        int64_t kept = 0, row0 = -1;
        for (int i = w; i < n_pages; i++) {
            int64_t a = pages[i].slot0, b = a + pages[i].n_slots;
            if (b > lo && a < hi && pages[i].n_slots > 0) {
                if (row0 < 0) row0 = a;
                pages[i].slot0 = kept;
                kept += pages[i].n_slots;
                pages[w++] = pages[i];
            }
        }
        n_pages = w;
        slots = kept;
        want_rows = kept;
        c->row0 = row0 < 0 ? 0 : row0;
    }

    /* Dictionary. */
    if (dict_page >= 0 && decode_dictionary(f, cc, leaf, &pages[dict_page], &dict, c)) goto done;

    /* Allocate levels and value arrays (values: upper bound = slots). */
    size_t ns = (size_t)slots;
    if (leaf->max_def > 0) c->def = sf_malloc(ns * sizeof *c->def + 1);
    if (leaf->max_rep > 0) c->rep = sf_malloc(ns * sizeof *c->rep + 1);
    c->vidx = sf_malloc(ns * sizeof *c->vidx + 1);
    c->n_slots = slots;

    /* Pass 2 (parallel): decompress + levels. */
    int first = dict_page >= 0 ? 1 : 0;
#pragma omp parallel if (n_pages - first > 1)
    {
        uint32_t *tmp = NULL;
        size_t tmp_cap = 0;
#pragma omp for schedule(dynamic, 1)
        for (int i = first; i < n_pages; i++) {
            if (page_levels(f, cc, leaf, c, &pages[i], &tmp, &tmp_cap))
                pages[i].err = sf_strdup(sf_errmsg());
        }
        free(tmp);
    }
    for (int i = first; i < n_pages; i++)
        if (pages[i].err) {
            sf_error("page %d: %s", i, pages[i].err);
            goto done;
        }

    /* Pass 3: value offsets, rows. */
    int64_t nv = 0;
    for (int i = first; i < n_pages; i++) {
        pages[i].val0 = nv;
        nv += pages[i].n_vals;
    }
    c->n_values = nv;
    size_t nvs = (size_t)nv;
    switch (leaf->type) {
    case SF_PQ_BOOLEAN:
        c->b = sf_malloc(nvs + 1);
        break;
    case SF_PQ_INT32:
        c->i32 = sf_malloc(nvs * 4 + 1);
        break;
    case SF_PQ_FLOAT:
        c->f32 = sf_malloc(nvs * 4 + 1);
        break;
    case SF_PQ_INT64:
        c->i64 = sf_malloc(nvs * 8 + 1);
        break;
    case SF_PQ_DOUBLE:
        c->f64 = sf_malloc(nvs * 8 + 1);
        break;
    default:
        c->bytes = sf_malloc(nvs * sizeof *c->bytes + 1);
        break;
    }
    int64_t rows = 0;
    if (leaf->max_rep > 0) {
        if (slots > 0 && c->rep[0] != 0) FAIL("first repetition level is %d, not 0", c->rep[0]);
        for (int64_t s = 0; s < slots; s++)
            rows += c->rep[s] == 0;
    } else {
        rows = slots;
    }
    if (rows != want_rows)
        FAIL("column has %lld rows, row group has %lld", (long long)rows, (long long)want_rows);
    c->n_rows = rows;
    c->row_start = sf_malloc(((size_t)rows + 1) * sizeof *c->row_start);
    if (leaf->max_rep > 0) {
        int64_t r = 0;
        for (int64_t s = 0; s < slots; s++)
            if (c->rep[s] == 0) c->row_start[r++] = s;
    } else {
        for (int64_t s = 0; s < slots; s++)
            c->row_start[s] = s;
    }
    c->row_start[rows] = slots;

    /* Pass 4 (parallel): values. */
#pragma omp parallel if (n_pages - first > 1)
    {
        uint32_t *tmp = NULL;
        size_t tmp_cap = 0;
#pragma omp for schedule(dynamic, 1)
        for (int i = first; i < n_pages; i++) {
            if (page_values(leaf, c, &pages[i], &dict, &tmp, &tmp_cap))
                pages[i].err = sf_strdup(sf_errmsg());
        }
        free(tmp);
    }
    for (int i = first; i < n_pages; i++)
        if (pages[i].err) {
            sf_error("page %d: %s", i, pages[i].err);
            goto done;
        }
    rc = 0;
done:
    for (int i = 0; i < n_pages; i++) {
        free(pages[i].err);
        /* Byte values point into page buffers: the chunk keeps them. */
        if (rc == 0 && c->bytes)
            chunk_add_buf(c, pages[i].owned);
        else
            free(pages[i].owned);
    }
    free(pages);
    free(dict.bytes);
    free(dict.raw);
    if (rc) {
        sf_error_prefix("%s: row group %d: column '%s'", f->name, rg, leaf->path);
        sf_pq_chunk_free(c);
    }
    return rc;
#undef FAIL
}

int sf_pq_chunk_row_bytes(const sf_pq_chunk *c, int64_t r, int from_end, sf_pq_bytes *out) {
    if (!c->bytes || r < 0 || r >= c->n_rows || from_end < 0) return 0;
    int64_t s0 = c->row_start[r], s1 = c->row_start[r + 1];
    int64_t s = s1 - 1 - from_end;
    if (s < s0) return 0;
    if (c->def && c->def[s] < c->elem_def) return 0; /* null or empty list */
    int64_t v = c->vidx[s];
    if (v < 0) return 0;
    *out = c->bytes[v];
    return 1;
}
