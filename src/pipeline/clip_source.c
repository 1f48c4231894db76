/* Activations of a dataset through CLIP's towers (saeflow/pipeline.h).
 *
 * Per call: read examples (one thread: the dataset handle is not shared) ->
 * decode + CLIPImageProcessor preprocessing and tokenization (OpenMP over
 * the examples; failures stay per example) -> queue of prepared inputs ->
 * vision / text forward on a group of them (kernels parallel inside) ->
 * streams with the dataset row (and token position) of every row.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "saeflow/buf.h"
#include "saeflow/clip.h"
#include "saeflow/dataset.h"
#include "saeflow/image.h"
#include "saeflow/pipeline.h"
#include "saeflow/clip_bpe.h"

typedef struct {
    int64_t row;
    char *id;
    uint8_t *img;
    size_t img_len;
    char *caption;
    int ok;
    char err[256];
} item;

typedef struct {
    sf_act_source base;
    /* settings (the fingerprint's parts) */
    char *model, *spec, *captions_path;
    int tokens_all, pillow_legacy, alpha_white, fixed;
    sf_dtype dtype;
    int64_t limit, B, Q; /* group size, queue capacity */
    /* model and inputs */
    const sf_clip *m; /* owned, or the caller's (sf_clip_source_opts.clip) */
    sf_clip *owned;
    sf_tokenizer *tok;
    sf_clip_preproc pp;
    sf_dataset *ds;
    SF_VEC(char *) caps; /* the captions file, one per dataset row */
    int vision_on, text_on;
    sf_clip_request vreq, treq;
    int64_t dv, dt, Tv, ctx, pxf; /* widths, vision tokens, context, floats per image */
    /* the queue of prepared examples: (Q, pxf) pixels, (Q, ctx) ids + mask */
    float *px;
    int32_t *ids, *mask;
    int64_t *qrow;
    char **qid;
    int64_t qn;
    item *items; /* (B) examples being read */
    int64_t next, end;
    /* the last batch: outputs and row metadata */
    float *yv, *yt;
    SF_VEC(int64_t) vrows, trows;
    SF_VEC(int32_t) vpos, tpos;
    int64_t *ex_rows; /* (B) */
    char **ex_ids;    /* (B), owned */
    int64_t n_ex;
    SF_VEC(sf_act_skip) skips; /* id and why owned */
} clip_src;

static void item_free(item *it) {
    free(it->id), free(it->img), free(it->caption);
    memset(it, 0, sizeof *it);
}

static void clear_batch(clip_src *c) {
    for (int64_t i = 0; i < c->n_ex; i++)
        free(c->ex_ids[i]);
    c->n_ex = 0;
    for (size_t i = 0; i < c->skips.n; i++) {
        free((char *)c->skips.v[i].id);
        free((char *)c->skips.v[i].why);
    }
    c->skips.n = 0;
    c->vrows.n = c->trows.n = c->vpos.n = c->tpos.n = 0;
}

static void skip(clip_src *c, int64_t row, const char *id, const char *why) {
    sf_act_skip s = {row, sf_strdup(id), sf_strdup(why)};
    sf_vec_push(&c->skips, s);
}

static void clip_close(sf_act_source *s) {
    clip_src *c = (clip_src *)s;
    clear_batch(c);
    sf_vec_free(&c->skips);
    sf_vec_free(&c->vrows), sf_vec_free(&c->trows), sf_vec_free(&c->vpos), sf_vec_free(&c->tpos);
    for (int64_t i = 0; i < c->qn; i++)
        free(c->qid[i]);
    for (int64_t i = 0; c->items && i < c->B; i++)
        item_free(&c->items[i]);
    free(c->items), free(c->qid), free(c->qrow), free(c->ids), free(c->mask);
    free(c->ex_rows), free(c->ex_ids);
    sf_free_aligned(c->px), sf_free_aligned(c->yv), sf_free_aligned(c->yt);
    if (c->ds) sf_dataset_close(c->ds);
    if (c->tok) sf_tokenizer_free(c->tok);
    sf_clip_free(c->owned);
    for (size_t i = 0; i < c->caps.n; i++)
        free(c->caps.v[i]);
    free(c->caps.v), free(c->model), free(c->spec), free(c->captions_path);
    free(c);
}

static int clip_seek(sf_act_source *s, int64_t row0, int64_t row1) {
    clip_src *c = (clip_src *)s;
    for (int64_t i = 0; i < c->qn; i++) /* a new range starts a new queue */
        free(c->qid[i]);
    c->qn = 0;
    c->next = row0;
    c->end = row1;
    return row1 > row0 ? sf_dataset_seek(c->ds, row0) : 0;
}

