/* saeflow train --source flux|file: SAEs trained on rows as an activation
 * source yields them (saeflow/pipeline.h), one SAE per hook.
 *
 * The reference (fluxsae.py) samples 32 prompts through FLUX per step and
 * trains one SAE at one location, so a sweep over locations repeats the
 * sampling per location. Here one sampling pass feeds every hook: each
 * stream of a batch is appended to its hook's row queue, and whenever a
 * queue holds `batch_size` rows its SAE takes a step on them, in the order
 * the source gave them. A file written by `extract --source flux` with the
 * same settings yields the same rows in the same order, so --source file
 * gives the same checkpoints (one code path, two sources).
 */
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "saeflow/buf.h"
#include "saeflow/dist.h"
#include "saeflow/pipeline.h"
#include "saeflow/sae_arch.h"
#include "saeflow/sae_train.h"
#include "saeflow/torch_rng.h"

static const char *CMD = "train";

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow train --source flux --model DIR --prompts FILE --hook H [--hook H ...]\n"
        "       saeflow train --source file --tensorpath FILE --hook KEY [--hook KEY ...]\n"
        "\n"
        "Trains one SAE per hook on rows sampled on the fly (flux: one FLUX.1 step per\n"
        "group of prompts, the reference's FluxActivationSampler; one pass feeds every hook)\n"
        "or read in order from an `extract --source flux` file (file). Each hook's SAE\n"
        "steps whenever batch_size of its rows are queued, in source order; training\n"
        "stops after --iters steps per hook or when the prompts run out.\n"
        "Writes SAVEDIR/<NAME->HOOK/{config.json (with \"hook\"), model.safetensors,\n"
        "metrics.jsonl}.\n"
        "\n"
        "source:\n"
        "  --hook H[@K=V,...]    transformer_blocks.N:0|1 (0 text, 1 image),\n"
        "                        single_transformer_blocks.N[:text|:image], +:delta; file:\n"
        "                        the tensor key. @arch=,k=,expansion=,lmbda= override the\n"
        "                        shared SAE flags for this hook\n"
        "  --model DIR           FLUX pipeline / transformer folder or BFL file (flux)\n"
        "  --prompts FILE        `saeflow flux encode-prompts` output (flux), or prompts\n"
        "                        encoded on the fly (T5 and the transformer in memory together):\n"
        "  --captions FILE       one prompt per line\n"
        "  --dataset SPEC        the captions of cc3m:PATTERN, wds:PATTERN (see saeflow data)\n"
        "  --text_model DIR      FLUX pipeline folder with the text encoders (default --model)\n"
        "  --max_sequence_length L  T5 tokens (default 256)\n"
        "  --tensorpath FILE     extract output (file; repeat or comma-separate)\n"
        "  --height H --width W  pixels (default 256 x 256)\n"
        "  --prompt_batch N      prompts per forward (default 32)\n"
        "  --tokens_per_image N  random rows per prompt and hook (default 8: 256 rows per 32\n"
        "                        prompts, the reference's nsamples); 0 = every token\n"
        "  --rows_per_batch N    instead: N random rows of all rows of each group (the\n"
        "                        reference's exact nsamples draw)\n"
        "  --shuffle W           mix the rows of W groups of prompts (default 1; 0 = off)\n"
        "  --noise_seed S        noise / selection seed (default: --seed)\n"
        "  --rng avx2|default    torch randn kernels to reproduce (default avx2)\n"
        "  --dtype D             transformer weights: as-stored (default), f32, bf16\n"
        "  --limit N             only the first N prompts\n"
        "SAE (shared by all hooks unless overridden):\n"
        "  --arch NAME           standard (default, the reference's) or topk, gated, ...\n"
        "  --expansion E         pages = width x E (default 4)\n"
        "  --k K                 TopK active latents (default 16)\n"
        "  --lmbda L             standard: L1 weight (default 0.01)\n"
        "  --batch_size B        rows per step (default 256)\n"
        "  --iters N             steps per hook (default 4096)\n"
        "  --lr, --lr_warmup_steps, --auxk, --aux_k, --bodycount, --normalise,\n"
        "  --lmbda_warmup_steps  as in `saeflow train` (lr 5e-5, warmup 256, clip 1)\n"
        "run:\n"
        "  --savedir DIR         (default checkpoints)\n"
        "  --name NAME           checkpoint folder prefix (default: the hook name alone)\n"
        "  --save_every S        also checkpoint every S steps (of the slowest hook of a\n"
        "                        source), with the metrics and the source position\n"
        "  --resume              continue each hook from its checkpoint and the source from\n"
        "                        the saved position (same source flags; with the trainer\n"
        "                        state and queued rows: equals an uninterrupted run)\n"
        "  --seed S              SAE init seed (default 0)\n"
        "  --threads T           OpenMP threads (default: all cores)\n"
        "  --quiet               no summary\n");
}

