/* saeflow flux generate on the tiny diffusers FLUX pipelines
 * (fixtures/flux-pipe, tools/make_flux_pipeline_fixture.py): PNGs from a
 * prompt file (batch 1 and 2), a single prompt (dev-style: guidance, dynamic shift) and an
 * encode-prompts file (latents only), against FluxPipeline's images (+-1)
 * and latents (<= 1e-4 relative); bad inputs fail clearly, leaving nothing. */
#include <stdlib.h>
#include <string.h>

#include "saeflow/image.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/flux-pipe/"

/* max |png - expected uint8 image| (-1 if unreadable or the wrong size) */
static int png_diff(const char *path, const sf_st *want, const char *name) {
    sf_image im;
    if (sf_image_load(path, &im)) {
        fprintf(stderr, "  %s: %s\n", path, sf_errmsg());
        return -1;
    }
    const sf_tensor_info *t = sf_st_find(want, name);
    int d = -1;
    if (t && t->nbytes == (size_t)(im.width * im.height * 3)) {
        d = 0;
        for (size_t i = 0; i < t->nbytes; i++) {
            int e = abs((int)im.rgb[i] - (int)((const uint8_t *)t->data)[i]);
            if (e > d) d = e;
        }
    }
    sf_image_free(&im);
    return d;
}

TEST(generate) {
    const char *tmp = test_tmpdir("cli_flux_generate");
    sf_st want;
    CHECK(sf_st_open(&want, FIX "expected.safetensors") == 0);
    CHECK(system(test_fmt("printf 'a photo of a cat\\nA DOG running on the beach!\\n' > '%s/p.txt'",
                          tmp)) == 0);
    char *log = NULL;
    /* schnell, a prompt file: one PNG per line, named by row and seed */
    int rc = test_run(test_fmt("'" SF_EXE "' flux generate --model '" FIX "schnell' --prompts "
                               "'%s/p.txt' --height 48 --width 64 --steps 4 --seed 42 "
                               "--max-sequence-length 16 --threads 2 --out '%s/a'",
                               tmp, tmp),
                      &log);
    CHECK_MSG(rc == 0, "%s", log);
    free(log);
    int d0 = png_diff(test_fmt("%s/a/row000000_seed42.png", tmp), &want, "schnell_4.image"),
        d1 = png_diff(test_fmt("%s/a/row000001_seed42.png", tmp), &want, "schnell_4b.image");
    fprintf(stderr, "  schnell 4 steps: max |diff| %d, %d\n", d0, d1);
    CHECK(d0 >= 0 && d0 <= 1 && d1 >= 0 && d1 <= 1);
    /* both prompts in one forward (--batch 2): the same images */
    rc = test_run(test_fmt("'" SF_EXE "' flux generate --model '" FIX "schnell' --prompts "
                           "'%s/p.txt' --height 48 --width 64 --steps 4 --seed 42 --batch 2 "
                           "--max-sequence-length 16 --out '%s/b'",
                           tmp, tmp),
                  NULL);
    CHECK(rc == 0);
    d0 = png_diff(test_fmt("%s/b/row000000_seed42.png", tmp), &want, "schnell_4.image");
    d1 = png_diff(test_fmt("%s/b/row000001_seed42.png", tmp), &want, "schnell_4b.image");
    fprintf(stderr, "  schnell 4 steps, batch 2: max |diff| %d, %d\n", d0, d1);
    CHECK(d0 >= 0 && d0 <= 1 && d1 >= 0 && d1 <= 1);
    /* dev-style: guidance embeds, dynamic shift, one prompt */
    rc = test_run(test_fmt("'" SF_EXE "' flux generate --model '" FIX
                           "dev' --prompt 'a red cube on a "
                           "table' --height 64 --width 48 --steps 4 --seed 7 --guidance 3.5 "
                           "--max-sequence-length 16 --out '%s/d'",
                           tmp),
                  NULL);
    CHECK(rc == 0);
    int dd = png_diff(test_fmt("%s/d/row000000_seed7.png", tmp), &want, "dev_4.image");
    fprintf(stderr, "  dev 4 steps: max |diff| %d\n", dd);
    CHECK(dd >= 0 && dd <= 1);
    /* encode-prompts file -> latents only (no VAE needed), rows kept */
    rc =
        test_run(test_fmt("'" SF_EXE "' flux encode-prompts --model '" FIX "schnell' --prompts "
                          "'%s/p.txt' --max-sequence-length 16 --out '%s/e.safetensors' && '" SF_EXE
                          "' flux generate --model '" FIX "schnell' --embeds '%s/e.safetensors' "
                          "--limit 1 --height 48 --width 64 --steps 1 --seed 42 --latents-only "
                          "--out '%s/l'",
                          tmp, tmp, tmp, tmp),
                 NULL);
    CHECK(rc == 0);
    sf_st got;
    CHECK(sf_st_open(&got, test_fmt("%s/l/row000000_seed42.safetensors", tmp)) == 0);
    const sf_tensor_info *lt = sf_st_find(&got, "latents");
    CHECK(lt && lt->ndim == 4 && lt->shape[1] == 4 && lt->shape[2] == 6 && lt->shape[3] == 8);
    const sf_tensor_info *wt = sf_st_find(&want, "schnell_1.step.0"); /* packed (1, 12, 16) */
    if (lt && wt && lt->nbytes == 192 * sizeof(float) && wt->nbytes == lt->nbytes) {
        /* token r * 4 + q, channel 4c + 2dy + dx = lat[c][2r + dy][2q + dx] */
        const float *l = (const float *)lt->data, *w = (const float *)wt->data;
        double md = 0, mw = 1e-30;
        for (int c = 0; c < 4; c++)
            for (int y = 0; y < 6; y++)
                for (int x = 0; x < 8; x++) {
                    float a = l[(c * 6 + y) * 8 + x],
                          b = w[((y / 2) * 4 + x / 2) * 16 + 4 * c + 2 * (y % 2) + x % 2];
                    md = fmax(md, fabs(a - b)), mw = fmax(mw, fabs(b));
                }
        fprintf(stderr, "  latents-only, 1 step: rel err %.2e\n", md / mw);
        CHECK(md / mw <= 1e-4);
    }
    sf_st_close(&got);
    CHECK(!test_file_exists(test_fmt("%s/l/row000001_seed42.safetensors", tmp)));
    /* a dataset's captions: files named by dataset row */
    rc = test_run(
        test_fmt("'" SF_EXE "' flux generate --model '" FIX
                 "schnell' --dataset 'cc3m:" SF_SOURCE_DIR
                 "/fixtures/data/recap_snappy_dict_v1.parquet' --offset 1 --limit 2 --size 16 "
                 "--steps 1 --max-sequence-length 8 --latents-only --seed 3 --out '%s/ds'",
                 tmp),
        NULL);
    CHECK(rc == 0);
    CHECK(test_file_exists(test_fmt("%s/ds/row000001_seed3.safetensors", tmp)));
    CHECK(test_file_exists(test_fmt("%s/ds/row000002_seed3.safetensors", tmp)));
    CHECK(!test_file_exists(test_fmt("%s/ds/row000000_seed3.safetensors", tmp)));
    sf_st_close(&want);
}

