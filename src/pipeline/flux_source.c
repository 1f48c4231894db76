/* FLUX.1 activations sampled on the fly (saeflow/pipeline.h): what the
 * reference's FluxActivationSampler hands its SAE, as an sf_act_source.
 *
 * Per group of `batch` prompts (FluxPipeline.__call__ with 1 step):
 *   latents  = randn (Bg, C, h, w) from manual_seed(seed + g), packed
 *              (prepare_latents; h = 2 (H / 16), C = in_channels / 4)
 *   timestep = sigma = 1 (schnell's 1-step schedule; the model embeds 1000)
 *   guidance = 0 (only read by guidance-embedding models)
 *   forward  with one request per hook, stopping after the last hooked block
 * Then per prompt and hook the rows are all tokens or `tokens_per_image`
 * random ones, and a window of groups is shuffled, so one SAE step of 256
 * rows mixes many images (the reference's randperm over a batch's rows).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/buf.h"
#include "saeflow/dataset.h"
#include "saeflow/flux.h"
#include "saeflow/flux_prompts.h"
#include "saeflow/flux_sched.h"
#include "saeflow/pipeline.h"
#include "saeflow/safetensors.h"
#include "saeflow/t5.h"

typedef SF_VEC(float) fvec;
typedef SF_VEC(int64_t) lvec;
typedef SF_VEC(int32_t) ivec;

typedef struct {
    sf_act_source base;
    sf_flux_source_opts o;
    sf_flux *m;
    const sf_flux_config *c;
    sf_st pf; /* the prompts file */
    const sf_tensor_info *pe, *po;
    sf_flux_text *text; /* on-the-fly encoding: the encoders and the prompts */
    char **caps;
    int64_t n_caps;
    int64_t T, N, h, w; /* text tokens, image tokens, latent height / width */
    int nreq;
    sf_flux_request req[SF_ACT_MAX_STREAMS];
    char name[SF_ACT_MAX_STREAMS][160];
    int64_t rows_per[SF_ACT_MAX_STREAMS]; /* rows per prompt of each request */
    char *model, *prompts;                /* prompts: the file, or the captions / dataset named */
    int64_t next, end;
    /* buffers: one group's inputs and outputs, one window's streams */
    float *noise, *txt, *pooled, *tsig, *guid, *ids;
    float *out[SF_ACT_MAX_STREAMS];
    fvec x[SF_ACT_MAX_STREAMS];
    lvec rows[SF_ACT_MAX_STREAMS];
    ivec pos[SF_ACT_MAX_STREAMS];
    lvec ex_rows;
    uint64_t *perm;
    size_t perm_cap;
    fvec tmp;
} flux_src;

static void fs_close(sf_act_source *s) {
    flux_src *f = (flux_src *)s;
    sf_flux_free(f->m);
    if (f->pf.path) sf_st_close(&f->pf);
    sf_flux_text_free(f->text);
    for (int64_t i = 0; i < f->n_caps; i++)
        free(f->caps[i]);
    free(f->caps);
    free(f->noise), free(f->txt), free(f->pooled), free(f->tsig), free(f->guid), free(f->ids);
    for (int i = 0; i < SF_ACT_MAX_STREAMS; i++) {
        free(f->out[i]);
        sf_vec_free(&f->x[i]);
        sf_vec_free(&f->rows[i]);
        sf_vec_free(&f->pos[i]);
    }
    sf_vec_free(&f->ex_rows);
    sf_vec_free(&f->tmp);
    free(f->perm), free(f->model), free(f->prompts);
    free(f);
}

static int fs_seek(sf_act_source *s, int64_t row0, int64_t row1) {
    flux_src *f = (flux_src *)s;
    f->next = row0, f->end = row1;
    return 0;
}

int64_t sf_flux_source_window(const sf_act_source *s) {
    const flux_src *f = (const flux_src *)s;
    return (int64_t)f->o.batch * (f->o.shuffle > 1 ? f->o.shuffle : 1);
}

/* The generator of (seed, a, b): independent streams for prompt/window a
 * and hook b. */
