#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>

#include "cli/cli.h"
#include "saeflow/dist.h"
#include "saeflow/kernels.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *desc;
} command;

static const command commands[] = {
#define X(name, desc) {#name, cmd_##name, desc},
    SF_COMMANDS(X)
#undef X
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

int cli_fail(const char *cmd) {
    if (sf_dist_quiet()) return 1; /* a collective error: rank 0 prints it */
    fprintf(stderr, "saeflow %s: %s\n", cmd, sf_errmsg());
    return 1;
}

static int is_option(const char *w, size_t len, const struct option *opts) {
    for (const struct option *o = opts; o->name; o++)
        if (strlen(o->name) == len && !strncmp(o->name, w, len)) return 1;
    return 0;
}

const char *cli_flag_words(const char *msg, const struct option *opts, int all) {
    static char buf[2048];
    size_t w = 0;
    const char *p = msg;
    while (*p && w + 3 < sizeof buf) {
        const int start = p == msg || !(isalnum((unsigned char)p[-1]) || p[-1] == '_' ||
                                        p[-1] == '-' || p[-1] == '\'');
        size_t len = 0;
        while (isalnum((unsigned char)p[len]) || p[len] == '_')
            len++;
        if (len && start && (all || p == msg) && is_option(p, len, opts)) {
            buf[w++] = '-';
            buf[w++] = '-';
        }
        if (!len) len = 1;
        for (size_t i = 0; i < len && w + 1 < sizeof buf; i++)
            buf[w++] = p[i];
        p += len;
    }
    buf[w] = 0;
    return buf;
}

int cli_fail_flags(const char *cmd, const struct option *opts, int all) {
    if (sf_dist_quiet()) return 1; /* a collective error: rank 0 prints it */
    fprintf(stderr, "saeflow %s: %s\n", cmd, cli_flag_words(sf_errmsg(), opts, all));
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "saeflow %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `saeflow %s --help`)\n", cmd);
    return 2;
}

