/* saeflow train --source flux|file and extract --source flux through the
 * binary on the tiny FLUX fixture (fixtures/flux/a, fixtures/flux_source):
 * training from the sampler and from the same rows written by extract gives
 * bit-identical checkpoints and metrics (same seed, one thread); the hook is
 * recorded in config.json; extract resumes; usage errors exit 2. */
#include <unistd.h>

#include "saeflow/common.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define SRC                                                                                        \
    "--model " SF_SOURCE_DIR "/fixtures/flux/a --prompts " SF_SOURCE_DIR                           \
    "/fixtures/flux_source/prompts.safetensors --height 64 --width 32 --prompt_batch 2 "           \
    "--tokens_per_image 3 --shuffle 2 "
#define SAE "--batch_size 4 --iters 100 --expansion 2 --threads 1 --seed 3 --quiet "

/* saeflow with `args`; its output in test_sh_out */
static int run(const char *args) {
    return test_sh("'%s' %s", SF_EXE, args);
}

#define HAS(s)                                                                                     \
    CHECK_MSG(test_sh_out &&strstr(test_sh_out, (s)) != NULL, "output lacks \"%s\":\n%s", (s),     \
              test_sh_out)

TEST(two_sources_one_checkpoint) {
    const char *tmp = test_tmpdir("cli_flux_source");
    char args[8192], a[2400], b[2400];
    snprintf(args, sizeof args,
             "train --source flux " SRC SAE
             "--hook transformer_blocks.0:1 --hook single_transformer_blocks.1@arch=topk,k=4 "
             "--hook transformer_blocks.1.0 --savedir '%s/a'",
             tmp);
    CHECK_MSG(run(args) == 0, "%s", test_sh_out);
    snprintf(args, sizeof args,
             "extract --source flux " SRC
             "--seed 3 --shard_rows 4 --threads 1 --hook transformer_blocks.0:1 "
             "--hook single_transformer_blocks.1 --hook transformer_blocks.1.0 "
             "--out '%s/x.safetensors'",
             tmp);
    CHECK_MSG(run(args) == 0, "%s", test_sh_out);
    HAS("5 prompts");
    CHECK(run(args) == 0); /* a rerun finds it complete */
    HAS("already complete");
    snprintf(args, sizeof args,
             "train --source file --tensorpath '%s/x.safetensors' " SAE
             "--hook transformer_blocks.0.1 --hook single_transformer_blocks.1@arch=topk,k=4 "
             "--hook transformer_blocks.1.0 --savedir '%s/b'",
             tmp, tmp);
    CHECK_MSG(run(args) == 0, "%s", test_sh_out);
    const char *hooks[] = {"transformer_blocks.0.1", "single_transformer_blocks.1",
                           "transformer_blocks.1.0"};
    for (int i = 0; i < 3; i++) {
        const char *files[] = {"model.safetensors", "metrics.jsonl"};
        for (int j = 0; j < 2; j++) {
            snprintf(a, sizeof a, "%s/a/%s/%s", tmp, hooks[i], files[j]);
            snprintf(b, sizeof b, "%s/b/%s/%s", tmp, hooks[i], files[j]);
            CHECK_MSG(test_same_file(a, b), "%s differs", a);
        }
        snprintf(a, sizeof a, "%s/a/%s/config.json", tmp, hooks[i]);
        char *cfg = sf_read_file(a, NULL);
        CHECK(cfg && strstr(cfg, hooks[i]) && strstr(cfg, "\"hook\""));
        free(cfg);
    }
    /* 5 prompts x 3 rows = 15 rows per hook: 3 steps of 4, then the source ran out */
    snprintf(a, sizeof a, "%s/a/transformer_blocks.0.1/metrics.jsonl", tmp);
    char *m = sf_read_file(a, NULL);
    CHECK(m && strstr(m, "\"step\": 3") && !strstr(m, "\"step\": 4"));
    free(m);
}

/* --resume: 4 steps on the first window (4 prompts x 8 image rows, batch 8),
 * then a resumed run with --iters 6 continues at prompt 4 (one more step on
 * the last prompt's 8 rows) with the first run's metrics kept. */
