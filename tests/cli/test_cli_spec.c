/* train and sweep build their models with the one library builder
 * (sf_sae_build): the same settings give the same checkpoint, bytes and
 * config. And library errors name parameters; the command adds "--". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "saeflow/common.h"
#include "test.h"

static char out[1 << 16];

static int run(const char *fmt, ...) SF_PRINTF(1, 2);
static int run(const char *fmt, ...) {
    char args[3072], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", SF_EXE, args);
    FILE *p = popen(cmd, "r");
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(sweep_save_equals_train) {
    const char *T = test_tmpdir("cli_spec");
    CHECK(run("synth --out %s/syn.st --d 16 --n_true 32 --samples 512 --active 2", T) == 0);
    /* one point per architecture family; shared flags spelt the same */
    const char *common = "--lr 3e-3 --lr_warmup_steps 4 --lmbda_warmup_steps 4 --batch_size 32 "
                         "--num_epochs 1 --seed 3 --threads 1 --bandwidth 0.01";
    struct {
        const char *sweep, *train, *name;
    } c[] = {{"--archs topk --ks 4", "--arch topk --k 4", "topk-k4-x2"},
             {"--archs matryoshka-batchtopk --ks 2",
              "--arch matryoshka --k 2 --matryoshka_base batchtopk", "matryoshka-batchtopk-k2-x2"},
             {"--archs jumprelu --lmbdas 0.3 --jumpthreshold 0.05",
              "--arch jumprelu --lmbda 0.3 --jumpthreshold 0.05", "jumprelu-l0.3-x2"},
             {"--archs gated --lmbdas 1", "--arch gated --lmbda 1", "gated-l1-x2"}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        CHECK_MSG(run("sweep --tensorpath %s/syn.st --out %s/sw %s --expansions 2 "
                      "--save_checkpoints --quiet %s",
                      T, T, c[i].sweep, common) == 0,
                  "%s", out);
        CHECK_MSG(run("train --tensorpath %s/syn.st --expansion 2 --savedir %s/tr --name %s "
                      "--quiet %s %s",
                      T, T, c[i].name, c[i].train, common) == 0,
                  "%s", out);
        char a[2048], b[2048];
        snprintf(a, sizeof a, "%s/sw/%s/model.safetensors", T, c[i].name);
        snprintf(b, sizeof b, "%s/tr/%s/model.safetensors", T, c[i].name);
        CHECK_MSG(test_same_file(a, b), "%s: weights differ", c[i].name);
        snprintf(a, sizeof a, "%s/sw/%s/config.json", T, c[i].name);
        snprintf(b, sizeof b, "%s/tr/%s/config.json", T, c[i].name);
        CHECK_MSG(test_same_file(a, b), "%s: configs differ", c[i].name);
    }
}

TEST(errors_name_flags) {
    const char *T = test_tmpdir("cli_spec_err");
    CHECK(run("synth --out %s/syn.st --d 8 --n_true 8 --samples 128", T) == 0);
    CHECK(run("train --tensorpath %s/syn.st --arch topk --jumpthreshold 0.1 --savedir %s", T, T) ==
          2);
    CHECK_MSG(strstr(out, "--jumpthreshold applies to --arch jumprelu") != NULL, "%s", out);
    CHECK(run("train --tensorpath %s/syn.st --arch matryoshka --k 2 --expansion 2 --groups 4,x "
              "--savedir %s",
              T, T) == 1);
    CHECK_MSG(strstr(out, "--groups: '4,x' is not a list of sizes") != NULL, "%s", out);
}

int main(void) {
    RUN(sweep_save_equals_train);
    RUN(errors_name_flags);
    return test_summary();
}
