/* The pipeline layer (saeflow/pipeline.h):
 *  - the file source: rows, row maps, limits, dtype conversion, bad input;
 *  - sharded extraction with a synthetic two-stream source (one stream per
 *    token, like a FLUX hook would be): part layout, resume after a lost
 *    part (bit-identical output), refusal of other settings, the empty case;
 *  - the CLIP source over the e2e fixture (fixtures/clip/e2e, the images of
 *    fixtures/clip-inputs/images): against transformers' activations
 *    (e2e.expected.safetensors, tools/make_clip_fixtures.py), max |ours -
 *    theirs| / max |theirs| <= 1e-4 as in tests/cli/test_cli_extract.c; fixed
 *    groups equal read groups bit for bit; undecodable images are skipped
 *    with their error. */
#include <unistd.h>

#include "saeflow/buf.h"
#include "saeflow/clip.h"
#include "saeflow/pipeline.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define CLIPFIX SF_SOURCE_DIR "/fixtures/clip/"
#define IMAGES SF_SOURCE_DIR "/fixtures/clip-inputs/images"

static char *pathf(const char *dir, const char *name) {
    sf_sbuf b = {0};
    sf_sb_printf(&b, "%s/%s", dir, name);
    return sf_sb_release(&b);
}

/* ---- file source ------------------------------------------------------------ */

static float val(int64_t r, int64_t j) {
    return (float)(r * 10 + j) * 0.5f;
}

/* rows [r0, r0 + n) of a (., 3) tensor "acts", optionally as BF16, with an
 * I64 row map "acts_rows" = 100 + row. */
static void write_acts(const char *path, int64_t r0, int64_t n, sf_dtype dt, int with_map) {
    float *x = malloc((size_t)(n * 3 + 1) * sizeof(float));
    int64_t *map = malloc((size_t)(n + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < 3; j++)
            x[i * 3 + j] = val(r0 + i, j);
        map[i] = 100 + r0 + i;
    }
    sf_st_writer *w = sf_stw_new();
    int64_t shape[2] = {n, 3};
    CHECK(sf_stw_add_f32(w, "acts", dt, 2, shape, x) == 0);
    if (with_map) CHECK(sf_stw_add(w, "acts_rows", SF_DT_I64, 1, shape, map) == 0);
    sf_stw_meta(w, "dataset", "folder:somewhere");
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    free(x);
    free(map);
}

