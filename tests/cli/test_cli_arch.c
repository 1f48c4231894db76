/* saeflow train --arch ..., convert, sweep through the binary: outputs,
 * exit codes and error messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "saeflow/common.h"
#include "test.h"

static char out[1 << 16];

static int run(const char *fmt, ...) SF_PRINTF(1, 2);
#include <stdarg.h>
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

static int exists(const char *dir, const char *f) {
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, f);
    return stat(p, &st) == 0;
}

TEST(train_convert_sweep) {
    const char *T = test_tmpdir("cli_arch");
    CHECK(run("synth --out %s/syn.st --d 16 --n_true 32 --samples 2048 --active 2", T) == 0);
    const char *archs[] = {"standard --lmbda 0.5",
                           "gated --lmbda 2",
                           "jumprelu --lmbda 0.3 --jumpthreshold 0.1 --bandwidth 0.05",
                           "batchtopk --k 2",
                           "matryoshka --k 2 --groups 8,8,16,rest",
                           "matryoshka --k 2 --matryoshka_base batchtopk",
                           ("standard --lmbda 0.5 --ghost_grads --resample_every 20 --b_dec_init "
                            "median --normalize_input")};
    for (int i = 0; i < 7; i++) {
        int rc = run("train --tensorpath %s/syn.st --arch %s --expansion 4 --lr 3e-3 --batch_size "
                     "64 --num_epochs 1 "
                     "--savedir %s --name m%d --threads 1",
                     T, archs[i], T, i);
        CHECK_MSG(rc == 0, "%s: %s", archs[i], out);
        char dir[2400];
        snprintf(dir, sizeof dir, "%s/m%d", T, i);
        CHECK(exists(dir, "config.json") && exists(dir, "model.safetensors") &&
              exists(dir, "metrics.jsonl"));
        CHECK(run("eval --checkpoint %s --tensorpath %s/syn.st --dictionary %s/syn.st --json", dir,
                  T, T) == 0);
        CHECK(strstr(out, "\"mmcs\"") != NULL);
        CHECK(run("encode --checkpoint %s --input %s/syn.st --out %s/codes%d.st", dir, T, T, i) ==
              0);
        CHECK(run("convert --checkpoint %s --out %s/sl%d --to saelens", dir, T, i) == 0);
        CHECK(run("eval --checkpoint %s/sl%d --tensorpath %s/syn.st --json", T, i, T) == 0);
    }
    /* the arch is recorded, with its settings */
    char *cfg = sf_read_file(SF_BINARY_DIR "/tmp/cli_arch/m6/config.json", NULL);
    CHECK(cfg && strstr(cfg, "\"arch\"") && strstr(cfg, "\"standard\"") &&
          strstr(cfg, "geometric_median") && strstr(cfg, "input_scale") &&
          strstr(cfg, "ghost_grads"));
    free(cfg);
    cfg = sf_read_file(SF_BINARY_DIR "/tmp/cli_arch/m4/config.json", NULL);
    CHECK(cfg && strstr(cfg, "\"groups\"") && strstr(cfg, "matryoshka_base"));
    free(cfg);
    /* sparsify holds TopK only: clear error, nothing written */
    CHECK(run("convert --checkpoint %s/m1 --out %s/sp1 --to sparsify", T, T) == 1);
    CHECK(strstr(out, "TopK SAEs only") != NULL);
    CHECK(!exists(T, "sp1/cfg.json"));
    CHECK(run("convert --checkpoint %s/m4 --out %s/sp4 --to sparsify", T, T) == 0);
    CHECK(run("convert --checkpoint %s/sp4 --out %s/back4 --to seed", T, T) == 0);
    CHECK(run("sweep --tensorpath %s/syn.st --dictionary %s/syn.st --archs topk,jumprelu --ks 2,4 "
              "--lmbdas 0.1,0.5 --num_epochs 1 --out %s/sw --quiet --threads 1",
              T, T, T) == 0);
    CHECK(exists(T, "sw/sweep.tsv") && exists(T, "sw/sweep.md") && exists(T, "sw/sweep.svg"));
    char *svg = sf_read_file(SF_BINARY_DIR "/tmp/cli_arch/sw/sweep.svg", NULL);
    CHECK(svg && strstr(svg, "<svg") && strstr(svg, "jumprelu") && strstr(svg, "</svg>"));
    free(svg);
}

/* The reference's own files (config.json without "arch"): every command reads
 * them, convert writes the inferred architecture. */
