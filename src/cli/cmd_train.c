/* saeflow train: train a sparse autoencoder on activations in safetensors. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "saeflow/sae_arch.h"
#include "saeflow/sae_train.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow train --tensorpath FILE [--tensorpath FILE ...] [options]\n"
        "\n"
        "Trains a TopK sparse autoencoder on rows of a [N, d] tensor (F32/F16/BF16/F64)\n"
        "read through mmap from one or more safetensors files; writes SAVEDIR/NAME/\n"
        "{config.json, model.safetensors, metrics.jsonl}, loadable by the reference project.\n"
        "\n"
        "data:\n"
        "  --tensorpath FILE     safetensors file (repeat, or comma-separate, for several)\n"
        "  --tensorkey KEY       tensor name in every file (default activations)\n"
        "model:\n"
        "  --arch NAME           topk, standard, gated, jumprelu, batchtopk, matryoshka\n"
        "                        (default topk; docs/architectures.md)\n"
        "  --features D          input width; must match the data (default: from the data)\n"
        "  --expansion E         pages = features x E (default 32)\n"
        "  --pages N             dictionary size, overrides --expansion\n"
        "  --k K                 active latents per row (default 128)\n"
        "  --init DIR            start from this checkpoint instead of a fresh init\n"
        "  --lmbda L             standard/gated: L1 weight; jumprelu: L0 weight (default 0.01)\n"
        "  --lmbda_warmup_steps S  lmbda ramps up linearly over S steps (default 256)\n"
        "  --bandwidth E         jumprelu: STE rectangle kernel width (default 0.001)\n"
        "  --jumpthreshold T     jumprelu: initial threshold (default 0.001)\n"
        "  --groups LIST         matryoshka: group sizes, e.g. 512,512,1024,rest\n"
        "                        (default n/8,n/8,n/4,n/2)\n"
        "  --matryoshka_base B   matryoshka: topk or batchtopk selection (default topk)\n"
        "  --threshold_decay D   batchtopk: EMA decay of the inference threshold (default 0.99)\n"
        "  --ghost_grads         standard: ghost grads for dead latents\n"
        "  --resample_every S    resample dead latents every S steps (default 0: off)\n"
        "  --resample_pool N     ... from N rows drawn from the data and scored with the\n"
        "                        current model (default 65536; 0: the current batch)\n"
        "  --b_dec_init MODE     zero, mean or median (geometric) of a data sample (default zero)\n"
        "  --normalize_input     scale inputs to average norm sqrt(d) while training; the\n"
        "                        factor is folded into the saved weights\n"
        "optimisation:\n"
        "  --lr LR               AdamW learning rate (default 5e-5)\n"
        "  --beta1 B1 --beta2 B2 AdamW betas (default 0.9, 0.999)\n"
        "  --wd WD               AdamW weight decay (default 0)\n"
        "  --lr_warmup_steps S   linear warmup, then constant (default 256)\n"
        "  --clip C              max global gradient norm, 0 = off (default 1)\n"
        "  --normalise           unit-norm decoder columns, parallel gradient removed\n"
        "  --auxk COEF           AuxK loss coefficient, 0 = off (default 1/32)\n"
        "  --aux_k N             dead latents used by AuxK per row (default 512)\n"
        "  --bodycount S         samples without firing before a latent is dead (default 16384)\n"
        "  --batch_size B        rows per step (default 32)\n"
        "  --num_epochs E        passes over the data, reshuffled each (default 10)\n"
        "run:\n"
        "  --savedir DIR         (default checkpoints)\n"
        "  --name NAME           (default <arch>-k<k>-x<expansion>)\n"
        "  --save_every S        also checkpoint every S steps (default 0: only at the end)\n"
        "  --resume              continue the run in SAVEDIR/NAME from its last checkpoint\n"
        "                        (same flags; equals an uninterrupted run bit for bit; starts\n"
        "                        fresh when there is none). A larger --num_epochs extends it\n"
        "  --save_dtype T        f32 (default), bf16 or f16: tensors of the saved checkpoint\n"
        "  --seed S              init and shuffling seed (default 0)\n"
        "  --threads T           OpenMP threads (default: all cores)\n"
        "  --quiet               no summary\n"
        "\n"
        "Same seed, threads and data give a bit-identical checkpoint.\n"
        "\n"
        "saeflow train --source flux|file ... trains one SAE per FLUX hook on activations\n"
        "sampled on the fly (see saeflow train --source flux --help).\n");
}

int cmd_train(int argc, char **argv) {
    const char *cmd = "train";
    if (cli_has_source_flag(argc, argv)) return cmd_train_source(argc, argv);
    enum {
        O_TP = 1000,
        O_TK,
        O_ARCH,
        O_FEAT,
        O_EXP,
        O_PAGES,
        O_K,
        O_INIT,
        O_B1,
        O_B2,
        O_WD,
        O_CLIP,
        O_SAVEDIR,
        O_NAME,
        O_SAVEEV,
        O_QUIET,
        O_HELP,
        O_LMBDA,
        O_GROUPS,
        O_MBASE,
        O_TDEC,
        O_GHOST,
        O_RESAMPLE,
        O_BINIT,
        O_NORMIN,
        O_SAVEDT,
        O_RPOOL,
        O_RESUME
    };
    static const struct option opts[] = {{"tensorpath", required_argument, 0, O_TP},
                                         {"tensorkey", required_argument, 0, O_TK},
                                         {"arch", required_argument, 0, O_ARCH},
                                         {"features", required_argument, 0, O_FEAT},
                                         {"expansion", required_argument, 0, O_EXP},
                                         {"pages", required_argument, 0, O_PAGES},
                                         {"k", required_argument, 0, O_K},
                                         {"init", required_argument, 0, O_INIT},
                                         {"beta1", required_argument, 0, O_B1},
                                         {"beta2", required_argument, 0, O_B2},
                                         {"wd", required_argument, 0, O_WD},
                                         {"clip", required_argument, 0, O_CLIP},
                                         {"savedir", required_argument, 0, O_SAVEDIR},
                                         {"name", required_argument, 0, O_NAME},
                                         {"save_every", required_argument, 0, O_SAVEEV},
                                         {"quiet", no_argument, 0, O_QUIET},
                                         {"help", no_argument, 0, O_HELP},
                                         {"lmbda", required_argument, 0, O_LMBDA},
                                         {"groups", required_argument, 0, O_GROUPS},
                                         {"matryoshka_base", required_argument, 0, O_MBASE},
                                         {"threshold_decay", required_argument, 0, O_TDEC},
                                         {"ghost_grads", no_argument, 0, O_GHOST},
                                         {"resample_every", required_argument, 0, O_RESAMPLE},
                                         {"b_dec_init", required_argument, 0, O_BINIT},
                                         {"normalize_input", no_argument, 0, O_NORMIN},
                                         {"save_dtype", required_argument, 0, O_SAVEDT},
                                         {"resample_pool", required_argument, 0, O_RPOOL},
                                         {"resume", no_argument, 0, O_RESUME},
                                         CLI_TRAIN_OPTIONS,
                                         {0, 0, 0, 0}};
    cli_paths paths = {0};
    const char *key = "activations", *savedir = "checkpoints", *name = NULL, *init = NULL;
    sf_sae_arch arch = SF_SAE_TOPK;
    long long features = 0, expansion = 32, pages = 0, k = 128, save_every = 0;
    double b1 = 0.9, b2 = 0.999, wd = 0, clip = 1.0;
    int quiet = 0, c, rc = 2;
    cli_train_flags tf = {.lr = 5e-5,
                          .auxk = 1.0 / 32,
                          .bandwidth = 0.001,
                          .jumpthreshold = 0.001,
                          .lr_warmup_steps = 256,
                          .lmbda_warmup_steps = 256,
                          .batch_size = 32,
                          .num_epochs = 10,
                          .aux_k = 512,
                          .bodycount = 16384};
    /* other architectures and dead-latent remedies (docs/architectures.md) */
    double lmbda = 0.01, tdecay = 0.99;
    long long resample_every = 0, resample_pool = 65536;
    const char *groups = NULL, *mbase = "topk", *binit = "zero";
    int ghost = 0, normin = 0, save_half = 0, resume = 0;
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
        case O_ARCH:
            if (sf_sae_arch_parse(optarg, &arch)) {
                rc = cli_usage_error(cmd, "%s", sf_errmsg());
                goto out;
            }
            break;
        case O_FEAT:
            bad = cli_parse_int(cmd, "features", optarg, &features);
            break;
        case O_EXP:
            bad = cli_parse_int(cmd, "expansion", optarg, &expansion);
            break;
        case O_PAGES:
            bad = cli_parse_int(cmd, "pages", optarg, &pages);
            break;
        case O_K:
            bad = cli_parse_int(cmd, "k", optarg, &k);
            break;
        case O_INIT:
            init = optarg;
            break;
        case O_B1:
            bad = cli_parse_double(cmd, "beta1", optarg, &b1);
            break;
        case O_B2:
            bad = cli_parse_double(cmd, "beta2", optarg, &b2);
            break;
        case O_WD:
            bad = cli_parse_double(cmd, "wd", optarg, &wd);
            break;
        case O_CLIP:
            bad = cli_parse_double(cmd, "clip", optarg, &clip);
            break;
        case O_SAVEDIR:
            savedir = optarg;
            break;
        case O_NAME:
            name = optarg;
            break;
        case O_SAVEEV:
            bad = cli_parse_int(cmd, "save_every", optarg, &save_every);
            break;
        case O_QUIET:
            quiet = 1;
            break;
        case O_LMBDA:
            bad = cli_parse_double(cmd, "lmbda", optarg, &lmbda);
            break;
        case O_GROUPS:
            groups = optarg;
            break;
        case O_MBASE:
            mbase = optarg;
            break;
        case O_TDEC:
            bad = cli_parse_double(cmd, "threshold_decay", optarg, &tdecay);
            break;
        case O_GHOST:
            ghost = 1;
            break;
        case O_RESAMPLE:
            bad = cli_parse_int(cmd, "resample_every", optarg, &resample_every);
            break;
        case O_BINIT:
            binit = optarg;
            break;
        case O_NORMIN:
            normin = 1;
            break;
        case O_SAVEDT:
            bad = cli_parse_save_dtype(cmd, optarg, &save_half);
            break;
        case O_RPOOL:
            bad = cli_parse_int(cmd, "resample_pool", optarg, &resample_pool);
            break;
        case O_RESUME:
            resume = 1;
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
    if (k < 1 || expansion < 1 || pages < 0 || features < 0 || save_every < 0) {
        rc = cli_usage_error(cmd, "--k, --expansion must be positive; --pages, --features, "
                                  "--save_every non-negative");
        goto out;
    }
    if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1) || !(wd >= 0) || !(clip >= 0)) {
        rc = cli_usage_error(cmd, "need 0 <= --beta1, --beta2 < 1, --wd, --clip >= 0");
        goto out;
    }
    if (!(lmbda >= 0) || resample_every < 0 || resample_pool < 0 || !(tdecay >= 0 && tdecay < 1)) {
        rc = cli_usage_error(cmd, "need --lmbda, --resample_every, --resample_pool >= 0, "
                                  "0 <= --threshold_decay < 1");
        goto out;
    }
    sf_sae_run_opts ro;
    memset(&ro, 0, sizeof ro);
    sf_sae_train_opts_default(&ro.train);
    ro.train.lr = tf.lr;
    ro.train.beta1 = b1;
    ro.train.beta2 = b2;
    ro.train.wd = wd;
    ro.train.lr_warmup_steps = tf.lr_warmup_steps;
    ro.train.clip = clip;
    ro.train.normalise = tf.normalise;
    ro.train.auxk_coef = tf.auxk;
    ro.train.aux_k = (int)tf.aux_k;
    ro.train.bodycount = tf.bodycount;
    ro.train.lmbda = lmbda;
    ro.train.lmbda_warmup_steps = tf.lmbda_warmup_steps;
    ro.train.bandwidth = tf.bandwidth;
    ro.train.ghost_grads = ghost;
    ro.train.resample_every = resample_every;
    ro.train.resample_pool = resample_pool;
    ro.train.threshold_decay = tdecay;
    /* the model: architecture options checked and applied by the library */
    sf_sae_spec sp;
    sf_sae_spec_default(&sp);
    sp.arch = arch;
    sp.k = (int)k;
    sp.seed = (uint64_t)tf.seed;
    sp.groups = groups;
    sp.matryoshka_base = mbase;
    sp.jumpthreshold = tf.jumpthreshold_set ? tf.jumpthreshold : 0;
    sp.b_dec_init = binit;
    sp.normalize_input = normin;
    if (sf_sae_spec_check(&sp, &ro.train)) {
        rc = cli_usage_error(cmd, "%s", cli_flag_words(sf_errmsg(), opts, 1));
        goto out;
    }
    sf_kernels_set_threads((int)tf.threads);

    rc = 1;
    sf_sae_data D;
    if (sf_sae_data_open(&D, paths.v, paths.n, key)) {
        rc = cli_fail(cmd);
        goto out;
    }
    if (features && features != D.d) {
        sf_error("--features %lld does not match the data: tensor '%s' in %s has width %d",
                 features, key, paths.v[0], D.d);
        sf_sae_data_close(&D);
        rc = cli_fail(cmd);
        goto out;
    }
    sf_sae s;
    /* --resume: the model of the run being continued, when it saved one */
    /* the folder: --name, or <arch>-k<k>-x<expansion> of the model (as built
     * from these flags, so --resume finds it before loading it) */
    char autoname[128], *outdir = NULL;
    const int named = name != NULL;
    if (!named) {
        const long long n = pages ? pages : (long long)D.d * expansion;
        const int uses_k =
            arch == SF_SAE_TOPK || arch == SF_SAE_BATCHTOPK || arch == SF_SAE_MATRYOSHKA;
        snprintf(autoname, sizeof autoname, "%s-k%lld-x%lld", sf_sae_arch_name(arch),
                 uses_k ? k : 0, n % D.d == 0 ? n / D.d : 0);
        name = autoname;
    }
    outdir = sf_path_join(savedir, name);
    int resuming = 0;
    if (resume) {
        char *spath = sf_path_join(outdir, SF_SAE_STATE_FILE);
        resuming = access(spath, F_OK) == 0;
        free(spath);
        if (!resuming && !quiet)
            printf("--resume: no %s in %s, starting afresh\n", SF_SAE_STATE_FILE, outdir);
    }
    /* the model's structure: the run's checkpoint, or when the run was killed
     * between its first state and first checkpoint, built as that run built
     * it (the state then replaces weights and config) */
    char *cpath = sf_path_join(outdir, "config.json");
    const int have_ckpt = resuming && access(cpath, F_OK) == 0;
    free(cpath);
    if (have_ckpt) {
        if (sf_sae_load(&s, outdir)) {
            sf_sae_data_close(&D);
            free(outdir);
            rc = cli_fail(cmd);
            goto out;
        }
    } else if (init) {
        if (sf_sae_load(&s, init)) {
            sf_sae_data_close(&D);
            free(outdir);
            rc = cli_fail(cmd);
            goto out;
        }
    } else {
        long long n = pages ? pages : (long long)D.d * expansion;
        const int uses_k =
            arch == SF_SAE_TOPK || arch == SF_SAE_BATCHTOPK || arch == SF_SAE_MATRYOSHKA;
        if (n > (1 << 26) || (uses_k && k > n)) {
            sf_error("pages %lld (features x expansion) must be >= k %lld and at most 2^26", n, k);
            sf_sae_data_close(&D);
            free(outdir);
            rc = cli_fail(cmd);
            goto out;
        }
        sp.d = D.d;
        sp.n = (int)n;
        if (sf_sae_build(&s, &sp, &D, &ro.train)) {
            sf_sae_data_close(&D);
            free(outdir);
            rc = cli_fail_flags(cmd, opts, 0);
            goto out;
        }
    }
    if (!named && !have_ckpt) { /* --init: the loaded model's own */
        snprintf(autoname, sizeof autoname, "%s-k%d-x%d", sf_sae_arch_name(s.arch),
                 s.arch == SF_SAE_TOPK ? s.k : s.k_sel, s.n % s.d == 0 ? s.n / s.d : 0);
        free(outdir);
        outdir = sf_path_join(savedir, autoname);
    }
    ro.train.aux_k = (int)(tf.aux_k < s.n ? tf.aux_k : s.n);
    if (init && !have_ckpt) sf_sae_record_train(&s, &sp, &ro.train);
    ro.resume = resuming;
    ro.batch_size = (int)tf.batch_size;
    ro.num_epochs = (int)tf.num_epochs;
    ro.seed = (uint64_t)tf.seed;
    ro.outdir = outdir;
    ro.save_every = save_every;
    s.save_half = save_half;
    ro.quiet = quiet;
    if (!quiet)
        printf("training %s SAE: features %d, pages %d, %s %g on %lld rows of '%s' (%d file%s), "
               "%d threads, OpenBLAS core %s\n",
               sf_sae_arch_name(s.arch), s.d, s.n, s.arch == SF_SAE_TOPK || s.k_sel ? "k" : "lmbda",
               s.arch == SF_SAE_TOPK ? (double)s.k
               : s.k_sel             ? (double)s.k_sel
                                     : lmbda,
               (long long)D.N, key, D.n_files, D.n_files > 1 ? "s" : "", omp_get_max_threads(),
               sf_sae_blas_core());
    fflush(stdout);
    rc = sf_sae_train_run(&s, &D, &ro, NULL) ? cli_fail_flags(cmd, opts, 0) : 0;
    free(outdir);
    sf_sae_free(&s);
    sf_sae_data_close(&D);
out:
    cli_paths_free(&paths);
    return rc;
}