typedef struct {
    char *hook, *key; /* as given (before @), the stream name it matches */
    sf_sae_arch arch;
    long long k, expansion;
    double lmbda;
    sf_sae s;
    int have_sae;
    sf_sae_trainer *t;
    SF_VEC(float) q; /* queued rows (n * d floats) */
    int64_t steps;
    char *outdir;
    FILE *mf; /* metrics.jsonl, a line appended and flushed per step */
    int had_dir;
    int64_t resume_row; /* source row a resumed run continues from */
    sf_sae_metrics m;
} hook_run;

/* "H@arch=topk,k=16" -> h->hook "H" and the overrides. */
static int parse_hook(const char *arg, hook_run *h) {
    char *s = sf_strdup(arg), *at = strchr(s, '@');
    if (at) *at++ = 0;
    h->hook = s;
    while (at && *at) {
        char *comma = strchr(at, ',');
        if (comma) *comma = 0;
        char *eq = strchr(at, '=');
        if (!eq) return cli_usage_error(CMD, "--hook %s: expected KEY=VALUE after @", arg);
        *eq++ = 0;
        int bad = 0;
        if (!strcmp(at, "arch")) {
            if (sf_sae_arch_parse(eq, &h->arch)) return cli_usage_error(CMD, "%s", sf_errmsg());
        } else if (!strcmp(at, "k"))
            bad = cli_parse_int(CMD, "k", eq, &h->k);
        else if (!strcmp(at, "expansion"))
            bad = cli_parse_int(CMD, "expansion", eq, &h->expansion);
        else if (!strcmp(at, "lmbda"))
            bad = cli_parse_double(CMD, "lmbda", eq, &h->lmbda);
        else
            return cli_usage_error(CMD,
                                   "--hook %s: unknown setting '%s' (arch, k, expansion, "
                                   "lmbda)",
                                   arg, at);
        if (bad) return 2;
        at = comma ? comma + 1 : NULL;
    }
    return 0;
}

/* Checkpoint; `row` is where the source continues on --resume. Order: the
 * trainer state (Adam moments, counters, the rows queued for the next step,
 * the step and row), then the checkpoint, each atomically. The metrics are
 * on disk already (flushed per step); a resume cuts them back to the state's
 * step. */
static int save_hook(hook_run *h, int64_t row) {
    sf_sae_config_set_number(&h->s, "steps", (double)h->steps);
    sf_sae_config_set_number(&h->s, "resume_row", (double)row);
    sf_st_writer *w = sf_stw_new();
    int rc = sf_sae_trainer_state_add(h->t, w);
    const int64_t qshape[2] = {(int64_t)(h->q.n / (size_t)h->s.d), h->s.d};
    if (!rc && h->q.n) rc = sf_stw_add(w, "queue", SF_DT_F32, 2, qshape, h->q.v);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)h->steps);
    sf_stw_meta(w, "source_steps", v);
    snprintf(v, sizeof v, "%lld", (long long)row);
    sf_stw_meta(w, "source_row", v);
    char *spath = sf_path_join(h->outdir, SF_SAE_STATE_FILE);
    if (!rc) rc = sf_stw_write(w, spath);
    sf_stw_free(w);
    free(spath);
    if (rc || sf_sae_save(&h->s, h->outdir))
        return sf_error_prefix("%s: saving checkpoint", h->hook);
    return 0;
}

/* The trainer state of a resumed hook (when its run saved one): steps and
 * source row (from the state: it may be one save ahead of config.json), and
 * with t set, the optimizer state and the queued rows. 1 = loaded, 0 = none. */
static int hook_state(hook_run *h, sf_sae_trainer *t) {
    char *spath = sf_path_join(h->outdir, SF_SAE_STATE_FILE);
    struct stat st;
    int have = stat(spath, &st) == 0, rc = 0;
    sf_st f;
    if (have && sf_st_open(&f, spath)) have = 0, rc = -1;
    free(spath);
    if (!have) return rc;
    const char *ss = sf_st_meta(&f, "source_steps"), *sr = sf_st_meta(&f, "source_row");
    if (!ss || !sr) rc = sf_error("%s: no source_steps / source_row", f.path);
    if (!rc) {
        h->steps = strtoll(ss, NULL, 10);
        h->resume_row = strtoll(sr, NULL, 10);
    }
    if (!rc && t) rc = sf_sae_trainer_state_load(t, &f);
    const sf_tensor_info *q = sf_st_find(&f, "queue");
    if (!rc && t && q) {
        if (q->dtype != SF_DT_F32 || q->ndim != 2 || q->shape[1] != h->s.d)
            rc = sf_error("%s: tensor 'queue' is not F32 (rows, %d)", f.path, h->s.d);
        else {
            h->q.n = 0;
            sf_vec_append(&h->q, (const float *)q->data, (size_t)(q->shape[0] * q->shape[1]));
        }
    }
    sf_st_close(&f);
    return rc ? -1 : 1;
}

