/* FLUX feature analysis through the binary on the tiny FLUX pipeline fixture
 * (fixtures/flux-pipe/schnell, captions encoded on the fly):
 *   - `topk --source flux` (sampled on the fly) equals `extract --source flux`
 *     + `topk --acts` tensor for tensor, for a single block (text + image
 *     grid) and a double block's image stream;
 *   - the heat maps are the SAE's activations at those token positions
 *     (codes from `saeflow encode` of the extracted rows);
 *   - explore makes each top prompt's image once, caches it, reuses it; with
 *     one prompt per group the image equals `flux generate` at seed + row;
 *   - T5 token strings, steering grids and --no-images in the site data. */
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saeflow/common.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define PIPE SF_SOURCE_DIR "/fixtures/flux-pipe/schnell"
#define SRC                                                                                        \
    "--model " PIPE " --captions '%s/caps.txt' --height 64 --width 32 --max_sequence_length 16 "   \
    "--seed 5 "
#define HOOK "single_transformer_blocks.1"

/* saeflow with `args`; its output in test_sh_out */
static int run(const char *args) {
    return test_sh("'%s' %s", SF_EXE, args);
}

#define HAS(s)                                                                                     \
    CHECK_MSG(test_sh_out &&strstr(test_sh_out, (s)) != NULL, "output lacks \"%s\":\n%s", (s),     \
              test_sh_out)

static const char *CAPS[] = {"a red fox in the snow", "a blue car on a road",
                             "green trees by a lake", "a cat sleeping on a sofa",
                             "sunset over the sea",   "a bowl of fruit"};

static void write_caps(const char *tmp) {
    char p[1024];
    snprintf(p, sizeof p, "%s/caps.txt", tmp);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 6; i++)
        fprintf(f, "%s\n", CAPS[i]);
    fclose(f);
}

/* Every tensor of a equals the one of b, bytes and shape. */
static int same_tensors(const char *a, const char *b) {
    sf_st x, y;
    if (sf_st_open(&x, a)) return 0;
    if (sf_st_open(&y, b)) {
        sf_st_close(&x);
        return 0;
    }
    int ok = x.n_tensors == y.n_tensors;
    for (int i = 0; ok && i < x.n_tensors; i++) {
        const sf_tensor_info *t = &x.tensors[i], *u = sf_st_find(&y, t->name);
        ok = u && u->nbytes == t->nbytes && u->ndim == t->ndim &&
             !memcmp(u->shape, t->shape, (size_t)t->ndim * sizeof(int64_t)) &&
             !memcmp(u->data, t->data, t->nbytes);
        if (!ok) fprintf(stderr, "  tensor %s differs\n", t->name);
    }
    const char *keys[] = {"tokens", "grid", "grid_first", "examples", "hook", "source"};
    for (int i = 0; ok && i < 6; i++) {
        const char *p = sf_st_meta(&x, keys[i]), *q = sf_st_meta(&y, keys[i]);
        ok = p && q && !strcmp(p, q);
        if (!ok) fprintf(stderr, "  metadata %s differs\n", keys[i]);
    }
    sf_st_close(&x), sf_st_close(&y);
    return ok;
}

/* An aligned copy of a tensor's data (mapped I64 / I32 data may be unaligned). */
static void *need(sf_st *s, const char *name, void **keep) {
    const sf_tensor_info *t = sf_st_find(s, name);
    if (!t) {
        fprintf(stderr, "  no tensor %s\n", name);
        return NULL;
    }
    void *d = malloc(t->nbytes + 8);
    memcpy(d, t->data, t->nbytes);
    *keep = d;
    return d;
}

/* The heat map of every top example against the codes of its token rows:
 * value = the largest activation, pos = its token (lowest on ties), heat =
 * round(255 z / value) at each token. */