TEST(file_source) {
    const char *tmp = test_tmpdir("pipeline_file");
    char *a = pathf(tmp, "a.safetensors"), *b = pathf(tmp, "b.safetensors");
    char *c = pathf(tmp, "c.safetensors"), *nan = pathf(tmp, "nan.safetensors");
    write_acts(a, 0, 5, SF_DT_F32, 1);
    write_acts(b, 5, 4, SF_DT_BF16, 1); /* values are exact in BF16 */
    write_acts(c, 0, 2, SF_DT_F32, 0);
    const char *ab[] = {a, b};
    sf_file_source_opts o = {ab, 2, "acts", NULL, 0, -1, 4};
    sf_act_source *s = sf_file_source_open(&o);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(s->n_rows == 9 && s->n_streams == 1 && s->d[0] == 3 && !strcmp(s->names[0], "acts"));
    CHECK(sf_file_source_rows_key(s) && !strcmp(sf_file_source_rows_key(s), "acts_rows"));
    CHECK_STR(sf_file_source_meta(s, "dataset"), "folder:somewhere");
    sf_act_batch bt;
    int64_t seen = 0, sizes[4] = {0}, nb = 0, bad = 0;
    while (sf_act_source_next(s, &bt) == 1) {
        const sf_act_stream *st = &bt.stream[0];
        sizes[nb++ & 3] = st->n;
        for (int64_t i = 0; i < st->n; i++, seen++) {
            bad += st->rows[i] != 100 + seen;
            for (int j = 0; j < 3; j++)
                bad += st->x[i * 3 + j] != val(seen, j);
        }
        CHECK(bt.next_row == seen);
    }
    CHECK(seen == 9 && nb == 3 && sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 1 && bad == 0);
    /* a range across the file boundary */
    CHECK(sf_act_source_seek(s, 3, 7) == 0);
    CHECK(sf_act_source_next(s, &bt) == 1 && bt.stream[0].n == 4 && bt.stream[0].rows[0] == 103 &&
          bt.stream[0].x[3 * 3 + 1] == val(6, 1));
    CHECK(sf_act_source_next(s, &bt) == 0);
    CHECK(sf_act_source_seek(s, 3, 10) == -1); /* past the end */
    sf_act_source_close(s);

    /* no map: numbered from row_offset; limit */
    const char *cc[] = {c};
    sf_file_source_opts o2 = {cc, 1, "acts", NULL, 7, 1, 16};
    s = sf_file_source_open(&o2);
    CHECK(s && s->n_rows == 1 && sf_file_source_rows_key(s) == NULL);
    if (s) {
        CHECK(sf_act_source_next(s, &bt) == 1 && bt.stream[0].n == 1 && bt.stream[0].rows[0] == 7);
        sf_act_source_close(s);
    }
    /* "none" ignores a map */
    sf_file_source_opts o3 = {ab, 2, "acts", "none", 0, -1, 16};
    s = sf_file_source_open(&o3);
    CHECK(s && sf_file_source_rows_key(s) == NULL);
    sf_act_source_close(s);

    /* errors name the file and the tensor */
    const char *ac[] = {a, c};
    sf_file_source_opts e1 = {ac, 2, "acts", "acts_rows", 0, -1, 4}; /* c has no map */
    CHECK(sf_file_source_open(&e1) == NULL && strstr(sf_errmsg(), "c.safetensors") &&
          strstr(sf_errmsg(), "'acts_rows'"));
    sf_file_source_opts e2 = {ab, 2, "nokey", NULL, 0, -1, 4};
    CHECK(sf_file_source_open(&e2) == NULL && strstr(sf_errmsg(), "nokey"));
    float x[6] = {1, 2, 3, 4, NAN, 6};
    sf_st_writer *w = sf_stw_new();
    int64_t shape[2] = {2, 3};
    sf_stw_add(w, "acts", SF_DT_F32, 2, shape, x);
    CHECK(sf_stw_write(w, nan) == 0);
    sf_stw_free(w);
    const char *nn[] = {nan};
    sf_file_source_opts e3 = {nn, 1, "acts", NULL, 0, -1, 4};
    s = sf_file_source_open(&e3);
    CHECK(s && sf_act_source_next(s, &bt) == -1 && strstr(sf_errmsg(), "row 1 contains NaN"));
    sf_act_source_close(s);
    free(a), free(b), free(c), free(nan);
}

/* ---- sharded extraction with a synthetic source ----------------------------- */

/* Dataset row r: skipped when r % 5 == 3; otherwise a "pooled" row (2 floats)
 * and r % 3 + 1 "token" rows (3 floats). At most B examples per batch. */
typedef struct {
    sf_act_source base;
    int64_t next, end, B, calls;
    SF_VEC(float) x0, x1;
    SF_VEC(int64_t) r0, r1, ex;
    SF_VEC(int32_t) p1;
    SF_VEC(sf_act_skip) sk;
    char ids[64][24];
    const char *idp[64];
} synth;

