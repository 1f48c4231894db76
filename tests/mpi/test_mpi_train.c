/* saeflow train under `mpirun -np R` (built with -DSAEFLOW_MPI=ON only):
 * data-parallel TopK training (with AuxK active) agrees with one process on
 * the same global batch, is bit-deterministic for a fixed R, and a batch that
 * does not split evenly is refused on every rank.
 *
 * Tolerance, derived (worst case, no TopK ties): the only difference between
 * the runs is the order of fp32 additions in the gradient (each rank sums its
 * B/R rows, then the ranks' sums are added), so a gradient element differs by
 * at most the classical summation bound gamma_B = B u relative (u = 2^-24).
 * AdamW's normalised update m / sqrt(v) is scale-free, so a relative gradient
 * error eps moves it by at most ~2 eps: <= 2 lr B u per step. In addition the
 * parameters' own fp32 rounding can differ by one ulp of |p| <= 1 per step.
 * Over T steps: |dp| <= T (2 lr B u + 2^-23). For T = 384, lr = 1e-3, B = 64:
 * 384 * (7.6e-9 + 1.2e-7) = 4.9e-5. Measured: ~6e-8 (a couple of ulps). A
 * TopK selection flip (a near tie at the k-th value) would break the bound;
 * the synthetic data has none at these seeds, and it would show as a
 * difference of order lr, not ulps. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "saeflow/common.h"
#include "saeflow/safetensors.h"
#include "test.h"

#define MPIRUN SF_MPIEXEC " --oversubscribe --allow-run-as-root -np"
#define ARGS                                                                                       \
    "--expansion 4 --k 8 --batch_size 64 --num_epochs 3 --lr 1e-3 --lr_warmup_steps 16 "           \
    "--bodycount 128 --aux_k 16 --threads 1 --quiet --name r"

/* max |a - b| over every tensor of two checkpoints; -1 if they do not match up */
static double max_diff_of(const char *da, const char *db, const char *name, double *maxabs) {
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s/model.safetensors", da, name);
    snprintf(pb, sizeof pb, "%s/%s/model.safetensors", db, name);
    sf_st a, b;
    if (sf_st_open(&a, pa)) return -1;
    if (sf_st_open(&b, pb)) {
        sf_st_close(&a);
        return -1;
    }
    double md = a.n_tensors == b.n_tensors && a.n_tensors > 0 ? 0 : -1;
    *maxabs = 0;
    for (int i = 0; i < a.n_tensors && md >= 0; i++) {
        const sf_tensor_info *ta = &a.tensors[i], *tb = sf_st_find(&b, ta->name);
        if (!tb || ta->dtype != SF_DT_F32 || tb->nbytes != ta->nbytes) {
            md = -1;
            break;
        }
        const int64_t N = sf_tensor_numel(ta);
        for (int64_t j = 0; j < N; j++) {
            float x, y;
            memcpy(&x, (const char *)ta->data + 4 * j, 4);
            memcpy(&y, (const char *)tb->data + 4 * j, 4);
            double dd = fabs((double)x - y);
            if (!(dd <= md)) md = dd; /* NaN propagates as a failure below */
            if (fabs(x) > *maxabs) *maxabs = fabs(x);
        }
    }
    sf_st_close(&a);
    sf_st_close(&b);
    return md;
}

static double max_diff(const char *da, const char *db, double *maxabs) {
    return max_diff_of(da, db, "r", maxabs);
}

static int same_bytes(const char *pa, const char *pb) {
    return test_sh("cmp -s '%s' '%s'", pa, pb) == 0;
}

