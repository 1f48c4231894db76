/* saeflow flux generate --steer on the tiny FLUX pipeline
 * (fixtures/flux-pipe/schnell) with SAEs trained by the binary (`train
 * --source flux`, which records the hook): a strengths x seeds grid whose
 * strength-0 cells are the unsteered images pixel for pixel, the grid PNG
 * holding every cell, its JSON sidecar; surgery / delta / several steers /
 * latents; bad specs, checkpoints, features, widths fail before any file
 * is written. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/image.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/flux-pipe/"
#define GEN                                                                                        \
    "'" SF_EXE "' flux generate --model '" FIX "schnell' --prompts '%s/p.txt' --height 48 "        \
    "--width 64 --steps 2 --max-sequence-length 16 --threads 1 "

static char *log_s;
static int run(const char *cmd) {
    free(log_s);
    log_s = NULL;
    return test_run(cmd, &log_s);
}
#define HAS(s) CHECK_MSG(log_s &&strstr(log_s, (s)) != NULL, "output lacks \"%s\":\n%s", (s), log_s)

/* 1 if the two PNGs hold the same pixels (0 if either is unreadable) */
static int same_pixels(const char *a, const char *b) {
    sf_image x, y;
    if (sf_image_load(a, &x)) return 0;
    if (sf_image_load(b, &y)) {
        sf_image_free(&x);
        return 0;
    }
    int same = x.width == y.width && x.height == y.height &&
               !memcmp(x.rgb, y.rgb, (size_t)x.width * x.height * 3);
    sf_image_free(&x), sf_image_free(&y);
    return same;
}

/* the grid's cell (r, c) equals the PNG at path */
static int grid_cell_is(const sf_image *g, int r, int c, const char *path) {
    sf_image im;
    if (sf_image_load(path, &im)) return 0;
    int same = 1;
    for (int y = 0; y < im.height && same; y++)
        same = !memcmp(
            g->rgb +
                ((size_t)(r * (im.height + 2) + y) * g->width + (size_t)c * (im.width + 2)) * 3,
            im.rgb + (size_t)y * im.width * 3, (size_t)im.width * 3);
    sf_image_free(&im);
    return same;
}

static const char *tmp;