TEST(bad_inputs) {
    const char *tmp = test_tmpdir("cli_flux_generate_bad");
    char *log = NULL;
    /* size not a multiple of 16: a usage error before anything loads */
    CHECK(test_run(test_fmt("'" SF_EXE "' flux generate --model '" FIX "schnell' --prompt x --size "
                            "40 --out '%s/o'",
                            tmp),
                   &log) == 2);
    CHECK_MSG(log && strstr(log, "multiples of 16"), "%s", log ? log : "");
    free(log);
    /* prompt file not UTF-8 */
    CHECK(system(test_fmt("printf 'fine\\nbad \\377\\376 bytes\\n' > '%s/bad.txt'", tmp)) == 0);
    CHECK(test_run(test_fmt("'" SF_EXE "' flux generate --model '" FIX "schnell' --prompts "
                            "'%s/bad.txt' --size 16 --out '%s/o'",
                            tmp, tmp),
                   &log) == 1);
    CHECK_MSG(log && strstr(log, "line 2") && strstr(log, "not UTF-8"), "%s", log ? log : "");
    free(log);
    /* a pipeline folder without vae/ (text parts present) */
    CHECK(system(test_fmt("mkdir -p '%s/novae' && for p in transformer scheduler tokenizer "
                          "text_encoder tokenizer_2 text_encoder_2; do ln -s '" FIX "schnell/'$p "
                          "'%s/novae/'$p; done",
                          tmp, tmp)) == 0);
    CHECK(test_run(test_fmt("'" SF_EXE "' flux generate --model '%s/novae' --prompt x --size 16 "
                            "--max-sequence-length 8 --out '%s/o'",
                            tmp, tmp),
                   &log) == 1);
    CHECK_MSG(log && strstr(log, "no vae/ folder"), "%s", log ? log : "");
    free(log);
    /* ... which --latents-only does not need */
    CHECK(test_run(test_fmt("'" SF_EXE "' flux generate --model '%s/novae' --prompt x --size 16 "
                            "--steps 1 --max-sequence-length 8 --latents-only --out '%s/o'",
                            tmp, tmp),
                   NULL) == 0);
    CHECK(test_file_exists(test_fmt("%s/o/row000000_seed0.safetensors", tmp)));
    /* no text encoders */
    CHECK(test_run(test_fmt("'" SF_EXE "' flux generate --model '" SF_SOURCE_DIR
                            "/fixtures/flux/a' --prompt x --size 16 --out '%s/o2'",
                            tmp),
                   &log) == 1);
    CHECK_MSG(log && strstr(log, "tokenizer"), "%s", log ? log : "");
    free(log);
    CHECK(!test_file_exists(test_fmt("%s/o2", tmp)));
    CHECK(test_run("'" SF_EXE "' flux generate --help", NULL) == 0);
}

int main(void) {
    RUN(generate);
    RUN(bad_inputs);
    return test_summary();
}
