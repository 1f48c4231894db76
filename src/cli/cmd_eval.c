/* saeflow eval: FVU, L0, dead fraction and (with a true dictionary) MMCS. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/sae_eval.h"

static void usage(FILE *out) {
    fprintf(out, "usage: saeflow eval --checkpoint DIR --tensorpath FILE [options]\n"
                 "\n"
                 "Reports, over the data: FVU (sum ||x - x_hat||^2 / sum ||x - mean x||^2), MSE,\n"
                 "L0 and the fraction of latents that never fire; with --dictionary, the mean\n"
                 "over true features of the best cosine similarity with any decoder column (MMCS)\n"
                 "and the fraction of true features recovered above 0.9.\n"
                 "\n"
                 "  --checkpoint DIR   SAE checkpoint\n"
                 "  --tensorpath FILE  safetensors data (repeatable, or comma-separated)\n"
                 "  --tensorkey KEY    (default activations)\n"
                 "  --dictionary FILE  safetensors file holding the true dictionary [n_true, d]\n"
                 "  --dictkey KEY      (default dictionary)\n"
                 "  --max_rows N       evaluate on the first N rows only\n"
                 "  --json             print one JSON object instead of text\n"
                 "  --threads T        OpenMP threads (default: all cores)\n");
}

int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval";
    static const struct option opts[] = {{"checkpoint", required_argument, 0, 'c'},
                                         {"tensorpath", required_argument, 0, 'p'},
                                         {"tensorkey", required_argument, 0, 'k'},
                                         {"dictionary", required_argument, 0, 'D'},
                                         {"dictkey", required_argument, 0, 'K'},
                                         {"max_rows", required_argument, 0, 'm'},
                                         {"json", no_argument, 0, 'j'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *ckpt = NULL, *key = "activations", *dictp = NULL, *dkey = "dictionary";
    cli_paths paths = {0};
    int json = 0, c;
    long long max_rows = 0, threads = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            ckpt = optarg;
            break;
        case 'p':
            cli_paths_add(&paths, optarg);
            break;
        case 'k':
            key = optarg;
            break;
        case 'D':
            dictp = optarg;
            break;
        case 'K':
            dkey = optarg;
            break;
        case 'm':
            if (cli_parse_int(cmd, "max_rows", optarg, &max_rows)) return 2;
            break;
        case 'j':
            json = 1;
            break;
        case 't':
            if (cli_parse_int(cmd, "threads", optarg, &threads)) return 2;
            break;
        case 'h':
            usage(stdout);
            cli_paths_free(&paths);
            return 0;
        default:
            cli_paths_free(&paths);
            return cli_usage_error(cmd, "unknown option");
        }
    }
    int urc = 0;
    if (optind < argc)
        urc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    else if (!ckpt || !paths.n)
        urc = cli_usage_error(cmd, "--checkpoint and --tensorpath are required");
    else if (max_rows < 0 || threads < 0 || threads > 1024)
        urc = cli_usage_error(cmd, "--max_rows and --threads must be >= 0");
    if (urc) {
        cli_paths_free(&paths);
        return urc;
    }
    sf_kernels_set_threads((int)threads);
    sf_sae s;
    if (sf_sae_load(&s, ckpt)) {
        cli_paths_free(&paths);
        return cli_fail(cmd);
    }
    sf_sae_data D;
    if (sf_sae_data_open(&D, paths.v, paths.n, key)) {
        sf_sae_free(&s);
        cli_paths_free(&paths);
        return cli_fail(cmd);
    }
    int rc = 1, n_true = 0;
    float *dict = NULL;
    sf_st df;
    int df_open = 0;
    if (dictp) {
        if (sf_st_open(&df, dictp)) goto done;
        df_open = 1;
        int64_t shape[2] = {-1, s.d};
        const float *dv = sf_st_get_f32(&df, dkey, 2, shape, &dict);
        if (!dv) goto done;
        n_true = (int)sf_st_find(&df, dkey)->shape[0];
        if (!dict) { /* zero-copy F32: copy so the file can be closed independently */
            dict = sf_malloc((size_t)n_true * s.d * sizeof(float) + 4);
            memcpy(dict, dv, (size_t)n_true * s.d * sizeof(float));
        }
    }
    sf_sae_eval_result r;
    if (sf_sae_evaluate(&s, &D, max_rows, dict, n_true, &r)) goto done;
    if (json) {
        printf("{\"rows\": %lld, \"fvu\": %.9g, \"mse\": %.9g, \"l0\": %.9g, \"dead\": %.9g",
               (long long)r.rows, r.fvu, r.mse, r.l0, r.dead);
        if (dict)
            printf(", \"mmcs\": %.9g, \"recovered\": %.9g, \"n_true\": %d", r.mmcs, r.recovered,
                   n_true);
        printf("}\n");
    } else {
        printf("rows %lld  FVU %.4f  MSE %.6g  L0 %.2f  dead latents %.1f%%\n", (long long)r.rows,
               r.fvu, r.mse, r.l0, 100 * r.dead);
        if (dict)
            printf("dictionary recovery: MMCS %.4f  recovered (cos > 0.9) %.1f%% of %d true "
                   "features\n",
                   r.mmcs, 100 * r.recovered, n_true);
    }
    rc = 0;
done:
    if (rc) cli_fail(cmd);
    free(dict);
    if (df_open) sf_st_close(&df);
    sf_sae_data_close(&D);
    sf_sae_free(&s);
    cli_paths_free(&paths);
    return rc;
}
