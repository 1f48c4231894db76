/* Resumable sharded extraction (saeflow/pipeline.h).
 *
 * The source's rows are cut into shards of shard_rows dataset rows; each
 * finished shard is written atomically to OUT.partNNNNN.safetensors with the
 * fingerprint of the settings in its metadata. A rerun with the same
 * fingerprint skips finished shards, so an interruption loses at most the
 * shard in progress. When all shards exist they are concatenated into OUT
 * (atomically, streamed from the mappings) and the parts are removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saeflow/buf.h"
#include "saeflow/dist.h"
#include "saeflow/pipeline.h"

typedef SF_VEC(float) fvec;
typedef SF_VEC(int64_t) lvec;
typedef SF_VEC(int32_t) ivec;

/* One shard's rows, per stream and per example. */
typedef struct {
    fvec x[SF_ACT_MAX_STREAMS];
    lvec rows[SF_ACT_MAX_STREAMS];
    ivec pos[SF_ACT_MAX_STREAMS];
    lvec ex_rows;
    SF_VEC(char) ids; /* newline-terminated */
    int64_t skipped;
} shard;

static void shard_free(shard *s) {
    for (int i = 0; i < SF_ACT_MAX_STREAMS; i++)
        sf_vec_free(&s->x[i]), sf_vec_free(&s->rows[i]), sf_vec_free(&s->pos[i]);
    sf_vec_free(&s->ex_rows);
    sf_vec_free(&s->ids);
    memset(s, 0, sizeof *s);
}

static void shard_add(shard *sh, const sf_act_source *src, const sf_act_batch *b) {
    for (int i = 0; i < b->n_streams; i++) {
        const sf_act_stream *st = &b->stream[i];
        sf_vec_append(&sh->x[i], st->x, st->n * st->d);
        if (src->per_token[i]) {
            sf_vec_append(&sh->rows[i], st->rows, st->n);
            sf_vec_append(&sh->pos[i], st->pos, st->n);
        }
    }
    sf_vec_append(&sh->ex_rows, b->ex_rows, b->n_examples);
    for (int64_t i = 0; i < b->n_examples; i++) {
        const char *id = b->ex_ids ? b->ex_ids[i] : "";
        sf_vec_append(&sh->ids, id, strlen(id));
        sf_vec_push(&sh->ids, '\n');
    }
    sh->skipped += b->n_skipped;
}

char *sf_extract_part_path(const char *out, int64_t k) {
    sf_sbuf b = {0};
    sf_sb_printf(&b, "%s.part%05lld.safetensors", out, (long long)k);
    return sf_sb_release(&b);
}

static const char *meta_key(const sf_extract_opts *o) {
    return o->meta_key ? o->meta_key : "saeflow_extract";
}

/* 0: a finished part with our fingerprint; -1: error (other settings). */
static int check_part(const sf_extract_opts *o, const char *path) {
    sf_st st;
    if (sf_st_open(&st, path))
        return sf_error_prefix("unreadable part of an earlier run (delete it to redo)");
    const char *fp = sf_st_meta(&st, meta_key(o));
    int ok = fp && !strcmp(fp, o->fingerprint);
    if (!ok)
        sf_error("%s was made with different settings (%s); rerun with the same settings, or "
                 "delete %s.part*.safetensors to start over",
                 path, fp ? fp : "no fingerprint", o->out);
    sf_st_close(&st); /* after formatting: fp points into it */
    return ok ? 0 : -1;
}

/* Tensors of width 1 are 1-D, except F32 activations: [n, d] even for d = 1. */
static void add_rows(sf_st_writer *w, const char *name, sf_dtype dt, const void *data, size_t n,
                     int64_t width) {
    static const char empty[8] = {0};
    int64_t shape[2] = {(int64_t)n / width, width};
    sf_stw_add(w, name, dt, width > 1 || dt == SF_DT_F32 ? 2 : 1, shape, n ? data : empty);
}

static int write_part(const sf_act_source *src, const sf_extract_opts *o, const shard *sh,
                      const char *path) {
    sf_st_writer *w = sf_stw_new();
    add_rows(w, "rows", SF_DT_I64, sh->ex_rows.v, sh->ex_rows.n, 1);
    char name[3][256];
    for (int i = 0; i < src->n_streams; i++) {
        add_rows(w, src->names[i], SF_DT_F32, sh->x[i].v, sh->x[i].n, src->d[i]);
        if (src->per_token[i]) {
            snprintf(name[0], sizeof name[0], "%s_rows", src->names[i]);
            snprintf(name[1], sizeof name[1], "%s_pos", src->names[i]);
            add_rows(w, name[0], SF_DT_I64, sh->rows[i].v, sh->rows[i].n, 1);
            add_rows(w, name[1], SF_DT_I32, sh->pos[i].v, sh->pos[i].n, 1);
        }
    }
    add_rows(w, "ids", SF_DT_U8, sh->ids.v, sh->ids.n, 1);
    char sk[32];
    snprintf(sk, sizeof sk, "%lld", (long long)sh->skipped);
    sf_stw_meta(w, meta_key(o), o->fingerprint);
    sf_stw_meta(w, "skipped", sk);
    int rc = sf_stw_write(w, path);
    sf_stw_free(w);
    return rc;
}