static void rng_for(const flux_src *f, uint64_t a, uint64_t b, sf_rng *r) {
    sf_rng base, mid;
    sf_rng_seed(&base, f->o.seed ^ 0x666c7578736165ULL); /* "fluxsae" */
    sf_rng_split(&base, a, &mid);
    sf_rng_split(&mid, b, r);
}

static uint64_t *perm_buf(flux_src *f, size_t n) {
    if (n > f->perm_cap) {
        free(f->perm);
        f->perm = sf_malloc(n * sizeof *f->perm);
        f->perm_cap = n;
    }
    return f->perm;
}

/* Prompts [p0, p1) of group g (which starts at g0):
 * forward, then the selected rows of each hook appended to the window. */
static int run_group(flux_src *f, int64_t g, int64_t g0, int64_t p0, int64_t p1) {
    const sf_flux_config *c = f->c;
    const int64_t B = p1 - p0, C = c->in_channels / 4, tok = c->in_channels;
    /* the whole group's noise (one randn, as the pipeline draws it), then our slice */
    if (sf_flux_source_group_noise(f->o.seed, f->o.batch, f->base.n_rows, g, C, f->h, f->w,
                                   f->o.rng_kind, f->noise))
        return -1;
    const float *img = f->noise + (size_t)(p0 - g0) * (size_t)(f->N * tok);
    if (f->text) {
        if (sf_flux_encode_prompts(f->text, (const char *const *)f->caps + p0, B, (int)f->T, f->txt,
                                   f->pooled))
            return sf_error_prefix("%s", f->prompts);
    } else if (sf_tensor_rows_f32(f->pe, p0, B, f->txt) ||
               sf_tensor_rows_f32(f->po, p0, B, f->pooled)) {
        return sf_error_prefix("%s", f->prompts);
    }
    for (int64_t b = 0; b < B * f->T * c->joint_dim; b++)
        if (!isfinite(f->txt[b]))
            return sf_error("%s: prompt_embeds of prompt %lld contain NaN or Inf", f->prompts,
                            (long long)(p0 + b / (f->T * c->joint_dim)));
    for (int64_t b = 0; b < B * c->pooled_dim; b++)
        if (!isfinite(f->pooled[b]))
            return sf_error("%s: pooled_prompt_embeds of prompt %lld contain NaN or Inf",
                            f->prompts, (long long)(p0 + b / c->pooled_dim));
    sf_flux_inputs in = {.B = B,
                         .N = f->N,
                         .T = f->T,
                         .img = img,
                         .txt = f->txt,
                         .pooled = f->pooled,
                         .timestep = f->tsig,
                         .guidance = c->guidance ? f->guid : NULL,
                         .img_ids = f->ids,
                         .txt_ids = NULL};
    if (sf_flux_forward(f->m, &in, f->nreq, f->req, f->out)) return -1;
    const int64_t D = c->dim;
    if (f->o.rows_per_batch > 0) {
        /* the reference's nsamples: a randperm over all rows of the batch, the first N */
        for (int i = 0; i < f->nreq; i++) {
            const int64_t R = f->rows_per[i], tot = B * R;
            const int64_t take = f->o.rows_per_batch < tot ? f->o.rows_per_batch : tot;
            uint64_t *sel = perm_buf(f, (size_t)tot);
            for (int64_t j = 0; j < tot; j++)
                sel[j] = (uint64_t)j;
            sf_rng r;
            rng_for(f, (uint64_t)g, (uint64_t)i + 0x200000000ULL, &r);
            for (int64_t j = 0; j < take; j++) {
                int64_t k = j + (int64_t)sf_rng_below(&r, (uint64_t)(tot - j));
                uint64_t t = sel[j];
                sel[j] = sel[k], sel[k] = t;
            }
            for (int64_t j = 0; j < take; j++) {
                const int64_t b = (int64_t)sel[j] / R, q = (int64_t)sel[j] % R;
                sf_vec_append(&f->x[i], f->out[i] + (size_t)(b * R + q) * (size_t)D, D);
                sf_vec_push(&f->rows[i], p0 + b);
                sf_vec_push(&f->pos[i], (int32_t)q);
            }
        }
        for (int64_t b = 0; b < B; b++)
            sf_vec_push(&f->ex_rows, p0 + b);
        return 0;
    }
    for (int i = 0; i < f->nreq; i++) {
        const int64_t R = f->rows_per[i], tpi = f->o.tokens_per_image;
        const int64_t take = tpi > 0 && tpi < R ? tpi : R;
        uint64_t *sel = perm_buf(f, (size_t)R);
        for (int64_t b = 0; b < B; b++) {
            const int64_t p = p0 + b;
            for (int64_t j = 0; j < R; j++)
                sel[j] = (uint64_t)j;
            if (take < R) {
                /* the first `take` of a seeded permutation, then in token order */
                sf_rng r;
                rng_for(f, (uint64_t)p, (uint64_t)i, &r);
                for (int64_t j = 0; j < take; j++) {
                    int64_t k = j + (int64_t)sf_rng_below(&r, (uint64_t)(R - j));
                    uint64_t t = sel[j];
                    sel[j] = sel[k], sel[k] = t;
                }
                for (int64_t j = 1; j < take; j++) /* insertion sort: take is small */
                    for (int64_t k = j; k > 0 && sel[k - 1] > sel[k]; k--) {
                        uint64_t t = sel[k];
                        sel[k] = sel[k - 1], sel[k - 1] = t;
                    }
            }
            const float *src = f->out[i] + (size_t)(b * R) * (size_t)D;
            for (int64_t j = 0; j < take; j++) {
                sf_vec_append(&f->x[i], src + sel[j] * (size_t)D, D);
                sf_vec_push(&f->rows[i], p);
                sf_vec_push(&f->pos[i], (int32_t)sel[j]);
            }
        }
    }
    for (int64_t b = 0; b < B; b++)
        sf_vec_push(&f->ex_rows, p0 + b);
    return 0;
}