static int synth_next(sf_act_source *s, sf_act_batch *b) {
    synth *y = (synth *)s;
    if (y->next >= y->end) return 0;
    y->calls++;
    y->x0.n = y->x1.n = y->r0.n = y->r1.n = y->ex.n = y->p1.n = y->sk.n = 0;
    int64_t n = 0;
    while (n < y->B && y->next < y->end) {
        int64_t r = y->next++;
        if (r % 5 == 3) {
            sf_act_skip k = {r, "bad", "no image"};
            sf_vec_push(&y->sk, k);
            continue;
        }
        snprintf(y->ids[n], sizeof y->ids[n], "id%lld", (long long)r);
        y->idp[n] = y->ids[n];
        n++;
        sf_vec_push(&y->ex, r);
        sf_vec_push(&y->r0, r);
        sf_vec_push(&y->x0, (float)r);
        sf_vec_push(&y->x0, -(float)r);
        for (int32_t t = 0; t < r % 3 + 1; t++) {
            for (int j = 0; j < 3; j++)
                sf_vec_push(&y->x1, (float)(r * 100 + t * 10 + j));
            sf_vec_push(&y->r1, r);
            sf_vec_push(&y->p1, t);
        }
    }
    b->n_streams = 2;
    b->stream[0] = (sf_act_stream){"pooled", 2, (int64_t)y->r0.n, y->x0.v, y->r0.v, NULL};
    b->stream[1] = (sf_act_stream){"tok", 3, (int64_t)y->r1.n, y->x1.v, y->r1.v, y->p1.v};
    b->n_examples = n;
    b->ex_rows = y->ex.v;
    b->ex_ids = y->idp;
    b->n_skipped = (int64_t)y->sk.n;
    b->skipped = y->sk.v;
    b->next_row = y->next;
    return 1;
}

static int synth_seek(sf_act_source *s, int64_t r0, int64_t r1) {
    synth *y = (synth *)s;
    y->next = r0, y->end = r1;
    return 0;
}

static void synth_close(sf_act_source *s) {
    synth *y = (synth *)s;
    sf_vec_free(&y->x0), sf_vec_free(&y->x1), sf_vec_free(&y->r0), sf_vec_free(&y->r1);
    sf_vec_free(&y->ex), sf_vec_free(&y->p1), sf_vec_free(&y->sk);
    free(y);
}

static const sf_act_source_ops synth_ops = {synth_next, synth_seek, synth_close};

static sf_act_source *synth_open(int64_t N, int64_t B) {
    synth *y = sf_calloc(1, sizeof *y);
    y->base.ops = &synth_ops;
    y->base.n_streams = 2;
    y->base.names[0] = "pooled", y->base.names[1] = "tok";
    y->base.d[0] = 2, y->base.d[1] = 3;
    y->base.per_token[1] = 1;
    y->base.n_rows = N;
    y->end = N;
    y->B = B;
    return &y->base;
}

static void count_skip(void *ctx, const sf_act_skip *s, int bar) {
    (void)bar;
    CHECK(s->row % 5 == 3 && !strcmp(s->why, "no image"));
    (*(int *)ctx)++;
}

static const sf_tensor_info *tget(const sf_st *f, const char *name, sf_dtype dt) {
    const sf_tensor_info *t = sf_st_find(f, name);
    return t && t->dtype == dt ? t : NULL;
}