/* Reads up to B examples with the inputs the towers need from [next, end),
 * prepares them in parallel and appends the good ones to the queue. */
static int read_prepare(clip_src *c) {
    int64_t n = 0;
    while (n < c->B && c->next < c->end) {
        sf_sample s;
        int got = sf_dataset_next(c->ds, &s);
        if (got < 0) return -1;
        if (got == 0)
            return sf_error("dataset ended at row %lld, expected %lld rows", (long long)c->next,
                            (long long)c->base.n_rows);
        c->next++;
        /* (the captions file is read only when the text tower runs) */
        const char *cap = c->caps.v ? c->caps.v[s.row] : s.caption;
        const char *missing = c->vision_on && !s.image ? "no image"
                              : c->text_on && !cap     ? "no caption"
                                                       : NULL;
        if (missing) {
            skip(c, s.row, s.id, missing);
            continue;
        }
        item *it = &c->items[n++];
        it->row = s.row;
        it->id = sf_strdup(s.id);
        for (char *p = it->id; *p; p++) /* ids are stored newline-separated */
            if (*p == '\n' || *p == '\r') *p = ' ';
        if (c->vision_on) {
            it->img = sf_malloc(s.image_len ? s.image_len : 1);
            memcpy(it->img, s.image, s.image_len);
            it->img_len = s.image_len;
        }
        if (c->text_on) it->caption = sf_strdup(cap);
    }
    /* decode + preprocess + tokenize in parallel into the queue's free
     * slots [qn, qn + n); errors stay per item */
    const int64_t q0 = c->qn;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) {
        item *it = &c->items[i];
        const size_t q = (size_t)(q0 + i);
        it->ok = 1;
        if (c->vision_on) {
            sf_image im;
            if (sf_image_decode_ex(it->img, it->img_len, it->id,
                                   c->alpha_white ? SF_IMAGE_ALPHA_WHITE : 0u, &im) ||
                sf_clip_preprocess(&c->pp, &im, c->px + q * (size_t)c->pxf)) {
                snprintf(it->err, sizeof it->err, "%s", sf_errmsg());
                it->ok = 0;
            }
            if (it->ok || im.rgb) sf_image_free(&im);
        }
        if (it->ok && c->text_on) {
            int k = sf_tokenizer_encode(c->tok, it->caption, (int)c->ctx,
                                        c->ids + q * (size_t)c->ctx, c->mask + q * (size_t)c->ctx);
            if (k < 0) {
                snprintf(it->err, sizeof it->err, "caption: %s", sf_errmsg());
                it->ok = 0;
            }
        }
    }
    /* compact: the good ones join the queue in row order */
    for (int64_t i = 0; i < n; i++) {
        item *it = &c->items[i];
        if (!it->ok) {
            skip(c, it->row, it->id, it->err);
            item_free(it);
            continue;
        }
        const size_t from = (size_t)(q0 + i), to = (size_t)c->qn;
        if (from != to) {
            if (c->vision_on)
                memmove(c->px + to * (size_t)c->pxf, c->px + from * (size_t)c->pxf,
                        (size_t)c->pxf * sizeof(float));
            if (c->text_on) {
                memmove(c->ids + to * (size_t)c->ctx, c->ids + from * (size_t)c->ctx,
                        (size_t)c->ctx * sizeof(int32_t));
                memmove(c->mask + to * (size_t)c->ctx, c->mask + from * (size_t)c->ctx,
                        (size_t)c->ctx * sizeof(int32_t));
            }
        }
        c->qrow[c->qn] = it->row;
        c->qid[c->qn++] = it->id;
        it->id = NULL;
        item_free(it);
    }
    return 0;
}