/* Rows of stream i in the order perm (a seeded shuffle of the window). */
static void shuffle_stream(flux_src *f, int i, uint64_t window) {
    const size_t n = f->rows[i].n, D = (size_t)f->c->dim;
    if (n < 2) return;
    uint64_t *perm = perm_buf(f, n);
    for (size_t j = 0; j < n; j++)
        perm[j] = j;
    sf_rng r;
    rng_for(f, window, (uint64_t)i + 0x100000000ULL, &r);
    sf_rng_shuffle_u64(&r, perm, n);
    f->tmp.n = 0;
    sf_vec_reserve(&f->tmp, n * D);
    int64_t *rows = sf_malloc(n * sizeof *rows);
    int32_t *pos = sf_malloc(n * sizeof *pos);
    for (size_t j = 0; j < n; j++) {
        memcpy(f->tmp.v + j * D, f->x[i].v + perm[j] * D, D * sizeof(float));
        rows[j] = f->rows[i].v[perm[j]];
        pos[j] = f->pos[i].v[perm[j]];
    }
    memcpy(f->x[i].v, f->tmp.v, n * D * sizeof(float));
    memcpy(f->rows[i].v, rows, n * sizeof *rows);
    memcpy(f->pos[i].v, pos, n * sizeof *pos);
    free(rows), free(pos);
}