/* Concatenates the parts into out. 0, -1 on error, 1 when no part holds a
 * row (nothing written). */
static int merge_parts(const sf_act_source *src, const sf_extract_opts *o, int64_t n_shards,
                       sf_extract_result *res) {
    sf_st *parts = sf_calloc((size_t)n_shards, sizeof(sf_st));
    int64_t opened = 0;
    int rc = -1;
    res->rows = res->skipped = 0;
    for (; opened < n_shards; opened++) {
        char *p = sf_extract_part_path(o->out, opened);
        int r = sf_st_open(&parts[opened], p);
        free(p);
        if (r) goto done;
        const char *sk = sf_st_meta(&parts[opened], "skipped");
        res->skipped += sk ? atoll(sk) : 0;
        const sf_tensor_info *t = sf_st_find(&parts[opened], "rows");
        res->rows += t && t->ndim == 1 ? t->shape[0] : 0;
    }
    if (res->rows == 0 && src->n_rows > 0) {
        sf_error("no row of %lld had all the inputs the source needs; nothing written",
                 (long long)src->n_rows);
        rc = 1; /* "empty", distinct from a failure: the parts hold nothing to keep */
        goto done;
    }
    char sk[32], nr[32];
    snprintf(sk, sizeof sk, "%lld", (long long)res->skipped);
    snprintf(nr, sizeof nr, "%lld", (long long)res->rows);
    const char *meta[] = {meta_key(o), o->fingerprint, "skipped", sk, "rows", nr, NULL};
    rc = sf_st_concat(parts, (int)n_shards, o->out, meta);
done:
    for (int64_t k = 0; k < opened; k++)
        sf_st_close(&parts[k]);
    free(parts);
    return rc;
}

/* Computes shard [r0, r1) into path. */
static int run_shard(sf_act_source *src, const sf_extract_opts *o, int64_t r0, int64_t r1,
                     const char *path, sf_progress *prog, int64_t done_rows) {
    shard sh = {0};
    int rc = -1;
    if (sf_act_source_seek(src, r0, r1)) goto done;
    sf_act_batch b;
    int got;
    while ((got = sf_act_source_next(src, &b)) == 1) {
        for (int64_t i = 0; o->on_skip && i < b.n_skipped; i++)
            o->on_skip(o->ctx, &b.skipped[i], prog->enabled);
        shard_add(&sh, src, &b);
        sf_progress_update(prog, (uint64_t)(done_rows + (b.next_row - r0)), NULL);
    }
    if (got < 0 || write_part(src, o, &sh, path)) goto done;
    rc = 0;
done:
    shard_free(&sh);
    return rc;
}

int sf_extract_run(sf_act_source *src, const sf_extract_opts *o, sf_extract_result *res) {
    memset(res, 0, sizeof *res);
    if (o->shard_rows < 1) return sf_error("shard_rows must be >= 1");
    /* A finished output with our settings: nothing to do. */
    if (sf_path_exists(o->out)) {
        sf_st st;
        if (sf_st_open(&st, o->out) == 0) {
            const char *fp = sf_st_meta(&st, meta_key(o));
            int same = fp && !strcmp(fp, o->fingerprint);
            if (same) {
                const char *r = sf_st_meta(&st, "rows"), *s = sf_st_meta(&st, "skipped");
                res->rows = r ? atoll(r) : 0;
                res->skipped = s ? atoll(s) : 0;
            }
            sf_st_close(&st);
            if (same) {
                res->already_complete = 1;
                return 0;
            }
        }
    }
    const int64_t N = src->n_rows, S = o->shard_rows;
    const int64_t n_shards = N == 0 ? 1 : (N + S - 1) / S;
    const int R = sf_dist_size(), me = sf_dist_rank();
    res->n_shards = n_shards;
    sf_progress prog;
    sf_progress_start(&prog, o->label ? o->label : "extract", (uint64_t)N, "rows");
    if (me) prog.enabled = 0; /* one bar: rank 0's (its own parts) */
    int64_t done_rows = 0;
    for (int64_t k = me; k < n_shards; k += R) {
        int64_t r0 = k * S, r1 = r0 + S < N ? r0 + S : N;
        char *pp = sf_extract_part_path(o->out, k);
        int rc;
        if (sf_path_exists(pp)) {
            rc = check_part(o, pp);
            if (!rc) sf_progress_update(&prog, (uint64_t)r1, "(resumed)");
        } else {
            rc = run_shard(src, o, r0, r1, pp, &prog, done_rows);
            res->fresh_shards += rc == 0;
        }
        free(pp);
        if (rc) return -1;
        done_rows = r1;
    }
    sf_progress_finish(&prog, NULL);
    /* every rank's parts exist before rank 0 reads them (a rank that failed
     * never gets here: the CLI ends all ranks) */
    if (R > 1 && sf_dist_barrier()) return -1;
    if (me) {
        res->worker = 1;
        return 0;
    }
    int mrc = merge_parts(src, o, n_shards, res);
    if (mrc < 0) return -1; /* keep the parts for a retry */
    /* merged, or nothing worth keeping (no row had its inputs) */
    for (int64_t k = 0; k < n_shards; k++) {
        char *pp = sf_extract_part_path(o->out, k);
        unlink(pp);
        free(pp);
    }
    return mrc;
}