TEST(reference_files_without_arch) {
    const char *T = test_tmpdir("cli_arch_ref");
    const char *names[] = {"ref_standard", "ref_gated", "ref_jumprelu", "ref_topk"};
    const char *want[] = {"\"standard\"", "\"gated\"", "\"jumprelu\"", "\"topk\""};
    for (int i = 0; i < 4; i++) {
        const char *fx = SF_SOURCE_DIR "/fixtures/formats";
        CHECK_MSG(run("encode --checkpoint %s/%s --input %s/expected.safetensors --key x --out "
                      "%s/z%d.st",
                      fx, names[i], fx, T, i) == 0,
                  "%s: %s", names[i], out);
        CHECK(run("convert --checkpoint %s/%s --out %s/sl%d --to saelens", fx, names[i], T, i) ==
              0);
        char path[2400];
        snprintf(path, sizeof path, "%s/sl%d/cfg.json", T, i);
        char *cfg = sf_read_file(path, NULL);
        CHECK_MSG(cfg && strstr(cfg, want[i]), "%s: %s", names[i], cfg ? cfg : "no cfg.json");
        free(cfg);
    }
    /* tensors of no known architecture: the error lists them */
    CHECK(run("convert --checkpoint %s/sl0 --out %s/seed0 --to seed", T, T) == 0);
    char path[2400];
    snprintf(path, sizeof path, "%s/seed0/config.json", T);
    const char *cfg = "{\"features\": 16, \"pages\": 48}\n";
    CHECK(sf_write_file_atomic(path, cfg, strlen(cfg)) == 0);
    CHECK(run("encode --checkpoint %s/seed0 --input %s/expected.safetensors --key x --out %s/zz.st",
              T, SF_SOURCE_DIR "/fixtures/formats", T) == 0);
    snprintf(path, sizeof path,
             "cp %s/fixtures/formats/saelens_topk/sae_weights.safetensors "
             "%s/seed0/model.safetensors",
             SF_SOURCE_DIR, T);
    CHECK(system(path) == 0);
    CHECK(run("encode --checkpoint %s/seed0 --input %s/expected.safetensors --key x --out %s/zz.st",
              T, SF_SOURCE_DIR "/fixtures/formats", T) == 1);
    CHECK_MSG(strstr(out, "saeflow encode:") && strstr(out, "no key 'arch'") &&
                  strstr(out, "'W_dec'"),
              "%s", out);
}

TEST(bad_arguments) {
    const char *T = test_tmpdir("cli_arch_bad");
    CHECK(run("synth --out %s/syn.st --d 8 --n_true 8 --samples 128", T) == 0);
    CHECK(run("train --tensorpath %s/syn.st --arch relu --savedir %s", T, T) == 2);
    CHECK(strstr(out, "unknown SAE architecture 'relu'") != NULL);
    CHECK(run("train --tensorpath %s/syn.st --arch topk --ghost_grads --savedir %s", T, T) == 2);
    CHECK(strstr(out, "--ghost_grads applies to --arch standard") != NULL);
    CHECK(run("train --tensorpath %s/syn.st --arch matryoshka --k 2 --expansion 2 --groups 4,4 "
              "--savedir %s",
              T, T) == 1);
    CHECK(strstr(out, "sum to 8, pages is 16") != NULL);
    CHECK(run("convert --checkpoint %s --out %s/x --to seed", T, T) == 1);
    CHECK(strstr(out, "not an SAE checkpoint") != NULL);
    CHECK(run("sweep --tensorpath %s/syn.st --archs topk --ks 2,x", T) == 2);
}

/* 1 and 2 threads give the same checkpoint bytes (shapes large enough for
 * the parallel path: B*n*d >= 2^23). */
TEST(thread_count_identity) {
    const char *T = test_tmpdir("cli_arch_threads");
    CHECK(run("synth --out %s/syn.st --d 64 --n_true 128 --samples 1024 --active 4", T) == 0);
    const char *archs[4] = {"standard --lmbda 0.3", "gated --lmbda 1.5",
                            "jumprelu --lmbda 0.2 --jumpthreshold 0.1", "batchtopk --k 4"};
    for (int i = 0; i < 4; i++) {
        for (int th = 1; th <= 2; th++)
            CHECK(run("train --tensorpath %s/syn.st --arch %s --expansion 8 --lr 3e-3 --batch_size "
                      "256 "
                      "--num_epochs 2 --savedir %s --name a%dt%d --threads %d --quiet",
                      T, archs[i], T, i, th, th) == 0);
        char p1[2400], p2[2400];
        snprintf(p1, sizeof p1, "%s/a%dt1/model.safetensors", T, i);
        snprintf(p2, sizeof p2, "%s/a%dt2/model.safetensors", T, i);
        size_t l1 = 0, l2 = 0;
        char *b1 = sf_read_file(p1, &l1), *b2 = sf_read_file(p2, &l2);
        CHECK_MSG(b1 && b2 && l1 == l2 && !memcmp(b1, b2, l1), "%s: 1 vs 2 threads differ",
                  archs[i]);
        free(b1);
        free(b2);
    }
}

int main(void) {
    RUN(thread_count_identity);
    RUN(train_convert_sweep);
    RUN(reference_files_without_arch);
    RUN(bad_arguments);
    return test_summary();
}
