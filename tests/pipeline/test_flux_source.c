/* The FLUX activation source against diffusers' FluxPipeline with forward
 * hooks (fixtures/flux_source, tools/make_flux_source_fixtures.py): every row
 * it yields equals the hooked activation at its (prompt, token), <= 1e-4
 * relative to the tensor's largest value; token selection, the shuffle and
 * seeking are deterministic. */
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
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/flux_source/"

static const char *HOOKS[] = {"transformer_blocks.0.0",       "transformer_blocks.1:1",
                              "single_transformer_blocks.1",  "single_transformer_blocks.0:image",
                              "transformer_blocks.1.1:delta", "single_transformer_blocks.0:delta"};
/* expected tensor, and for deltas the input to subtract; row offset into it */
static const char *WANT[][2] = {{"transformer_blocks.0.0", NULL},
                                {"transformer_blocks.1.1", NULL},
                                {"single_transformer_blocks.1", NULL},
                                {"single_transformer_blocks.0", NULL},
                                {"transformer_blocks.1.1", "transformer_blocks.1.1.in"},
                                {"single_transformer_blocks.0", "single_transformer_blocks.0.in"}};
static const int OFFSET[] = {0, 0, 0, 6, 0, 0}; /* :image of a single block skips T = 6 */
#define NH 6

static int64_t RPB = 0; /* rows_per_batch of open_src */

static sf_act_source *open_src(int64_t tpi, int shuffle) {
    sf_flux_source_opts o = {.model = SF_SOURCE_DIR "/fixtures/flux/a",
                             .prompts = FIX "prompts.safetensors",
                             .hooks = HOOKS,
                             .n_hooks = NH,
                             .height = 64,
                             .width = 32,
                             .batch = 2,
                             .seed = 7,
                             .tokens_per_image = tpi,
                             .rows_per_batch = RPB,
                             .shuffle = shuffle,
                             .limit = -1};
    sf_act_source *s = sf_flux_source_open(&o);
    CHECK_MSG(s != NULL, "%s", sf_errmsg());
    return s;
}

/* Every row of every batch vs the fixture; counts rows per (prompt, hook). */
static void check_rows(sf_act_source *s, int64_t counts[5][NH], int64_t *n_batches) {
    sf_st e;
    CHECK(sf_st_open(&e, FIX "expected.safetensors") == 0);
    sf_act_batch b;
    int r;
    *n_batches = 0;
    while ((r = sf_act_source_next(s, &b)) == 1) {
        (*n_batches)++;
        CHECK(b.n_streams == NH);
        for (int i = 0; i < NH && i < b.n_streams; i++) {
            const sf_act_stream *st = &b.stream[i];
            const sf_tensor_info *t = sf_st_find(&e, WANT[i][0]);
            const sf_tensor_info *t0 = WANT[i][1] ? sf_st_find(&e, WANT[i][1]) : NULL;
            CHECK(t && st->d == 32 && st->pos && st->rows);
            if (!t) continue;
            const float *w = t->data, *w0 = t0 ? t0->data : NULL;
            const int64_t R = t->shape[1];
            double mx = 1e-30, md = 0;
            for (int64_t j = 0; j < sf_tensor_numel(t); j++)
                if (fabs(w[j]) > mx) mx = fabs(w[j]);
            for (int64_t j = 0; j < st->n; j++) {
                int64_t p = st->rows[j], q = st->pos[j] + OFFSET[i];
                CHECK(p >= 0 && p < 5 && q >= 0 && q < R);
                if (p < 0 || p >= 5 || q < 0 || q >= R) continue;
                counts[p][i]++;
                for (int k = 0; k < 32; k++) {
                    size_t at = (size_t)((p * R + q) * 32 + k);
                    double want = w[at] - (w0 ? w0[at] : 0);
                    double d = fabs(st->x[j * 32 + k] - want);
                    if (!(d <= md)) md = d;
                }
            }
            CHECK_MSG(md / mx <= 1e-4, "%s: rel err %.3g", st->name, md / mx);
        }
    }
    CHECK(r == 0);
    sf_st_close(&e);
}

