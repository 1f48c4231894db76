/* saeflow extract: CLIP activations of an image-caption dataset -> safetensors.
 *
 * Pipeline per batch: read samples (one thread) -> decode + CLIPImageProcessor
 * preprocessing and tokenization (OpenMP over the batch) -> vision / text
 * forward (kernels parallel inside) -> append to the shard's buffers.
 *
 * Resumability: the rows are cut into shards of --shard_rows dataset rows;
 * each finished shard is written atomically to OUT.partNNNNN.safetensors
 * with a fingerprint of the settings in its metadata. A rerun with the same
 * settings skips finished shards, so an interruption loses at most the shard
 * in progress. When all shards exist they are streamed into OUT (atomically,
 * constant memory) and the parts are removed.
 */
#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "saeflow/clip.h"
#include "saeflow/dataset.h"
#include "saeflow/image.h"
#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"
#include "saeflow/tokenizer.h"

static const char *CMD = "extract";

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow extract --model DIR (--images DIR | --dataset SPEC) --out FILE [options]\n"
        "\n"
        "Runs a Hugging Face CLIP checkpoint over a dataset and writes activations:\n"
        "  vision F32 [N, d_v]   default hidden_states[-2][:, 0] (CLS of the penultimate layer)\n"
        "  text   F32 [N, d_t]   default pooler_output (final-normed state at the first EOS)\n"
        "  rows   I64 [N]        dataset row of each output row; ids U8: the rows' source ids,\n"
        "                        newline-separated (parquet id, tar key or file name)\n"
        "With --tokens all, vision/text hold one row per token ([M, d]) and\n"
        "vision_rows/text_rows (I64, dataset row) + vision_pos/text_pos (I32, token\n"
        "position) say where each came from; text keeps non-padding tokens only.\n"
        "\n"
        "  --model DIR          config.json + model.safetensors (or sharded); the tokenizer\n"
        "                       (tokenizer.json or vocab.json+merges.txt) and\n"
        "                       preprocessor_config.json are read from here too\n"
        "  --images DIR         a folder of images (= --dataset folder:DIR)\n"
        "  --dataset SPEC       cc3m:PATTERN, wds:PATTERN or folder:DIR (see saeflow data)\n"
        "  --captions FILE      one caption per line, line i for dataset row i (overrides\n"
        "                       the dataset's captions)\n"
        "  --out FILE           output safetensors\n"
        "  --vision WHAT        layer:N (hidden_states[N], negative from the end), pooled,\n"
        "                       embeds (projected) or none (default layer:-2)\n"
        "  --vision-layer N     same as --vision layer:N\n"
        "  --text WHAT          pooled, embeds, layer:N or none (default pooled)\n"
        "  --tokens cls|all     for layer outputs: vision CLS / text EOS token (cls, the\n"
        "                       default), or every token (all)\n"
        "  --batch_size N       images/captions per forward (default 32)\n"
        "  --threads N          threads (default: all cores)\n"
        "  --dtype f32|bf16     weights in memory (compute is F32; default f32)\n"
        "  --shard_rows N       dataset rows per resumable shard (default 4096)\n"
        "  --limit N            only the first N dataset rows\n"
        "  --tokenizer DIR      tokenizer files from DIR instead of --model\n"
        "  --pillow 13|12       resize like this Pillow release (default 13; 12 and older\n"
        "                       run the bicubic passes in another order for tall images:\n"
        "                       +-1 on some pixels)\n"
        "\n"
        "A row whose image does not decode, or that lacks an image or caption a tower\n"
        "needs, is skipped with a warning (both towers, so rows stay aligned). Rerunning\n"
        "the same command resumes after the last finished shard.\n");
}

/* ---- growable buffers ---------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
} vec;

static void vec_push(vec *v, const void *data, size_t n) {
    if (v->len + n > v->cap) {
        size_t c = v->cap ? v->cap : 4096;
        while (c < v->len + n)
            c *= 2;
        v->p = sf_realloc(v->p, c);
        v->cap = c;
    }
    if (n) memcpy(v->p + v->len, data, n);
    v->len += n;
}

typedef struct {
    vec vis, vis_rows, vis_pos, txt, txt_rows, txt_pos, rows, ids;
    int64_t n, skipped;
} shard;

static void shard_free(shard *s) {
    vec *all[] = {&s->vis,      &s->vis_rows, &s->vis_pos, &s->txt,
                  &s->txt_rows, &s->txt_pos,  &s->rows,    &s->ids};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(all[i]->p);
    memset(s, 0, sizeof *s);
}

/* ---- state --------------------------------------------------------------- */