static int check_heat(const char *topk, const char *acts, const char *codes, const char *hook) {
    sf_st tk, ax, cs;
    if (sf_st_open(&tk, topk)) return 0;
    if (sf_st_open(&ax, acts)) return 0;
    if (sf_st_open(&cs, codes)) return 0;
    char rn[256], pn[256];
    snprintf(rn, sizeof rn, "%s_rows", hook);
    snprintf(pn, sizeof pn, "%s_pos", hook);
    void *keep[9] = {0};
    const float *tv = need(&tk, "topk_values", &keep[0]), *cv = need(&cs, "values", &keep[1]);
    const int64_t *tr = need(&tk, "topk_rows", &keep[2]), *ar = need(&ax, rn, &keep[3]),
                  *ci = need(&cs, "indptr", &keep[4]);
    const int32_t *tp = need(&tk, "topk_pos", &keep[5]), *ap = need(&ax, pn, &keep[6]),
                  *cx = need(&cs, "indices", &keep[7]);
    const uint8_t *th = need(&tk, "topk_heat", &keep[8]);
    int ok = tv && tr && tp && th && ar && ap && ci && cx && cv, checked = 0;
    const sf_tensor_info *hi = sf_st_find(&tk, "topk_heat"), *vi = sf_st_find(&tk, "topk_values"),
                         *ri = sf_st_find(&ax, rn);
    const int64_t n = ok ? vi->shape[0] : 0, N = ok ? vi->shape[1] : 0, T = ok ? hi->shape[2] : 0,
                  M = ok ? ri->shape[0] : 0;
    for (int64_t j = 0; ok && j < n; j++)
        for (int64_t s = 0; ok && s < N; s++) {
            const int64_t r = tr[j * N + s];
            if (r < 0) continue;
            /* z of feature j on each token of example r */
            float z[4096] = {0};
            for (int64_t m = 0; m < M; m++) {
                if (ar[m] != r) continue;
                for (int64_t e = ci[m]; e < ci[m + 1]; e++)
                    if (cx[e] == j) z[ap[m]] = cv[e];
            }
            float best = 0;
            int bp = -1;
            for (int q = 0; q < T; q++)
                if (z[q] > best) best = z[q], bp = q;
            const float v = tv[j * N + s];
            const int32_t pos = tp[j * N + s];
            ok = v == best && pos == bp;
            if (!ok)
                fprintf(stderr, "  feature %lld row %lld: value %g pos %d, codes %g at %d\n",
                        (long long)j, (long long)r, v, pos, best, bp);
            const uint8_t *h = th + (j * N + s) * T;
            for (int q = 0; ok && q < T; q++) {
                long want = z[q] > 0 ? lrintf(255.0f * (z[q] / best)) : 0;
                ok = h[q] == want;
                if (!ok)
                    fprintf(stderr, "  feature %lld row %lld token %d: heat %d, want %ld\n",
                            (long long)j, (long long)r, q, h[q], want);
            }
            checked++;
        }
    for (int i = 0; i < 9; i++)
        free(keep[i]);
    sf_st_close(&tk), sf_st_close(&ax), sf_st_close(&cs);
    return ok && checked > 0;
}

