/* webdataset tar shards (wds:) through libarchive.
 *
 * Samples are runs of ADJACENT members sharing a key, as in webdataset: the
 * key is the member path up to the first dot of its basename, the extension
 * is the rest ("a/b.x.jpg" -> key "a/b", ext "x.jpg"). Per sample:
 *   image:   first member whose last extension is jpg, jpeg, png or webp
 *   caption: a "txt" member (trailing whitespace stripped), else a "json"
 *            member's "caption", else "txt", else "text" string field
 * Other members are skipped without reading their data. Members without a
 * dot in the basename and non-regular entries are ignored.
 *
 * Iteration streams each shard once. count()/seek() build an index (one
 * scan, headers only): per sample the header offset of its first member.
 * Seeking in an uncompressed shard reopens it at that offset; in a
 * compressed shard (.tar.gz, ...) it re-reads the shard from the start. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/ds_internal.h"
#include "saeflow/common.h"

#define MAX_MEMBER_BYTES ((int64_t)1 << 30)

/* A byte source for libarchive: a file descriptor or a memory buffer,
 * starting at `base`. */
typedef struct {
    int fd;
    const uint8_t *mem;
    size_t mem_len;
    int64_t base, pos, size;
    uint8_t buf[1 << 16];
} tar_io;

static la_ssize_t io_read(struct archive *a, void *ud, const void **out) {
    tar_io *io = ud;
    (void)a;
    if (io->pos >= io->size) return 0;
    if (io->mem) {
        *out = io->mem + io->pos;
        la_ssize_t n = (la_ssize_t)(io->size - io->pos);
        io->pos = io->size;
        return n;
    }
    ssize_t n = pread(io->fd, io->buf, sizeof io->buf, (off_t)io->pos);
    if (n < 0) {
        archive_set_error(a, errno, "read failed: %s", strerror(errno));
        return -1;
    }
    io->pos += n;
    *out = io->buf;
    return n;
}

static la_int64_t io_skip(struct archive *a, void *ud, la_int64_t n) {
    tar_io *io = ud;
    (void)a;
    if (n > io->size - io->pos) n = io->size - io->pos;
    if (n < 0) n = 0;
    io->pos += n;
    return n;
}

static la_int64_t io_seek(struct archive *a, void *ud, la_int64_t off, int whence) {
    tar_io *io = ud;
    (void)a;
    int64_t p = whence == SEEK_SET ? off : whence == SEEK_CUR ? io->pos + off : io->size + off;
    if (p < 0 || p > io->size) return ARCHIVE_FATAL;
    io->pos = p;
    return p;
}

typedef struct {
    int64_t row0;     /* global row of the shard's first sample */
    int64_t n;        /* samples */
    int64_t *offsets; /* (n) header offset of each sample's first member */
    uint64_t *keys;   /* (n) hash of each sample's key, to verify a reopen */
    int compressed;
} shard_index;

typedef struct {
    /* the open shard */
    int shard; /* index of the open shard, or of the next to open */
    struct archive *a;
    tar_io *io;
    char *pend_path;  /* current header, read but not consumed (next sample's first member) */
    int64_t pend_off; /* its header offset */
    int eof;          /* the open shard has no more members */
    int64_t row;      /* global row of the next sample */
    /* index (built by count/seek) */
    shard_index *idx;
    int64_t total;
    /* the sample just read */
    char *key;
    int64_t key_off;
    uint8_t *img;
    size_t img_len, img_cap;
    char *cap, *json;
    size_t cap_len, json_len, cap_cap, json_cap;
    int have_img, have_cap, have_json;
} tar_src;

/* FNV-1a, 64-bit. */
static uint64_t key_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void close_shard(tar_src *t) {
    if (t->a) archive_read_free(t->a);
    t->a = NULL;
    if (t->io && t->io->fd >= 0) close(t->io->fd);
    free(t->io);
    t->io = NULL;
    free(t->pend_path);
    t->pend_path = NULL;
    t->eof = 0;
}