/* --resume: the checkpoint in h->outdir (if any) with its step count and
 * source position. 1 = resumed, 0 = nothing there, -1 error. */
static int resume_hook(hook_run *h, const char *fingerprint) {
    char *cpath = sf_path_join(h->outdir, "config.json");
    struct stat st;
    int have = stat(cpath, &st) == 0;
    free(cpath);
    if (!have) return 0;
    if (sf_sae_load(&h->s, h->outdir)) return -1;
    h->have_sae = 1;
    const cJSON *steps = cJSON_GetObjectItem(h->s.config, "steps");
    const cJSON *row = cJSON_GetObjectItem(h->s.config, "resume_row");
    const cJSON *fp = cJSON_GetObjectItem(h->s.config, "source_fingerprint");
    if (!cJSON_IsNumber(steps) || !cJSON_IsNumber(row) || steps->valuedouble < 0 ||
        row->valuedouble < 0)
        return sf_error("%s: config.json lacks \"steps\" / \"resume_row\" (not written by "
                        "train --source)",
                        h->outdir);
    if (fingerprint && (!cJSON_IsString(fp) || strcmp(fp->valuestring, fingerprint)))
        return sf_error("%s: the checkpoint was sampled with other source settings:\n  %s\n"
                        "now:\n  %s",
                        h->outdir, cJSON_IsString(fp) ? fp->valuestring : "(none)", fingerprint);
    h->steps = (int64_t)steps->valuedouble;
    h->resume_row = (int64_t)row->valuedouble;
    if (hook_state(h, NULL) < 0) return -1;
    return 1;
}

/* Queue rows of hook h (x may be NULL: none); step its SAE on every full
 * batch of Bl rows, at most max_steps times (Bg: the rows of a step over all
 * MPI ranks, for the metrics). Rank 0 alone logs (h->mf). */
static int feed(hook_run *h, const float *x, int64_t n, int Bl, int Bg, int64_t iters,
                int64_t max_steps) {
    const size_t d = (size_t)h->s.d;
    if (x) sf_vec_append(&h->q, x, (size_t)n * d);
    size_t off = 0;
    char line[2048];
    for (int64_t taken = 0; h->q.n - off >= (size_t)Bl * d && h->steps < iters && taken < max_steps;
         taken++) {
        if (sf_sae_trainer_step(h->t, h->q.v + off, Bl, &h->m))
            return sf_error_prefix("%s: step %lld", h->hook, (long long)h->steps);
        off += (size_t)Bl * d;
        h->steps++;
        sf_sae_metrics_json(&h->m, h->steps, 0, h->steps * Bg, line, sizeof line);
        if (h->mf && (fprintf(h->mf, "%s\n", line) < 0 || fflush(h->mf)))
            return sf_error("%s/metrics.jsonl: write failed", h->outdir);
    }
    if (h->steps >= iters) off = h->q.n; /* done: drop the rest */
    memmove(h->q.v, h->q.v + off, (h->q.n - off) * sizeof(float));
    h->q.n -= off;
    return 0;
}

/* The slowest hook's steps (of source si; every hook for flux). */
static int64_t slowest(const hook_run *hooks, int nh, int is_flux, int si, int64_t iters) {
    int64_t lo = iters;
    for (int i = 0; i < nh; i++)
        if (is_flux || i == si) lo = hooks[i].steps < lo ? hooks[i].steps : lo;
    return lo;
}

/* Under MPI (docs/mpi.md): data-parallel rounds over the prompt windows.
 * Round r: rank q samples window w + q (w = the first window not trained on,
 * global), each hook's SAE steps in lockstep on every rank (the gradients
 * are averaged inside sf_sae_trainer_step) on local batches of B / R rows,
 * as many as every rank's window filled; a window's rows that do not fill a
 * whole local batch are dropped, so no rank holds queued rows at a round's
 * end and the position (a window boundary) is all a resume needs, with any
 * R. A round where some rank gets no window (the prompts ran out) is not
 * trained on. Rank 0 logs and saves. *at: the source row to resume from. */