int cli_parse_int(const char *cmd, const char *flag, const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) {
        cli_usage_error(cmd, "--%s expects an integer, got '%s'", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_train_flag(const char *cmd, int opt, const char *arg, cli_train_flags *f) {
    int bad = 0;
    switch (opt) {
    case CLI_TF_LR:
        bad = cli_parse_double(cmd, "lr", arg, &f->lr);
        break;
    case CLI_TF_WARM:
        bad = cli_parse_int(cmd, "lr_warmup_steps", arg, &f->lr_warmup_steps);
        break;
    case CLI_TF_LWARM:
        bad = cli_parse_int(cmd, "lmbda_warmup_steps", arg, &f->lmbda_warmup_steps);
        break;
    case CLI_TF_BS:
        bad = cli_parse_int(cmd, "batch_size", arg, &f->batch_size);
        break;
    case CLI_TF_EP:
        bad = cli_parse_int(cmd, "num_epochs", arg, &f->num_epochs);
        break;
    case CLI_TF_AUXK:
        bad = cli_parse_double(cmd, "auxk", arg, &f->auxk);
        break;
    case CLI_TF_AUX_K:
        bad = cli_parse_int(cmd, "aux_k", arg, &f->aux_k);
        break;
    case CLI_TF_BODY:
        bad = cli_parse_int(cmd, "bodycount", arg, &f->bodycount);
        break;
    case CLI_TF_BW:
        bad = cli_parse_double(cmd, "bandwidth", arg, &f->bandwidth);
        break;
    case CLI_TF_JT:
        bad = cli_parse_double(cmd, "jumpthreshold", arg, &f->jumpthreshold);
        f->jumpthreshold_set = 1;
        break;
    case CLI_TF_NORM:
        f->normalise = 1;
        break;
    case CLI_TF_SEED:
        bad = cli_parse_int(cmd, "seed", arg, &f->seed);
        break;
    case CLI_TF_THREADS:
        bad = cli_parse_int(cmd, "threads", arg, &f->threads);
        break;
    default:
        return 0;
    }
    return bad ? -1 : 1;
}

int cli_train_flags_check(const char *cmd, const cli_train_flags *f) {
    if (!(f->lr > 0) || f->batch_size < 1 || f->batch_size > (1 << 24) || f->num_epochs < 1 ||
        f->lr_warmup_steps < 0 || f->lmbda_warmup_steps < 0 || f->bodycount < 1 || f->aux_k < 0 ||
        !(f->bandwidth > 0) || !(f->jumpthreshold > 0) || !(f->auxk >= 0) || f->seed < 0 ||
        f->threads < 0 || f->threads > 1024)
        return cli_usage_error(cmd, "need --lr > 0, --batch_size, --num_epochs, --bodycount >= 1, "
                                    "--bandwidth, --jumpthreshold > 0, --lr_warmup_steps, "
                                    "--lmbda_warmup_steps, --aux_k, --auxk, --seed >= 0, "
                                    "0 <= --threads <= 1024");
    return 0;
}

int cli_parse_pillow(const char *cmd, const char *s, int *legacy) {
    long long v;
    if (cli_parse_int(cmd, "pillow", s, &v)) return -1;
    if (v < 1 || v > 99) {
        cli_usage_error(cmd, "--pillow expects a Pillow major version (13, or 12 and older)");
        return -1;
    }
    *legacy = v <= 12;
    return 0;
}

int cli_parse_alpha(const char *cmd, const char *s, int *white) {
    if (strcmp(s, "drop") && strcmp(s, "white")) {
        cli_usage_error(cmd, "--alpha expects drop (transformers 4, the default) or white "
                             "(transformers 5)");
        return -1;
    }
    *white = !strcmp(s, "white");
    return 0;
}

int cli_parse_save_dtype(const char *cmd, const char *s, int *out) {
    static const char *names[3] = {"f32", "bf16", "f16"};
    for (int i = 0; i < 3; i++)
        if (!strcasecmp(s, names[i])) {
            *out = i;
            return 0;
        }
    cli_usage_error(cmd, "--save_dtype expects f32, bf16 or f16, got '%s'", s);
    return -1;
}

int cli_parse_double(const char *cmd, const char *flag, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v != v) {
        cli_usage_error(cmd, "--%s expects a number, got '%s'", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

void cli_paths_add(cli_paths *p, const char *arg) {
    char *copy = sf_strdup(arg), *save = NULL;
    p->bufs = sf_realloc(p->bufs, (size_t)(p->nbufs + 1) * sizeof *p->bufs);
    p->bufs[p->nbufs++] = copy;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        p->v = sf_realloc(p->v, (size_t)(p->n + 1) * sizeof *p->v);
        p->v[p->n++] = tok;
    }
}

void cli_paths_free(cli_paths *p) {
    for (int i = 0; i < p->nbufs; i++)
        free(p->bufs[i]);
    free(p->bufs);
    free(p->v);
    memset(p, 0, sizeof *p);
}

static void usage(FILE *out) {
    fprintf(out,
            "saeflow %s: sparse autoencoders for CLIP and FLUX activations\n\n"
            "usage: saeflow <command> [options]   (saeflow <command> --help)\n\ncommands:\n",
            SF_VERSION);
    for (int i = 0; i < n_commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].desc);
}

int cmd_help(int argc, char **argv) {
    if (argc >= 2) {
        for (int i = 0; i < n_commands; i++)
            if (!strcmp(commands[i].name, argv[1]) && strcmp(argv[1], "help")) {
                char *args[] = {argv[1], "--help", NULL};
                optind = 1;
                return commands[i].fn(2, args);
            }
        fprintf(stderr, "saeflow: unknown command '%s'\n", argv[1]);
        return 2;
    }
    usage(stdout);
    return 0;
}

int main(int argc, char **argv) {
    /* Before anything is printed or opened: this may re-exec the process so
     * that OpenBLAS loads its kernels for this CPU (see kernels.h). */
    sf_kernels_fix_blas_core();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return cmd_help(1, argv);
    if (!strcmp(argv[1], "--version")) {
        printf("saeflow %s\n", SF_VERSION);
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "flux") && !strcmp(argv[2], "encode-prompts")) {
        optind = 1;
        return cli_flux_encode_prompts(argc - 2, argv + 2);
    }
    if (argc >= 3 && !strcmp(argv[1], "flux") && !strcmp(argv[2], "generate")) {
        optind = 1;
        return cli_flux_generate(argc - 2, argv + 2);
    }
    /* MPI (docs/mpi.md): train, encode, topk and extract split their work
     * across ranks. Any other command launched on several ranks would run R
     * times over the same outputs, so it is refused. */
    static const char *const dist_cmds[] = {"train", "encode", "topk", "extract", NULL};
    int dist_ok = 0;
    for (int i = 0; dist_cmds[i]; i++)
        dist_ok |= !strcmp(argv[1], dist_cmds[i]);
    const char *ws =
        getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
    const int multi = ws && atoi(ws) > 1;
    if (!dist_ok && multi) {
        fprintf(stderr,
                "saeflow %s: only train, encode, topk and extract run under MPI with several "
                "ranks\n",
                argv[1]);
        return 2;
    }
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(commands[i].name, argv[1])) {
            optind = 1; /* each subcommand parses argv[1..] afresh */
            if (!dist_ok) return commands[i].fn(argc - 1, argv + 1);
            if (sf_dist_init(&argc, &argv)) return cli_fail(argv[1]);
            int rc = commands[i].fn(argc - 1, argv + 1);
            /* A rank that failed (its error is printed above) must not leave
             * the others waiting in a collective or for its chunks (unless
             * every rank stopped together: sf_dist_check, train). */
            if (rc && sf_dist_size() > 1 && !sf_dist_failed_together()) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s failed (see above); stopping every rank", argv[1]);
                sf_dist_abort(rc, msg);
            }
            sf_dist_finalize();
            return rc;
        }
    fprintf(stderr, "saeflow: unknown command '%s' (see `saeflow help`)\n", argv[1]);
    return 2;
}