TEST(grid_and_modes) {
    char ck[2048];
    snprintf(ck, sizeof ck, "%s/ck", tmp);
    /* two tiny TopK SAEs from the sampler: an image stream and a single-block delta */
    CHECK_MSG(
        run(test_fmt("'" SF_EXE "' train --source flux --model '" FIX "schnell' --captions "
                     "'%s/p.txt' --max_sequence_length 16 --height 32 --width 32 --prompt_batch 2 "
                     "--tokens_per_image 0 --hook transformer_blocks.1:1 --hook "
                     "single_transformer_blocks.1:delta --arch topk --k 4 --expansion 2 "
                     "--batch_size 8 --iters 3 --threads 1 --quiet --savedir '%s'",
                     tmp, ck)) == 0,
        "%s", log_s);
    /* unsteered, two seeds */
    CHECK_MSG(run(test_fmt(GEN "--seeds 42,7 --out '%s/plain'", tmp, tmp)) == 0, "%s", log_s);
    CHECK(test_file_exists(test_fmt("%s/plain/row000001_seed7.png", tmp)));
    /* the grid: strengths 0 and 6 x seeds 42, 7 */
    CHECK_MSG(
        run(test_fmt(GEN "--seeds 42,7 --steer '%s/transformer_blocks.1.1:5' --steer-grid 0,6 "
                         "--out '%s/grid'",
                     tmp, ck, tmp)) == 0,
        "%s", log_s);
    const char *seeds[2] = {"42", "7"}, *strs[2] = {"0", "6"};
    for (int row = 0; row < 2; row++) {
        sf_image g;
        CHECK(sf_image_load(test_fmt("%s/grid/row%06d_f5_grid.png", tmp, row), &g) == 0);
        CHECK(g.width == 2 * 64 + 2 && g.height == 2 * 48 + 2);
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 2; c++) {
                char cell[2048];
                snprintf(cell, sizeof cell, "%s/grid/row%06d_seed%s_f5_s%s.png", tmp, row, seeds[c],
                         strs[r]);
                CHECK_MSG(grid_cell_is(&g, r, c, cell), "%s", cell);
                char plain[2048];
                snprintf(plain, sizeof plain, "%s/plain/row%06d_seed%s.png", tmp, row, seeds[c]);
                /* strength 0 (add mode): the unsteered image; 6: another one */
                CHECK_MSG(same_pixels(cell, plain) == (r == 0), "%s", cell);
            }
        sf_image_free(&g);
        size_t n;
        char *js = sf_read_file(test_fmt("%s/grid/row%06d_f5_grid.json", tmp, row), &n);
        CHECK(js && strstr(js, "\"hook\":\t\"transformer_blocks.1.1\"") &&
              strstr(js, "\"mode\":\t\"add\"") && strstr(js, test_fmt("\"row\":\t%d", row)));
        CHECK(js && strstr(js, "\"strengths\":\t[0, 6]") && strstr(js, "\"seeds\":\t[42, 7]"));
        free(js);
    }
    /* --batch 3: jobs (prompt x strength x seed) share forwards across prompts: the same
     * images up to float rounding (+-1) */
    CHECK_MSG(
        run(test_fmt(GEN "--seeds 42,7 --steer '%s/transformer_blocks.1.1:5' --steer-grid 0,6 "
                         "--batch 3 --out '%s/grid3'",
                     tmp, ck, tmp)) == 0,
        "%s", log_s);
    for (int row = 0; row < 2; row++) {
        sf_image x = {0}, y = {0};
        CHECK(sf_image_load(test_fmt("%s/grid/row%06d_f5_grid.png", tmp, row), &x) == 0);
        CHECK(sf_image_load(test_fmt("%s/grid3/row%06d_f5_grid.png", tmp, row), &y) == 0);
        int md = 0;
        if (x.width != y.width || x.height != y.height)
            md = 999;
        else
            for (size_t i = 0; i < (size_t)x.width * x.height * 3; i++) {
                int d = abs((int)x.rgb[i] - (int)y.rgb[i]);
                if (d > md) md = d;
            }
        CHECK_MSG(md <= 1, "row %d: batch 3 vs 1: max |diff| %d", row, md);
        sf_image_free(&x), sf_image_free(&y);
    }
    /* latents: add at 0 = unsteered bit for bit; surgery at 0 = the reconstruction */
    CHECK(run(test_fmt(GEN "--seed 42 --latents-only --out '%s/l0'", tmp, tmp)) == 0);
    CHECK(run(test_fmt(GEN "--seed 42 --latents-only --steer '%s/transformer_blocks.1.1:5:0' "
                           "--out '%s/la'",
                       tmp, ck, tmp)) == 0);
    CHECK_MSG(run(test_fmt(GEN "--seed 42 --latents-only --steer '%s/transformer_blocks.1.1:5:0' "
                               "--steer-mode surgery --out '%s/ls'",
                           tmp, ck, tmp)) == 0,
              "%s", log_s);
    sf_st a, b, c;
    CHECK(sf_st_open(&a, test_fmt("%s/l0/row000000_seed42.safetensors", tmp)) == 0);
    CHECK(sf_st_open(&b, test_fmt("%s/la/row000000_seed42_f5_s0.safetensors", tmp)) == 0);
    CHECK(sf_st_open(&c, test_fmt("%s/ls/row000000_seed42_f5_s0.safetensors", tmp)) == 0);
    const sf_tensor_info *ta = sf_st_find(&a, "latents"), *tb = sf_st_find(&b, "latents"),
                         *tc = sf_st_find(&c, "latents");
    CHECK(ta && tb && tc && ta->nbytes == tb->nbytes && tb->nbytes == tc->nbytes);
    if (ta && tb && tc) {
        CHECK(!memcmp(ta->data, tb->data, ta->nbytes));
        CHECK(memcmp(ta->data, tc->data, ta->nbytes) != 0);
    }
    const char *meta = sf_st_meta(&c, "steer");
    CHECK(meta && !strcmp(meta, "f5_s0"));
    sf_st_close(&a), sf_st_close(&b), sf_st_close(&c);
    /* two steers (one a delta hook in surgery mode), chosen steps and tokens */
    CHECK_MSG(run(test_fmt(GEN "--seed 42 --steer '%s/transformer_blocks.1.1:5:6' --steer "
                               "'%s/single_transformer_blocks.1-delta:2:-3' --steer-mode surgery "
                               "--steer-steps 1 --steer-tokens image --out '%s/two'",
                           tmp, ck, ck, tmp)) == 0,
              "%s", log_s);
    CHECK(test_file_exists(test_fmt("%s/two/row000001_seed42_f5_s6_f2_s-3.png", tmp)));
    /* --steer-hook overrides the checkpoint's hook (same width), with a note */
    CHECK_MSG(run(test_fmt(GEN "--seed 42 --steer '%s/transformer_blocks.1.1:5:6' --steer-hook "
                               "single_transformer_blocks.0 --out '%s/hk'",
                           tmp, ck, tmp)) == 0,
              "%s", log_s);
    HAS("was trained at transformer_blocks.1.1");
}