static int mpi_rounds(hook_run *hooks, int nh, sf_act_source *src, int B, int64_t iters,
                      int64_t save_every, int64_t *at, int64_t *rows_seen, sf_progress *pb) {
    const int R = sf_dist_size(), rank = sf_dist_rank(), lead = rank == 0;
    const int Bl = B / R;
    const int64_t W = sf_flux_source_window(src), N = src->n_rows;
    if (*at % W && *at < N)
        return sf_error("resume row %lld is not at a window boundary (%lld prompts)",
                        (long long)*at, (long long)W);
    int64_t w = *at / W, *avail = sf_malloc((size_t)nh * sizeof(int64_t));
    int save_err = 0, rc = 0;
    for (;;) {
        const int64_t lo = slowest(hooks, nh, 1, 0, iters);
        if (lo >= iters) break;
        const int64_t row0 = (w + rank) * W;
        int err = save_err, r = 0;
        sf_act_batch b;
        if (!err && row0 < N && !(err = sf_act_source_seek(src, row0, row0 + W < N ? row0 + W : N)))
            err = (r = sf_act_source_next(src, &b)) < 0;
        if (sf_dist_check(err)) { /* one rank failed: all stop here, between steps */
            rc = -1;
            break;
        }
        unsigned char miss = r != 1;
        if (sf_dist_allreduce_max_u8(&miss, 1)) sf_dist_abort(1, sf_errmsg());
        if (miss) break;
        for (int j = 0; j < b.n_streams; j++) {
            hooks[j].q.n = 0; /* rows of a 1-process state's queue are not used either */
            feed(&hooks[j], b.stream[j].x, b.stream[j].n, Bl, B, iters, 0);
            *rows_seen += b.stream[j].n;
        }
        for (int i = 0; i < nh; i++) {
            int64_t can = (int64_t)(hooks[i].q.n / ((size_t)Bl * hooks[i].s.d));
            avail[i] = can < iters - hooks[i].steps ? can : iters - hooks[i].steps;
        }
        if (sf_dist_allreduce_min_i64(avail, (size_t)nh)) sf_dist_abort(1, sf_errmsg());
        for (int i = 0; i < nh; i++) {
            if (feed(&hooks[i], NULL, 0, Bl, B, iters, avail[i]))
                sf_dist_abort(1, sf_errmsg()); /* inside a step: others may wait in it */
            hooks[i].q.n = 0;                  /* what did not fill a local batch */
        }
        w += R;
        *at = w * W < N ? w * W : N;
        const int64_t lo2 = slowest(hooks, nh, 1, 0, iters);
        if (save_every > 0 && lo2 < iters && lo2 / save_every > lo / save_every) {
            for (int i = 0; i < nh && lead && !save_err; i++)
                save_err = save_hook(&hooks[i], *at) != 0;
            const char *kill = getenv("SAEFLOW_TEST_KILL"); /* test hook: [RANK:]STEP */
            const char *colon = kill ? strchr(kill, ':') : NULL;
            if (kill && *kill && (colon ? atoi(kill) : 0) == rank &&
                lo2 >= atoll(colon ? colon + 1 : kill))
                raise(SIGKILL);
        }
        if (lead) {
            char extra[96];
            snprintf(extra, sizeof extra, " %s loss %.4g l0 %.1f", hooks[0].key, hooks[0].m.loss,
                     hooks[0].m.l0);
            sf_progress_update(pb, (uint64_t)hooks[0].steps, extra);
        }
    }
    if (!rc && sf_dist_check(save_err)) rc = -1;
    free(avail);
    return rc;
}