TEST(resume) {
    const char *tmp = test_tmpdir("cli_flux_source_resume");
    char args[8192], path[2400];
#define R_ARGS                                                                                     \
    "train --source flux --model " SF_SOURCE_DIR "/fixtures/flux/a --prompts " SF_SOURCE_DIR       \
    "/fixtures/flux_source/prompts.safetensors --height 64 --width 32 --prompt_batch 2 "           \
    "--tokens_per_image 0 --shuffle 2 --batch_size 8 --expansion 2 --threads 1 "                   \
    "--hook transformer_blocks.0:1 --savedir '%s' "
    snprintf(args, sizeof args, R_ARGS "--iters 4 --quiet", tmp);
    CHECK_MSG(run(args) == 0, "%s", test_sh_out);
    snprintf(path, sizeof path, "%s/transformer_blocks.0.1/metrics.jsonl", tmp);
    char *m1 = sf_read_file(path, NULL);
    CHECK(m1 && strstr(m1, "\"step\": 4") && !strstr(m1, "\"step\": 5"));
    snprintf(args, sizeof args, R_ARGS "--iters 6 --resume", tmp);
    CHECK_MSG(run(args) == 0, "%s", test_sh_out);
    HAS("resuming from source row 4");
    HAS("5 steps (the source ran out)");
    char *m2 = sf_read_file(path, NULL);
    CHECK(m1 && m2 && !strncmp(m1, m2, strlen(m1)) && strstr(m2, "\"step\": 5"));
    free(m1), free(m2);
    snprintf(path, sizeof path, "%s/transformer_blocks.0.1/config.json", tmp);
    char *cfg = sf_read_file(path, NULL);
    CHECK(cfg && strstr(cfg, "\"steps\":\t5") && strstr(cfg, "\"resume_row\":\t5"));
    free(cfg);
    /* other source settings: refused */
    snprintf(args, sizeof args, R_ARGS "--iters 6 --resume --noise_seed 9", tmp);
    CHECK(run(args) == 1);
    HAS("other source settings");
#undef R_ARGS
}

/* --resume is exact: a run killed after its checkpoint at the end of the
 * first window (2 steps of 12 rows, 8 rows queued) and resumed writes the
 * bytes of an uninterrupted run (3 steps: the queued rows + 8 of the next
 * window's rows make the third batch), for a TopK and a standard hook. */
TEST(resume_exact) {
    const char *tmp = test_tmpdir("cli_flux_source_resume_exact");
    char args[8192];
#define X_ARGS                                                                                     \
    "train --source flux --model " SF_SOURCE_DIR "/fixtures/flux/a --prompts " SF_SOURCE_DIR       \
    "/fixtures/flux_source/prompts.safetensors --height 64 --width 32 --prompt_batch 2 "           \
    "--tokens_per_image 0 --shuffle 2 --batch_size 12 --expansion 2 --threads 1 --lr 1e-2 "        \
    "--lr_warmup_steps 2 --bodycount 12 --aux_k 4 --quiet --iters 6 --save_every 1 "               \
    "--hook transformer_blocks.0:1@arch=topk,k=3 --hook transformer_blocks.0:0 --savedir '%s/%s' "
    snprintf(args, sizeof args, X_ARGS, tmp, "u");
    CHECK_MSG(run(args) == 0, "%s", test_sh_out);
    char env[9000];
    snprintf(env, sizeof env, "SAEFLOW_TEST_KILL=2 '%s' " X_ARGS " 2>&1", SF_EXE, tmp, "r");
    CHECK(system(env) != 0);
    /* the killed run kept its curves (flushed per step) */
    char mp[2400];
    snprintf(mp, sizeof mp, "%s/r/transformer_blocks.0.1/metrics.jsonl", tmp);
    char *mk = sf_read_file(mp, NULL);
    CHECK(mk && strstr(mk, "\"step\": 2,"));
    free(mk);
    snprintf(args, sizeof args, X_ARGS "--resume", tmp, "r");
    CHECK_MSG(run(args) == 0, "%s", test_sh_out);
    const char *hooks[2] = {"transformer_blocks.0.1", "transformer_blocks.0.0"};
    const char *files[3] = {"model.safetensors", "metrics.jsonl", "config.json"};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            char a[2400], b[2400];
            snprintf(a, sizeof a, "%s/u/%s/%s", tmp, hooks[i], files[j]);
            snprintf(b, sizeof b, "%s/r/%s/%s", tmp, hooks[i], files[j]);
            size_t la = 0, lb = 0;
            char *ba = sf_read_file(a, &la), *bb = sf_read_file(b, &lb);
            CHECK_MSG(ba && bb && la == lb && !memcmp(ba, bb, la), "%s differs after resume", b);
            free(ba), free(bb);
        }
#undef X_ARGS
}

TEST(usage_errors) {
    CHECK(run("train --source nope --hook x --tensorpath y") == 2);
    CHECK(run("train --source flux " SRC) == 2);
    HAS("--hook");
    CHECK(run("train --source flux --hook transformer_blocks.0:1@k") == 2);
    CHECK(run("extract --source flux " SRC "--hook transformer_blocks.0:1 --out /tmp/x "
              "--shard_rows 3") == 2);
    HAS("multiple");
    CHECK(run("train --source flux " SRC
              "--hook transformer_blocks.9:1 --savedir /nonexistent/x") == 1);
    HAS("transformer_blocks.9");
}

int main(void) {
    RUN(two_sources_one_checkpoint);
    RUN(resume);
    RUN(resume_exact);
    RUN(usage_errors);
    free(test_sh_out);
    return test_summary();
}