/* Opens shard i positioned at byte `offset` (0: the start). */
static int open_shard(sf_dataset *ds, tar_src *t, int i, int64_t offset) {
    close_shard(t);
    const char *name = ds->files[i];
    tar_io *io = sf_calloc(1, sizeof *io);
    io->fd = -1;
    if (ds->mem) {
        io->mem = ds->mem;
        io->size = (int64_t)ds->mem_len;
    } else {
        io->fd = open(name, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (io->fd < 0 || fstat(io->fd, &st) != 0) {
            int e = errno;
            if (io->fd >= 0) close(io->fd);
            free(io);
            return sf_error("%s: cannot open: %s", name, strerror(e));
        }
        io->size = (int64_t)st.st_size;
    }
    io->base = io->pos = offset;
    t->io = io;
    t->a = archive_read_new();
    archive_read_support_filter_all(t->a);
    archive_read_support_format_tar(t->a);
    archive_read_set_read_callback(t->a, io_read);
    archive_read_set_skip_callback(t->a, io_skip);
    archive_read_set_seek_callback(t->a, io_seek);
    archive_read_set_callback_data(t->a, io);
    if (archive_read_open1(t->a) != ARCHIVE_OK) {
        int rc = sf_error("%s: not a readable tar archive: %s", name, archive_error_string(t->a));
        close_shard(t);
        return rc;
    }
    t->shard = i;
    return 0;
}

/* Splits a member path into key and extension (webdataset's rule). Returns 0
 * if the member has no extension. */
static int split_key(const char *path, size_t *key_len, const char **ext) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strchr(base, '.');
    if (!dot || dot == base) return 0;
    *key_len = (size_t)(dot - path);
    *ext = dot + 1;
    return 1;
}

static int last_ext_is(const char *ext, const char *want) {
    const char *d = strrchr(ext, '.');
    return !strcasecmp(d ? d + 1 : ext, want);
}

static int is_image_ext(const char *ext) {
    return last_ext_is(ext, "jpg") || last_ext_is(ext, "jpeg") || last_ext_is(ext, "png") ||
           last_ext_is(ext, "webp");
}

/* Reads the current member's data into *buf (NUL-terminated). */
static int read_member(sf_dataset *ds, tar_src *t, const char *path, uint8_t **buf, size_t *len,
                       size_t *cap) {
    *len = 0;
    for (;;) {
        if (*len + 65536 + 1 > *cap) {
            *cap = *cap ? *cap * 2 : 65536 * 2;
            *buf = sf_realloc(*buf, *cap);
        }
        la_ssize_t n = archive_read_data(t->a, *buf + *len, *cap - *len - 1);
        if (n < 0)
            return sf_error("%s: member '%s': %s", ds->files[t->shard], path,
                            archive_error_string(t->a));
        if (n == 0) break;
        *len += (size_t)n;
        if ((int64_t)*len > MAX_MEMBER_BYTES)
            return sf_error("%s: member '%s' larger than 1 GiB", ds->files[t->shard], path);
    }
    (*buf)[*len] = 0;
    return 0;
}

/* Reads the next regular member's header into t->pend_path: 1, 0 at the end
 * of the shard, -1 on error. */
static int next_header(sf_dataset *ds, tar_src *t) {
    free(t->pend_path);
    t->pend_path = NULL;
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(t->a, &e);
        if (r == ARCHIVE_EOF) {
            t->eof = 1;
            return 0;
        }
        if (r < ARCHIVE_WARN)
            return sf_error("%s: corrupt or truncated tar: %s", ds->files[t->shard],
                            archive_error_string(t->a));
        if (archive_entry_filetype(e) != AE_IFREG) continue;
        const char *p = archive_entry_pathname(e);
        size_t kl = 0;
        const char *ext = NULL;
        if (!p || !split_key(p, &kl, &ext)) continue;
        t->pend_path = sf_strdup(p);
        t->pend_off = t->io->base + archive_read_header_position(t->a);
        return 1;
    }
}

/* Reads one sample (the adjacent members sharing the first member's key).
 * want = fields whose data to read (0: headers only). 1 ok, 0 at the end of
 * the shard, -1 error. */