/* Runs the towers on the first g queued examples and fills the batch. */
static int forward(clip_src *c, int64_t g, sf_act_batch *b) {
    sf_act_source *s = &c->base;
    int k = 0;
    if (c->vision_on) {
        if (sf_clip_vision_forward(c->m, c->px, g, &c->vreq, c->yv)) return -1;
        sf_act_stream *st = &b->stream[k++];
        *st = (sf_act_stream){"vision", c->dv, g, c->yv, c->qrow, NULL};
        if (s->per_token[0]) {
            for (int64_t i = 0; i < g; i++)
                for (int32_t t = 0; t < c->Tv; t++) {
                    sf_vec_push(&c->vrows, c->qrow[i]);
                    sf_vec_push(&c->vpos, t);
                }
            st->n = g * c->Tv, st->rows = c->vrows.v, st->pos = c->vpos.v;
        }
    }
    if (c->text_on) {
        /* The model runs each caption only as far as the request needs (its
         * pooled position, or its last token for all tokens): padding to the
         * context length costs nothing. */
        const int64_t T = c->ctx;
        if (sf_clip_text_forward(c->m, c->ids, c->mask, g, T, &c->treq, c->yt)) return -1;
        sf_act_stream *st = &b->stream[k];
        *st = (sf_act_stream){"text", c->dt, g, c->yt, c->qrow, NULL};
        if (s->per_token[k]) { /* TOK_VALID: the non-padding rows, packed in (caption, t) order */
            for (int64_t i = 0; i < g; i++)
                for (int32_t t = 0; t < T; t++)
                    if (c->mask[(size_t)i * (size_t)T + (size_t)t]) {
                        sf_vec_push(&c->trows, c->qrow[i]);
                        sf_vec_push(&c->tpos, t);
                    }
            st->n = (int64_t)c->trows.n, st->rows = c->trows.v, st->pos = c->tpos.v;
        }
        k++;
    }
    b->n_streams = k;
    /* the examples leave the queue; the rest (< B) moves to the front */
    memcpy(c->ex_rows, c->qrow, (size_t)g * sizeof(int64_t));
    memcpy(c->ex_ids, c->qid, (size_t)g * sizeof(char *));
    c->n_ex = g;
    for (int i = 0; i < k; i++)
        if (!b->stream[i].pos) b->stream[i].rows = c->ex_rows;
    c->qn -= g;
    if (c->qn) {
        if (c->vision_on)
            memmove(c->px, c->px + (size_t)g * (size_t)c->pxf,
                    (size_t)c->qn * (size_t)c->pxf * sizeof(float));
        if (c->text_on) {
            memmove(c->ids, c->ids + (size_t)g * (size_t)c->ctx,
                    (size_t)c->qn * (size_t)c->ctx * sizeof(int32_t));
            memmove(c->mask, c->mask + (size_t)g * (size_t)c->ctx,
                    (size_t)c->qn * (size_t)c->ctx * sizeof(int32_t));
        }
        memmove(c->qrow, c->qrow + g, (size_t)c->qn * sizeof(int64_t));
        memmove(c->qid, c->qid + g, (size_t)c->qn * sizeof(char *));
    }
    return 0;
}

static int clip_next(sf_act_source *s, sf_act_batch *b) {
    clip_src *c = (clip_src *)s;
    clear_batch(c);
    if (c->qn == 0 && c->next >= c->end) return 0;
    if (!c->fixed) {
        if (read_prepare(c)) return -1;
    } else {
        while (c->qn < c->B && c->next < c->end)
            if (read_prepare(c)) return -1;
    }
    int64_t g = c->qn < c->B ? c->qn : c->B;
    /* a batch with no rows still reports its skipped examples */
    for (int i = 0; i < s->n_streams; i++)
        b->stream[i] = (sf_act_stream){s->names[i], s->d[i], 0, NULL, NULL, NULL};
    b->n_streams = s->n_streams;
    if (g && forward(c, g, b)) return -1;
    b->n_examples = c->n_ex;
    b->ex_rows = c->ex_rows;
    b->ex_ids = (const char *const *)c->ex_ids;
    b->n_skipped = (int64_t)c->skips.n;
    b->skipped = c->skips.v;
    b->next_row = c->next;
    return 1;
}

static const sf_act_source_ops clip_ops = {clip_next, clip_seek, clip_close};

/* ---- opening --------------------------------------------------------------- */

static int load_captions(clip_src *c) {
    size_t len;
    char *txt = sf_read_file(c->captions_path, &len);
    if (!txt) return -1;
    char *p = txt, *end = txt + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *q = nl ? nl : end;
        size_t l = (size_t)(q - p);
        if (l && p[l - 1] == '\r') l--;
        char *line = sf_malloc(l + 1);
        memcpy(line, p, l);
        line[l] = 0;
        sf_vec_push(&c->caps, line);
        p = nl ? nl + 1 : end;
    }
    free(txt);
    return 0;
}

static int parse_what(const char *s, sf_clip_tokens tok, sf_clip_request *r, int *on) {
    *on = s && strcmp(s, "none");
    return *on ? sf_clip_parse_request(s, tok, r) : 0;
}