typedef struct {
    const char *model, *out, *captions_path, *tok_dir;
    char *spec;
    int vision_on, text_on, tokens_all, pillow_legacy;
    sf_clip_request vreq, treq;
    int64_t batch, shard_rows, limit;
    sf_dtype dtype;
    sf_clip *m;
    sf_tokenizer *tok;
    sf_clip_preproc pp;
    sf_dataset *ds;
    char **caps;
    int64_t n_caps;
    char *fingerprint;
    int64_t dv, dt, Tv, ctx, px_floats;
} extract;

static char *fmt_request(const sf_clip_request *r, int on) {
    char buf[64];
    if (!on)
        snprintf(buf, sizeof buf, "none");
    else if (r->what == SF_CLIP_POOLED)
        snprintf(buf, sizeof buf, "pooled");
    else if (r->what == SF_CLIP_EMBEDS)
        snprintf(buf, sizeof buf, "embeds");
    else
        snprintf(buf, sizeof buf, "layer:%d", r->layer);
    return sf_strdup(buf);
}

static char *abs_or_copy(const char *p) {
    char *r = p ? realpath(p, NULL) : NULL;
    return r ? r : sf_strdup(p ? p : "");
}

/* Everything that changes the numbers or the row layout of a shard. */
static void make_fingerprint(extract *e) {
    char *model = abs_or_copy(e->model), *caps = abs_or_copy(e->captions_path);
    char *vr = fmt_request(&e->vreq, e->vision_on), *tr = fmt_request(&e->treq, e->text_on);
    size_t n = strlen(model) + strlen(caps) + strlen(e->spec) + 512;
    e->fingerprint = sf_malloc(n);
    snprintf(
        e->fingerprint, n,
        "saeflow-extract-v1 model=%s source=%s captions=%s vision=%s text=%s tokens=%s dtype=%s "
        "shard_rows=%lld limit=%lld%s",
        model, e->spec, caps, vr, tr, e->tokens_all ? "all" : "cls", sf_dtype_name(e->dtype),
        (long long)e->shard_rows, (long long)e->limit, e->pillow_legacy ? " pillow=12" : "");
    free(model), free(caps), free(vr), free(tr);
}

static int load_captions(extract *e) {
    size_t len;
    char *txt = sf_read_file(e->captions_path, &len);
    if (!txt) return -1;
    int64_t cap = 0;
    char *p = txt, *end = txt + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *q = nl ? nl : end;
        size_t l = (size_t)(q - p);
        if (l && p[l - 1] == '\r') l--;
        if (e->n_caps == cap)
            e->caps = sf_realloc(e->caps, (size_t)(cap = cap * 2 + 256) * sizeof(char *));
        e->caps[e->n_caps] = sf_malloc(l + 1);
        memcpy(e->caps[e->n_caps], p, l);
        e->caps[e->n_caps++][l] = 0;
        p = nl ? nl + 1 : end;
    }
    free(txt);
    return 0;
}

/* Skipped rows: the first few are named, then only counted (the totals are
 * printed at the end and stored in the output's metadata). */
static int g_warned = 0, g_bar = 0;
static void warn_skip(int64_t row, const char *id, const char *why) {
    if (g_warned < 20)
        fprintf(stderr, "%ssaeflow extract: warning: row %lld (%s) skipped: %s\n",
                g_bar ? "\n" : "", (long long)row, id, why);
    else if (g_warned == 20)
        fprintf(stderr, "%ssaeflow extract: warning: more rows skipped; not naming them\n",
                g_bar ? "\n" : "");
    g_warned++;
}

/* ---- one batch ----------------------------------------------------------- */

typedef struct {
    int64_t row;
    char *id;
    uint8_t *img;
    size_t img_len;
    char *caption;
    int ok;
    char err[256];
} item;

static void item_free(item *it) {
    free(it->id), free(it->img), free(it->caption);
    memset(it, 0, sizeof *it);
}