static long long mtime_ns(const char *p) {
    struct stat st;
    if (stat(p, &st)) return -1;
    return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

TEST(topk_two_routes_heat_images) {
    const char *t = test_tmpdir("cli_flux_topk");
    write_caps(t);
    char a[8192], p[2048], q[2048];
    /* an SAE on the single block's rows (d = 32; the double block has the same width) */
    snprintf(a, sizeof a,
             "train --source flux " SRC "--prompt_batch 4 --hook " HOOK
             " --tokens_per_image 0 --arch topk --k 4 --expansion 2 --batch_size 16 --iters 30 "
             "--threads 1 --savedir '%s/sae' --quiet",
             t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a,
             "extract --source flux " SRC "--prompt_batch 4 --hook " HOOK
             " --hook transformer_blocks.0:1 --shard_rows 4 --threads 1 --out '%s/x.safetensors'",
             t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    const char *hooks[2] = {HOOK, "transformer_blocks.0:1"},
               *keys[2] = {HOOK, "transformer_blocks.0.1"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a,
                 "topk --source flux " SRC "--prompt_batch 4 --hook %s --checkpoint '%s/sae/" HOOK
                 "' -N 4 --batch 256 --threads 2 --quiet --out '%s/a%d.safetensors'",
                 t, hooks[i], t, t, i);
        CHECK_MSG(run(a) == 0, "%s", test_sh_out);
        snprintf(a, sizeof a,
                 "topk --acts '%s/x.safetensors' --key %s --checkpoint '%s/sae/" HOOK
                 "' -N 4 --threads 1 --quiet --out '%s/b%d.safetensors'",
                 t, keys[i], t, t, i);
        CHECK_MSG(run(a) == 0, "%s", test_sh_out);
        snprintf(p, sizeof p, "%s/a%d.safetensors", t, i);
        snprintf(q, sizeof q, "%s/b%d.safetensors", t, i);
        CHECK_MSG(same_tensors(p, q), "hook %s: sampler and file top-k differ", hooks[i]);
        /* layout: 16 text tokens then the 4 x 2 grid; the image stream alone */
        sf_st s;
        if (sf_st_open(&s, p) == 0) {
            CHECK_STR(sf_st_meta(&s, "tokens"), i ? "8" : "24");
            CHECK_STR(sf_st_meta(&s, "grid"), "4,2");
            CHECK_STR(sf_st_meta(&s, "grid_first"), i ? "0" : "16");
            CHECK_STR(sf_st_meta(&s, "source"), "flux");
            sf_st_close(&s);
        }
        snprintf(a, sizeof a,
                 "encode --checkpoint '%s/sae/" HOOK "' --input '%s/x.safetensors' --key %s "
                 "--out '%s/codes%d.safetensors' --threads 1",
                 t, t, keys[i], t, i);
        CHECK_MSG(run(a) == 0, "%s", test_sh_out);
        snprintf(a, sizeof a, "%s/codes%d.safetensors", t, i);
        snprintf(q, sizeof q, "%s/x.safetensors", t);
        CHECK_MSG(check_heat(p, q, a, keys[i]), "hook %s: heat maps", hooks[i]);
    }

    /* the site: images made once, then reused from the cache */
    snprintf(a, sizeof a,
             "explore --topk '%s/a0.safetensors' --out '%s/site' --image-cache '%s/cache' "
             "--image-batch 3 --threads 1",
             t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    HAS("6 FLUX images made");
    char *dirs = NULL;
    snprintf(a, sizeof a, "ls -d '%s'/cache/flux-*", t);
    CHECK(test_run(a, &dirs) == 0 && dirs);
    if (dirs) dirs[strcspn(dirs, "\n")] = 0;
    snprintf(p, sizeof p, "%s/row00000003.png", dirs ? dirs : "");
    CHECK(test_file_exists(p));
    const long long m0 = mtime_ns(p);
    snprintf(q, sizeof q, "%s/site/img/3.jpg", t);
    CHECK(test_file_exists(q));
    usleep(20000);
    snprintf(a, sizeof a,
             "explore --topk '%s/a0.safetensors' --out '%s/site' --image-cache '%s/cache' "
             "--threads 1",
             t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    HAS("0 FLUX images made");
    HAS("6 cached");
    CHECK(mtime_ns(p) == m0);
    /* captions and T5 tokens in the feature data */
    snprintf(q, sizeof q, "%s/site/data/f/0000.js", t);
    char *js = sf_read_file(q, NULL);
    CHECK(js && strstr(js, "\"a red fox in the snow\"") &&
          strstr(js, "\"\xe2\x96\x81"
                     "a\""));
    CHECK(js && strstr(js, "\"\\u003c/s>\"")); /* </s>, escaped */
    free(js);
    free(dirs);

    /* --no-images with an empty cache: no images; a steering grid is linked */
    snprintf(a, sizeof a, "mkdir -p '%s/steer' && cp '%s' '%s/steer/feature_1.png'", t, p, t);
    CHECK(system(a) == 0);
    snprintf(a, sizeof a,
             "explore --topk '%s/a0.safetensors' --out '%s/site2' --image-cache '%s/cache2' "
             "--no-images --steer-dir '%s/steer' --quiet",
             t, t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(q, sizeof q, "%s/site2/img/3.jpg", t);
    CHECK(!test_file_exists(q));
    snprintf(q, sizeof q, "%s/site2/steer/feature_1.png", t);
    CHECK(test_same_file(p, q));
    snprintf(q, sizeof q, "%s/site2/data/f/0000.js", t);
    js = sf_read_file(q, NULL);
    CHECK(js && strstr(js, "{\"id\":1,") &&
          strstr(strstr(js, "{\"id\":1,"), "\"steer\":\"steer/feature_1.png\""));
    CHECK(js && !strstr(js, "feature_0.png"));
    free(js);
    /* the name `flux generate --steer-grid` gives a grid (lowest prompt row wins) */
    snprintf(
        a, sizeof a,
        "mkdir -p '%s/steer2' && cp '%s' '%s/steer2/row000004_f2_grid.png' && "
        "echo x > '%s/steer2/row000007_f2_grid.png' && echo x > '%s/steer2/row000001_f12_grid.png'",
        t, p, t, t, t);
    CHECK(system(a) == 0);
    snprintf(a, sizeof a,
             "explore --topk '%s/a0.safetensors' --out '%s/site3' --image-cache '%s/cache2' "
             "--no-images --steer-dir '%s/steer2' --quiet",
             t, t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(q, sizeof q, "%s/site3/steer/feature_2.png", t);
    CHECK(test_same_file(p, q));
}

/* One prompt per group: prompt r's noise is manual_seed(seed + r) alone,
 * which is what `flux generate --seed` draws: the images must be the same. */
/* Prompt rows 0..5 made by `flux generate` (src: its prompt flags; seed
 * 5 + row, as the sampler draws) into T/GEN, compared with the
 * explorer's cached image of each row that is among the top rows in
 * T/CACHE/flux-*; returns how many were compared (all must be equal). */
static int same_as_generate(const char *t, const char *src, const char *gen, const char *cache) {
    char a[8192], p[2048], q[2048];
    int compared = 0;
    for (int r = 0; r < 6; r++) {
        snprintf(a, sizeof a,
                 "flux generate --model " PIPE " %s --offset %d --limit 1 --seed %d --steps 2 "
                 "--height 64 --width 32 --out '%s/%s'",
                 src, r, 5 + r, t, gen);
        CHECK_MSG(run(a) == 0, "%s", test_sh_out);
        snprintf(p, sizeof p, "%s/%s/row%06d_seed%d.png", t, gen, r, 5 + r);
        char *dirs = NULL;
        snprintf(a, sizeof a, "ls -d '%s'/%s/flux-*", t, cache);
        if (test_run(a, &dirs) || !dirs) {
            CHECK(0);
            free(dirs);
            break;
        }
        dirs[strcspn(dirs, "\n")] = 0;
        snprintf(q, sizeof q, "%s/row%08d.png", dirs, r);
        free(dirs);
        if (!test_file_exists(q)) continue; /* not among the top rows */
        CHECK_MSG(test_same_file(p, q), "%s row %d: %s != %s", gen, r, p, q);
        compared++;
    }
    return compared;
}

TEST(image_equals_flux_generate) {
    const char *t = test_tmpdir("cli_flux_topk_gen");
    write_caps(t);
    char a[8192], q[2048];
    snprintf(a, sizeof a,
             "train --source flux " SRC "--prompt_batch 1 --hook transformer_blocks.0:1 "
             "--tokens_per_image 0 --arch topk --k 4 --expansion 2 --batch_size 8 --iters 10 "
             "--threads 1 --savedir '%s/sae' --quiet",
             t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a,
             "topk --source flux " SRC "--prompt_batch 1 --hook transformer_blocks.0:1 "
             "--checkpoint '%s/sae/transformer_blocks.0.1' -N 6 --quiet --out '%s/t.safetensors'",
             t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a,
             "explore --topk '%s/t.safetensors' --out '%s/site' --image-cache '%s/cache' "
             "--image-batch 1 --image-steps 2 --quiet",
             t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a, "--prompts '%s/caps.txt' --max-sequence-length 16", t);
    CHECK(same_as_generate(t, a, "gen", "cache") >= 1);

    /* the same through an encode-prompts file (the text given to explore) */
    snprintf(a, sizeof a,
             "flux encode-prompts --model " PIPE " --prompts '%s/caps.txt' "
             "--max-sequence-length 16 --out '%s/p.safetensors'",
             t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a,
             "topk --source flux --model " PIPE " --prompts '%s/p.safetensors' --height 64 "
             "--width 32 --seed 5 --prompt_batch 1 --hook transformer_blocks.0:1 --checkpoint "
             "'%s/sae/transformer_blocks.0.1' -N 6 --quiet --out '%s/t2.safetensors'",
             t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a,
             "explore --topk '%s/t2.safetensors' --out '%s/site2' --image-cache '%s/cache2' "
             "--image-batch 1 --image-steps 2 --captions '%s/caps.txt' --quiet",
             t, t, t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a, "--embeds '%s/p.safetensors'", t);
    CHECK(same_as_generate(t, a, "gen2", "cache2") >= 1);
    snprintf(q, sizeof q, "%s/site2/data/f/0000.js", t);
    char *js = sf_read_file(q, NULL);
    CHECK(js && strstr(js, "\"a red fox in the snow\""));
    free(js);
}

TEST(errors) {
    const char *t = test_tmpdir("cli_flux_topk_err");
    write_caps(t);
    char a[8192];
    /* shuffled rows cannot be grouped per image */
    snprintf(a, sizeof a,
             "extract --source flux " SRC "--prompt_batch 2 --shuffle 2 --hook "
             "transformer_blocks.0:1 --shard_rows 4 --threads 1 --out '%s/s.safetensors'",
             t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a,
             "train --source flux " SRC "--prompt_batch 2 --hook transformer_blocks.0:1 "
             "--arch topk --k 4 --expansion 2 --batch_size 8 --iters 2 --threads 1 --savedir "
             "'%s/sae' --quiet",
             t, t);
    CHECK_MSG(run(a) == 0, "%s", test_sh_out);
    snprintf(a, sizeof a,
             "topk --acts '%s/s.safetensors' --key transformer_blocks.0.1 --checkpoint "
             "'%s/sae/transformer_blocks.0.1' --out '%s/o.safetensors' --quiet",
             t, t, t);
    CHECK(run(a) == 1);
    HAS("shuffle");
    CHECK(run("topk --source flux --checkpoint x --out y --model m --captions c") == 2);
    HAS("--hook");
    CHECK(run("topk --source clip --checkpoint x --out y --acts z") == 2);
    CHECK(run("topk --checkpoint x --out y --acts z --height 64") == 2);
    CHECK(run("explore --topk x --out y --image-steps 0") == 2);
}

int main(void) {
    RUN(topk_two_routes_heat_images);
    RUN(image_equals_flux_generate);
    RUN(errors);
    free(test_sh_out);
    return test_summary();
}