/* The image processor: the model's preprocessor_config.json, or CLIP's
 * defaults at the model's resolution; its crops must match the model. */
static int load_preproc(clip_src *c) {
    const sf_clip_config *vc = sf_clip_vision_config(c->m);
    char *pc = sf_path_join(c->model, "preprocessor_config.json");
    struct stat st;
    int have = stat(pc, &st) == 0;
    free(pc);
    if (have) {
        if (sf_clip_preproc_load(&c->pp, c->model)) return -1;
    } else {
        sf_clip_preproc_default(&c->pp);
        c->pp.shortest_edge = c->pp.crop_height = c->pp.crop_width = vc->image_size;
    }
    if (!c->pp.do_center_crop || c->pp.crop_height != vc->image_size ||
        c->pp.crop_width != vc->image_size)
        return sf_error(
            "%s: the image processor makes %dx%d crops but the model's image_size is %d", c->model,
            c->pp.crop_height, c->pp.crop_width, vc->image_size);
    c->pp.pillow_legacy_order = c->pillow_legacy;
    c->pxf = (int64_t)sf_clip_preproc_floats(&c->pp);
    return 0;
}

static int open_towers(clip_src *c, const sf_clip_source_opts *o) {
    sf_clip_tokens vt = c->tokens_all ? SF_CLIP_TOK_ALL : SF_CLIP_TOK_FIRST,
                   tt = c->tokens_all ? SF_CLIP_TOK_VALID : SF_CLIP_TOK_POOLED;
    int v_on, t_on;
    if (parse_what(o->vision, vt, &c->vreq, &v_on)) return sf_error_prefix("vision output");
    if (parse_what(o->text, tt, &c->treq, &t_on)) return sf_error_prefix("text output");
    if (!v_on && !t_on)
        return sf_error("both the vision and the text output are off: nothing to do");
    sf_clip_load_opts lo = {c->dtype, v_on, t_on};
    if (o->clip)
        c->m = o->clip;
    else if (!(c->m = c->owned = sf_clip_load(c->model, &lo)))
        return -1;
    c->vision_on = v_on && sf_clip_vision_config(c->m);
    c->text_on = t_on && sf_clip_text_config(c->m);
    if (v_on && !c->vision_on && (o->vision_required || !t_on))
        return sf_error("%s has no vision tower", c->model);
    if (t_on && !c->text_on && (o->text_required || !v_on))
        return sf_error("%s has no text tower", c->model);
    sf_act_source *s = &c->base;
    if (c->vision_on) {
        if ((c->dv = sf_clip_output_size(c->m, 0, &c->vreq, 0)) < 0)
            return sf_error_prefix("vision output");
        c->Tv = sf_clip_vision_tokens(c->m);
        int per_token = c->tokens_all && c->vreq.what == SF_CLIP_HIDDEN;
        if (per_token) c->dv /= c->Tv;
        if (load_preproc(c)) return -1;
        s->names[s->n_streams] = "vision";
        s->d[s->n_streams] = c->dv;
        s->per_token[s->n_streams++] = per_token;
    }
    if (c->text_on) {
        c->ctx = sf_clip_text_config(c->m)->max_positions;
        int per_token = c->tokens_all && c->treq.what == SF_CLIP_HIDDEN;
        if (per_token) c->treq.tokens = SF_CLIP_TOK_VALID;
        if ((c->dt = sf_clip_output_size(c->m, 1, &c->treq, 1)) < 0)
            return sf_error_prefix("text output");
        if (!(c->tok = sf_tokenizer_load_dir(o->tokenizer_dir ? o->tokenizer_dir : c->model)))
            return sf_error_prefix("tokenizer");
        if (c->captions_path && load_captions(c)) return -1;
        s->names[s->n_streams] = "text";
        s->d[s->n_streams] = c->dt;
        s->per_token[s->n_streams++] = per_token;
    }
    return 0;
}

