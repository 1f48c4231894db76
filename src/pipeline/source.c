/* The activation-source interface (saeflow/pipeline.h) and its simplest
 * implementation: rows of one tensor key across safetensors files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/pipeline.h"

int sf_act_source_next(sf_act_source *s, sf_act_batch *b) {
    memset(b, 0, sizeof *b);
    return s->ops->next(s, b);
}

int sf_act_source_seek(sf_act_source *s, int64_t row0, int64_t row1) {
    if (row0 < 0 || row1 < row0 || row1 > s->n_rows)
        return sf_error("rows [%lld, %lld) outside the source's %lld rows", (long long)row0,
                        (long long)row1, (long long)s->n_rows);
    return s->ops->seek(s, row0, row1);
}

void sf_act_source_close(sf_act_source *s) {
    if (s) s->ops->close(s);
}

/* ---- rows of a tensor across safetensors files ---------------------------- */

typedef struct {
    sf_act_source base;
    sf_st *files;
    int n_files;
    const sf_tensor_info **t;    /* (n_files) the activations */
    const sf_tensor_info **map;  /* (n_files) the row map, or NULL */
    const sf_tensor_info **pmap; /* (n_files) token positions '<key>_pos', or NULL */
    int64_t *start;              /* (n_files + 1) first row of each file */
    int64_t row_offset, B, next, end, d;
    char *key;
    float *x;      /* (B, d) */
    int64_t *rows; /* (B) */
    int32_t *pos;  /* (B) with pmap */
} file_src;

static void file_close(sf_act_source *s) {
    file_src *f = (file_src *)s;
    for (int i = 0; i < f->n_files; i++)
        sf_st_close(&f->files[i]);
    free(f->files);
    free(f->t);
    free(f->map);
    free(f->pmap);
    free(f->start);
    free(f->pos);
    free(f->key);
    sf_free_aligned(f->x);
    free(f->rows);
    free(f);
}

static int file_seek(sf_act_source *s, int64_t row0, int64_t row1) {
    file_src *f = (file_src *)s;
    f->next = row0;
    f->end = row1;
    return 0;
}

/* Rows [r0, r0 + m) into x and their dataset rows into rows. */
static int file_read(file_src *f, int64_t r0, int64_t m) {
    int k = 0;
    for (int64_t i = 0; i < m;) {
        int64_t r = r0 + i;
        while (r >= f->start[k + 1])
            k++;
        int64_t lr = r - f->start[k], cnt = f->start[k + 1] - r;
        if (cnt > m - i) cnt = m - i;
        float *dst = f->x + (size_t)i * (size_t)f->d;
        if (sf_tensor_rows_f32(f->t[k], lr, cnt, dst))
            return sf_error_prefix("%s", f->files[k].path);
        for (int64_t j = 0; j < cnt * f->d; j++)
            if (!isfinite(dst[j]))
                return sf_error("%s: tensor '%s': row %lld contains NaN or Inf", f->files[k].path,
                                f->key, (long long)(lr + j / f->d));
        for (int64_t j = 0; j < cnt; j++) {
            if (!f->map[0]) {
                f->rows[i + j] = f->row_offset + r + j;
                continue;
            }
            int64_t v;
            memcpy(&v, (const char *)f->map[k]->data + (size_t)(lr + j) * 8, 8); /* unaligned */
            if (v < 0)
                return sf_error("%s: row map: entry %lld is negative", f->files[k].path,
                                (long long)(lr + j));
            f->rows[i + j] = v;
            if (f->pos) {
                int32_t p;
                memcpy(&p, (const char *)f->pmap[k]->data + (size_t)(lr + j) * 4, 4);
                if (p < 0)
                    return sf_error("%s: token positions: entry %lld is negative", f->files[k].path,
                                    (long long)(lr + j));
                f->pos[i + j] = p;
            }
        }
        i += cnt;
    }
    return 0;
}

static int file_next(sf_act_source *s, sf_act_batch *b) {
    file_src *f = (file_src *)s;
    int64_t m = f->end - f->next < f->B ? f->end - f->next : f->B;
    if (m <= 0) return 0;
    if (file_read(f, f->next, m)) return -1;
    f->next += m;
    b->n_streams = 1;
    b->stream[0] = (sf_act_stream){s->names[0], f->d, m, f->x, f->rows, f->pos};
    b->n_examples = m;
    b->ex_rows = f->rows;
    b->next_row = f->next;
    return 1;
}

static const sf_act_source_ops file_ops = {file_next, file_seek, file_close};

/* Picks the map tensor: `name` if given ("none": no map), else `<key>_rows`,
 * else `rows`, when present in the first file. Checks every file. */
