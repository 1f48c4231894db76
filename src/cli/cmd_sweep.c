/* saeflow sweep: a grid of SAEs on the same data -> table + L0/FVU frontier plot. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/sae_sweep.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: saeflow sweep --tensorpath FILE [options]\n"
            "\n"
            "Trains every combination of architecture x (k or lmbda) x expansion on the same\n"
            "data, in lockstep (each shuffled batch is read once and fed to every model),\n"
            "evaluates each, and writes OUT/sweep.tsv, OUT/sweep.md and OUT/sweep.svg (the\n"
            "L0-vs-FVU frontier per architecture; with --dictionary also MMCS vs L0).\n"
            "\n"
            "grid:\n"
            "  --archs LIST          topk,batchtopk,matryoshka,matryoshka-batchtopk,standard,\n"
            "                        gated,jumprelu (default: all but matryoshka-batchtopk)\n"
            "  --ks LIST             k values for topk/batchtopk/matryoshka (default 2,4,8,16)\n"
            "  --lmbdas [ARCH:]LIST  lmbda values for standard/gated/jumprelu; repeat with an\n"
            "                        ARCH: prefix for one architecture (defaults: standard\n"
            "                        0.1,0.3,1; gated 0.5,1.5,4; jumprelu 0.05,0.2,0.8)\n"
            "  --expansions LIST     (default 4)\n"
            "data and evaluation:\n"
            "  --tensorpath FILE     safetensors file(s) (repeat or comma-separate)\n"
            "  --tensorkey KEY       (default activations)\n"
            "  --dictionary FILE     true dictionary (e.g. from saeflow synth) for MMCS\n"
            "  --dictkey KEY         (default dictionary)\n"
            "  --eval_rows N         evaluate on the first N rows (default all)\n"
            "training (shared; as saeflow train):\n"
            "  --lr --lr_warmup_steps --lmbda_warmup_steps --batch_size --num_epochs --auxk\n"
            "  --aux_k --bodycount --bandwidth --jumpthreshold --normalise --seed --threads\n"
            "  (defaults: lr 1e-3, warmups 50 / 200, batch 64, epochs 3, jumpthreshold 0.1,\n"
            "   bandwidth 0.05)\n"
            "output:\n"
            "  --out DIR             (default sweep)\n"
            "  --save_checkpoints    also write OUT/<name>/ for every model\n"
            "  --title TEXT          plot title\n"
            "  --quiet               no per-model lines\n");
}

static int parse_list_d(const char *s, double *v, int max) {
    int n = 0;
    const char *p = s;
    while (*p && n < max) {
        char *end;
        v[n] = strtod(p, &end);
        if (end == p || !(v[n] >= 0) || !isfinite(v[n])) return -1;
        n++;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return *p ? -1 : n;
}

int cmd_sweep(int argc, char **argv) {
    const char *cmd = "sweep";
    enum {
        O_TP = 1000,
        O_TK,
        O_DICT,
        O_DKEY,
        O_ARCHS,
        O_KS,
        O_LM,
        O_EXP,
        O_EVAL,
        O_OUT,
        O_SAVE,
        O_TITLE,
        O_QUIET,
        O_HELP
    };
    static const struct option opts[] = {{"tensorpath", required_argument, 0, O_TP},
                                         {"tensorkey", required_argument, 0, O_TK},
                                         {"dictionary", required_argument, 0, O_DICT},
                                         {"dictkey", required_argument, 0, O_DKEY},
                                         {"archs", required_argument, 0, O_ARCHS},
                                         {"ks", required_argument, 0, O_KS},
                                         {"lmbdas", required_argument, 0, O_LM},
                                         {"expansions", required_argument, 0, O_EXP},
                                         {"eval_rows", required_argument, 0, O_EVAL},
                                         {"out", required_argument, 0, O_OUT},
                                         {"save_checkpoints", no_argument, 0, O_SAVE},
                                         {"title", required_argument, 0, O_TITLE},
                                         {"quiet", no_argument, 0, O_QUIET},
                                         {"help", no_argument, 0, O_HELP},
                                         CLI_TRAIN_OPTIONS,
                                         {0, 0, 0, 0}};
    cli_paths paths = {0};
    int rc = 2, c;
    const char *key = "activations", *dictp = NULL, *dkey = "dictionary", *out = "sweep",
               *title = NULL;
    const char *archs = "topk,batchtopk,matryoshka,standard,gated,jumprelu", *ks = "2,4,8,16",
               *exps = "4";
    /* lmbda lists: index 0 = all, then per architecture */
    const char *lm_all = NULL, *lm_arch[SF_SAE_ARCH_COUNT] = {0};
    long long eval_rows = 0;
    cli_train_flags tf = {.lr = 1e-3,
                          .auxk = 1.0 / 32,
                          .bandwidth = 0.05,
                          .jumpthreshold = 0.1,
                          .lr_warmup_steps = 50,
                          .lmbda_warmup_steps = 200,
                          .batch_size = 64,
                          .num_epochs = 3,
                          .aux_k = 512,
                          .bodycount = 16384};
    int save = 0, quiet = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0, shared = cli_train_flag(cmd, c, optarg, &tf);
        if (shared < 0) goto out;
        if (shared) continue;
        switch (c) {
        case O_TP:
            cli_paths_add(&paths, optarg);
            break;
        case O_TK:
            key = optarg;
            break;
        case O_DICT:
            dictp = optarg;
            break;
        case O_DKEY:
            dkey = optarg;
            break;
        case O_ARCHS:
            archs = optarg;
            break;
        case O_KS:
            ks = optarg;
            break;
        case O_LM: {
            const char *colon = strchr(optarg, ':');
            if (colon) {
                char an[32];
                size_t l = (size_t)(colon - optarg);
                sf_sae_arch a;
                if (l >= sizeof an) l = sizeof an - 1;
                memcpy(an, optarg, l);
                an[l] = 0;
                if (sf_sae_arch_parse(an, &a)) {
                    rc = cli_usage_error(cmd, "--lmbdas: %s", sf_errmsg());
                    goto out;
                }
                lm_arch[a] = colon + 1;
            } else {
                lm_all = optarg;
            }
            break;
        }
        case O_EXP:
            exps = optarg;
            break;
        case O_EVAL:
            bad = cli_parse_int(cmd, "eval_rows", optarg, &eval_rows);
            break;
        case O_OUT:
            out = optarg;
            break;
        case O_SAVE:
            save = 1;
            break;
        case O_TITLE:
            title = optarg;
            break;
        case O_QUIET:
            quiet = 1;
            break;
        case O_HELP:
            usage(stdout);
            rc = 0;
            goto out;
        default:
            rc = cli_usage_error(cmd, "unknown option");
            goto out;
        }
        if (bad) goto out;
    }
    if (optind < argc) {
        rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!paths.n) {
        rc = cli_usage_error(cmd, "--tensorpath is required");
        goto out;
    }
    if (cli_train_flags_check(cmd, &tf)) goto out;
    if (eval_rows < 0) {
        rc = cli_usage_error(cmd, "--eval_rows must be >= 0");
        goto out;
    }
    /* ---- the grid ---- */
    double kv[64], ev[64], lv[64];
    int nk = parse_list_d(ks, kv, 64), ne = parse_list_d(exps, ev, 64);
    if (nk <= 0 || ne <= 0) {
        rc = cli_usage_error(cmd, "--ks and --expansions take comma-separated positive integers");
        goto out;
    }
    for (int i = 0; i < nk; i++)
        if (kv[i] < 1 || kv[i] != floor(kv[i])) {
            rc = cli_usage_error(cmd, "--ks: '%g' is not a positive integer", kv[i]);
            goto out;
        }
    for (int i = 0; i < ne; i++)
        if (ev[i] < 1 || ev[i] != floor(ev[i])) {
            rc = cli_usage_error(cmd, "--expansions: '%g' is not a positive integer", ev[i]);
            goto out;
        }
    sf_sweep_point pts[512];
    int np = 0;
    char *al = sf_strdup(archs), *sv = NULL;
    for (char *t = strtok_r(al, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
        sf_sweep_point p;
        memset(&p, 0, sizeof p);
        if (!strcmp(t, "matryoshka-batchtopk")) {
            p.arch = SF_SAE_MATRYOSHKA;
            p.batch_select = 1;
        } else if (sf_sae_arch_parse(t, &p.arch)) {
            free(al);
            rc = cli_usage_error(cmd, "--archs: %s (or matryoshka-batchtopk)", sf_errmsg());
            goto out;
        }
        int lm = p.arch == SF_SAE_STANDARD || p.arch == SF_SAE_GATED || p.arch == SF_SAE_JUMPRELU;
        int nv = nk;
        if (lm) {
            const char *dflt = p.arch == SF_SAE_STANDARD ? "0.1,0.3,1"
                               : p.arch == SF_SAE_GATED  ? "0.5,1.5,4"
                                                         : "0.05,0.2,0.8";
            const char *src = lm_arch[p.arch] ? lm_arch[p.arch] : lm_all ? lm_all : dflt;
            nv = parse_list_d(src, lv, 64);
            if (nv <= 0) {
                free(al);
                rc = cli_usage_error(cmd, "--lmbdas: '%s' is not a list of numbers >= 0", src);
                goto out;
            }
        }
        for (int e = 0; e < ne; e++)
            for (int v = 0; v < nv; v++) {
                if (np == 512) {
                    free(al);
                    rc = cli_usage_error(cmd, "grid larger than 512 models");
                    goto out;
                }
                p.expansion = (int)ev[e];
                if (lm)
                    p.lmbda = lv[v];
                else
                    p.k = (int)kv[v];
                pts[np++] = p;
            }
    }
    free(al);
    sf_kernels_set_threads((int)tf.threads);
    rc = 1;
    sf_sae_data D;
    if (sf_sae_data_open(&D, paths.v, paths.n, key)) {
        rc = cli_fail(cmd);
        goto out;
    }
    float *dict = NULL;
    int n_true = 0;
    if (dictp) {
        sf_st df;
        if (sf_st_open(&df, dictp)) {
            sf_sae_data_close(&D);
            rc = cli_fail(cmd);
            goto out;
        }
        const sf_tensor_info *t = sf_st_find(&df, dkey);
        if (!t || t->ndim != 2 || t->shape[1] != D.d) {
            sf_error("%s: tensor '%s' must exist with shape [n_true, %d]", dictp, dkey, D.d);
            sf_st_close(&df);
            sf_sae_data_close(&D);
            rc = cli_fail(cmd);
            goto out;
        }
        n_true = (int)t->shape[0];
        dict = sf_malloc((size_t)n_true * D.d * sizeof(float));
        int64_t shape[2] = {n_true, D.d};
        int r2 = sf_st_read_f32(&df, dkey, 2, shape, dict);
        sf_st_close(&df);
        if (r2) {
            free(dict);
            sf_sae_data_close(&D);
            rc = cli_fail(cmd);
            goto out;
        }
    }
    for (int i = 0; i < np; i++)
        if (pts[i].k > D.d * pts[i].expansion) {
            sf_error("k %d exceeds pages %d (features %d x expansion %d)", pts[i].k,
                     D.d * pts[i].expansion, D.d, pts[i].expansion);
            free(dict);
            sf_sae_data_close(&D);
            rc = cli_fail(cmd);
            goto out;
        }
    sf_sweep_opts so;
    memset(&so, 0, sizeof so);
    sf_sae_train_opts_default(&so.train);
    so.train.lr = tf.lr;
    so.train.lr_warmup_steps = tf.lr_warmup_steps;
    so.train.lmbda_warmup_steps = tf.lmbda_warmup_steps;
    so.train.auxk_coef = tf.auxk;
    so.train.aux_k = (int)tf.aux_k;
    so.train.bodycount = tf.bodycount;
    so.train.bandwidth = tf.bandwidth;
    so.train.normalise = tf.normalise;
    so.batch_size = (int)tf.batch_size;
    so.num_epochs = (int)tf.num_epochs;
    so.seed = (uint64_t)tf.seed;
    so.jumpthreshold = tf.jumpthreshold;
    so.outdir = out;
    so.save_checkpoints = save;
    so.eval_rows = eval_rows;
    so.dict = dict;
    so.n_true = n_true;
    so.quiet = quiet;
    sf_sweep_result *res = sf_calloc((size_t)np, sizeof *res);
    if (!quiet)
        fprintf(stderr, "sweep: %d models on %lld rows of '%s' (d %d), %lld epochs, batch %lld\n",
                np, (long long)D.N, key, D.d, tf.num_epochs, tf.batch_size);
    int src = sf_mkdirs(out) || sf_sae_sweep(&D, pts, np, &so, res);
    if (!src) {
        char *p1 = sf_path_join(out, "sweep.tsv"), *p2 = sf_path_join(out, "sweep.md"),
             *p3 = sf_path_join(out, "sweep.svg");
        char tbuf[256];
        snprintf(tbuf, sizeof tbuf, "L0 vs FVU, %d models, d %d, %lld rows", np, D.d,
                 (long long)D.N);
        src = sf_sweep_write_tsv(res, np, p1) || sf_sweep_write_markdown(res, np, p2) ||
              sf_sweep_write_svg(res, np, p3, title ? title : tbuf);
        if (!src) printf("wrote %s, %s, %s\n", p1, p2, p3);
        free(p1);
        free(p2);
        free(p3);
    }
    rc = src ? cli_fail(cmd) : 0;
    free(res);
    free(dict);
    sf_sae_data_close(&D);
out:
    cli_paths_free(&paths);
    return rc;
}