static int fs_next(sf_act_source *s, sf_act_batch *bt) {
    flux_src *f = (flux_src *)s;
    if (f->next >= f->end) return 0;
    const int64_t B = f->o.batch, W = sf_flux_source_window(s), n = s->n_rows;
    const int64_t w = f->next / W, w1 = (w + 1) * W < f->end ? (w + 1) * W : f->end;
    for (int i = 0; i < f->nreq; i++)
        f->x[i].n = f->rows[i].n = f->pos[i].n = 0;
    f->ex_rows.n = 0;
    for (int64_t g = f->next / B; g * B < w1; g++) {
        const int64_t g0 = g * B, gn = g0 + B < n ? B : n - g0;
        const int64_t p0 = g0 > f->next ? g0 : f->next, p1 = g0 + gn < w1 ? g0 + gn : w1;
        if (run_group(f, g, g0, p0, p1)) return -1;
    }
    if (f->o.shuffle > 0)
        for (int i = 0; i < f->nreq; i++)
            shuffle_stream(f, i, (uint64_t)w);
    bt->n_streams = f->nreq;
    for (int i = 0; i < f->nreq; i++)
        bt->stream[i] = (sf_act_stream){s->names[i], s->d[i],      (int64_t)f->rows[i].n,
                                        f->x[i].v,   f->rows[i].v, f->pos[i].v};
    bt->n_examples = (int64_t)f->ex_rows.n;
    bt->ex_rows = f->ex_rows.v;
    f->next = w1;
    bt->next_row = w1;
    return 1;
}

/* The prompts of on-the-fly encoding: lines of a text file ("\r\n" ends a
 * line too) or a dataset's captions, the first `limit` (< 0: all). */
static int read_captions(flux_src *f, const char *path, const char *spec, int64_t limit) {
    SF_VEC(char *) v = {0};
    int rc = 0;
    if (path) {
        size_t len;
        char *txt = sf_read_file(path, &len);
        if (!txt) return -1;
        for (size_t i = 0; i < len && (limit < 0 || (int64_t)v.n < limit);) {
            char *nl = memchr(txt + i, '\n', len - i);
            size_t e = nl ? (size_t)(nl - txt) : len, l = e - i;
            if (l && txt[i + l - 1] == '\r') l--;
            if (strlen(txt + i) < l) {
                rc = sf_error("%s: line %zu contains a NUL byte", path, v.n + 1);
                break;
            }
            char *s = sf_malloc(l + 1);
            memcpy(s, txt + i, l);
            s[l] = 0;
            sf_vec_push(&v, s);
            i = e + 1;
        }
        free(txt);
    } else {
        sf_dataset *ds = sf_dataset_open(spec, SF_DS_CAPTIONS);
        if (!ds) return -1;
        sf_sample smp;
        while (limit < 0 || (int64_t)v.n < limit) {
            int got = sf_dataset_next(ds, &smp);
            if (got < 0) rc = -1;
            if (got <= 0) break;
            sf_vec_push(&v, sf_strdup(smp.caption ? smp.caption : ""));
        }
        sf_dataset_close(ds);
    }
    f->caps = v.v, f->n_caps = (int64_t)v.n;
    return rc;
}

static const sf_act_source_ops flux_ops = {fs_next, fs_seek, fs_close};

int sf_flux_source_group_noise(uint64_t seed, int batch, int64_t n, int64_t g, int64_t C, int64_t h,
                               int64_t w, int rng_kind, float *noise) {
    const int64_t g0 = g * batch, gn = n - g0 < batch ? n - g0 : batch;
    if (batch < 1 || g < 0 || gn < 1)
        return sf_error("flux source: group %lld of %lld prompts in groups of %d", (long long)g,
                        (long long)n, batch);
    return sf_flux_noise(seed + (uint64_t)g, NULL, gn, C, h, w, (sf_torch_rng_kind)rng_kind, noise);
}

int sf_flux_source_prompt_noise(uint64_t seed, int batch, int64_t n, int64_t i, int64_t C,
                                int64_t h, int64_t w, int rng_kind, float *group, float *out) {
    if (i < 0 || i >= n)
        return sf_error("flux source: prompt %lld of %lld", (long long)i, (long long)n);
    const int64_t per = (h / 2) * (w / 2) * 4 * C, g = i / batch;
    float *own = group ? NULL : sf_malloc((size_t)(batch * per) * sizeof(float));
    float *buf = group ? group : own;
    int rc = sf_flux_source_group_noise(seed, batch, n, g, C, h, w, rng_kind, buf);
    if (!rc) memcpy(out, buf + (i - g * batch) * per, (size_t)per * sizeof(float));
    free(own);
    return rc;
}