int cli_sae_io_flag(const char *cmd, int opt, const char *arg, cli_sae_io *io) {
    switch (opt) {
    case CLI_IO_CKPT:
        io->ckpt = arg;
        return 1;
    case CLI_IO_INPUT:
        io->input = arg;
        return 1;
    case CLI_IO_KEY:
        io->key = arg;
        return 1;
    case CLI_IO_OUT:
        io->out = arg;
        return 1;
    case CLI_IO_OUTKEY:
        io->outkey = arg;
        return 1;
    case CLI_IO_THREADS:
        return cli_parse_int(cmd, "threads", arg, &io->threads) ? -1 : 1;
    }
    return 0;
}

int cli_sae_io_load(const char *cmd, const cli_sae_io *io, int argc, char **argv, sf_sae *s) {
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!io->ckpt || !io->input || !io->out)
        return cli_usage_error(cmd, "--checkpoint, --input and --out are required");
    if (io->threads < 0 || io->threads > 1024)
        return cli_usage_error(cmd, "--threads must be in [0, 1024]");
    sf_kernels_set_threads((int)io->threads);
    return sf_sae_load(s, io->ckpt) ? cli_fail(cmd) : 0;
}

int cli_sae_io_data(const char *cmd, const cli_sae_io *io, const sf_sae *s, sf_sae_data *D) {
    const char *paths[1] = {io->input};
    if (sf_sae_data_open(D, paths, 1, io->key)) return cli_fail(cmd);
    if (D->d != s->d) {
        sf_error("%s: tensor '%s' has width %d but the checkpoint %s has features %d", io->input,
                 io->key, D->d, io->ckpt, s->d);
        sf_sae_data_close(D);
        return cli_fail(cmd);
    }
    return 0;
}