sf_act_source *sf_clip_source_open(const sf_clip_source_opts *o) {
    if (!o->model || (!o->dataset && !o->samples))
        return sf_error("a model and a dataset are needed"), NULL;
    if (o->batch < 1) return sf_error("batch must be >= 1"), NULL;
    clip_src *c = sf_calloc(1, sizeof *c);
    c->base.ops = &clip_ops;
    c->model = sf_strdup(o->model);
    c->spec = sf_strdup(o->samples ? "(memory)" : o->dataset);
    c->captions_path = o->captions_path ? sf_strdup(o->captions_path) : NULL;
    c->tokens_all = o->tokens_all;
    c->pillow_legacy = o->pillow_legacy;
    c->alpha_white = o->alpha_white;
    c->fixed = o->fixed_groups;
    c->dtype = o->dtype == SF_DT_BF16 ? SF_DT_BF16 : SF_DT_F32;
    c->limit = o->limit;
    c->B = o->batch;
    c->Q = c->fixed ? 2 * c->B : c->B;
    if (open_towers(c, o)) goto fail;
    unsigned flags =
        (c->vision_on ? SF_DS_IMAGES : 0) | (c->text_on && !c->captions_path ? SF_DS_CAPTIONS : 0);
    if (!flags) flags = SF_DS_CAPTIONS; /* text from the captions file only: still need the rows */
    c->ds = o->samples ? sf_dataset_open_samples(o->samples, o->n_samples, flags)
                       : sf_dataset_open(c->spec, flags);
    if (!c->ds) goto fail;
    int64_t N = sf_dataset_count(c->ds);
    if (N < 0) goto fail;
    if (c->limit >= 0 && c->limit < N) N = c->limit;
    if (c->text_on && c->captions_path && (int64_t)c->caps.n < N) {
        sf_error("%s has %lld lines but the dataset has %lld rows (one caption per row)",
                 c->captions_path, (long long)c->caps.n, (long long)N);
        goto fail;
    }
    c->base.n_rows = N;
    c->end = N;
    const size_t B = (size_t)c->B, Q = (size_t)c->Q;
    c->items = sf_calloc(B, sizeof(item));
    c->qrow = sf_malloc(Q * sizeof(int64_t));
    c->qid = sf_calloc(Q, sizeof(char *));
    c->ex_rows = sf_malloc(B * sizeof(int64_t));
    c->ex_ids = sf_calloc(B, sizeof(char *));
    if (c->vision_on) {
        c->px = sf_malloc_aligned(Q * (size_t)c->pxf * sizeof(float));
        c->yv = sf_malloc_aligned(B * (size_t)(c->base.per_token[0] ? c->Tv : 1) * (size_t)c->dv *
                                  sizeof(float));
    }
    if (c->text_on) {
        int per_token = c->base.per_token[c->base.n_streams - 1];
        c->ids = sf_malloc(Q * (size_t)c->ctx * sizeof(int32_t));
        c->mask = sf_malloc(Q * (size_t)c->ctx * sizeof(int32_t));
        c->yt =
            sf_malloc_aligned(B * (size_t)(per_token ? c->ctx : 1) * (size_t)c->dt * sizeof(float));
    }
    return &c->base;
fail:
    clip_close(&c->base);
    return NULL;
}

/* ---- fingerprint ----------------------------------------------------------- */

static void fmt_request(char *buf, size_t n, const sf_clip_request *r, int on) {
    if (!on)
        snprintf(buf, n, "none");
    else if (r->what == SF_CLIP_POOLED)
        snprintf(buf, n, "pooled");
    else if (r->what == SF_CLIP_EMBEDS)
        snprintf(buf, n, "embeds");
    else
        snprintf(buf, n, "layer:%d", r->layer);
}

static char *abs_or_copy(const char *p) {
    char *r = p ? realpath(p, NULL) : NULL;
    return r ? r : sf_strdup(p ? p : "");
}

char *sf_clip_source_fingerprint(const sf_act_source *s, int64_t shard_rows) {
    if (s->ops != &clip_ops) return sf_error("not a CLIP source"), NULL;
    const clip_src *c = (const clip_src *)s;
    char *model = abs_or_copy(c->model), *caps = abs_or_copy(c->captions_path);
    char vr[64], tr[64];
    fmt_request(vr, sizeof vr, &c->vreq, c->vision_on);
    fmt_request(tr, sizeof tr, &c->treq, c->text_on);
    sf_sbuf b = {0};
    sf_sb_printf(&b,
                 "saeflow-extract-v1 model=%s source=%s captions=%s vision=%s text=%s tokens=%s "
                 "dtype=%s shard_rows=%lld limit=%lld%s%s",
                 model, c->spec, caps, vr, tr, c->tokens_all ? "all" : "cls",
                 sf_dtype_name(c->dtype), (long long)shard_rows, (long long)c->limit,
                 c->pillow_legacy ? " pillow=12" : "",
                 /* only when set: the default keeps older outputs resumable */
                 c->alpha_white ? " alpha=white" : "");
    free(model), free(caps);
    return sf_sb_release(&b);
}
