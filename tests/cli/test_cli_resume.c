/* train --resume (docs/sae.md, "Resume"): a run killed (SIGKILL, through the
 * SAEFLOW_TEST_KILL hook) after its checkpoint at step S and resumed gives
 * the same model.safetensors, config.json and metrics.jsonl bytes as an
 * uninterrupted run, for every architecture and dead-latent remedy, resumed
 * on one thread or on two. Also: a kill between the trainer state and the
 * checkpoint, a half-written metrics line, a refused mismatch. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "saeflow/common.h"
#include "test.h"

/* the three outputs of two runs are byte-identical */
static int same_run(const char *T, const char *a, const char *b) {
    const char *files[] = {"model.safetensors", "config.json", "metrics.jsonl"};
    for (int i = 0; i < 3; i++)
        if (test_sh("cmp '%s/%s/%s' '%s/%s/%s'", T, a, files[i], T, b, files[i]) != 0) {
            fprintf(stderr, "%s/%s and %s/%s differ: %s", a, files[i], b, files[i], test_sh_out);
            return 0;
        }
    return 1;
}

#define BASE                                                                                       \
    "train --tensorpath %s/s.st --expansion 4 --batch_size 64 --num_epochs 3 --lr 3e-3 "           \
    "--lr_warmup_steps 40 --lmbda_warmup_steps 40 --bodycount 256 --aux_k 8 --quiet --savedir %s"

TEST(resume_equals_uninterrupted) {
    const char *T = test_tmpdir("cli_resume");
    CHECK(test_sh("'%s' synth --out %s/s.st --d 16 --n_true 48 --samples 2048 --active 3", SF_EXE,
                  T) == 0);
    /* 32 steps per epoch, 96 in all: checkpoints every 20, killed at 50 (the
     * state is at 40, metrics hold 50 lines) or at 70 (mid epoch 2) */
    const char *archs[] = {"topk --k 4",
                           "standard --lmbda 0.5",
                           "gated --lmbda 2",
                           "jumprelu --lmbda 0.3 --jumpthreshold 0.1 --bandwidth 0.05",
                           "batchtopk --k 3",
                           "matryoshka --k 3 --groups 8,8,16,rest",
                           "matryoshka --k 3 --matryoshka_base batchtopk",
                           "standard --lmbda 0.5 --ghost_grads --resample_every 30 "
                           "--resample_pool 512 --b_dec_init median --normalize_input",
                           "topk --k 4 --normalise --resample_every 25 --resample_pool 0 "
                           "--save_dtype bf16",
                           "topk --k 4"};
    /* the last through the int16 pre-filter (re-quantised on resume) */
    const int n_archs = (int)(sizeof archs / sizeof archs[0]);
    for (int i = 0; i < n_archs; i++) {
        const int kill = i % 2 ? 70 : 50, threads = i % 3 == 2 ? 2 : 1;
        const char *env = i == n_archs - 1 ? "SAEFLOW_PREFILTER=1 " : "";
        int rc = test_sh("%s'%s' " BASE " --name u%d --threads 1 --arch %s", env, SF_EXE, T, T, i,
                         archs[i]);
        CHECK_MSG(rc == 0, "%s: %s", archs[i], test_sh_out);
        rc = test_sh("%sSAEFLOW_TEST_KILL=%d '%s' " BASE
                     " --name r%d --threads 1 --save_every 20 --arch %s",
                     env, kill, SF_EXE, T, T, i, archs[i]);
        CHECK_MSG(rc != 0, "%s: the kill hook did not fire", archs[i]);
        /* the killed run kept its curves: one line per step taken */
        CHECK(test_sh("wc -l < '%s/r%d/metrics.jsonl'", T, i) == 0 && atoi(test_sh_out) == kill);
        if (i == 0) /* and a half-written line, as a kill mid-write leaves */
            CHECK(test_sh("printf '{\"step\": 51, \"ep' >> '%s/r0/metrics.jsonl'", T) == 0);
        rc = test_sh("%s'%s' " BASE " --name r%d --threads %d --save_every 20 --arch %s --resume",
                     env, SF_EXE, T, T, i, threads, archs[i]);
        CHECK_MSG(rc == 0, "%s: %s", archs[i], test_sh_out);
        char a[32], b[32];
        snprintf(a, sizeof a, "u%d", i);
        snprintf(b, sizeof b, "r%d", i);
        CHECK_MSG(same_run(T, a, b), "%s resumed (%d threads) differs", archs[i], threads);
    }
    /* killed between the trainer state (step 60) and the checkpoint (still
     * 40): the state alone carries the weights, so the resume is still exact */
    int rc = test_sh("SAEFLOW_TEST_KILL_SAVE=60 '%s' " BASE " --name k --threads 1 --save_every 20 "
                     "--arch gated --lmbda 2",
                     SF_EXE, T, T);
    CHECK(rc != 0);
    CHECK(test_sh("ls -A '%s/k'", T) == 0 && !strstr(test_sh_out, "tmp"));
    rc = test_sh("'%s' " BASE
                 " --name k --threads 1 --save_every 20 --arch gated --lmbda 2 --resume",
                 SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    CHECK(same_run(T, "u2", "k"));
    /* killed between the first state and the first checkpoint: no
     * checkpoint yet, the model is rebuilt from the flags and the state */
    rc = test_sh("SAEFLOW_TEST_KILL_SAVE=20 '%s' " BASE " --name k0 --threads 1 --save_every 20 "
                 "--arch jumprelu --lmbda 0.3 --jumpthreshold 0.1 --bandwidth 0.05",
                 SF_EXE, T, T);
    CHECK(rc != 0);
    CHECK(test_sh("ls '%s/k0/config.json'", T) != 0);
    rc = test_sh("'%s' " BASE " --name k0 --threads 1 --save_every 20 --arch jumprelu --lmbda 0.3 "
                 "--jumpthreshold 0.1 --bandwidth 0.05 --resume",
                 SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    CHECK(same_run(T, "u3", "k0"));
    /* a finished run resumed with more epochs = one longer run */
    rc = test_sh("'%s' " BASE " --name u0 --threads 1 --arch topk --k 4 --resume --num_epochs 4",
                 SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    rc = test_sh("'%s' train --tensorpath %s/s.st --expansion 4 --batch_size 64 --lr 3e-3 "
                 "--lr_warmup_steps 40 --lmbda_warmup_steps 40 --bodycount 256 --aux_k 8 --quiet "
                 "--savedir %s --name long --threads 1 --arch topk --k 4 --num_epochs 4",
                 SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    CHECK(same_run(T, "u0", "long"));
    CHECK(test_sh("wc -l < '%s/long/metrics.jsonl'", T) == 0 && atoi(test_sh_out) == 128);
    /* another batch size cannot continue the saved position */
    rc = test_sh("'%s' " BASE " --name u1 --threads 1 --arch standard --lmbda 0.5 --resume "
                 "--batch_size 32",
                 SF_EXE, T, T);
    CHECK(rc == 1);
    CHECK_MSG(strstr(test_sh_out, "other data, batch size or seed") != NULL, "%s", test_sh_out);
    /* --resume with nothing saved starts afresh */
    rc = test_sh("'%s' " BASE " --name fresh --threads 1 --arch topk --k 4 --resume --num_epochs 1",
                 SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    CHECK(test_sh("wc -l < '%s/fresh/metrics.jsonl'", T) == 0 && atoi(test_sh_out) == 32);
}

int main(void) {
    RUN(resume_equals_uninterrupted);
    return test_summary();
}