TEST(all_tokens) {
    sf_act_source *s = open_src(0, 0);
    if (!s) return;
    CHECK(s->n_rows == 5 && s->n_streams == NH);
    CHECK_STR(s->names[1], "transformer_blocks.1.1");
    int64_t counts[5][NH] = {{0}}, nb;
    check_rows(s, counts, &nb);
    CHECK(nb == 3); /* groups of 2: 2 + 2 + 1 prompts */
    const int64_t per[NH] = {6, 8, 14, 8, 8, 14};
    for (int p = 0; p < 5; p++)
        for (int i = 0; i < NH; i++)
            CHECK_MSG(counts[p][i] == per[i], "prompt %d hook %d: %lld rows", p, i,
                      (long long)counts[p][i]);
    sf_act_source_close(s);
}

/* Copies of a batch's stream 2 for comparisons. */
typedef struct {
    int64_t n;
    float *x;
    int64_t *rows;
    int32_t *pos;
} copy;

static copy take(const sf_act_stream *st) {
    copy c = {st->n, sf_malloc((size_t)(st->n * st->d) * 4 + 1), sf_malloc((size_t)st->n * 8 + 1),
              sf_malloc((size_t)st->n * 4 + 1)};
    memcpy(c.x, st->x, (size_t)(st->n * st->d) * 4);
    memcpy(c.rows, st->rows, (size_t)st->n * 8);
    memcpy(c.pos, st->pos, (size_t)st->n * 4);
    return c;
}

static int same(const copy *a, const sf_act_stream *st) {
    return a->n == st->n && !memcmp(a->x, st->x, (size_t)(st->n * st->d) * 4) &&
           !memcmp(a->rows, st->rows, (size_t)st->n * 8) &&
           !memcmp(a->pos, st->pos, (size_t)st->n * 4);
}

TEST(selection_and_shuffle) {
    sf_act_source *s = open_src(3, 2); /* 3 rows per prompt and hook; windows of 4 prompts */
    if (!s) return;
    CHECK(sf_flux_source_window(s) == 4);
    int64_t counts[5][NH] = {{0}}, nb;
    check_rows(s, counts, &nb);
    CHECK(nb == 2);
    for (int p = 0; p < 5; p++)
        for (int i = 0; i < NH; i++)
            CHECK(counts[p][i] == 3);
    /* the first window mixes prompts (not in prompt order), and again gives the same bytes */
    sf_act_batch b;
    CHECK(sf_act_source_seek(s, 0, 5) == 0);
    CHECK(sf_act_source_next(s, &b) == 1);
    CHECK(b.n_examples == 4 && b.stream[2].n == 12 && b.next_row == 4);
    int sorted = 1;
    for (int64_t j = 1; j < b.stream[2].n; j++)
        sorted &= b.stream[2].rows[j - 1] <= b.stream[2].rows[j];
    CHECK(!sorted);
    int distinct = 1; /* positions of one prompt are distinct */
    for (int64_t j = 0; j < b.stream[2].n; j++)
        for (int64_t k = j + 1; k < b.stream[2].n; k++)
            distinct &= !(b.stream[2].rows[j] == b.stream[2].rows[k] &&
                          b.stream[2].pos[j] == b.stream[2].pos[k]);
    CHECK(distinct);
    copy w0 = take(&b.stream[2]);
    CHECK(sf_act_source_next(s, &b) == 1);
    copy w1 = take(&b.stream[2]);
    sf_act_source_close(s);
    /* a fresh source seeking to the second window alone gives it again */
    s = open_src(3, 2);
    CHECK(sf_act_source_seek(s, 4, 5) == 0);
    CHECK(sf_act_source_next(s, &b) == 1);
    CHECK(same(&w1, &b.stream[2]));
    CHECK(sf_act_source_next(s, &b) == 0);
    CHECK(sf_act_source_seek(s, 0, 4) == 0);
    CHECK(sf_act_source_next(s, &b) == 1);
    CHECK(same(&w0, &b.stream[2]));
    sf_act_source_close(s);
    free(w0.x), free(w0.rows), free(w0.pos), free(w1.x), free(w1.rows), free(w1.pos);
}

/* The reference's nsamples: 5 rows from all rows of each group of 2 prompts. */
TEST(rows_per_batch) {
    RPB = 5;
    sf_act_source *s = open_src(0, 0);
    RPB = 0;
    if (!s) return;
    int64_t counts[5][NH] = {{0}}, nb;
    check_rows(s, counts, &nb);
    CHECK(nb == 3);
    for (int i = 0; i < NH; i++) {
        int64_t tot = 0;
        for (int p = 0; p < 5; p++)
            tot += counts[p][i];
        CHECK_MSG(tot == 15, "hook %d: %lld rows", i, (long long)tot);
    }
    sf_act_source_close(s);
}