TEST(train_agrees_with_one_process) {
    const char *T = test_tmpdir("mpi_train");
    CHECK(test_sh("'%s' synth --out %s/s.st --d 32 --n_true 128 --samples 8192", SF_EXE, T) == 0);
    int rc = test_sh("'%s' train --tensorpath %s/s.st " ARGS " --savedir %s/one", SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    for (int rep = 0; rep < 2; rep++) {
        rc = test_sh(MPIRUN " 2 '%s' train --tensorpath %s/s.st " ARGS " --savedir %s/two%d",
                     SF_EXE, T, T, rep);
        CHECK_MSG(rc == 0, "%s", test_sh_out);
    }
    double maxabs = 0, md;
    char one[2048], two[2048];
    snprintf(one, sizeof one, "%s/one", T);
    snprintf(two, sizeof two, "%s/two0", T);
    md = max_diff(one, two, &maxabs);
    const double steps = 384, lr = 1e-3, B = 64, u = 0x1p-24;
    const double tol = steps * (2 * lr * B * u + 0x1p-23);
    fprintf(stderr, "max |1 proc - 2 ranks| = %.3g (|p| <= %.3g, bound %.3g)\n", md, maxabs, tol);
    CHECK(maxabs <= 1.0); /* the ulp term of the bound assumes |p| <= 1 */
    CHECK_MSG(md >= 0 && md <= tol, "max diff %g, bound %g", md, tol);
    /* AuxK was active: the run had dead latents */
    char m1[2400], m2[2400], c[2400];
    snprintf(m1, sizeof m1, "%s/one/r/metrics.jsonl", T);
    snprintf(m2, sizeof m2, "%s/two0/r/metrics.jsonl", T);
    CHECK(test_sh("grep -vc '\"auxk\": 0,' '%s'", m1) == 0 && atoi(test_sh_out) > 0);
    /* the same steps are logged, once (rank 0 alone writes) */
    CHECK(test_sh("wc -l < '%s'", m2) == 0 && atoi(test_sh_out) == 384);
    CHECK(test_sh("ls -A '%s/two0/r'", T) == 0 && !strstr(test_sh_out, "tmp"));
    /* fixed R: bit-identical */
    snprintf(c, sizeof c, "%s/two1/r/model.safetensors", T);
    snprintf(m1, sizeof m1, "%s/two0/r/model.safetensors", T);
    CHECK(same_bytes(m1, c));
}

TEST(uneven_batch_refused) {
    const char *T = test_tmpdir("mpi_refuse");
    CHECK(test_sh("'%s' synth --out %s/s.st --d 16 --n_true 32 --samples 512", SF_EXE, T) == 0);
    int rc = test_sh(MPIRUN " 3 '%s' train --tensorpath %s/s.st " ARGS " --savedir %s/three",
                     SF_EXE, T, T);
    CHECK(rc != 0);
    CHECK_MSG(strstr(test_sh_out, "not divisible by the 3 MPI ranks") != NULL, "%s", test_sh_out);
    rc = test_sh(MPIRUN
                 " 2 '%s' train --tensorpath %s/s.st --resample_every 8 --resample_pool 0 " ARGS
                 " --savedir %s/rs",
                 SF_EXE, T, T);
    CHECK(rc != 0);
    CHECK_MSG(strstr(test_sh_out, "needs a pool") != NULL, "%s", test_sh_out);
    /* other commands are refused on several ranks rather than run R times */
    rc = test_sh(MPIRUN " 2 '%s' synth --out %s/x.st", SF_EXE, T);
    CHECK(rc != 0 && strstr(test_sh_out, "only train, encode, topk and extract run under MPI"));
}

/* Every architecture data-parallel on 2 and 3 ranks against one process,
 * 340 steps of a global batch of 96 (divisible by 2 and 3), the tolerance
 * derived above with the ulp term for the largest parameter P (JumpReLU's
 * log thresholds reach |p| ~ 3): T (2 lr B u + max(1, P) 2^-23), 4.4e-5 for
 * P <= 1. What
 * the ranks must agree on besides the summed gradient is computed from
 * globally reduced quantities (docs/mpi.md): BatchTopK's threshold is the
 * k B-th largest of all ranks' candidates (exactly the one process's),
 * AuxK's normaliser and ghost grads' factor are sums over ranks, the
 * dead-latent counters count the OR of the firing flags. A selection flip
 * (a pre-activation within ulps of a TopK / BatchTopK cut, of 0 for ReLU, or
 * of a JumpReLU threshold) would break the bound; none happens here. */
#define ARCH_ARGS                                                                                  \
    "--expansion 4 --batch_size 96 --num_epochs 4 --lr 1e-3 --lr_warmup_steps 16 "                 \
    "--lmbda_warmup_steps 16 --bodycount 192 --aux_k 16 --threads 1 --quiet"
static const char *ARCHS[] = {"topk --k 6",
                              "standard --lmbda 0.3 --ghost_grads",
                              "gated --lmbda 1",
                              "jumprelu --lmbda 0.1 --jumpthreshold 0.05 --bandwidth 0.05",
                              "batchtopk --k 6",
                              "matryoshka --k 6 --groups 16,16,32,rest",
                              "matryoshka --k 6 --matryoshka_base batchtopk",
                              "topk --k 6 --resample_every 50 --resample_pool 1024"};
#define N_ARCHS ((int)(sizeof ARCHS / sizeof ARCHS[0]))

TEST(every_arch_agrees) {
    const char *T = test_tmpdir("mpi_arch");
    CHECK(test_sh("'%s' synth --out %s/s.st --d 32 --n_true 128 --samples 8192", SF_EXE, T) == 0);
    const double steps = 340, lr = 1e-3, B = 96, u = 0x1p-24;
    for (int i = 0; i < N_ARCHS; i++) {
        int rc = test_sh("'%s' train --tensorpath %s/s.st " ARCH_ARGS " --arch %s --savedir %s/one "
                         "--name a%d",
                         SF_EXE, T, ARCHS[i], T, i);
        CHECK_MSG(rc == 0, "%s: %s", ARCHS[i], test_sh_out);
        for (int R = 2; R <= 3; R++) {
            rc = test_sh(MPIRUN " %d '%s' train --tensorpath %s/s.st " ARCH_ARGS
                                " --arch %s --savedir "
                                "%s/np%d --name a%d",
                         R, SF_EXE, T, ARCHS[i], T, R, i);
            CHECK_MSG(rc == 0, "%s -np %d: %s", ARCHS[i], R, test_sh_out);
            char one[2048], many[2048], name[16];
            snprintf(one, sizeof one, "%s/one", T);
            snprintf(many, sizeof many, "%s/np%d", T, R);
            snprintf(name, sizeof name, "a%d", i);
            double maxabs = 0, md = max_diff_of(one, many, name, &maxabs);
            fprintf(stderr, "%-58s -np %d: max |diff| %.3g (|p| <= %.3g)\n", ARCHS[i], R, md,
                    maxabs);
            const double bound = steps * (2 * lr * B * u + (maxabs > 1 ? maxabs : 1) * 0x1p-23);
            CHECK_MSG(md >= 0 && md <= bound, "%s -np %d: max diff %g, bound %g", ARCHS[i], R, md,
                      bound);
        }
    }
}

/* Faults and resume: a rank killed by a signal ends the job; a rank that
 * fails (its rows unreadable: the SAEFLOW_TEST_FAIL hook) stops every rank at
 * the step boundary with one message naming it; neither leaves a
 * half-written checkpoint, and --resume continues from the last one with the
 * same R (bit-identical to an uninterrupted run) or another R (2 -> 3 and
 * 3 -> 1; within the tolerance above against one process; |p| < 1 here). */
TEST(faults_and_resume) {
    const char *T = test_tmpdir("mpi_fault");
    CHECK(test_sh("'%s' synth --out %s/s.st --d 32 --n_true 128 --samples 8192", SF_EXE, T) == 0);
#define F_ARGS "--tensorpath %s/s.st " ARCH_ARGS " --arch batchtopk --k 6 --save_every 40 --name b"
    int rc = test_sh(MPIRUN " 2 '%s' train " F_ARGS " --savedir %s/ref2", SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    rc = test_sh("'%s' train " F_ARGS " --savedir %s/ref1", SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    /* rank 1 killed after step 100 (checkpoint at 80) */
    double t0 = sf_now();
    rc = test_sh("SAEFLOW_TEST_KILL=1:100 " MPIRUN " 2 '%s' train " F_ARGS " --savedir %s/kill",
                 SF_EXE, T, T);
    double el = sf_now() - t0;
    fprintf(stderr, "rank 1 killed: job ended in %.1f s, exit %d\n", el, rc);
    CHECK(rc != 0 && el < 60);
    CHECK(test_sh("ls -A '%s/kill/b'", T) == 0);
    CHECK_MSG(!strstr(test_sh_out, ".tmp."), "left behind: %s", test_sh_out);
    CHECK(test_sh("cp -r '%s/kill' '%s/kill3'", T, T) == 0);
    /* same R: equals the uninterrupted run */
    rc = test_sh(MPIRUN " 2 '%s' train " F_ARGS " --savedir %s/kill --resume", SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    char a[2400], b[2400];
    const char *files[3] = {"model.safetensors", "metrics.jsonl", "config.json"};
    for (int f = 0; f < 3; f++) {
        snprintf(a, sizeof a, "%s/ref2/b/%s", T, files[f]);
        snprintf(b, sizeof b, "%s/kill/b/%s", T, files[f]);
        CHECK_MSG(same_bytes(a, b), "%s differs after a resume on 2 ranks", files[f]);
    }
    /* another R: 3 ranks continue the 2-rank run, against one process */
    rc = test_sh(MPIRUN " 3 '%s' train " F_ARGS " --savedir %s/kill3 --resume", SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    snprintf(a, sizeof a, "%s/ref1", T);
    snprintf(b, sizeof b, "%s/kill3", T);
    double maxabs = 0, md = max_diff_of(a, b, "b", &maxabs);
    const double tol = 340 * (2 * 1e-3 * 96 * 0x1p-24 + 0x1p-23);
    fprintf(stderr, "2 ranks then 3 vs 1 process: max |diff| %.3g (bound %.3g)\n", md, tol);
    CHECK_MSG(md >= 0 && md <= tol, "max diff %g, bound %g", md, tol);
    snprintf(a, sizeof a, "%s/ref1/b/metrics.jsonl", T);
    CHECK(test_sh("wc -l < '%s/kill3/b/metrics.jsonl'", T) == 0 && atoi(test_sh_out) == 340);
    /* rank 2 of 3 fails at step 50: all stop, one message naming it */
    t0 = sf_now();
    rc = test_sh("SAEFLOW_TEST_FAIL=2:50 " MPIRUN " 3 '%s' train " F_ARGS " --savedir %s/fail",
                 SF_EXE, T, T);
    el = sf_now() - t0;
    fprintf(stderr, "rank 2 failed: job ended in %.1f s, exit %d\n", el, rc);
    CHECK(rc == 1 && el < 60);
    CHECK_MSG(strstr(test_sh_out, "saeflow train: rank 2 of 3: step 50: injected failure"), "%s",
              test_sh_out);
    const char *first = strstr(test_sh_out, "injected failure");
    CHECK_MSG(first && !strstr(first + 1, "injected failure"), "more than one message: %s",
              test_sh_out);
    CHECK(test_sh("ls -A '%s/fail/b'", T) == 0);
    CHECK_MSG(!strstr(test_sh_out, ".tmp."), "left behind: %s", test_sh_out);
    CHECK(test_sh("wc -l < '%s/fail/b/metrics.jsonl'", T) == 0 && atoi(test_sh_out) == 50);
    /* and one process continues it from its step-40 checkpoint */
    rc = test_sh("'%s' train " F_ARGS " --savedir %s/fail --resume", SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    snprintf(a, sizeof a, "%s/ref1", T);
    snprintf(b, sizeof b, "%s/fail", T);
    md = max_diff_of(a, b, "b", &maxabs);
    fprintf(stderr, "3 ranks then 1 process vs 1 process: max |diff| %.3g (bound %.3g)\n", md, tol);
    CHECK_MSG(md >= 0 && md <= tol, "max diff %g, bound %g", md, tol);
#undef F_ARGS
}

/* train --source flux under MPI: each rank samples its own prompt windows
 * (4 prompts, 32 image rows per hook); with --batch_size = R x the window's
 * rows a step's global batch is the same rows as one process's step (rank
 * r's window = the one process's (R s + r)-th), so the two agree within the
 * bound above (8 steps). A rank killed after the checkpoint at step 4 and a
 * resume on 2 ranks gives the uninterrupted bytes; on 1 process, agreement
 * within the bound. The prompts: the fixture's 5 tiled to 64. */
TEST(flux_source_data_parallel) {
    const char *T = test_tmpdir("mpi_flux");
    char pin[4096], pout[4096];
    snprintf(pin, sizeof pin, "%s/fixtures/flux_source/prompts.safetensors", SF_SOURCE_DIR);
    snprintf(pout, sizeof pout, "%s/p64.safetensors", T);
    sf_st f;
    CHECK(sf_st_open(&f, pin) == 0);
    const sf_tensor_info *pe = sf_st_find(&f, "prompt_embeds"),
                         *po = sf_st_find(&f, "pooled_prompt_embeds");
    CHECK(pe && po && pe->dtype == SF_DT_F32 && po->dtype == SF_DT_F32);
    if (!pe || !po) return;
    const int64_t P = pe->shape[0], n = 64, ep = pe->nbytes / P, pp = po->nbytes / P;
    char *E = malloc((size_t)(n * ep)), *Q = malloc((size_t)(n * pp));
    for (int64_t i = 0; i < n; i++) {
        memcpy(E + i * ep, (const char *)pe->data + (i % P) * ep, (size_t)ep);
        memcpy(Q + i * pp, (const char *)po->data + (i % P) * pp, (size_t)pp);
    }
    const int64_t se[3] = {n, pe->shape[1], pe->shape[2]}, sp[2] = {n, po->shape[1]};
    sf_st_writer *w = sf_stw_new();
    CHECK(sf_stw_add(w, "prompt_embeds", SF_DT_F32, 3, se, E) == 0);
    CHECK(sf_stw_add(w, "pooled_prompt_embeds", SF_DT_F32, 2, sp, Q) == 0);
    CHECK(sf_stw_write(w, pout) == 0);
    sf_stw_free(w);
    free(E), free(Q);
    sf_st_close(&f);
#define FX                                                                                         \
    "train --source flux --model " SF_SOURCE_DIR "/fixtures/flux/a --prompts %s --height 64 "      \
    "--width 32 --prompt_batch 2 --tokens_per_image 0 --shuffle 2 --batch_size 64 --expansion 2 "  \
    "--threads 1 --lr 1e-3 --lr_warmup_steps 2 --bodycount 64 --aux_k 4 --quiet --iters 100 "      \
    "--save_every 2 --hook transformer_blocks.0:1@arch=topk,k=3 "                                  \
    "--hook single_transformer_blocks.0:image --savedir %s/%s"
    int rc = test_sh("'%s' " FX, SF_EXE, pout, T, "one");
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    rc = test_sh(MPIRUN " 2 '%s' " FX, SF_EXE, pout, T, "two");
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    rc = test_sh("SAEFLOW_TEST_KILL=1:4 " MPIRUN " 2 '%s' " FX, SF_EXE, pout, T, "kill");
    CHECK(rc != 0);
    CHECK(test_sh("cp -r '%s/kill' '%s/kill1'", T, T) == 0);
    rc = test_sh(MPIRUN " 2 '%s' " FX " --resume", SF_EXE, pout, T, "kill");
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    rc = test_sh("'%s' " FX " --resume", SF_EXE, pout, T, "kill1");
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    const double tol = 8 * (2 * 1e-3 * 64 * 0x1p-24 + 0x1p-23);
    const char *hooks[2] = {"transformer_blocks.0.1", "single_transformer_blocks.0-image"};
    for (int i = 0; i < 2; i++) {
        char a[2400], b[2400];
        snprintf(a, sizeof a, "%s/two/%s/metrics.jsonl", T, hooks[i]);
        CHECK(test_sh("wc -l < '%s'", a) == 0 && atoi(test_sh_out) == 8);
        for (int f2 = 0; f2 < 3; f2++) {
            const char *files[3] = {"model.safetensors", "metrics.jsonl", "config.json"};
            snprintf(a, sizeof a, "%s/two/%s/%s", T, hooks[i], files[f2]);
            snprintf(b, sizeof b, "%s/kill/%s/%s", T, hooks[i], files[f2]);
            CHECK_MSG(same_bytes(a, b), "%s: resumed on 2 ranks differs", b);
        }
        snprintf(a, sizeof a, "%s/one", T);
        const char *others[2] = {"two", "kill1"};
        for (int o = 0; o < 2; o++) {
            snprintf(b, sizeof b, "%s/%s", T, others[o]);
            double maxabs = 0, md = max_diff_of(a, b, hooks[i], &maxabs);
            fprintf(stderr, "flux %s, %s vs 1 process: max |diff| %.3g (bound %.3g)\n", hooks[i],
                    others[o], md, tol);
            CHECK(maxabs <= 1.0);
            CHECK_MSG(md >= 0 && md <= tol, "%s %s: max diff %g, bound %g", hooks[i], others[o], md,
                      tol);
        }
    }
#undef FX
}

int main(void) {
    /* Open MPI refuses root without these (CI containers run as root) */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    RUN(train_agrees_with_one_process);
    RUN(uneven_batch_refused);
    RUN(every_arch_agrees);
    RUN(faults_and_resume);
    RUN(flux_source_data_parallel);
    return test_summary();
}