static int read_sample(sf_dataset *ds, tar_src *t, unsigned want) {
    t->have_img = t->have_cap = t->have_json = 0;
    t->img_len = t->cap_len = t->json_len = 0;
    if (!t->pend_path) {
        if (t->eof) return 0;
        int r = next_header(ds, t);
        if (r <= 0) return r;
    }
    size_t kl = 0;
    const char *ext = NULL;
    split_key(t->pend_path, &kl, &ext);
    free(t->key);
    t->key = sf_malloc(kl + 1);
    memcpy(t->key, t->pend_path, kl);
    t->key[kl] = 0;
    t->key_off = t->pend_off;
    for (;;) {
        const char *path = t->pend_path;
        split_key(path, &kl, &ext);
        int rc = 0;
        if ((want & SF_DS_IMAGES) && !t->have_img && is_image_ext(ext)) {
            rc = read_member(ds, t, path, &t->img, &t->img_len, &t->img_cap);
            t->have_img = 1;
        } else if ((want & SF_DS_CAPTIONS) && !t->have_cap && last_ext_is(ext, "txt")) {
            rc = read_member(ds, t, path, (uint8_t **)&t->cap, &t->cap_len, &t->cap_cap);
            t->have_cap = 1;
        } else if ((want & SF_DS_CAPTIONS) && !t->have_json && last_ext_is(ext, "json")) {
            rc = read_member(ds, t, path, (uint8_t **)&t->json, &t->json_len, &t->json_cap);
            t->have_json = 1;
        }
        if (rc) return -1;
        int r = next_header(ds, t);
        if (r < 0) return -1;
        if (r == 0) return 1;
        split_key(t->pend_path, &kl, &ext);
        if (strlen(t->key) != kl || memcmp(t->key, t->pend_path, kl) != 0)
            return 1; /* next sample */
    }
}

/* Reads the next sample across shards into t; 1, 0 at the end, -1 error. */
static int advance(sf_dataset *ds, tar_src *t, unsigned want) {
    for (;;) {
        if (t->shard >= ds->n_files) return 0;
        if (!t->a && open_shard(ds, t, t->shard, 0)) return -1;
        int r = read_sample(ds, t, want);
        if (r != 0) return r;
        close_shard(t);
        t->shard++;
    }
}

static int tar_next(sf_dataset *ds, sf_sample *out) {
    tar_src *t = ds->impl;
    int r = advance(ds, t, ds->flags);
    if (r <= 0) return r;
    out->row = t->row++;
    out->id = t->key;
    if (t->have_img) {
        out->image = t->img;
        out->image_len = t->img_len;
        out->image_ext = sf_image_ext_from_magic(t->img, t->img_len);
    }
    if (t->have_cap) {
        t->cap_len = ds_rstrip(t->cap, t->cap_len);
        out->caption = t->cap;
        out->caption_len = t->cap_len;
    } else if (t->have_json) {
        char *c = ds_json_caption(t->json, t->json_len);
        if (c) {
            size_t n = strlen(c);
            if (n + 1 > t->cap_cap) t->cap = sf_realloc(t->cap, t->cap_cap = n + 1);
            memcpy(t->cap, c, n + 1);
            free(c);
            out->caption = t->cap;
            out->caption_len = n;
        }
    }
    return 1;
}

/* One pass over every shard, headers only. */
static int build_index(sf_dataset *ds, tar_src *t) {
    if (t->idx) return 0;
    shard_index *idx = sf_calloc((size_t)ds->n_files, sizeof *idx);
    tar_src s;
    memset(&s, 0, sizeof s);
    int64_t total = 0;
    int rc = 0;
    for (int i = 0; i < ds->n_files && !rc; i++) {
        if ((rc = open_shard(ds, &s, i, 0))) break;
        idx[i].row0 = total;
        size_t cap = 0;
        int r;
        while ((r = read_sample(ds, &s, 0)) == 1) {
            if ((size_t)idx[i].n == cap) {
                cap = cap * 2 + 64;
                idx[i].offsets = sf_realloc(idx[i].offsets, cap * sizeof(int64_t));
                idx[i].keys = sf_realloc(idx[i].keys, cap * sizeof(uint64_t));
            }
            idx[i].keys[idx[i].n] = key_hash(s.key);
            idx[i].offsets[idx[i].n++] = s.key_off;
        }
        if (r < 0) rc = -1;
        idx[i].compressed =
            archive_filter_count(s.a) > 1 || archive_filter_code(s.a, 0) != ARCHIVE_FILTER_NONE;
        total += idx[i].n;
        close_shard(&s);
    }
    free(s.key);
    free(s.img);
    free(s.cap);
    free(s.json);
    if (rc) {
        for (int i = 0; i < ds->n_files; i++) {
            free(idx[i].offsets);
            free(idx[i].keys);
        }
        free(idx);
        return -1;
    }
    t->idx = idx;
    t->total = total;
    return 0;
}