TEST(sharded_extraction) {
    const char *tmp = test_tmpdir("pipeline_extract");
    char *out = pathf(tmp, "o.safetensors"), *ref = pathf(tmp, "ref.safetensors");
    const int64_t N = 23;
    int warned = 0;
    sf_extract_opts o = {out, "fp-1", NULL, 7, "test", count_skip, &warned};
    sf_extract_result res;
    sf_act_source *s = synth_open(N, 3);
    /* an interrupted run: out is a directory, the merge fails, parts stay */
    CHECK(mkdir(out, 0755) == 0);
    CHECK(sf_extract_run(s, &o, &res) == -1);
    CHECK(res.n_shards == 4 && res.fresh_shards == 4 && warned == 4);
    char *p2 = sf_extract_part_path(out, 2);
    CHECK(test_file_exists(p2) && strstr(p2, "o.safetensors.part00002.safetensors"));
    /* part 2 holds rows [14, 21): 18 is skipped */
    sf_st f;
    if (sf_st_open(&f, p2) == 0) {
        const sf_tensor_info *r = tget(&f, "rows", SF_DT_I64), *x = tget(&f, "pooled", SF_DT_F32);
        const sf_tensor_info *tr = tget(&f, "tok_rows", SF_DT_I64),
                             *tp = tget(&f, "tok_pos", SF_DT_I32);
        CHECK(r && r->shape[0] == 6 && x && x->ndim == 2 && x->shape[0] == 6 && x->shape[1] == 2);
        CHECK(tr && tp && tr->shape[0] == tp->shape[0] && !tget(&f, "pooled_rows", SF_DT_I64));
        CHECK_STR(sf_st_meta(&f, "saeflow_extract"), "fp-1");
        CHECK_STR(sf_st_meta(&f, "skipped"), "1");
        const sf_tensor_info *ids = tget(&f, "ids", SF_DT_U8);
        CHECK(ids && ids->shape[0] == (int64_t)strlen("id14\nid15\nid16\nid17\nid19\nid20\n") &&
              !memcmp(ids->data, "id14\nid15\n", 10));
        sf_st_close(&f);
    }
    rmdir(out);
    /* lose part 2; other settings are refused and touch nothing */
    CHECK(unlink(p2) == 0);
    sf_extract_opts o2 = o;
    o2.fingerprint = "fp-2";
    CHECK(sf_extract_run(s, &o2, &res) == -1 && strstr(sf_errmsg(), "different settings"));
    /* same settings: only part 2 is computed, then merged */
    warned = 0;
    CHECK(sf_extract_run(s, &o, &res) == 0);
    CHECK(res.fresh_shards == 1 && res.n_shards == 4 && res.rows == 19 && res.skipped == 4 &&
          warned == 1);
    CHECK(!test_file_exists(p2));
    /* a second run: already complete */
    CHECK(sf_extract_run(s, &o, &res) == 0 && res.already_complete && res.rows == 19);
    sf_act_source_close(s);

    /* equal to an uninterrupted run with other batches */
    s = synth_open(N, 5);
    sf_extract_opts o3 = o;
    o3.out = ref;
    CHECK(sf_extract_run(s, &o3, &res) == 0 && res.fresh_shards == 4);
    sf_act_source_close(s);
    sf_st a, b;
    CHECK(sf_st_open(&a, out) == 0 && sf_st_open(&b, ref) == 0);
    if (a.map && b.map) {
        CHECK(a.n_tensors == 6 && b.n_tensors == 6);
        for (int i = 0; i < a.n_tensors; i++) {
            const sf_tensor_info *ta = &a.tensors[i], *tb = sf_st_find(&b, ta->name);
            CHECK_MSG(tb && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                      "%s", ta->name);
        }
        CHECK_STR(sf_st_meta(&a, "rows"), "19");
        CHECK_STR(sf_st_meta(&a, "skipped"), "4");
        /* token rows: row r has r % 3 + 1 tokens, each value r*100 + t*10 + j */
        const sf_tensor_info *tx = tget(&a, "tok", SF_DT_F32),
                             *tr = tget(&a, "tok_rows", SF_DT_I64);
        const sf_tensor_info *tp = tget(&a, "tok_pos", SF_DT_I32);
        int64_t bad = 0, expect = 0;
        for (int64_t r = 0; r < N; r++)
            expect += r % 5 == 3 ? 0 : r % 3 + 1;
        CHECK(tx && tr && tp && tx->shape[0] == expect && tr->shape[0] == expect);
        for (int64_t i = 0; tx && tr && tp && i < tx->shape[0]; i++) {
            int64_t r;
            int32_t t;
            memcpy(&r, (const char *)tr->data + 8 * i, 8);
            memcpy(&t, (const char *)tp->data + 4 * i, 4);
            bad += ((const float *)tx->data)[i * 3 + 2] != (float)(r * 100 + t * 10 + 2);
        }
        CHECK(bad == 0);
    }
    sf_st_close(&a);
    sf_st_close(&b);

    /* another metadata key for the fingerprint */
    char *e = pathf(tmp, "key.safetensors");
    s = synth_open(4, 4);
    sf_extract_opts o4 = {e, "fp", "my_key", 1, NULL, NULL, NULL};
    CHECK(sf_extract_run(s, &o4, &res) == 0 && res.rows == 3 && res.n_shards == 4);
    if (sf_st_open(&a, e) == 0) {
        CHECK_STR(sf_st_meta(&a, "my_key"), "fp");
        CHECK(sf_st_meta(&a, "saeflow_extract") == NULL);
        sf_st_close(&a);
    }
    sf_act_source_close(s);
    free(e);
    free(p2), free(out), free(ref);
}