static int open_map(file_src *f, const char *name) {
    if (name && !strcmp(name, "none")) return 0;
    char auto_name[512];
    if (!name) {
        snprintf(auto_name, sizeof auto_name, "%s_rows", f->key);
        if (!sf_st_find(&f->files[0], auto_name)) snprintf(auto_name, sizeof auto_name, "rows");
        if (!sf_st_find(&f->files[0], auto_name)) return 0;
        name = auto_name;
    }
    for (int i = 0; i < f->n_files; i++) {
        const sf_tensor_info *t = sf_st_find(&f->files[i], name);
        int64_t want = f->start[i + 1] - f->start[i];
        if (!t || t->dtype != SF_DT_I64 || t->ndim != 1 || t->shape[0] != want)
            return sf_error("%s: row map '%s' must be an I64 tensor of %lld entries (one per '%s' "
                            "row)%s",
                            f->files[i].path, name, (long long)want, f->key,
                            t ? "" : ", but it is missing");
        f->map[i] = t;
    }
    return 0;
}

sf_act_source *sf_file_source_open(const sf_file_source_opts *o) {
    if (o->n_paths <= 0) return sf_error("no activation files given"), NULL;
    if (o->batch < 1) return sf_error("batch must be >= 1"), NULL;
    file_src *f = sf_calloc(1, sizeof *f);
    f->base.ops = &file_ops;
    f->files = sf_calloc((size_t)o->n_paths, sizeof(sf_st));
    f->t = sf_calloc((size_t)o->n_paths, sizeof *f->t);
    f->map = sf_calloc((size_t)o->n_paths, sizeof *f->map);
    f->start = sf_calloc((size_t)o->n_paths + 1, sizeof(int64_t));
    f->key = sf_strdup(o->key);
    f->row_offset = o->row_offset;
    for (int i = 0; i < o->n_paths; i++) {
        if (sf_st_open(&f->files[i], o->paths[i])) goto fail;
        f->n_files = i + 1;
        const sf_tensor_info *t = sf_st_find(&f->files[i], o->key);
        if (!t) {
            sf_error("%s: no tensor '%s'", o->paths[i], o->key);
            goto fail;
        }
        if (t->ndim != 2) {
            sf_error("%s: tensor '%s': expected shape [N, d], got %d dimensions", o->paths[i],
                     o->key, t->ndim);
            goto fail;
        }
        if (t->dtype != SF_DT_F32 && t->dtype != SF_DT_F16 && t->dtype != SF_DT_BF16 &&
            t->dtype != SF_DT_F64) {
            sf_error("%s: tensor '%s': dtype %s is not a float type", o->paths[i], o->key,
                     sf_dtype_name(t->dtype));
            goto fail;
        }
        if (t->shape[1] <= 0 || t->shape[1] > (1 << 24)) {
            sf_error("%s: tensor '%s': bad width %lld", o->paths[i], o->key,
                     (long long)t->shape[1]);
            goto fail;
        }
        if (i == 0)
            f->d = t->shape[1];
        else if (t->shape[1] != f->d) {
            sf_error("%s: tensor '%s': width %lld differs from %lld in %s", o->paths[i], o->key,
                     (long long)t->shape[1], (long long)f->d, o->paths[0]);
            goto fail;
        }
        f->t[i] = t;
        f->start[i + 1] = f->start[i] + t->shape[0];
    }
    int64_t N = f->start[f->n_files];
    if (N == 0) {
        sf_error("%s: tensor '%s' has no rows", o->paths[0], o->key);
        goto fail;
    }
    if (open_map(f, o->rows_key)) goto fail;
    /* rows of tokens, as extract writes them: '<key>_rows' with '<key>_pos' */
    char pos_name[512];
    snprintf(pos_name, sizeof pos_name, "%s_pos", f->key);
    if (f->map[0] && sf_st_find(&f->files[0], pos_name)) {
        f->pmap = sf_calloc((size_t)f->n_files, sizeof *f->pmap);
        for (int i = 0; i < f->n_files; i++) {
            const sf_tensor_info *t = sf_st_find(&f->files[i], pos_name);
            int64_t want = f->start[i + 1] - f->start[i];
            if (!t || t->dtype != SF_DT_I32 || t->ndim != 1 || t->shape[0] != want) {
                sf_error("%s: token positions '%s' must be an I32 tensor of %lld entries",
                         f->files[i].path, pos_name, (long long)want);
                goto fail;
            }
            f->pmap[i] = t;
        }
        f->base.per_token[0] = 1;
    }
    sf_act_source *s = &f->base;
    s->n_streams = 1;
    s->names[0] = f->key;
    s->d[0] = f->d;
    s->n_rows = o->limit >= 0 && o->limit < N ? o->limit : N;
    f->B = o->batch < s->n_rows ? o->batch : (s->n_rows > 0 ? s->n_rows : 1);
    f->x = sf_malloc_aligned((size_t)f->B * (size_t)f->d * sizeof(float));
    f->rows = sf_malloc((size_t)f->B * sizeof(int64_t));
    if (f->pmap) f->pos = sf_malloc((size_t)f->B * sizeof(int32_t));
    f->end = s->n_rows;
    return s;
fail:
    file_close(&f->base);
    return NULL;
}

const char *sf_file_source_rows_key(const sf_act_source *s) {
    const file_src *f = (const file_src *)s;
    return s->ops == &file_ops && f->map[0] ? f->map[0]->name : NULL;
}

const char *sf_file_source_meta(const sf_act_source *s, const char *key) {
    const file_src *f = (const file_src *)s;
    return s->ops == &file_ops ? sf_st_meta(&f->files[0], key) : NULL;
}
