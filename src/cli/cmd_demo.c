/* saeflow demo: the embedded default job. Synthesises activations from a known
 * dictionary, trains a TopK SAE on them and reports how much of the true
 * dictionary it recovered. Same as running synth, train and eval by hand. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/sae_eval.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: saeflow demo [--dir DIR] [--threads T] [--num_epochs E] [--seed S]\n"
            "\n"
            "The main job on embedded synthetic ground truth, equivalent to:\n"
            "  saeflow synth --out DIR/synth.safetensors --d 64 --n_true 256 --samples 32768 \\\n"
            "      --active 5 --alpha 0.5 --noise 0.01\n"
            "  saeflow train --tensorpath DIR/synth.safetensors --k 5 --expansion 8 --lr 2e-3 \\\n"
            "      --batch_size 256 --num_epochs 20 --lr_warmup_steps 50 --bodycount 8192 \\\n"
            "      --savedir DIR --name topk-k5-x8\n"
            "  saeflow eval --checkpoint DIR/topk-k5-x8 --tensorpath DIR/synth.safetensors \\\n"
            "      --dictionary DIR/synth.safetensors\n"
            "and prints MMCS (mean over true features of the best cosine with a decoder\n"
            "column), the fraction recovered above 0.9, FVU and L0.\n"
            "\n"
            "  --dir DIR          output folder (default saeflow-demo)\n"
            "  --threads T        OpenMP threads (default: all cores)\n"
            "  --num_epochs E     (default 20)\n"
            "  --seed S           data and model seed (default 0)\n");
}

int cmd_demo(int argc, char **argv) {
    const char *cmd = "demo";
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"threads", required_argument, 0, 't'},
                                         {"num_epochs", required_argument, 0, 'e'},
                                         {"seed", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = "saeflow-demo";
    long long threads = 0, epochs = 20, seed = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 't':
            if (cli_parse_int(cmd, "threads", optarg, &threads)) return 2;
            break;
        case 'e':
            if (cli_parse_int(cmd, "num_epochs", optarg, &epochs)) return 2;
            break;
        case 's':
            if (cli_parse_int(cmd, "seed", optarg, &seed)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (threads < 0 || threads > 1024 || epochs < 1 || epochs > 100000 || seed < 0)
        return cli_usage_error(cmd, "--threads >= 0, --num_epochs >= 1, --seed >= 0");
    sf_kernels_set_threads((int)threads);
    if (sf_mkdirs(dir)) return cli_fail(cmd);

    double t0 = sf_now();
    sf_synth_opts so;
    sf_synth_opts_default(&so);
    so.seed = (uint64_t)seed;
    char *data = sf_path_join(dir, "synth.safetensors");
    char *ckpt = sf_path_join(dir, "topk-k5-x8");
    int rc = 1;
    sf_sae s = {0};
    sf_sae_data D = {0};
    sf_st df = {0};
    int df_open = 0;
    if (sf_sae_synth(&so, data, "activations", "dictionary")) goto done;
    printf("1/3 synth: %s: %lld rows of width %d from a %d-feature unit-norm dictionary, "
           "%.0f active per row (power law alpha %.1f), noise %.2g\n",
           data, (long long)so.samples, so.d, so.n_true, so.active, so.alpha, so.noise);
    const char *paths[1] = {data};
    if (sf_sae_data_open(&D, paths, 1, "activations")) goto done;
    if (sf_sae_init(&s, SF_SAE_TOPK, so.d, so.d * 8, 5, (uint64_t)seed)) goto done;
    sf_sae_run_opts ro;
    memset(&ro, 0, sizeof ro);
    sf_sae_train_opts_default(&ro.train);
    ro.train.lr = 2e-3;
    ro.train.lr_warmup_steps = 50;
    ro.train.bodycount = 8192;
    ro.batch_size = 256;
    ro.num_epochs = (int)epochs;
    ro.seed = (uint64_t)seed;
    ro.outdir = ckpt;
    ro.quiet = 1;
    printf("2/3 train: TopK SAE, pages %d (x8), k %d, %lld epochs, %d threads ...\n", s.n, s.k,
           epochs, omp_get_max_threads());
    fflush(stdout);
    double t1 = sf_now();
    sf_sae_metrics m;
    if (sf_sae_train_run(&s, &D, &ro, &m)) goto done;
    double t2 = sf_now();
    printf("    %lld steps in %.1f s (%.0f samples/s); checkpoint %s\n",
           (long long)(epochs * (D.N / ro.batch_size)), t2 - t1,
           (double)epochs * (D.N / ro.batch_size) * ro.batch_size / (t2 - t1), ckpt);
    if (sf_st_open(&df, data)) goto done;
    df_open = 1;
    int64_t shape[2] = {so.n_true, so.d};
    float *owned = NULL;
    const float *dict = sf_st_get_f32(&df, "dictionary", 2, shape, &owned);
    if (!dict) goto done;
    sf_sae_eval_result r;
    int erc = sf_sae_evaluate(&s, &D, 0, dict, so.n_true, &r);
    free(owned);
    if (erc) goto done;
    printf("3/3 eval:  MMCS %.4f | recovered (cos > 0.9) %.1f%% of %d true features | FVU %.4f | "
           "L0 %.2f | total %.1f s\n",
           r.mmcs, 100 * r.recovered, so.n_true, r.fvu, r.l0, sf_now() - t0);
    rc = 0;
done:
    if (rc) cli_fail(cmd);
    if (df_open) sf_st_close(&df);
    sf_sae_data_close(&D);
    sf_sae_free(&s);
    free(data);
    free(ckpt);
    return rc;
}