/* A source whose every example is skipped. */
static int none_next(sf_act_source *s, sf_act_batch *b) {
    synth *y = (synth *)s;
    if (y->next >= y->end) return 0;
    static const sf_act_skip k = {0, "x", "no caption"};
    b->n_streams = 1;
    b->stream[0] = (sf_act_stream){"v", 2, 0, NULL, NULL, NULL};
    b->n_skipped = 1;
    b->skipped = &k;
    b->next_row = ++y->next;
    return 1;
}
static const sf_act_source_ops none_ops = {none_next, synth_seek, synth_close};

TEST(extraction_of_nothing) {
    const char *tmp = test_tmpdir("pipeline_nothing");
    char *out = pathf(tmp, "n.safetensors");
    sf_act_source *s = synth_open(3, 1);
    s->ops = &none_ops;
    s->n_streams = 1;
    sf_extract_opts o = {out, "fp", NULL, 2, NULL, NULL, NULL};
    sf_extract_result res;
    CHECK(sf_extract_run(s, &o, &res) == 1 && strstr(sf_errmsg(), "no row of 3"));
    char *p0 = sf_extract_part_path(out, 0);
    CHECK(!test_file_exists(out) && !test_file_exists(p0));
    free(p0);
    sf_act_source_close(s);
    free(out);
}

/* ---- CLIP over a dataset ---------------------------------------------------- */

static double rel_err(const float *a, const void *b, int64_t n) {
    double md = 0, mb = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        float y;
        memcpy(&y, (const char *)b + 4 * i, 4);
        double d = fabs((double)a[i] - y);
        if (!(d <= md)) md = d;
        if (fabs(y) > mb) mb = fabs(y);
    }
    return md / mb;
}

typedef struct {
    SF_VEC(float) v, t;
    SF_VEC(int64_t) rows;
    int64_t batches, skipped;
} collected;

static int collect(sf_act_source *s, collected *c) {
    sf_act_batch b;
    int r;
    while ((r = sf_act_source_next(s, &b)) == 1) {
        c->batches++;
        c->skipped += b.n_skipped;
        for (int i = 0; i < b.n_streams; i++) {
            const sf_act_stream *st = &b.stream[i];
            if (!strcmp(st->name, "vision"))
                sf_vec_append(&c->v, st->x, st->n * st->d);
            else
                sf_vec_append(&c->t, st->x, st->n * st->d);
        }
        sf_vec_append(&c->rows, b.ex_rows, b.n_examples);
    }
    return r;
}

static void collected_free(collected *c) {
    sf_vec_free(&c->v), sf_vec_free(&c->t), sf_vec_free(&c->rows);
}

