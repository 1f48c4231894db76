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

static char out[1 << 16];

static int sh(const char *fmt, ...) SF_PRINTF(1, 2);
static int sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define MPIRUN SF_MPIEXEC " --oversubscribe --allow-run-as-root -np"
#define ARGS                                                                                       \
    "--expansion 4 --k 8 --batch_size 64 --num_epochs 3 --lr 1e-3 --lr_warmup_steps 16 "           \
    "--bodycount 128 --aux_k 16 --threads 1 --quiet --name r"

/* max |a - b| over every tensor of two checkpoints; -1 if they do not match up */
static double max_diff(const char *da, const char *db, double *maxabs) {
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/r/model.safetensors", da);
    snprintf(pb, sizeof pb, "%s/r/model.safetensors", db);
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

static int same_bytes(const char *pa, const char *pb) {
    return sh("cmp -s '%s' '%s'", pa, pb) == 0;
}

TEST(train_agrees_with_one_process) {
    const char *T = test_tmpdir("mpi_train");
    CHECK(sh("'%s' synth --out %s/s.st --d 32 --n_true 128 --samples 8192", SF_EXE, T) == 0);
    int rc = sh("'%s' train --tensorpath %s/s.st " ARGS " --savedir %s/one", SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", out);
    for (int rep = 0; rep < 2; rep++) {
        rc = sh(MPIRUN " 2 '%s' train --tensorpath %s/s.st " ARGS " --savedir %s/two%d", SF_EXE, T,
                T, rep);
        CHECK_MSG(rc == 0, "%s", out);
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
    CHECK(sh("grep -vc '\"auxk\": 0,' '%s'", m1) == 0 && atoi(out) > 0);
    /* the same steps are logged, once (rank 0 alone writes) */
    CHECK(sh("wc -l < '%s'", m2) == 0 && atoi(out) == 384);
    CHECK(sh("ls -A '%s/two0/r'", T) == 0 && !strstr(out, "tmp"));
    /* fixed R: bit-identical */
    snprintf(c, sizeof c, "%s/two1/r/model.safetensors", T);
    snprintf(m1, sizeof m1, "%s/two0/r/model.safetensors", T);
    CHECK(same_bytes(m1, c));
}

TEST(uneven_batch_refused) {
    const char *T = test_tmpdir("mpi_refuse");
    CHECK(sh("'%s' synth --out %s/s.st --d 16 --n_true 32 --samples 512", SF_EXE, T) == 0);
    int rc =
        sh(MPIRUN " 3 '%s' train --tensorpath %s/s.st " ARGS " --savedir %s/three", SF_EXE, T, T);
    CHECK(rc != 0);
    CHECK_MSG(strstr(out, "not divisible by the 3 MPI ranks") != NULL, "%s", out);
    rc = sh(MPIRUN " 2 '%s' train --tensorpath %s/s.st --arch standard " ARGS " --savedir %s/std",
            SF_EXE, T, T);
    CHECK(rc != 0);
    CHECK_MSG(strstr(out, "only the topk architecture") != NULL, "%s", out);
    /* other commands are refused on several ranks rather than run R times */
    rc = sh(MPIRUN " 2 '%s' synth --out %s/x.st", SF_EXE, T);
    CHECK(rc != 0 && strstr(out, "only train, encode, topk and extract run under MPI"));
}

int main(void) {
    /* Open MPI refuses root without these (CI containers run as root) */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    RUN(train_agrees_with_one_process);
    RUN(uneven_batch_refused);
    return test_summary();
}
