/* The SAE commands end to end through the binary: synth -> train -> eval ->
 * encode -> decode -> surgery, --help, usage errors, and bad input (clear
 * message, exit 1, no output file). */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "saeflow/common.h"
#include "saeflow/safetensors.h"
#include "test.h"

static char out_buf[1 << 16];

/* Runs `SF_EXE args` with stderr merged; returns the exit code, output in out_buf. */
static int run(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", SF_EXE, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out_buf, 1, sizeof out_buf - 1, p);
    out_buf[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

#define HAS(s) CHECK_MSG(strstr(out_buf, (s)) != NULL, "output lacks \"%s\":\n%s", (s), out_buf)

TEST(help_each) {
    const char *cmds[] = {"train", "encode", "decode", "surgery", "synth", "eval"};
    char a[256];
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        snprintf(a, sizeof a, "%s --help", cmds[i]);
        CHECK(run(a) == 0);
        HAS("usage: saeflow");
    }
    CHECK(run("train --help") == 0);
    const char *flags[] = {"--features",   "--expansion",  "--k",         "--lr",
                           "--beta1",      "--beta2",      "--wd",        "--lr_warmup_steps",
                           "--auxk",       "--aux_k",      "--bodycount", "--batch_size",
                           "--num_epochs", "--tensorpath", "--tensorkey", "--savedir",
                           "--name",       "--normalise",  "--seed",      "--threads",
                           "--save_every"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        HAS(flags[i]);
    CHECK(run("help") == 0);
    HAS("train");
    HAS("surgery");
}

TEST(pipeline) {
    const char *dir = test_tmpdir("cli_sae");
    char a[4096], p[4096];
    snprintf(a, sizeof a,
             "synth --out %s/s.safetensors --d 32 --n_true 64 --samples 4096 --active 3 --seed 1",
             dir);
    CHECK(run(a) == 0);
    HAS("'activations' [4096, 32]");
    snprintf(a, sizeof a,
             "train --tensorpath %s/s.safetensors --k 3 --expansion 4 --lr 2e-3 --batch_size 128 "
             "--num_epochs 12 --lr_warmup_steps 20 --savedir %s/ck --name m --threads 2 --seed 3",
             dir, dir);
    CHECK(run(a) == 0);
    HAS("trained 384 steps");
    HAS("checkpoint:");
    snprintf(p, sizeof p, "%s/ck/m/config.json", dir);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/ck/m/model.safetensors", dir);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/ck/m/metrics.jsonl", dir);
    CHECK(exists(p));
    snprintf(a, sizeof a,
             "eval --checkpoint %s/ck/m --tensorpath %s/s.safetensors --dictionary "
             "%s/s.safetensors --json",
             dir, dir, dir);
    CHECK(run(a) == 0);
    HAS("\"mmcs\"");
    double mmcs = 0;
    const char *m = strstr(out_buf, "\"mmcs\": ");
    if (m) mmcs = atof(m + 8);
    CHECK_MSG(mmcs >= 0.9, "mmcs %.4f", mmcs);
    /* comma-separated files, as train takes them: the same file twice */
    snprintf(a, sizeof a,
             "eval --checkpoint %s/ck/m --tensorpath %s/s.safetensors,%s/s.safetensors --json", dir,
             dir, dir);
    CHECK(run(a) == 0);
    HAS("\"rows\": 8192");
    snprintf(a, sizeof a,
             "encode --checkpoint %s/ck/m --input %s/s.safetensors --out %s/codes.safetensors", dir,
             dir, dir);
    CHECK(run(a) == 0);
    HAS("encoded 4096 rows");
    snprintf(a, sizeof a,
             "decode --checkpoint %s/ck/m --input %s/codes.safetensors --out %s/rec.safetensors",
             dir, dir, dir);
    CHECK(run(a) == 0);
    HAS("decoded 4096 rows");
    snprintf(a, sizeof a,
             "surgery --checkpoint %s/ck/m --input %s/s.safetensors --feature 5 --strength 42 "
             "--out %s/steer.safetensors",
             dir, dir, dir);
    CHECK(run(a) == 0);
    HAS("steered 4096 rows");
    /* same seed, same threads -> identical checkpoint bytes */
    snprintf(a, sizeof a,
             "train --tensorpath %s/s.safetensors --k 3 --expansion 4 --lr 2e-3 --batch_size 128 "
             "--num_epochs 12 --lr_warmup_steps 20 --savedir %s/ck --name m2 --threads 2 --seed 3 "
             "--quiet",
             dir, dir);
    CHECK(run(a) == 0);
    snprintf(a, sizeof a, "cmp -s %s/ck/m/model.safetensors %s/ck/m2/model.safetensors", dir, dir);
    CHECK(system(a) == 0);
    /* checkpoints along the way (--save_every) leave training untouched, also
     * with --normalize_input, whose scale is folded into the saved weights */
    for (int norm = 0; norm < 2; norm++)
        for (int every = 0; every < 2; every++) {
            snprintf(a, sizeof a,
                     "train --tensorpath %s/s.safetensors --k 3 --expansion 4 --lr 2e-3 "
                     "--batch_size 128 --num_epochs 2 --savedir %s/ck --name e%d%d --threads 2 "
                     "--seed 3 --quiet%s%s",
                     dir, dir, norm, every, norm ? " --normalize_input" : "",
                     every ? " --save_every 7" : "");
            CHECK(run(a) == 0);
        }
    for (int norm = 0; norm < 2; norm++) {
        snprintf(a, sizeof a, "cmp -s %s/ck/e%d0/model.safetensors %s/ck/e%d1/model.safetensors",
                 dir, norm, dir, norm);
        CHECK(system(a) == 0);
    }
    /* half-precision checkpoints: from train and from convert; both encode */
    snprintf(a, sizeof a,
             "train --tensorpath %s/s.safetensors --k 3 --expansion 4 --batch_size 128 "
             "--num_epochs 1 --savedir %s/ck --name h --threads 2 --quiet --save_dtype bf16",
             dir, dir);
    CHECK(run(a) == 0);
    snprintf(a, sizeof a,
             "convert --checkpoint %s/ck/m --out %s/ck/m16 --to saelens --save_dtype f16", dir,
             dir);
    CHECK(run(a) == 0);
    const char *half_dirs[2] = {"h", "m16"};
    for (int i = 0; i < 2; i++) {
        snprintf(
            a, sizeof a,
            "encode --checkpoint %s/ck/%s --input %s/s.safetensors --out %s/codes%d.safetensors",
            dir, half_dirs[i], dir, dir, i);
        CHECK(run(a) == 0);
        HAS("encoded 4096 rows");
    }
    snprintf(p, sizeof p, "%s/ck/h/model.safetensors", dir);
    sf_st f;
    CHECK(sf_st_open(&f, p) == 0);
    const sf_tensor_info *ew = sf_st_find(&f, "encoder.weight");
    CHECK(ew && ew->dtype == SF_DT_BF16);
    sf_st_close(&f);
    snprintf(a, sizeof a, "convert --checkpoint %s/ck/m --out %s/ck/bad --to seed --save_dtype q4",
             dir, dir);
    CHECK(run(a) == 2);
    HAS("--save_dtype expects f32, bf16 or f16");
}

TEST(errors) {
    const char *dir = test_tmpdir("cli_sae_err");
    char a[4096], p[4096];
    CHECK(run("train") == 2);
    HAS("--tensorpath is required");
    CHECK(run("train --tensorpath x --k abc") == 2);
    HAS("--k expects an integer");
    CHECK(run("train --tensorpath x --bogus") == 2);
    CHECK(run("encode --checkpoint x") == 2);
    CHECK(run("train --tensorpath /nonexistent.safetensors") == 1);
    HAS("saeflow train: /nonexistent.safetensors");
    /* data: 16 wide, one NaN */
    snprintf(a, sizeof a, "synth --out %s/s16.safetensors --d 16 --n_true 32 --samples 512", dir);
    CHECK(run(a) == 0);
    snprintf(a, sizeof a, "synth --out %s/s8.safetensors --d 8 --n_true 16 --samples 256", dir);
    CHECK(run(a) == 0);
    snprintf(a, sizeof a, "train --tensorpath %s/s16.safetensors --tensorkey nope --savedir %s/ck",
             dir, dir);
    CHECK(run(a) == 1);
    HAS("no tensor 'nope'");
    snprintf(a, sizeof a, "train --tensorpath %s/s16.safetensors --features 32 --savedir %s/ck",
             dir, dir);
    CHECK(run(a) == 1);
    HAS("--features 32 does not match");
    snprintf(a, sizeof a, "train --tensorpath %s/s16.safetensors,%s/s8.safetensors --savedir %s/ck",
             dir, dir, dir);
    CHECK(run(a) == 1);
    HAS("differs");
    snprintf(p, sizeof p, "%s/ck", dir);
    CHECK(!exists(p));
    /* a checkpoint for 16-wide data, then 8-wide data through it */
    snprintf(a, sizeof a,
             "train --tensorpath %s/s16.safetensors --k 2 --expansion 2 --batch_size 64 "
             "--num_epochs 1 --savedir %s/ck --name m --quiet",
             dir, dir);
    CHECK(run(a) == 0);
    snprintf(a, sizeof a,
             "encode --checkpoint %s/ck/m --input %s/s8.safetensors --out %s/c.safetensors", dir,
             dir, dir);
    CHECK(run(a) == 1);
    HAS("width 8 but the checkpoint");
    snprintf(p, sizeof p, "%s/c.safetensors", dir);
    CHECK(!exists(p));
    snprintf(a, sizeof a, "eval --checkpoint %s/ck/m --tensorpath %s/s8.safetensors", dir, dir);
    CHECK(run(a) == 1);
    HAS("does not match");
    snprintf(a, sizeof a,
             "surgery --checkpoint %s/ck/m --input %s/s16.safetensors --feature 32 --strength 1 "
             "--out %s/o.safetensors",
             dir, dir, dir);
    CHECK(run(a) == 2);
    HAS("--feature 32 is outside [0, 32)");
    /* truncated data file */
    snprintf(a, sizeof a, "head -c 1000 %s/s16.safetensors > %s/t.safetensors", dir, dir);
    CHECK(system(a) == 0);
    snprintf(a, sizeof a,
             "encode --checkpoint %s/ck/m --input %s/t.safetensors --out %s/c.safetensors", dir,
             dir, dir);
    CHECK(run(a) == 1);
    HAS("t.safetensors");
    CHECK(!exists(p));
    /* decode: CSR indices out of range are caught */
    snprintf(a, sizeof a,
             "decode --checkpoint %s/ck/m --input %s/s16.safetensors --out %s/d.safetensors", dir,
             dir, dir);
    CHECK(run(a) == 1);
    HAS("no CSR tensors");
}

/* Big enough for the parallel path (B n d >= 2^26), with AuxK and
 * --normalise active: 1 and 2 threads give the same bytes. */
TEST(thread_count_independent) {
    const char *dir = test_tmpdir("cli_sae_threads");
    char a[4096];
    snprintf(a, sizeof a, "synth --out %s/s.safetensors --d 256 --n_true 512 --samples 4096", dir);
    CHECK(run(a) == 0);
    for (int th = 1; th <= 2; th++) {
        snprintf(a, sizeof a,
                 "train --tensorpath %s/s.safetensors --k 16 --expansion 8 --batch_size 512 "
                 "--num_epochs 2 --lr 1e-3 --bodycount 1024 --aux_k 64 --normalise --savedir %s "
                 "--name t%d --threads %d --quiet",
                 dir, dir, th, th);
        CHECK(run(a) == 0);
    }
    snprintf(a, sizeof a, "cmp -s %s/t1/model.safetensors %s/t2/model.safetensors", dir, dir);
    CHECK(system(a) == 0);
}

int main(void) {
    RUN(help_each);
    RUN(pipeline);
    RUN(errors);
    RUN(thread_count_independent);
    return test_summary();
}