/* What explore's FLUX images start from: prompt p alone, with its slice of
 * its group's noise (groups of 2 of 5 prompts: the last has one), in a
 * batch-1 forward at sigma 1, gives the activations diffusers recorded for
 * p in its group's batch. (Noise from seed + p alone is off by ~0.7.) */
TEST(prompt_noise) {
    sf_flux *m = sf_flux_load(SF_SOURCE_DIR "/fixtures/flux/a", NULL);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    sf_st pf, e;
    CHECK(sf_st_open(&pf, FIX "prompts.safetensors") == 0);
    CHECK(sf_st_open(&e, FIX "expected.safetensors") == 0);
    if (!m) return;
    const sf_flux_config *c = sf_flux_get_config(m);
    const int64_t h = sf_flux_latent_side(64), w = sf_flux_latent_side(32), N = (h / 2) * (w / 2),
                  C4 = c->in_channels, T = 6;
    const sf_tensor_info *pe = sf_st_find(&pf, "prompt_embeds"),
                         *po = sf_st_find(&pf, "pooled_prompt_embeds");
    CHECK(pe && po && pe->shape[1] == T);
    const char *hooks[2] = {"transformer_blocks.1:1", "single_transformer_blocks.1"},
               *want[2] = {"transformer_blocks.1.1", "single_transformer_blocks.1"};
    sf_flux_request req[2];
    for (int k = 0; k < 2; k++)
        CHECK(sf_flux_parse_request(hooks[k], &req[k]) == 0);
    float *x = sf_malloc((size_t)(N * C4) * sizeof(float)), *txt = sf_malloc(T * 32 * 4),
          *pooled = sf_malloc(24 * 4), *ids = sf_malloc((size_t)(N * 3) * sizeof(float)),
          *out[2] = {sf_malloc((size_t)(N + T) * 32 * 4), sf_malloc((size_t)(N + T) * 32 * 4)};
    float ts = 1.0f, gd = 0.0f;
    sf_flux_image_ids(h / 2, w / 2, ids);
    for (int64_t p = 0; pe && po && p < 5; p++) {
        CHECK(sf_flux_source_prompt_noise(7, 2, 5, p, C4 / 4, h, w, 0, NULL, x) == 0);
        CHECK(sf_tensor_rows_f32(pe, p, 1, txt) == 0 && sf_tensor_rows_f32(po, p, 1, pooled) == 0);
        sf_flux_inputs in = {.B = 1,
                             .N = N,
                             .T = T,
                             .img = x,
                             .txt = txt,
                             .pooled = pooled,
                             .timestep = &ts,
                             .guidance = c->guidance ? &gd : NULL,
                             .img_ids = ids,
                             .txt_ids = NULL};
        CHECK_MSG(sf_flux_forward(m, &in, 2, req, out) == 0, "%s", sf_errmsg());
        for (int k = 0; k < 2; k++) {
            const sf_tensor_info *t = sf_st_find(&e, want[k]);
            CHECK(t != NULL);
            if (!t) continue;
            const float *wv = t->data;
            const int64_t R = t->shape[1];
            double mx = 1e-30, md = 0;
            for (int64_t j = 0; j < sf_tensor_numel(t); j++)
                if (fabs(wv[j]) > mx) mx = fabs(wv[j]);
            for (int64_t j = 0; j < R * 32; j++) {
                double d = fabs(out[k][j] - wv[p * R * 32 + j]);
                if (!(d <= md)) md = d;
            }
            CHECK_MSG(md / mx <= 1e-4, "prompt %lld %s: rel err %.3g", (long long)p, want[k],
                      md / mx);
        }
    }
    /* prompt 4 of 5 is a group of one, of 6 the first of a group of two */
    float *y = sf_malloc((size_t)(N * C4) * sizeof(float));
    CHECK(sf_flux_source_prompt_noise(7, 2, 6, 4, C4 / 4, h, w, 0, NULL, y) == 0);
    CHECK(sf_flux_source_prompt_noise(7, 2, 5, 4, C4 / 4, h, w, 0, NULL, x) == 0);
    /* (torch's randn of a shorter batch is a prefix of the longer one when
     * C h w is a multiple of 16, as here and for every FLUX size) */
    CHECK(memcmp(x, y, (size_t)(N * C4) * sizeof(float)) == 0);
    CHECK(sf_flux_source_prompt_noise(7, 2, 5, 5, C4 / 4, h, w, 0, NULL, x) == -1);
    free(x), free(y), free(txt), free(pooled), free(ids), free(out[0]), free(out[1]);
    sf_st_close(&pf), sf_st_close(&e);
    sf_flux_free(m);
}