sf_act_source *sf_flux_source_open(const sf_flux_source_opts *oin) {
    flux_src *f = sf_calloc(1, sizeof *f);
    f->base.ops = &flux_ops;
    f->o = *oin;
    sf_flux_source_opts *o = &f->o;
    if (!o->height) o->height = 256;
    if (!o->width) o->width = 256;
    if (!o->batch) o->batch = 32;
    if (!o->model || !!o->prompts + !!o->captions + !!o->dataset != 1) {
        sf_error("flux source: a model and one of a prompts file, captions or a dataset are "
                 "required");
        goto fail;
    }
    if (o->n_hooks < 1 || o->n_hooks > SF_ACT_MAX_STREAMS) {
        sf_error("flux source: %d hooks (1 to %d)", o->n_hooks, SF_ACT_MAX_STREAMS);
        goto fail;
    }
    if (o->height < 16 || o->width < 16 || o->height % 16 || o->width % 16 || o->batch < 1 ||
        o->shuffle < 0 || (o->tokens_per_image > 0 && o->rows_per_batch > 0)) {
        sf_error("flux source: height %d and width %d must be positive multiples of 16, "
                 "batch %d >= 1, shuffle %d >= 0, and tokens_per_image and rows_per_batch "
                 "not both set",
                 o->height, o->width, o->batch, o->shuffle);
        goto fail;
    }
    f->model = sf_strdup(o->model);
    f->prompts = sf_strdup(o->prompts ? o->prompts : o->captions ? o->captions : o->dataset);
    o->model = f->model, o->prompts = o->prompts ? f->prompts : NULL, o->hooks = NULL;
    o->captions = o->dataset = o->text_model = NULL, o->text_paths = NULL;
    f->nreq = oin->n_hooks;
    for (int i = 0; i < f->nreq; i++) {
        if (sf_flux_parse_request(oin->hooks[i], &f->req[i])) goto fail;
        if (f->req[i].site == SF_FLUX_OUTPUT) {
            sf_error("flux source: hook 'output' is not a block (its width is not the model's)");
            goto fail;
        }
        sf_flux_request_name(&f->req[i], f->name[i], sizeof f->name[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(f->name[i], f->name[j])) {
                sf_error("flux source: hook '%s' given twice", f->name[i]);
                goto fail;
            }
    }
    int64_t n, joint, pooled;
    if (o->prompts) {
        if (sf_st_open(&f->pf, f->prompts)) goto fail;
        f->pe = sf_st_find(&f->pf, "prompt_embeds");
        f->po = sf_st_find(&f->pf, "pooled_prompt_embeds");
        if (!f->pe || !f->po || f->pe->ndim != 3 || f->po->ndim != 2 ||
            f->po->shape[0] != f->pe->shape[0]) {
            sf_error("%s: expected prompt_embeds (N, L, joint) and pooled_prompt_embeds (N, "
                     "pooled) (saeflow flux encode-prompts)",
                     f->prompts);
            goto fail;
        }
        n = f->pe->shape[0], f->T = f->pe->shape[1];
        if (f->T < 1 || f->T > 512) {
            sf_error("%s: prompt_embeds has %lld tokens (1 to 512)", f->prompts, (long long)f->T);
            goto fail;
        }
        joint = f->pe->shape[2], pooled = f->po->shape[1];
    } else {
        if (o->max_sequence_length < 0 || o->max_sequence_length > 512) {
            sf_error("max_sequence_length %d: 1 to 512 (T5's limit in FluxPipeline)",
                     o->max_sequence_length);
            goto fail;
        }
        if (read_captions(f, oin->captions, oin->dataset, o->limit)) goto fail;
        f->T = o->max_sequence_length > 0 ? o->max_sequence_length : 256;
        o->max_sequence_length = (int)f->T;
        sf_dtype t5 = o->t5_dtype ? o->t5_dtype : SF_T5_AS_STORED;
        f->text = oin->text_paths
                      ? sf_flux_text_load_paths((const sf_flux_text_paths *)oin->text_paths, t5)
                      : sf_flux_text_load(oin->text_model ? oin->text_model : f->model, t5);
        if (!f->text) goto fail;
        n = f->n_caps;
        joint = sf_flux_text_joint_dim(f->text), pooled = sf_flux_text_pooled_dim(f->text);
    }
    sf_flux_load_opts lo = {.dtype = o->dtype, .only = f->req, .n_only = f->nreq};
    if (!(f->m = sf_flux_load(f->model, &lo))) goto fail;
    const sf_flux_config *c = f->c = sf_flux_get_config(f->m);
    if (joint != c->joint_dim || pooled != c->pooled_dim) {
        sf_error("%s: prompt_embeds width %lld / pooled width %lld, the model takes %d / %d",
                 f->prompts, (long long)joint, (long long)pooled, c->joint_dim, c->pooled_dim);
        goto fail;
    }
    if (c->n_axes != 3 || c->in_channels % 4) {
        sf_error("%s: the sampler needs 3 RoPE axes and in_channels a multiple of 4", f->model);
        goto fail;
    }
    f->h = sf_flux_latent_side(o->height), f->w = sf_flux_latent_side(o->width);
    f->N = (f->h / 2) * (f->w / 2);
    if (o->limit >= 0 && o->limit < n) n = o->limit;
    const int64_t B = o->batch;
    f->base.n_rows = n;
    f->base.n_streams = f->nreq;
    for (int i = 0; i < f->nreq; i++) {
        if ((f->rows_per[i] = sf_flux_request_rows(f->m, &f->req[i], f->N, f->T)) < 0) goto fail;
        f->base.names[i] = f->name[i];
        f->base.d[i] = c->dim;
        f->base.per_token[i] = 1;
        f->out[i] = sf_malloc((size_t)(B * f->rows_per[i] * c->dim) * sizeof(float));
    }
    f->noise = sf_malloc((size_t)(B * f->N * c->in_channels) * sizeof(float));
    f->txt = sf_malloc((size_t)(B * f->T * c->joint_dim) * sizeof(float));
    f->pooled = sf_malloc((size_t)(B * c->pooled_dim) * sizeof(float));
    f->tsig = sf_malloc((size_t)B * sizeof(float));
    f->guid = sf_calloc((size_t)B, sizeof(float));
    for (int64_t b = 0; b < B; b++)
        f->tsig[b] = 1.0f; /* 1 step: sigmas [1, 0] */
    f->ids = sf_malloc((size_t)(f->N * 3) * sizeof(float));
    sf_flux_image_ids(f->h / 2, f->w / 2, f->ids);
    f->next = 0, f->end = n;
    return &f->base;
fail:
    sf_error_prefix("flux source");
    fs_close(&f->base);
    return NULL;
}

char *sf_flux_source_fingerprint(const sf_act_source *s, int64_t shard_rows) {
    const flux_src *f = (const flux_src *)s;
    sf_sbuf b = {0};
    sf_sb_printf(&b, "saeflow-flux-extract-v1 model=%s %s=%s L=%lld hooks=", f->model,
                 f->text ? "captions" : "prompts", f->prompts, (long long)f->T);
    for (int i = 0; i < f->nreq; i++)
        sf_sb_printf(&b, "%s%s", i ? "," : "", f->name[i]);
    sf_sb_printf(&b,
                 " size=%dx%d batch=%d seed=%llu rng=%d tokens_per_image=%lld "
                 "rows_per_batch=%lld shuffle=%d "
                 "dtype=%d n=%lld shard_rows=%lld",
                 f->o.height, f->o.width, f->o.batch, (unsigned long long)f->o.seed, f->o.rng_kind,
                 (long long)(f->o.tokens_per_image > 0 ? f->o.tokens_per_image : 0),
                 (long long)(f->o.rows_per_batch > 0 ? f->o.rows_per_batch : 0), f->o.shuffle,
                 (int)f->o.dtype, (long long)s->n_rows, (long long)shard_rows);
    return sf_sb_release(&b);
}
