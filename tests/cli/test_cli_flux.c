/* saeflow flux run end to end through the binary: hooks written under their
 * names with diffusers' values (fixtures/flux), latents packed by the CLI,
 * usage errors (exit 2) and bad input (exit 1, message, no output file). */
#include <unistd.h>

#include "saeflow/common.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define FIX SF_SOURCE_DIR "/fixtures/flux/"

static char *out_s;

static int run(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' flux %s", SF_EXE, args);
    free(out_s);
    out_s = NULL;
    return test_run(cmd, &out_s);
}

#define HAS(s) CHECK_MSG(out_s &&strstr(out_s, (s)) != NULL, "output lacks \"%s\":\n%s", (s), out_s)

/* Tensor `got` of file `path` vs tensor `want` of the fixture: same shape, <= 1e-4. */
static void same(const char *path, const char *got, const char *fixture, const char *want) {
    sf_st a, b;
    CHECK(sf_st_open(&a, path) == 0);
    CHECK(sf_st_open(&b, fixture) == 0);
    const sf_tensor_info *ta = sf_st_find(&a, got), *tb = sf_st_find(&b, want);
    CHECK_MSG(ta && tb, "%s / %s", got, want);
    if (ta && tb) {
        CHECK(ta->ndim == tb->ndim && ta->nbytes == tb->nbytes);
        if (ta->nbytes == tb->nbytes) {
            double e = test_max_rel(ta->data, tb->data, ta->nbytes / 4);
            CHECK_MSG(e <= 1e-4, "%s: rel err %.3g", got, e);
        }
    }
    sf_st_close(&a);
    sf_st_close(&b);
}

TEST(run_hooks) {
    const char *tmp = test_tmpdir("cli_flux");
    char out[2200], args[6000];
    snprintf(out, sizeof out, "%s/acts.safetensors", tmp);
    /* b: sharded diffusers folder, guidance, custom ids */
    snprintf(args, sizeof args,
             "run --model " FIX "b --inputs " FIX "b.expected.safetensors --hook "
             "transformer_blocks.1.0,single_transformer_blocks.1 --hook output --out '%s' "
             "--threads 2",
             out);
    CHECK_MSG(run(args) == 0, "%s", out_s);
    same(out, "transformer_blocks.1.0", FIX "b.expected.safetensors", "transformer_blocks.1.out.0");
    same(out, "single_transformer_blocks.1", FIX "b.expected.safetensors",
         "single_transformer_blocks.1.out");
    same(out, "output", FIX "b.expected.safetensors", "output");

    /* a as a BFL file with latents packed by the CLI (inputs without hidden_states/img_ids) */
    sf_st st;
    CHECK(sf_st_open(&st, FIX "a.expected.safetensors") == 0);
    sf_st_writer *w = sf_stw_new();
    const char *keep[] = {"latents", "encoder_hidden_states", "pooled_projections", "timestep"};
    for (size_t i = 0; i < 4; i++) {
        const sf_tensor_info *t = sf_st_find(&st, keep[i]);
        sf_stw_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    char in[2200];
    snprintf(in, sizeof in, "%s/in_a.safetensors", tmp);
    CHECK(sf_stw_write(w, in) == 0);
    sf_stw_free(w);
    sf_st_close(&st);
    snprintf(args, sizeof args,
             "run --model " FIX "a_bfl.safetensors --axes 4,6,6 --inputs '%s' --hook "
             "transformer_blocks.0-1 --hook output --out '%s'",
             in, out);
    CHECK_MSG(run(args) == 0, "%s", out_s);
    same(out, "transformer_blocks.0.1", FIX "a.expected.safetensors", "transformer_blocks.0.out.1");
    same(out, "output", FIX "a.expected.safetensors", "output");
}

TEST(errors) {
    const char *tmp = test_tmpdir("cli_flux_err");
    char out[2200], args[6000];
    snprintf(out, sizeof out, "%s/acts.safetensors", tmp);
    CHECK(run("--help") == 0);
    HAS("usage: saeflow flux run");
    CHECK(run("") == 2);
    CHECK(run("walk") == 2);
    CHECK(run("run --model x") == 2);
    HAS("required");
    snprintf(args, sizeof args,
             "run --model " FIX "b --inputs " FIX "b.expected.safetensors --hook "
             "transformer_blocks.1 --out '%s'",
             out);
    CHECK(run(args) == 2);
    HAS("two streams");
    /* block out of range, missing model, missing input tensor: exit 1, no file */
    snprintf(args, sizeof args,
             "run --model " FIX "b --inputs " FIX "b.expected.safetensors --hook "
             "transformer_blocks.7.0 --out '%s'",
             out);
    CHECK(run(args) == 1);
    HAS("2 double blocks");
    snprintf(args, sizeof args,
             "run --model " FIX "nope --inputs " FIX "b.expected.safetensors --hook output --out "
             "'%s'",
             out);
    CHECK(run(args) == 1);
    HAS("nope");
    /* a schnell-like model given b's inputs: the text width is wrong */
    snprintf(args, sizeof args,
             "run --model " FIX "a --inputs " FIX "b.expected.safetensors --hook output --out "
             "'%s'",
             out);
    CHECK(run(args) == 1);
    HAS("encoder_hidden_states");
    CHECK(!test_file_exists(out));
}

int main(void) {
    RUN(run_hooks);
    RUN(errors);
    free(out_s);
    return test_summary();
}