TEST(bad_steers) {
    char ck[2048], out[2048];
    snprintf(ck, sizeof ck, "%s/ck/transformer_blocks.1.1", tmp);
    snprintf(out, sizeof out, "%s/bad", tmp);
    struct {
        const char *args;
        int rc;
        const char *msg;
    } cases[] = {
        {"--steer '/nonexistent/ck:1:2'", 1, "/nonexistent/ck"},
        {"--steer '%s:64:1'", 1, "feature 64 outside [0, 64)"},
        {"--steer '" SF_SOURCE_DIR "/fixtures/sae/topk:1:1'", 1, "--steer-hook"},
        {"--steer '" SF_SOURCE_DIR "/fixtures/sae/topk:1:1' --steer-hook transformer_blocks.1.1", 1,
         "SAE width (features) 16, but transformer_blocks.1.1 rows are 32 wide"},
        {"--steer '%s:x:1'", 2, "feature 'x' is not an integer"},
        {"--steer '%s:1'", 2, "CKPT:FEATURE:STRENGTH"},
        {"--steer '%s:1:1e99'", 2, "not a finite number"},
        {"--steer '%s:1:1' --steer-steps 2", 2, "outside the 2 steps"},
        {"--steer '%s:1:1' --steer-mode set", 2, "add or surgery"},
        {"--steer '%s:1:1' --steer-tokens all", 2, "image, text or both"},
        {"--steer '%s:1:1' --steer-tokens text", 1, "image stream of a double block"},
        {"--steer '%s:1:1' --steer-hook nope", 2, "not understood"},
        {"--steer '%s:1' --steer-grid 0,x", 2, "comma-separated list"},
        {"--steer '%s:1' --steer '%s:2' --steer-grid 0,1", 2, "exactly one --steer"},
        {"--steer '%s:1' --steer-grid 0,1 --latents-only", 2, "drop --latents-only"},
        {"--steer '%s:1:1' --steer-grid 0,1", 1, "CKPT:FEATURE (no strength)"},
        {"--steer-grid 0,1", 2, "need --steer"},
        {"--seeds 1,,2", 2, "--seeds"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[4096], cmd[8192];
        snprintf(args, sizeof args, cases[i].args, ck, ck);
        snprintf(cmd, sizeof cmd, GEN "%s --out '%s'", tmp, args, out);
        int rc = run(cmd);
        CHECK_MSG(rc == cases[i].rc, "%s: exit %d, want %d\n%s", args, rc, cases[i].rc, log_s);
        HAS(cases[i].msg);
        CHECK_MSG(!test_file_exists(out), "%s: %s was created", args, out);
    }
}

int main(void) {
    tmp = test_tmpdir("cli_flux_steer");
    if (system(test_fmt("printf 'a photo of a cat\\nA DOG running on the beach!\\n' > '%s/p.txt'",
                        tmp)) != 0)
        return 1;
    RUN(grid_and_modes);
    RUN(bad_steers);
    free(log_s);
    return test_summary();
}