int cmd_train_source(int argc, char **argv) {
    enum {
        O_SRC = 1000,
        O_HOOK,
        O_MODEL,
        O_PROMPTS,
        O_TP,
        O_H,
        O_W,
        O_PB,
        O_TPI,
        O_SHUF,
        O_NSEED,
        O_RNG,
        O_DTYPE,
        O_LIMIT,
        O_ARCH,
        O_EXP,
        O_K,
        O_LMBDA,
        O_ITERS,
        O_SAVEDIR,
        O_NAME,
        O_SAVEEV,
        O_QUIET,
        O_HELP,
        O_CAPS,
        O_DS,
        O_TM,
        O_MSL,
        O_RPB,
        O_RESUME
    };
    static const struct option opts[] = {{"source", required_argument, 0, O_SRC},
                                         {"hook", required_argument, 0, O_HOOK},
                                         {"model", required_argument, 0, O_MODEL},
                                         {"prompts", required_argument, 0, O_PROMPTS},
                                         {"tensorpath", required_argument, 0, O_TP},
                                         {"height", required_argument, 0, O_H},
                                         {"width", required_argument, 0, O_W},
                                         {"prompt_batch", required_argument, 0, O_PB},
                                         {"tokens_per_image", required_argument, 0, O_TPI},
                                         {"shuffle", required_argument, 0, O_SHUF},
                                         {"noise_seed", required_argument, 0, O_NSEED},
                                         {"rng", required_argument, 0, O_RNG},
                                         {"dtype", required_argument, 0, O_DTYPE},
                                         {"limit", required_argument, 0, O_LIMIT},
                                         {"arch", required_argument, 0, O_ARCH},
                                         {"expansion", required_argument, 0, O_EXP},
                                         {"k", required_argument, 0, O_K},
                                         {"lmbda", required_argument, 0, O_LMBDA},
                                         {"iters", required_argument, 0, O_ITERS},
                                         {"savedir", required_argument, 0, O_SAVEDIR},
                                         {"name", required_argument, 0, O_NAME},
                                         {"save_every", required_argument, 0, O_SAVEEV},
                                         {"quiet", no_argument, 0, O_QUIET},
                                         {"help", no_argument, 0, O_HELP},
                                         {"captions", required_argument, 0, O_CAPS},
                                         {"rows_per_batch", required_argument, 0, O_RPB},
                                         {"resume", no_argument, 0, O_RESUME},
                                         {"dataset", required_argument, 0, O_DS},
                                         {"text_model", required_argument, 0, O_TM},
                                         {"max_sequence_length", required_argument, 0, O_MSL},
                                         CLI_TRAIN_OPTIONS,
                                         {0, 0, 0, 0}};
    cli_train_flags tf = {.lr = 5e-5,
                          .auxk = 1.0 / 32,
                          .bandwidth = 0.001,
                          .jumpthreshold = 0.001,
                          .lr_warmup_steps = 256,
                          .lmbda_warmup_steps = 256,
                          .batch_size = 256,
                          .num_epochs = 1,
                          .aux_k = 512,
                          .bodycount = 16384};
    const char *source = NULL, *savedir = "checkpoints", *name = NULL;
    sf_flux_source_opts fo = {.limit = -1};
    cli_paths paths = {0};
    hook_run *hooks = sf_calloc(SF_ACT_MAX_STREAMS, sizeof *hooks);
    int nh = 0, quiet = 0, resume = 0, c, rc = 2;
    const int R = sf_dist_size(), lead = sf_dist_rank() == 0;
    int coll = 0; /* a failure every rank knows of (else: MPI_Abort at fail) */
    char *fingerprint = NULL;
    sf_sae_arch arch = SF_SAE_STANDARD;
    long long k = 16, expansion = 4, iters = 4096, save_every = 0, v, nseed = -1;
    long long tpi = 8, shuffle = 1;
    double lmbda = 0.01;
    sf_act_source *srcs[SF_ACT_MAX_STREAMS] = {0};
    int64_t at[SF_ACT_MAX_STREAMS] = {0}; /* per source: the row it reads next */
    int nsrc = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0, shared = cli_train_flag(CMD, c, optarg, &tf);
        if (shared < 0) goto out;
        if (shared) continue;
        switch (c) {
        case O_SRC:
            source = optarg;
            break;
        case O_HOOK:
            if (nh == SF_ACT_MAX_STREAMS) {
                rc = cli_usage_error(CMD, "at most %d hooks", SF_ACT_MAX_STREAMS);
                goto out;
            }
            hooks[nh].arch = (sf_sae_arch)-1, hooks[nh].k = -1, hooks[nh].expansion = -1,
            hooks[nh].lmbda = -1;
            if (parse_hook(optarg, &hooks[nh++])) goto out;
            break;
        case O_MODEL:
            fo.model = optarg;
            break;
        case O_PROMPTS:
            fo.prompts = optarg;
            break;
        case O_RESUME:
            resume = 1;
            break;
        case O_RPB:
            bad = cli_parse_int(CMD, "rows_per_batch", optarg, &v);
            fo.rows_per_batch = v, tpi = 0;
            break;
        case O_CAPS:
            fo.captions = optarg;
            break;
        case O_DS:
            fo.dataset = optarg;
            break;
        case O_TM:
            fo.text_model = optarg;
            break;
        case O_MSL:
            bad = cli_parse_int(CMD, "max_sequence_length", optarg, &v);
            fo.max_sequence_length = (int)v;
            break;
        case O_TP:
            cli_paths_add(&paths, optarg);
            break;
        case O_H:
            bad = cli_parse_int(CMD, "height", optarg, &v), fo.height = (int)v;
            break;
        case O_W:
            bad = cli_parse_int(CMD, "width", optarg, &v), fo.width = (int)v;
            break;
        case O_PB:
            bad = cli_parse_int(CMD, "prompt_batch", optarg, &v), fo.batch = (int)v;
            break;
        case O_TPI:
            bad = cli_parse_int(CMD, "tokens_per_image", optarg, &tpi);
            break;
        case O_SHUF:
            bad = cli_parse_int(CMD, "shuffle", optarg, &shuffle);
            break;
        case O_NSEED:
            bad = cli_parse_int(CMD, "noise_seed", optarg, &nseed);
            break;
        case O_RNG: {
            sf_torch_rng_kind kind;
            if (sf_torch_rng_kind_parse(optarg, &kind)) {
                rc = cli_usage_error(CMD, "--rng must be avx2 or default");
                goto out;
            }
            fo.rng_kind = (int)kind;
            break;
        }
        case O_DTYPE:
            if (!strcmp(optarg, "f32"))
                fo.dtype = SF_DT_F32;
            else if (!strcmp(optarg, "bf16"))
                fo.dtype = SF_DT_BF16;
            else if (strcmp(optarg, "as-stored")) {
                rc = cli_usage_error(CMD, "--dtype must be as-stored, f32 or bf16");
                goto out;
            }
            break;
        case O_LIMIT:
            bad = cli_parse_int(CMD, "limit", optarg, &v), fo.limit = v;
            break;
        case O_ARCH:
            if (sf_sae_arch_parse(optarg, &arch)) {
                rc = cli_usage_error(CMD, "%s", sf_errmsg());
                goto out;
            }
            break;
        case O_EXP:
            bad = cli_parse_int(CMD, "expansion", optarg, &expansion);
            break;
        case O_K:
            bad = cli_parse_int(CMD, "k", optarg, &k);
            break;
        case O_LMBDA:
            bad = cli_parse_double(CMD, "lmbda", optarg, &lmbda);
            break;
        case O_ITERS:
            bad = cli_parse_int(CMD, "iters", optarg, &iters);
            break;
        case O_SAVEDIR:
            savedir = optarg;
            break;
        case O_NAME:
            name = optarg;
            break;
        case O_SAVEEV:
            bad = cli_parse_int(CMD, "save_every", optarg, &save_every);
            break;
        case O_QUIET:
            quiet = 1;
            break;
        case O_HELP:
            usage(stdout);
            rc = 0;
            goto out;
        default:
            rc = cli_usage_error(CMD, "unknown option");
            goto out;
        }
        if (bad) goto out;
    }
    if (optind < argc) {
        rc = cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    const int is_flux = source && !strcmp(source, "flux");
    if (!source || (!is_flux && strcmp(source, "file"))) {
        rc = cli_usage_error(CMD, "--source must be flux or file");
        goto out;
    }
    if (!nh) {
        rc = cli_usage_error(CMD, "give at least one --hook");
        goto out;
    }
    const int n_in = !!fo.prompts + !!fo.captions + !!fo.dataset;
    if (is_flux ? !fo.model || n_in != 1 || paths.n : !paths.n || fo.model || n_in) {
        rc = cli_usage_error(CMD, "--source flux takes --model and one of --prompts, --captions, "
                                  "--dataset; --source file takes --tensorpath");
        goto out;
    }
    if (cli_train_flags_check(CMD, &tf)) goto out;
    if (k < 1 || expansion < 1 || iters < 1 || save_every < 0 || tpi < 0 || shuffle < 0 ||
        fo.rows_per_batch < 0 || !(lmbda >= 0) || fo.height < 0 || fo.width < 0 || fo.batch < 0) {
        rc = cli_usage_error(CMD, "--k, --expansion, --iters must be positive; --save_every, "
                                  "--tokens_per_image, --shuffle, --lmbda non-negative");
        goto out;
    }
    /* under MPI: data-parallel over prompt windows (mpi_rounds); rank 0 alone
     * prints, logs and saves */
    if (R > 1 && (!is_flux || tf.batch_size % R)) {
        if (lead)
            cli_usage_error(CMD,
                            "under MPI: --source flux only, with --batch_size divisible by the "
                            "%d ranks",
                            R);
        rc = 2;
        goto out;
    }
    if (!lead) quiet = 1;
    sf_kernels_set_threads((int)tf.threads);
    rc = 1;
    // the sources: one flux source for all hooks, or one file source per hook
    const char *hook_names[SF_ACT_MAX_STREAMS];
    for (int i = 0; i < nh; i++)
        hook_names[i] = hooks[i].hook;
    if (is_flux) {
        fo.hooks = hook_names, fo.n_hooks = nh;
        fo.seed = (uint64_t)(nseed >= 0 ? nseed : tf.seed);
        fo.tokens_per_image = fo.rows_per_batch > 0 ? 0 : tpi, fo.shuffle = (int)shuffle;
        if (!(srcs[nsrc++] = sf_flux_source_open(&fo))) goto fail;
        fingerprint = sf_flux_source_fingerprint(srcs[0], 0);
    } else {
        for (int i = 0; i < nh; i++) {
            sf_file_source_opts so = {paths.v, paths.n, hooks[i].hook, NULL, 0, -1, 4096};
            if (!(srcs[nsrc++] = sf_file_source_open(&so))) goto fail;
        }
    }
    for (int i = 0; i < nh; i++) {
        hook_run *h = &hooks[i];
        const sf_act_source *s = is_flux ? srcs[0] : srcs[i];
        h->key = sf_strdup(s->names[is_flux ? i : 0]);
        if ((int)h->arch < 0) h->arch = arch;
        if (h->k < 0) h->k = k;
        if (h->expansion < 0) h->expansion = expansion;
        if (h->lmbda < 0) h->lmbda = lmbda;
        const int64_t d = s->d[is_flux ? i : 0], n = d * h->expansion;
        char dir[512];
        snprintf(dir, sizeof dir, "%s%s%s", name ? name : "", name ? "-" : "", h->key);
        for (char *p = dir; *p; p++) /* "...:delta" -> "...-delta": no ':' in paths */
            if (*p == ':') *p = '-';
        h->outdir = sf_path_join(savedir, dir);
        struct stat st;
        h->had_dir = stat(h->outdir, &st) == 0;
        int resumed = resume ? resume_hook(h, fingerprint) : 0;
        if (resumed < 0) goto fail;
        if (resumed && h->s.d != d) {
            sf_error("%s: checkpoint width %d, the source's %lld", h->outdir, h->s.d, (long long)d);
            goto fail;
        }
        if (resumed) goto trainer;
        if (n > (1 << 26) || h->k > n) {
            sf_error("%s: pages %lld (width x expansion) must be >= k %lld and at most 2^26",
                     h->hook, (long long)n, h->k);
            goto fail;
        }
        if (sf_sae_init(&h->s, h->arch, (int)d, (int)n, (int)h->k, (uint64_t)tf.seed)) goto fail;
        h->have_sae = 1;
        /* architecture defaults as `saeflow train` sets them */
        if ((h->arch == SF_SAE_MATRYOSHKA && sf_sae_set_matryoshka(&h->s, 0, NULL, 0)) ||
            (h->arch == SF_SAE_JUMPRELU && sf_sae_set_jumpthreshold(&h->s, tf.jumpthreshold)))
            goto fail;
        sf_sae_config_set_string(&h->s, "hook", h->key);
        sf_sae_config_set_string(&h->s, "source", is_flux ? "flux" : "file");
        if (fingerprint) sf_sae_config_set_string(&h->s, "source_fingerprint", fingerprint);
        if (h->arch == SF_SAE_STANDARD || h->arch == SF_SAE_GATED || h->arch == SF_SAE_JUMPRELU) {
            sf_sae_config_set_number(&h->s, "lmbda", h->lmbda);
            sf_sae_config_set_number(&h->s, "lmbda_warmup_steps", (double)tf.lmbda_warmup_steps);
        }
    trainer:;
        const int64_t pages = h->s.n;
        sf_sae_train_opts to;
        sf_sae_train_opts_default(&to);
        to.lr = tf.lr, to.lr_warmup_steps = tf.lr_warmup_steps, to.clip = 1.0;
        to.normalise = tf.normalise, to.auxk_coef = tf.auxk;
        to.aux_k = (int)(tf.aux_k < pages ? tf.aux_k : pages), to.bodycount = tf.bodycount;
        to.lmbda = h->lmbda, to.lmbda_warmup_steps = tf.lmbda_warmup_steps;
        to.bandwidth = tf.bandwidth;
        if (!(h->t = sf_sae_trainer_new(&h->s, &to, (int)tf.batch_size / R))) goto fail;
        if (resumed && hook_state(h, h->t) < 0) goto fail;
        if (!lead) continue; /* rank 0 alone writes */
        if (sf_mkdirs(h->outdir)) goto fail;
        /* the metrics of the steps the checkpoint holds (a resume), appended to */
        char *mpath = sf_path_join(h->outdir, "metrics.jsonl");
        h->mf = sf_sae_metrics_open(mpath, h->steps);
        free(mpath);
        if (!h->mf) goto fail;
        if (!resumed) { /* a stale state must not pair with this run's files */
            char *spath = sf_path_join(h->outdir, SF_SAE_STATE_FILE);
            unlink(spath);
            free(spath);
        }
    }
    // resumed runs: the sources continue where the checkpoints were taken
    for (int si = 0; si < nsrc; si++) {
        int64_t row = -1;
        for (int i = 0; i < nh; i++) {
            if (!is_flux && i != si) continue;
            if (row >= 0 && hooks[i].resume_row != row) {
                sf_error("the checkpoints of %s and %s continue from different source rows "
                         "(%lld, %lld): resume them in separate runs",
                         hooks[0].outdir, hooks[i].outdir, (long long)row,
                         (long long)hooks[i].resume_row);
                goto fail;
            }
            row = hooks[i].resume_row;
        }
        if (row > 0 && sf_act_source_seek(srcs[si], row < srcs[si]->n_rows ? row : srcs[si]->n_rows,
                                          srcs[si]->n_rows))
            goto fail;
        at[si] = row > 0 ? row : 0;
        if (row > 0 && !quiet) printf("resuming from source row %lld\n", (long long)row);
    }
    if (!quiet) {
        printf("training %d SAE%s (", nh, nh == 1 ? "" : "s");
        for (int i = 0; i < nh; i++)
            printf("%s%s: %s d %d pages %d%s", i ? "; " : "", hooks[i].key,
                   sf_sae_arch_name(hooks[i].arch), hooks[i].s.d, hooks[i].s.n,
                   hooks[i].arch == SF_SAE_TOPK ? "" : "");
        printf(") from %s, %lld steps of %lld rows each, %d threads\n",
               is_flux ? (fo.prompts    ? fo.prompts
                          : fo.captions ? fo.captions
                                        : fo.dataset)
                       : paths.v[0],
               iters, tf.batch_size, omp_get_max_threads());
        fflush(stdout);
    }
    // one pass over the source(s): every stream feeds its hook's SAE
    sf_progress pb;
    memset(&pb, 0, sizeof pb);
    if (lead) sf_progress_start(&pb, "train", (uint64_t)iters, "steps");
    const int B = (int)tf.batch_size;
    double t0 = sf_now();
    int64_t rows_seen = 0;
    if (R > 1 && mpi_rounds(hooks, nh, srcs[0], B, iters, save_every, &at[0], &rows_seen, &pb)) {
        coll = 1;
        goto fail_bar;
    }
    for (int si = 0; si < nsrc && R == 1; si++) {
        sf_act_batch b;
        int r;
        for (;;) {
            const int64_t lo = slowest(hooks, nh, is_flux, si, iters);
            if (lo >= iters) break;
            if ((r = sf_act_source_next(srcs[si], &b)) != 1) {
                if (r < 0) goto fail_bar;
                break;
            }
            for (int j = 0; j < b.n_streams; j++) {
                hook_run *h = &hooks[is_flux ? j : si];
                rows_seen += b.stream[j].n;
                if (feed(h, b.stream[j].x, b.stream[j].n, B, B, iters, INT64_MAX)) goto fail_bar;
            }
            /* checkpoints at batch ends: when the slowest hook of this source
             * passes a multiple of save_every, all its hooks save with the same
             * position (and the rows they have queued, < batch_size each, in
             * their trainer states) */
            at[si] = b.next_row;
            const int64_t lo2 = slowest(hooks, nh, is_flux, si, iters);
            if (save_every > 0 && lo2 < iters && lo2 / save_every > lo / save_every) {
                for (int i = 0; i < nh; i++)
                    if ((is_flux || i == si) && save_hook(&hooks[i], b.next_row)) goto fail_bar;
                /* test hook (docs/DEVELOPING.md): killed after this save */
                const char *kill = getenv("SAEFLOW_TEST_KILL");
                if (kill && *kill && lo2 >= atoll(kill)) raise(SIGKILL);
            }
            char extra[96];
            const hook_run *h0 = &hooks[is_flux ? 0 : si];
            snprintf(extra, sizeof extra, " %s loss %.4g l0 %.1f", h0->key, h0->m.loss, h0->m.l0);
            sf_progress_update(&pb, (uint64_t)h0->steps, extra);
        }
    }
    int save_err = 0;
    for (int i = 0; i < nh && lead && !save_err; i++)
        save_err = save_hook(&hooks[i], at[is_flux ? 0 : i]) != 0;
    if (sf_dist_check(save_err)) { /* every rank waits for the last checkpoint */
        coll = 1;
        goto fail_bar;
    }
    if (lead) sf_progress_finish(&pb, "");
    if (!quiet) {
        double el = sf_now() - t0;
        printf("%lld source rows in %.1f s (%.0f rows/s)\n", (long long)rows_seen, el,
               el > 0 ? (double)rows_seen / el : 0.0);
        for (int i = 0; i < nh; i++) {
            const hook_run *h = &hooks[i];
            printf("%s: %lld steps%s, loss %.6g l2_normalised %.4g l0 %.2f dead %.3f -> %s\n",
                   h->key, (long long)h->steps, h->steps < iters ? " (the source ran out)" : "",
                   h->m.loss, h->m.l2_normalised, h->m.l0, h->m.dead, h->outdir);
        }
    }
    rc = 0;
    goto out;
fail_bar:
    if (lead) sf_progress_finish(&pb, " failed");
fail:
    /* a failure on this rank alone (setup): the others may wait in a
     * reduction; end them all with this message */
    if (R > 1 && !coll) sf_dist_abort(1, sf_errmsg());
    rc = cli_fail(CMD);
out:
    for (int i = 0; i < nh; i++) {
        hook_run *h = &hooks[i];
        if (h->mf) fclose(h->mf);
        if (rc && lead && h->outdir && !h->had_dir && h->steps == 0) { /* nothing trained */
            char *mpath = sf_path_join(h->outdir, "metrics.jsonl");
            unlink(mpath);
            free(mpath);
            rmdir(h->outdir); /* fails once it holds other files */
        }
        if (h->t) sf_sae_trainer_free(h->t);
        if (h->have_sae) sf_sae_free(&h->s);
        sf_vec_free(&h->q);
        free(h->hook), free(h->key), free(h->outdir);
    }
    free(hooks);
    free(fingerprint);
    for (int i = 0; i < nsrc; i++)
        sf_act_source_close(srcs[i]);
    cli_paths_free(&paths);
    return rc;
}