static int run_batch(extract *e, item *items, int n, shard *sh, float *px, int32_t *ids,
                     int32_t *mask, float *yv, float *yt) {
    /* decode + preprocess + tokenize in parallel; errors stay per item */
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        item *it = &items[i];
        it->ok = 1;
        if (e->vision_on) {
            sf_image im;
            if (sf_image_decode(it->img, it->img_len, it->id, &im) ||
                sf_clip_preprocess(&e->pp, &im, px + (size_t)i * (size_t)e->px_floats)) {
                snprintf(it->err, sizeof it->err, "%s", sf_errmsg());
                it->ok = 0;
            }
            if (it->ok || im.rgb) sf_image_free(&im);
        }
        if (it->ok && e->text_on) {
            int k = sf_tokenizer_encode(e->tok, it->caption, (int)e->ctx,
                                        ids + (size_t)i * (size_t)e->ctx,
                                        mask + (size_t)i * (size_t)e->ctx);
            if (k < 0) {
                snprintf(it->err, sizeof it->err, "caption: %s", sf_errmsg());
                it->ok = 0;
            }
        }
    }
    /* compact the good items to the front (inputs move with them) */
    int g = 0;
    for (int i = 0; i < n; i++) {
        if (!items[i].ok) {
            warn_skip(items[i].row, items[i].id, items[i].err);
            sh->skipped++;
            continue;
        }
        if (g != i) {
            if (e->vision_on)
                memmove(px + (size_t)g * (size_t)e->px_floats,
                        px + (size_t)i * (size_t)e->px_floats,
                        (size_t)e->px_floats * sizeof(float));
            if (e->text_on) {
                memmove(ids + (size_t)g * (size_t)e->ctx, ids + (size_t)i * (size_t)e->ctx,
                        (size_t)e->ctx * 4);
                memmove(mask + (size_t)g * (size_t)e->ctx, mask + (size_t)i * (size_t)e->ctx,
                        (size_t)e->ctx * 4);
            }
            item tmp = items[g];
            items[g] = items[i];
            items[i] = tmp;
        }
        g++;
    }
    if (g == 0) return 0;
    if (e->vision_on) {
        if (sf_clip_vision_forward(e->m, px, g, &e->vreq, yv)) return -1;
        if (!e->tokens_all || e->vreq.what != SF_CLIP_HIDDEN) {
            vec_push(&sh->vis, yv, (size_t)(g * e->dv) * sizeof(float));
        } else {
            vec_push(&sh->vis, yv, (size_t)(g * e->Tv * e->dv) * sizeof(float));
            for (int i = 0; i < g; i++)
                for (int32_t t = 0; t < e->Tv; t++) {
                    vec_push(&sh->vis_rows, &items[i].row, sizeof(int64_t));
                    vec_push(&sh->vis_pos, &t, sizeof(int32_t));
                }
        }
    }
    if (e->text_on) {
        /* The model runs each caption only as far as the request needs (its
         * pooled position, or its last token for --tokens all): padding to
         * the context length costs nothing. */
        const int64_t T = e->ctx;
        if (sf_clip_text_forward(e->m, ids, mask, g, T, &e->treq, yt)) return -1;
        if (!e->tokens_all || e->treq.what != SF_CLIP_HIDDEN) {
            vec_push(&sh->txt, yt, (size_t)(g * e->dt) * sizeof(float));
        } else { /* TOK_VALID: the non-padding rows, packed in (caption, position) order */
            size_t o = 0;
            for (int i = 0; i < g; i++)
                for (int32_t t = 0; t < T; t++)
                    if (mask[(size_t)i * (size_t)T + (size_t)t]) {
                        vec_push(&sh->txt, yt + (o++) * (size_t)e->dt,
                                 (size_t)e->dt * sizeof(float));
                        vec_push(&sh->txt_rows, &items[i].row, sizeof(int64_t));
                        vec_push(&sh->txt_pos, &t, sizeof(int32_t));
                    }
        }
    }
    for (int i = 0; i < g; i++) {
        vec_push(&sh->rows, &items[i].row, sizeof(int64_t));
        vec_push(&sh->ids, items[i].id, strlen(items[i].id));
        vec_push(&sh->ids, "\n", 1);
    }
    sh->n += g;
    return 0;
}