TEST(errors) {
    const char *bad[] = {"transformer_blocks.7.0"};
    sf_flux_source_opts o = {.model = SF_SOURCE_DIR "/fixtures/flux/a",
                             .prompts = FIX "prompts.safetensors",
                             .hooks = bad,
                             .n_hooks = 1,
                             .height = 64,
                             .width = 32,
                             .limit = -1};
    CHECK(sf_flux_source_open(&o) == NULL);
    CHECK_ERR_HAS("flux source");
    const char *out[] = {"output"};
    o.hooks = out;
    CHECK(sf_flux_source_open(&o) == NULL);
    CHECK_ERR_HAS("output");
    const char *twice[] = {"transformer_blocks.0.1", "transformer_blocks.0:image"};
    o.hooks = twice, o.n_hooks = 2;
    CHECK(sf_flux_source_open(&o) == NULL);
    CHECK_ERR_HAS("twice");
    o.hooks = HOOKS, o.n_hooks = 1;
    o.prompts = FIX "expected.safetensors";
    CHECK(sf_flux_source_open(&o) == NULL);
    CHECK_ERR_HAS("prompt_embeds");
    o.prompts = FIX "prompts.safetensors", o.height = 40;
    CHECK(sf_flux_source_open(&o) == NULL);
    CHECK_ERR_HAS("multiples of 16");
    /* a NaN in the pooled embeddings of prompt 1: an error naming it, at its group */
    char path[2200];
    snprintf(path, sizeof path, "%s/nan.safetensors", test_tmpdir("flux_source_nan"));
    float pe[2 * 6 * 32] = {0}, po[2 * 24] = {0};
    po[24 + 3] = NAN;
    sf_st_writer *w = sf_stw_new();
    const int64_t s3[3] = {2, 6, 32}, s2[2] = {2, 24};
    CHECK(sf_stw_add(w, "prompt_embeds", SF_DT_F32, 3, s3, pe) == 0);
    CHECK(sf_stw_add(w, "pooled_prompt_embeds", SF_DT_F32, 2, s2, po) == 0);
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    o.prompts = path, o.height = 64;
    sf_act_source *s = sf_flux_source_open(&o);
    CHECK(s != NULL);
    sf_act_batch b;
    if (s) CHECK(sf_act_source_next(s, &b) == -1);
    CHECK_ERR_HAS("pooled_prompt_embeds of prompt 1");
    sf_act_source_close(s);
}

/* Captions encoded on the fly (tiny CLIP + T5, fixtures/clip/e2e and
 * fixtures/t5; the encoders are checked against transformers in
 * test_flux_prompts) give the rows a prompts file with the same embeddings
 * gives, bit for bit (each group is encoded alone both ways). */