static int64_t tar_count(sf_dataset *ds) {
    tar_src *t = ds->impl;
    return build_index(ds, t) ? -1 : t->total;
}

static int tar_seek(sf_dataset *ds, int64_t row) {
    tar_src *t = ds->impl;
    if (build_index(ds, t)) return -1;
    if (row > t->total)
        return sf_error("row %lld: dataset has %lld rows", (long long)row, (long long)t->total);
    close_shard(t);
    if (row == t->total) {
        t->shard = ds->n_files;
        t->row = row;
        return 0;
    }
    int i = 0;
    while (i + 1 < ds->n_files && t->idx[i + 1].row0 <= row)
        i++;
    int64_t k = row - t->idx[i].row0;
    if (!t->idx[i].compressed) {
        /* Reopen at the sample's first header; check that it is the indexed
         * key (a tar variant whose headers depend on earlier ones, such as
         * pax global headers, could read differently from the middle). */
        if (open_shard(ds, t, i, t->idx[i].offsets[k]) == 0) {
            int r = next_header(ds, t);
            if (r == 1) {
                size_t kl = 0;
                const char *ext = NULL;
                split_key(t->pend_path, &kl, &ext);
                char *key = sf_malloc(kl + 1);
                memcpy(key, t->pend_path, kl);
                key[kl] = 0;
                int same = key_hash(key) == t->idx[i].keys[k];
                free(key);
                if (same) {
                    t->row = row;
                    return 0;
                }
            }
        }
        sf_error_clear();
        close_shard(t);
    }
    /* Compressed (or the reopen did not match): re-read from the shard start. */
    if (open_shard(ds, t, i, 0)) return -1;
    for (int64_t j = 0; j < k; j++)
        if (read_sample(ds, t, 0) != 1)
            return sf_error("%s: shard changed since it was indexed", ds->files[i]);
    t->row = row;
    return 0;
}

static int tar_describe(sf_dataset *ds, FILE *out) {
    tar_src *t = ds->impl;
    if (build_index(ds, t)) return -1;
    fprintf(out, "source:     webdataset tar (%d shard%s)\n", ds->n_files,
            ds->n_files == 1 ? "" : "s");
    fprintf(out, "rows:       %lld\n", (long long)t->total);
    for (int i = 0; i < ds->n_files && i < 20; i++)
        fprintf(out, "  %s: %lld samples%s\n", ds->files[i], (long long)t->idx[i].n,
                t->idx[i].compressed ? " (compressed)" : "");
    if (ds->n_files > 20) fprintf(out, "  ... %d more shards\n", ds->n_files - 20);
    fprintf(out, "fields:     image = first jpg/jpeg/png/webp member; caption = txt, else json "
                 "caption/txt/text\n");
    return 0;
}

static void tar_close(sf_dataset *ds) {
    tar_src *t = ds->impl;
    if (!t) return;
    close_shard(t);
    if (t->idx)
        for (int i = 0; i < ds->n_files; i++) {
            free(t->idx[i].offsets);
            free(t->idx[i].keys);
        }
    free(t->idx);
    free(t->key);
    free(t->img);
    free(t->cap);
    free(t->json);
    free(t);
    ds->impl = NULL;
}

static const ds_ops TAR_OPS = {tar_count, tar_next, tar_seek, tar_describe, tar_close};

int ds_tar_init(sf_dataset *ds) {
    tar_src *t = sf_calloc(1, sizeof *t);
    ds->impl = t;
    ds->ops = &TAR_OPS;
    /* Check that the first shard opens, so a wrong spec fails early. */
    if (open_shard(ds, t, 0, 0)) {
        tar_close(ds);
        return -1;
    }
    return 0;
}