/* ---- shards -------------------------------------------------------------- */

static char *part_path(const char *out, int64_t k) {
    size_t n = strlen(out) + 32;
    char *p = sf_malloc(n);
    snprintf(p, n, "%s.part%05lld.safetensors", out, (long long)k);
    return p;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* 0: finished part with our fingerprint; -1: error (wrong settings). */
static int check_part(const extract *e, const char *path) {
    sf_st st;
    if (sf_st_open(&st, path))
        return sf_error_prefix("unreadable part of an earlier run (delete it to redo)");
    const char *fp = sf_st_meta(&st, "saeflow_extract");
    int ok = fp && !strcmp(fp, e->fingerprint);
    if (!ok)
        sf_error("%s was made with different settings (%s); rerun with the same flags, or delete "
                 "%s.part*.safetensors to start over",
                 path, fp ? fp : "no fingerprint", e->out);
    sf_st_close(&st); /* after formatting: fp points into it */
    return ok ? 0 : -1;
}

static void add_vec(sf_st_writer *w, const char *name, sf_dtype dt, const vec *v, int64_t width) {
    static const char empty[8] = {0};
    size_t es = sf_dtype_size(dt);
    int64_t shape[2] = {(int64_t)(v->len / es / (size_t)width), width};
    sf_stw_add(w, name, dt, width > 1 || dt == SF_DT_F32 ? 2 : 1, shape,
               v->len ? (const void *)v->p : empty);
}

static int write_part(const extract *e, const shard *sh, const char *path) {
    sf_st_writer *w = sf_stw_new();
    add_vec(w, "rows", SF_DT_I64, &sh->rows, 1);
    if (e->vision_on) {
        add_vec(w, "vision", SF_DT_F32, &sh->vis, e->dv);
        if (e->tokens_all && e->vreq.what == SF_CLIP_HIDDEN) {
            add_vec(w, "vision_rows", SF_DT_I64, &sh->vis_rows, 1);
            add_vec(w, "vision_pos", SF_DT_I32, &sh->vis_pos, 1);
        }
    }
    if (e->text_on) {
        add_vec(w, "text", SF_DT_F32, &sh->txt, e->dt);
        if (e->tokens_all && e->treq.what == SF_CLIP_HIDDEN) {
            add_vec(w, "text_rows", SF_DT_I64, &sh->txt_rows, 1);
            add_vec(w, "text_pos", SF_DT_I32, &sh->txt_pos, 1);
        }
    }
    add_vec(w, "ids", SF_DT_U8, &sh->ids, 1);
    char sk[32];
    snprintf(sk, sizeof sk, "%lld", (long long)sh->skipped);
    sf_stw_meta(w, "saeflow_extract", e->fingerprint);
    sf_stw_meta(w, "skipped", sk);
    int rc = sf_stw_write(w, path);
    sf_stw_free(w);
    return rc;
}

/* Streams the parts into one safetensors file: tensors concatenated along
 * dim 0 in shard order, constant memory. Returns 0, -1 on error, 1 when no
 * part holds a row (nothing is written then). */
static int merge_parts(const extract *e, int64_t n_shards, int64_t N, int64_t *n_rows,
                       int64_t *n_skipped) {
    sf_st *parts = sf_calloc((size_t)n_shards, sizeof(sf_st));
    int64_t opened = 0;
    int rc = -1;
    sf_atomic_file af = {0};
    cJSON *hdr = cJSON_CreateObject();
    *n_rows = *n_skipped = 0;
    for (; opened < n_shards; opened++) {
        char *p = part_path(e->out, opened);
        int r = sf_st_open(&parts[opened], p);
        free(p);
        if (r) goto done;
        const char *sk = sf_st_meta(&parts[opened], "skipped");
        *n_skipped += sk ? atoll(sk) : 0;
    }
    const sf_st *p0 = &parts[0];
    uint64_t off = 0;
    for (int t = 0; t < p0->n_tensors; t++) {
        const sf_tensor_info *ti = &p0->tensors[t];
        int64_t rows = 0;
        for (int64_t k = 0; k < n_shards; k++) {
            const sf_tensor_info *tk = sf_st_find(&parts[k], ti->name);
            if (!tk || tk->dtype != ti->dtype || tk->ndim != ti->ndim ||
                (ti->ndim == 2 && tk->shape[1] != ti->shape[1])) {
                sf_error("%s: tensor '%s' missing or of another shape than in part 0",
                         parts[k].path, ti->name);
                goto done;
            }
            rows += tk->shape[0];
        }
        uint64_t bytes = (uint64_t)rows * (ti->ndim == 2 ? (uint64_t)ti->shape[1] : 1) *
                         sf_dtype_size(ti->dtype);
        cJSON *o = cJSON_AddObjectToObject(hdr, ti->name);
        cJSON_AddStringToObject(o, "dtype", sf_dtype_name(ti->dtype));
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)rows));
        if (ti->ndim == 2) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)ti->shape[1]));
        cJSON *dof = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(dof, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(dof, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
        if (!strcmp(ti->name, "rows")) *n_rows = rows;
    }
    if (*n_rows == 0 && N > 0) {
        sf_error("no row of %lld had all the inputs the towers need (use --text none / --vision "
                 "none, or "
                 "--captions FILE); nothing written",
                 (long long)N);
        rc = 1; /* "empty", distinct from a failure: the parts hold nothing to keep */
        goto done;
    }
    char buf[64];
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    cJSON_AddStringToObject(meta, "saeflow_extract", e->fingerprint);
    snprintf(buf, sizeof buf, "%lld", (long long)*n_skipped);
    cJSON_AddStringToObject(meta, "skipped", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)*n_rows);
    cJSON_AddStringToObject(meta, "rows", buf);
    char *json = cJSON_PrintUnformatted(hdr);
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    if (sf_atomic_open(&af, e->out)) {
        free(json);
        goto done;
    }
    uint64_t hl = padded;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hl >> (8 * i));
    int wok = fwrite(le, 1, 8, af.fp) == 8 && fwrite(json, 1, jl, af.fp) == jl;
    for (size_t i = jl; i < padded && wok; i++)
        wok = fputc(' ', af.fp) != EOF;
    free(json);
    for (int t = 0; t < p0->n_tensors && wok; t++)
        for (int64_t k = 0; k < n_shards && wok; k++) {
            const sf_tensor_info *tk = sf_st_find(&parts[k], p0->tensors[t].name);
            wok = fwrite(tk->data, 1, tk->nbytes, af.fp) == tk->nbytes;
        }
    if (!wok) {
        sf_error("%s: write failed: %s", e->out, strerror(errno));
        sf_atomic_abort(&af);
        goto done;
    }
    if (sf_atomic_commit(&af)) goto done;
    rc = 0;