TEST(clip_source) {
    sf_clip_source_opts o = {.model = CLIPFIX "e2e",
                             .dataset = "folder:" IMAGES,
                             .captions_path = CLIPFIX "e2e_captions.txt",
                             .vision = "layer:-2",
                             .text = "pooled",
                             .batch = 6,
                             .limit = -1};
    sf_act_source *s = sf_clip_source_open(&o);
    CHECK_MSG(s != NULL, "%s", sf_errmsg());
    if (!s) return;
    CHECK(s->n_rows == 20 && s->n_streams == 2 && !strcmp(s->names[0], "vision") &&
          !strcmp(s->names[1], "text") && s->d[0] == 32 && s->d[1] == 32);
    char *fp = sf_clip_source_fingerprint(s, 8);
    CHECK(fp && strstr(fp, "saeflow-extract-v1 model=") && strstr(fp, "vision=layer:-2") &&
          strstr(fp, "text=pooled") && strstr(fp, "shard_rows=8 limit=-1"));
    free(fp);
    collected c = {0};
    CHECK(collect(s, &c) == 0);
    CHECK(c.batches == 4 && c.rows.n == 20 && c.v.n == 20 * 32 && c.t.n == 20 * 32);
    sf_st x;
    CHECK(sf_st_open(&x, CLIPFIX "e2e.expected.safetensors") == 0);
    if (x.map && c.v.n == 640 && c.t.n == 640) {
        const sf_tensor_info *ev = sf_st_find(&x, "vision"), *et = sf_st_find(&x, "text");
        double e1 = ev ? rel_err(c.v.v, ev->data, 640) : 1,
               e2 = et ? rel_err(c.t.v, et->data, 640) : 1;
        CHECK_MSG(e1 <= 1e-4 && e2 <= 1e-4, "vision %g text %g", e1, e2);
    }
    sf_st_close(&x);
    sf_act_source_close(s);

    /* fixed groups of 4 vs read groups of 4 over the whole range: same groups,
     * same bits; a range restarts the groups */
    collected g[2];
    memset(g, 0, sizeof g);
    for (int i = 0; i < 2; i++) {
        o.batch = 4, o.fixed_groups = i, o.text = "none";
        s = sf_clip_source_open(&o);
        CHECK(s && s->n_streams == 1);
        if (!s) continue;
        CHECK(sf_act_source_seek(s, 2, 19) == 0);
        CHECK(collect(s, &g[i]) == 0);
        sf_act_source_close(s);
    }
    CHECK(g[0].v.n == 17 * 32 && g[1].v.n == g[0].v.n && g[0].batches == 5 &&
          !memcmp(g[0].v.v, g[1].v.v, g[0].v.n * sizeof(float)) && g[1].rows.v[0] == 2);
    collected_free(&g[0]), collected_free(&g[1]), collected_free(&c);
}

TEST(clip_source_skips) {
    /* every image of corrupt/ but one fails to decode: fixed groups of 2
     * still give whole groups; the skipped rows carry the decoder's error */
    sf_clip_source_opts o = {.model = CLIPFIX "e2e",
                             .dataset = "folder:" SF_SOURCE_DIR "/fixtures/clip-inputs/corrupt",
                             .vision = "pooled",
                             .vision_required = 1,
                             .batch = 2,
                             .fixed_groups = 1,
                             .limit = -1};
    sf_act_source *s = sf_clip_source_open(&o);
    CHECK_MSG(s != NULL, "%s", sf_errmsg());
    if (!s) return;
    sf_act_batch b;
    int64_t rows = 0, skipped = 0, named = 0;
    while (sf_act_source_next(s, &b) == 1) {
        rows += b.stream[0].n;
        skipped += b.n_skipped;
        for (int64_t i = 0; i < b.n_skipped; i++)
            named += strlen(b.skipped[i].why) > 0 && strlen(b.skipped[i].id) > 0;
    }
    CHECK_MSG(rows == 1 && skipped + rows == s->n_rows && named == skipped,
              "%lld rows %lld skipped", (long long)rows, (long long)skipped);
    sf_act_source_close(s);
    /* a layer the model does not have; a tower it does not have */
    o.vision = "layer:7";
    CHECK(sf_clip_source_open(&o) == NULL && strstr(sf_errmsg(), "out of range"));
    o.vision = "none", o.text = "none";
    CHECK(sf_clip_source_open(&o) == NULL && strstr(sf_errmsg(), "nothing to do"));
}

/* Samples in memory (what a binding hands over) give the folder source's
 * bits: the same decoding, tokenizer and groups; ids "#i" when absent, a bad
 * image skipped with its decoder error, no samples at all is an empty run. */
