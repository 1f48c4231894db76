/* encode, topk and extract under `mpirun -np R` (built with -DSAEFLOW_MPI=ON
 * only): the rows are split across ranks in the chunks one process makes, so
 * the output files are the same bytes as one process's for R = 2 and 3; a
 * rank that fails stops every rank, with a message naming it, and nothing is
 * written. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "saeflow/common.h"
#include "test.h"

#define MPIRUN SF_MPIEXEC " --oversubscribe --allow-run-as-root -np"
#define FIX SF_SOURCE_DIR "/fixtures/"

static const char *T;

/* Runs `saeflow ARGS --out DIR/NAME1.st` alone, then under 2 and 3 ranks
 * (NAME2.st, NAME3.st), and checks the three files are the same bytes. */
static void same_for_any_r(const char *name, const char *args) {
    int rc = test_sh("'%s' %s --out %s/%s1.st", SF_EXE, args, T, name);
    CHECK_MSG(rc == 0, "%s: %s", name, test_sh_out);
    for (int r = 2; r <= 3; r++) {
        rc = test_sh(MPIRUN " %d '%s' %s --out %s/%s%d.st", r, SF_EXE, args, T, name, r);
        CHECK_MSG(rc == 0, "%s -np %d: %s", name, r, test_sh_out);
        char a[4096], b[4096];
        snprintf(a, sizeof a, "%s/%s1.st", T, name);
        snprintf(b, sizeof b, "%s/%s%d.st", T, name, r);
        CHECK_MSG(test_same_file(a, b), "%s: 1 process and %d ranks differ", name, r);
    }
}

TEST(encode_and_topk_on_files) {
    /* 3000 rows: 12 chunks of 256 (the last short) over 2 or 3 ranks */
    CHECK(test_sh("'%s' synth --out %s/s.st --d 32 --n_true 128 --samples 3000", SF_EXE, T) == 0);
    int rc = test_sh("'%s' train --tensorpath %s/s.st --expansion 4 --k 8 --batch_size 256 "
                     "--num_epochs 2 --quiet --savedir %s --name sae",
                     SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    char args[4096];
    snprintf(args, sizeof args, "encode --checkpoint %s/sae --input %s/s.st --batch 256", T, T);
    same_for_any_r("enc", args);
    snprintf(args, sizeof args, "topk --checkpoint %s/sae --acts %s/s.st --batch 256 -N 8 --quiet",
             T, T);
    same_for_any_r("topk", args);
}

TEST(extract_and_topk_through_clip) {
    char args[4096];
    /* 384 images in shards of 50: 8 parts over 2 or 3 ranks */
    snprintf(args, sizeof args,
             "extract --model " FIX "clip/e2e --dataset folder:" FIX
             "analysis/shapes --text none --shard_rows 50 --batch_size 16");
    same_for_any_r("ext", args);
    int rc = test_sh("'%s' train --tensorpath %s/ext1.st --tensorkey vision --pages 64 --k 4 "
                     "--num_epochs 2 --quiet --savedir %s --name clipsae",
                     SF_EXE, T, T);
    CHECK_MSG(rc == 0, "%s", test_sh_out);
    /* every patch token (T = 17): chunks of 7 groups of 2 images */
    snprintf(args, sizeof args,
             "topk --checkpoint %s/clipsae --model " FIX "clip/e2e --dataset folder:" FIX
             "analysis/shapes --tokens all --clip-batch 2 --limit 60 -N 4 --quiet",
             T);
    same_for_any_r("tok", args);
}

/* FLUX activations sampled on the fly (tiny FLUX fixture): 5 prompts in
 * parts of 4 (two windows of 2 prompts), 2 parts over 2 or 3 ranks. */
TEST(extract_flux) {
    same_for_any_r("flux",
                   "extract --source flux --model " FIX "flux/a --prompts " FIX
                   "flux_source/prompts.safetensors --height 64 --width 32 --prompt_batch 2 "
                   "--tokens_per_image 3 --shuffle 2 --seed 3 --shard_rows 4 --threads 1 "
                   "--hook transformer_blocks.0:1 --hook single_transformer_blocks.1");
}

TEST(failing_rank_stops_all) {
    /* MPMD: rank 1 is given an input that does not exist. With one chunk
     * (--batch 4096 > 3000 rows) rank 0 needs nothing from rank 1 and must
     * still not write; with 12 chunks it waits for rank 1's. */
    for (int batch = 256; batch <= 4096; batch *= 16) {
        time_t t0 = time(NULL);
        int rc =
            test_sh("mkdir -p %s/f && " SF_MPIEXEC
                    " --oversubscribe --allow-run-as-root -np 1 '%s' encode --checkpoint %s/sae "
                    "--input %s/s.st --batch %d --out %s/f/bad.st : -np 1 '%s' encode "
                    "--checkpoint %s/sae --input %s/nope.st --batch %d --out %s/f/bad.st",
                    T, SF_EXE, T, T, batch, T, SF_EXE, T, T, batch, T);
        CHECK(rc != 0);
        CHECK_MSG(strstr(test_sh_out, "nope.st") && strstr(test_sh_out, "rank 1 of 2"), "%s",
                  test_sh_out);
        CHECK_MSG(time(NULL) - t0 < 30, "took %lld s", (long long)(time(NULL) - t0));
        /* nothing written, not even a temporary */
        CHECK(test_sh("ls -A %s/f", T) == 0);
        CHECK_MSG(test_sh_out[0] == 0, "batch %d left: %s", batch, test_sh_out);
    }
    /* other commands are refused on several ranks rather than run R times */
    int rc = test_sh(MPIRUN " 2 '%s' synth --out %s/x.st", SF_EXE, T);
    CHECK(rc != 0 && strstr(test_sh_out, "only train, encode, topk and extract run under MPI"));
}

int main(void) {
    /* Open MPI refuses root without these (CI containers run as root) */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    T = test_tmpdir("mpi_rows");
    RUN(encode_and_topk_on_files);
    RUN(extract_and_topk_through_clip);
    RUN(extract_flux);
    RUN(failing_rank_stops_all);
    free(test_sh_out);
    return test_summary();
}