done:
    for (int64_t k = 0; k < opened; k++)
        sf_st_close(&parts[k]);
    free(parts);
    cJSON_Delete(hdr);
    return rc;
}

/* ---- main ---------------------------------------------------------------- */

static int parse_what(const char *s, sf_clip_tokens tok, sf_clip_request *r, int *on) {
    if (!strcmp(s, "none")) {
        *on = 0;
        return 0;
    }
    *on = 1;
    return sf_clip_parse_request(s, tok, r);
}

static int run(extract *e, const char *vision_s, const char *text_s, int vision_explicit,
               int text_explicit) {
    sf_clip_tokens vt = e->tokens_all ? SF_CLIP_TOK_ALL : SF_CLIP_TOK_FIRST,
                   tt = e->tokens_all ? SF_CLIP_TOK_VALID : SF_CLIP_TOK_POOLED;
    int v_on, t_on;
    if (parse_what(vision_s, vt, &e->vreq, &v_on) || parse_what(text_s, tt, &e->treq, &t_on))
        return sf_error_prefix("--vision/--text");
    sf_clip_load_opts lo = {e->dtype, v_on, t_on};
    if (!v_on && !t_on) return sf_error("both --vision and --text are none: nothing to extract");
    if (!(e->m = sf_clip_load(e->model, &lo))) return -1;
    e->vision_on = v_on && sf_clip_vision_config(e->m);
    e->text_on = t_on && sf_clip_text_config(e->m);
    if (v_on && !e->vision_on && vision_explicit)
        return sf_error("%s has no vision tower (--vision)", e->model);
    if (t_on && !e->text_on && text_explicit)
        return sf_error("%s has no text tower (--text)", e->model);
    if (e->vision_on) {
        const sf_clip_config *c = sf_clip_vision_config(e->m);
        if ((e->dv = sf_clip_output_size(e->m, 0, &e->vreq, 0)) < 0)
            return sf_error_prefix("--vision");
        e->Tv = sf_clip_vision_tokens(e->m);
        if (e->tokens_all && e->vreq.what == SF_CLIP_HIDDEN) e->dv /= e->Tv;
        char *pc = sf_path_join(e->model, "preprocessor_config.json");
        int have = file_exists(pc);
        free(pc);
        if (have) {
            if (sf_clip_preproc_load(&e->pp, e->model)) return -1;
        } else { /* CLIP defaults at the model's resolution */
            sf_clip_preproc_default(&e->pp);
            e->pp.shortest_edge = e->pp.crop_height = e->pp.crop_width = c->image_size;
        }
        if (!e->pp.do_center_crop || e->pp.crop_height != c->image_size ||
            e->pp.crop_width != c->image_size)
            return sf_error(
                "%s: the image processor makes %dx%d crops but the model's image_size is %d",
                e->model, e->pp.crop_height, e->pp.crop_width, c->image_size);
        e->pp.pillow_legacy_order = e->pillow_legacy;
        e->px_floats = (int64_t)sf_clip_preproc_floats(&e->pp);
    }
    if (e->text_on) {
        e->ctx = sf_clip_text_config(e->m)->max_positions;
        if (e->treq.what == SF_CLIP_HIDDEN && e->tokens_all) e->treq.tokens = SF_CLIP_TOK_VALID;
        if ((e->dt = sf_clip_output_size(e->m, 1, &e->treq, 1)) < 0)
            return sf_error_prefix("--text");
        if (!(e->tok = sf_tokenizer_load_dir(e->tok_dir ? e->tok_dir : e->model)))
            return sf_error_prefix("tokenizer (pass --tokenizer DIR if it lives elsewhere)");
        if (e->captions_path && load_captions(e)) return -1;
    }
    unsigned flags =
        (e->vision_on ? SF_DS_IMAGES : 0) | (e->text_on && !e->captions_path ? SF_DS_CAPTIONS : 0);
    if (!flags) flags = SF_DS_CAPTIONS; /* text from --captions only: still need the rows */
    if (!(e->ds = sf_dataset_open(e->spec, flags))) return -1;
    int64_t N = sf_dataset_count(e->ds);
    if (N < 0) return -1;
    if (e->limit >= 0 && e->limit < N) N = e->limit;
    if (e->text_on && e->captions_path && e->n_caps < N)
        return sf_error("%s has %lld lines but the dataset has %lld rows (one caption per row)",
                        e->captions_path, (long long)e->n_caps, (long long)N);
    make_fingerprint(e);

    /* A finished output with our settings: nothing to do. */
    if (file_exists(e->out)) {
        sf_st st;
        if (sf_st_open(&st, e->out) == 0) {
            const char *fp = sf_st_meta(&st, "saeflow_extract");
            int same = fp && !strcmp(fp, e->fingerprint);
            sf_st_close(&st);
            if (same) {
                fprintf(stderr, "saeflow extract: %s is already complete\n", e->out);
                return 0;
            }
        }
    }
    const int64_t n_shards = N == 0 ? 1 : (N + e->shard_rows - 1) / e->shard_rows;
    const int64_t B = e->batch;
    item *items = sf_calloc((size_t)B, sizeof(item));
    float *px = e->vision_on ? sf_malloc_aligned((size_t)(B * e->px_floats) * sizeof(float)) : NULL;
    int32_t *ids = e->text_on ? sf_malloc((size_t)(B * e->ctx) * sizeof(int32_t)) : NULL;
    int32_t *mask = e->text_on ? sf_malloc((size_t)(B * e->ctx) * sizeof(int32_t)) : NULL;
    int64_t yv_n = e->vision_on
                       ? B * (e->tokens_all && e->vreq.what == SF_CLIP_HIDDEN ? e->Tv : 1) * e->dv
                       : 0;
    int64_t yt_n =
        e->text_on ? B * (e->tokens_all && e->treq.what == SF_CLIP_HIDDEN ? e->ctx : 1) * e->dt : 0;
    float *yv = yv_n ? sf_malloc_aligned((size_t)yv_n * sizeof(float)) : NULL;
    float *yt = yt_n ? sf_malloc_aligned((size_t)yt_n * sizeof(float)) : NULL;
    int rc = -1;
    sf_progress prog;
    sf_progress_start(&prog, "extract", (uint64_t)N, "rows");
    g_bar = prog.enabled;
    int64_t done_rows = 0, fresh = 0;
    for (int64_t k = 0; k < n_shards; k++) {
        int64_t r0 = k * e->shard_rows, r1 = r0 + e->shard_rows < N ? r0 + e->shard_rows : N;
        char *pp = part_path(e->out, k);
        if (file_exists(pp)) {
            int ck = check_part(e, pp);
            free(pp);
            if (ck) goto done;
            done_rows = r1;
            sf_progress_update(&prog, (uint64_t)done_rows, "(resumed)");
            continue;
        }
        shard sh = {0};
        if (r1 > r0 && sf_dataset_seek(e->ds, r0)) {
            free(pp);
            goto done;
        }
        for (int64_t r = r0; r < r1;) {
            int n = 0;
            while (n < B && r < r1) {
                sf_sample s;
                int got = sf_dataset_next(e->ds, &s);
                if (got < 0) goto shard_fail;
                if (got == 0) {
                    sf_error("dataset ended at row %lld, expected %lld rows", (long long)r,
                             (long long)N);
                    goto shard_fail;
                }
                r++;
                const char *cap = e->captions_path ? e->caps[s.row] : s.caption;
                const char *missing = e->vision_on && !s.image ? "no image"
                                      : e->text_on && !cap     ? "no caption"
                                                               : NULL;
                if (missing) {
                    warn_skip(s.row, s.id, missing);
                    sh.skipped++;
                    continue;
                }
                item *it = &items[n++];
                it->row = s.row;
                it->id = sf_strdup(s.id);
                for (char *c = it->id; *c; c++)
                    if (*c == '\n' || *c == '\r') *c = ' ';
                if (e->vision_on) {
                    it->img = sf_malloc(s.image_len ? s.image_len : 1);
                    memcpy(it->img, s.image, s.image_len);
                    it->img_len = s.image_len;
                }
                if (e->text_on) it->caption = sf_strdup(cap);
            }
            int br = run_batch(e, items, n, &sh, px, ids, mask, yv, yt);
            for (int i = 0; i < n; i++)
                item_free(&items[i]);
            if (br) goto shard_fail;
            sf_progress_update(&prog, (uint64_t)(done_rows + (r - r0)), NULL);
        }
        if (write_part(e, &sh, pp)) goto shard_fail;
        fresh++;
        done_rows = r1;
        shard_free(&sh);
        free(pp);
        continue;
    shard_fail:
        for (int i = 0; i < B; i++)
            item_free(&items[i]);
        shard_free(&sh);
        free(pp);
        goto done;
    }
    sf_progress_finish(&prog, NULL);
    int64_t n_rows, n_skipped;
    int mrc = merge_parts(e, n_shards, N, &n_rows, &n_skipped);
    if (mrc < 0) goto done; /* keep the parts for a retry */
    /* merged, or nothing worth keeping (no row had its inputs) */
    for (int64_t k = 0; k < n_shards; k++) {
        char *pp = part_path(e->out, k);
        unlink(pp);
        free(pp);
    }
    if (mrc) goto done;
    fprintf(stderr,
            "saeflow extract: %lld rows -> %s (%lld skipped, %lld of %lld shards computed now)\n",
            (long long)n_rows, e->out, (long long)n_skipped, (long long)fresh, (long long)n_shards);
    rc = 0;
done:
    free(items);
    sf_free_aligned(px), free(ids), free(mask), sf_free_aligned(yv), sf_free_aligned(yt);
    return rc;
}