TEST(clip_source_samples) {
    sf_clip_source_opts o = {.model = CLIPFIX "e2e",
                             .dataset = "folder:" IMAGES,
                             .captions_path = CLIPFIX "e2e_captions.txt",
                             .vision = "layer:-2",
                             .text = "pooled",
                             .batch = 6,
                             .limit = -1};
    sf_act_source *s = sf_clip_source_open(&o);
    CHECK_MSG(s != NULL, "%s", sf_errmsg());
    if (!s) return;
    collected want = {0};
    CHECK(collect(s, &want) == 0);
    sf_act_source_close(s);
    /* the same images and captions, in memory */
    sf_dataset *ds = sf_dataset_open("folder:" IMAGES, SF_DS_IMAGES);
    size_t caplen;
    char *caps = sf_read_file(CLIPFIX "e2e_captions.txt", &caplen);
    CHECK(ds && caps);
    if (!ds || !caps) return;
    sf_sample in[20];
    uint8_t *img[20];
    char *cap = caps;
    for (int i = 0; i < 20; i++) {
        sf_sample smp;
        CHECK(sf_dataset_next(ds, &smp) == 1);
        img[i] = malloc(smp.image_len);
        memcpy(img[i], smp.image, smp.image_len);
        char *nl = strchr(cap, '\n');
        if (nl) *nl = 0;
        in[i] = (sf_sample){.image = img[i], .image_len = smp.image_len, .caption = cap};
        cap = nl ? nl + 1 : cap + strlen(cap);
    }
    sf_dataset_close(ds);
    o.dataset = NULL, o.captions_path = NULL, o.samples = in, o.n_samples = 20;
    s = sf_clip_source_open(&o);
    CHECK_MSG(s != NULL, "%s", sf_errmsg());
    if (!s) return;
    collected got = {0};
    CHECK(collect(s, &got) == 0);
    CHECK(got.v.n == want.v.n && got.t.n == want.t.n && got.rows.n == 20);
    if (got.v.n == want.v.n && got.t.n == want.t.n)
        CHECK(!memcmp(got.v.v, want.v.v, got.v.n * sizeof(float)) &&
              !memcmp(got.t.v, want.t.v, got.t.n * sizeof(float)));
    char *fp = sf_clip_source_fingerprint(s, 8);
    CHECK(fp && strstr(fp, "source=(memory)"));
    free(fp);
    sf_act_source_close(s);
    /* a model the caller loaded, borrowed twice: the same bits */
    sf_clip_load_opts lo = {SF_DT_F32, 1, 1};
    sf_clip *m = sf_clip_load(CLIPFIX "e2e", &lo);
    CHECK(m != NULL);
    o.clip = m;
    for (int rep = 0; m && rep < 2; rep++) {
        collected again = {0};
        s = sf_clip_source_open(&o);
        CHECK(s && collect(s, &again) == 0);
        CHECK(again.v.n == want.v.n && again.t.n == want.t.n);
        if (again.v.n == want.v.n && again.t.n == want.t.n)
            CHECK(!memcmp(again.v.v, want.v.v, again.v.n * sizeof(float)) &&
                  !memcmp(again.t.v, want.t.v, again.t.n * sizeof(float)));
        if (s) sf_act_source_close(s);
        collected_free(&again);
    }
    sf_clip_free(m);
    o.clip = NULL;
    /* a bad image: skipped, named "#3" */
    in[3].image = (const uint8_t *)"junk", in[3].image_len = 4;
    o.n_samples = 5;
    s = sf_clip_source_open(&o);
    CHECK(s != NULL);
    if (s) {
        sf_act_batch b;
        CHECK(sf_act_source_next(s, &b) == 1);
        CHECK(b.n_skipped == 1 && b.skipped[0].row == 3 && !strcmp(b.skipped[0].id, "#3") &&
              strstr(b.skipped[0].why, "unrecognised magic bytes") && b.n_examples == 4);
        CHECK(sf_act_source_next(s, &b) == 0);
        sf_act_source_close(s);
    }
    o.n_samples = 0;
    s = sf_clip_source_open(&o);
    CHECK(s != NULL && s->n_rows == 0);
    if (s) {
        sf_act_batch b;
        CHECK(sf_act_source_next(s, &b) == 0);
        sf_act_source_close(s);
    }
    for (int i = 0; i < 20; i++)
        free(img[i]);
    free(caps);
    collected_free(&want), collected_free(&got);
}

int main(void) {
    RUN(clip_source_samples);
    RUN(file_source);
    RUN(sharded_extraction);
    RUN(extraction_of_nothing);
    RUN(clip_source);
    RUN(clip_source_skips);
    return test_summary();
}