TEST(on_the_fly) {
    const char *tmp = test_tmpdir("flux_source_fly");
    char caps[2200], pfile[2200];
    snprintf(caps, sizeof caps, "%s/caps.txt", tmp);
    snprintf(pfile, sizeof pfile, "%s/prompts.safetensors", tmp);
    const char *text = "a red cube on a table\r\nTwo cats\n\n";
    CHECK(sf_write_file_atomic(caps, text, strlen(text)) == 0);
    sf_flux_text_paths tp = {SF_SOURCE_DIR "/fixtures/clip/e2e", SF_SOURCE_DIR "/fixtures/clip/e2e",
                             SF_SOURCE_DIR "/fixtures/t5",
                             SF_SOURCE_DIR "/fixtures/t5/flux_text_encoder_2"};
    sf_flux_text *m = sf_flux_text_load_paths(&tp, SF_T5_AS_STORED);
    CHECK_MSG(m != NULL, "%s", sf_errmsg());
    if (!m) return;
    const char *prompts[3] = {"a red cube on a table", "Two cats", ""};
    const int L = 8, J = 32, P = 32;
    float pe[3 * 8 * 32], po[3 * 32];
    CHECK(sf_flux_encode_prompts(m, prompts, 2, L, pe, po) == 0);
    CHECK(sf_flux_encode_prompts(m, prompts + 2, 1, L, pe + 2 * L * J, po + 2 * P) == 0);
    sf_flux_text_free(m);
    sf_st_writer *w = sf_stw_new();
    const int64_t s3[3] = {3, L, J}, s2[2] = {3, P};
    CHECK(sf_stw_add(w, "prompt_embeds", SF_DT_F32, 3, s3, pe) == 0);
    CHECK(sf_stw_add(w, "pooled_prompt_embeds", SF_DT_F32, 2, s2, po) == 0);
    CHECK(sf_stw_write(w, pfile) == 0);
    sf_stw_free(w);
    const char *hooks[] = {"transformer_blocks.0:0", "single_transformer_blocks.0"};
    sf_flux_source_opts o = {.model = SF_SOURCE_DIR "/fixtures/flux_source/c",
                             .captions = caps,
                             .text_paths = &tp,
                             .max_sequence_length = L,
                             .hooks = hooks,
                             .n_hooks = 2,
                             .height = 32,
                             .width = 32,
                             .batch = 2,
                             .seed = 1,
                             .limit = -1};
    sf_act_source *a = sf_flux_source_open(&o);
    CHECK_MSG(a != NULL, "%s", sf_errmsg());
    o.captions = NULL, o.text_paths = NULL, o.prompts = pfile;
    sf_act_source *b = sf_flux_source_open(&o);
    CHECK_MSG(b != NULL, "%s", sf_errmsg());
    if (!a || !b) {
        sf_act_source_close(a), sf_act_source_close(b);
        return;
    }
    CHECK(a->n_rows == 3 && b->n_rows == 3);
    sf_act_batch ba, bb;
    int groups = 0;
    for (;;) {
        int ra = sf_act_source_next(a, &ba), rb = sf_act_source_next(b, &bb);
        CHECK(ra == rb);
        if (ra != 1 || rb != 1) break;
        groups++;
        for (int i = 0; i < 2; i++) {
            CHECK(ba.stream[i].n == bb.stream[i].n && ba.stream[i].n > 0);
            if (ba.stream[i].n == bb.stream[i].n)
                CHECK(!memcmp(ba.stream[i].x, bb.stream[i].x,
                              (size_t)(ba.stream[i].n * 32) * sizeof(float)));
        }
    }
    CHECK(groups == 2);
    sf_act_source_close(a);
    sf_act_source_close(b);

    /* a dataset's captions = the same captions from a file */
    const char *spec = "cc3m:" SF_SOURCE_DIR "/fixtures/data/recap_zstd_plain_v2.parquet";
    sf_dataset *ds = sf_dataset_open(spec, SF_DS_CAPTIONS);
    CHECK(ds != NULL);
    if (!ds) return;
    sf_sbuf lines = {0};
    sf_sample smp;
    for (int i = 0; i < 3 && sf_dataset_next(ds, &smp) == 1; i++)
        sf_sb_printf(&lines, "%s\n", smp.caption ? smp.caption : "");
    sf_dataset_close(ds);
    char *ltxt = sf_sb_release(&lines);
    CHECK(sf_write_file_atomic(caps, ltxt, strlen(ltxt)) == 0);
    free(ltxt);
    o.prompts = NULL, o.text_paths = &tp, o.captions = caps;
    a = sf_flux_source_open(&o);
    o.captions = NULL, o.dataset = spec, o.limit = 3;
    b = sf_flux_source_open(&o);
    CHECK_MSG(a && b, "%s", sf_errmsg());
    if (a && b) {
        CHECK(a->n_rows == 3 && b->n_rows == 3);
        CHECK(sf_act_source_next(a, &ba) == 1 && sf_act_source_next(b, &bb) == 1);
        CHECK(ba.stream[1].n == bb.stream[1].n && ba.stream[1].n == 2 * (8 + 4));
        CHECK(!memcmp(ba.stream[1].x, bb.stream[1].x, (size_t)ba.stream[1].n * 32 * 4));
    }
    sf_act_source_close(a);
    sf_act_source_close(b);
}

int main(void) {
    RUN(all_tokens);
    RUN(selection_and_shuffle);
    RUN(rows_per_batch);
    RUN(prompt_noise);
    RUN(errors);
    RUN(on_the_fly);
    return test_summary();
}