int cmd_extract(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"images", required_argument, 0, 'I'},
                                         {"dataset", required_argument, 0, 'D'},
                                         {"captions", required_argument, 0, 'c'},
                                         {"out", required_argument, 0, 'o'},
                                         {"vision", required_argument, 0, 'v'},
                                         {"vision-layer", required_argument, 0, 'L'},
                                         {"text", required_argument, 0, 't'},
                                         {"tokens", required_argument, 0, 'k'},
                                         {"batch_size", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"shard_rows", required_argument, 0, 's'},
                                         {"limit", required_argument, 0, 'n'},
                                         {"tokenizer", required_argument, 0, 'T'},
                                         {"pillow", required_argument, 0, 'P'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    extract e = {0};
    const char *images = NULL, *dataset = NULL, *vision_s = "layer:-2", *text_s = "pooled",
               *tokens = "cls", *dtype = "f32";
    char vl_buf[32];
    long long batch = 32, threads = 0, shard_rows = 4096, limit = -1, v;
    int vision_explicit = 0, text_explicit = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            e.model = optarg;
            break;
        case 'I':
            images = optarg;
            break;
        case 'D':
            dataset = optarg;
            break;
        case 'c':
            e.captions_path = optarg;
            break;
        case 'o':
            e.out = optarg;
            break;
        case 'v':
            vision_s = optarg, vision_explicit = 1;
            break;
        case 'L':
            if (cli_parse_int(CMD, "vision-layer", optarg, &v)) return 2;
            snprintf(vl_buf, sizeof vl_buf, "layer:%lld", v);
            vision_s = vl_buf, vision_explicit = 1;
            break;
        case 't':
            text_s = optarg, text_explicit = 1;
            break;
        case 'k':
            tokens = optarg;
            break;
        case 'b':
            if (cli_parse_int(CMD, "batch_size", optarg, &batch)) return 2;
            break;
        case 'j':
            if (cli_parse_int(CMD, "threads", optarg, &threads)) return 2;
            break;
        case 'd':
            dtype = optarg;
            break;
        case 's':
            if (cli_parse_int(CMD, "shard_rows", optarg, &shard_rows)) return 2;
            break;
        case 'n':
            if (cli_parse_int(CMD, "limit", optarg, &limit)) return 2;
            break;
        case 'T':
            e.tok_dir = optarg;
            break;
        case 'P':
            if (cli_parse_pillow(CMD, optarg, &e.pillow_legacy)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!e.model || !e.out) return cli_usage_error(CMD, "--model and --out are required");
    if (!images == !dataset)
        return cli_usage_error(CMD, "give exactly one of --images DIR and --dataset SPEC");
    if (batch < 1 || batch > 65536)
        return cli_usage_error(CMD, "--batch_size must be in [1, 65536]");
    if (threads < 0 || threads > 1024)
        return cli_usage_error(CMD, "--threads must be in [0, 1024]");
    if (shard_rows < 1 || limit < -1)
        return cli_usage_error(CMD, "--shard_rows must be >= 1, --limit >= 0");
    if (strcmp(tokens, "cls") && strcmp(tokens, "all"))
        return cli_usage_error(CMD, "--tokens must be cls or all");
    if (!strcmp(dtype, "f32"))
        e.dtype = SF_DT_F32;
    else if (!strcmp(dtype, "bf16"))
        e.dtype = SF_DT_BF16;
    else
        return cli_usage_error(CMD, "--dtype must be f32 or bf16");
    sf_clip_request probe;
    if ((strcmp(vision_s, "none") && sf_clip_parse_request(vision_s, SF_CLIP_TOK_FIRST, &probe)) ||
        (strcmp(text_s, "none") && sf_clip_parse_request(text_s, SF_CLIP_TOK_FIRST, &probe)))
        return cli_usage_error(CMD, "%s", sf_errmsg());
    sf_kernels_set_threads((int)threads);
    e.tokens_all = !strcmp(tokens, "all");
    e.batch = batch, e.shard_rows = shard_rows, e.limit = limit;
    if (images) {
        size_t n = strlen(images) + 8;
        e.spec = sf_malloc(n);
        snprintf(e.spec, n, "folder:%s", images);
    } else {
        e.spec = sf_strdup(dataset);
    }
    int rc = run(&e, vision_s, text_s, vision_explicit, text_explicit);
    if (rc) cli_fail(CMD);
    if (e.ds) sf_dataset_close(e.ds);
    if (e.tok) sf_tokenizer_free(e.tok);
    sf_clip_free(e.m);
    for (int64_t i = 0; i < e.n_caps; i++)
        free(e.caps[i]);
    free(e.caps), free(e.spec), free(e.fingerprint);
    return rc ? 1 : 0;
}
