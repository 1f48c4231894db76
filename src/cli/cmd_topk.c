/* saeflow topk: stream activations through an SAE, keep the top-N activating
 * rows of every feature plus density / mean / max / histogram. The rows come
 * from activation files (--acts), from a dataset run through a CLIP vision
 * tower on the fly (--dataset + --model), or from FLUX sampled on the fly
 * (--source flux, one --hook; cli_flux_topk.c). */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/analysis.h"
#include "saeflow/clip.h"
#include "saeflow/dist.h"
#include "saeflow/pipeline.h"
#include "saeflow/sae.h"
#include "saeflow/sae_train.h"
#include "saeflow/torch_rng.h"

/* Rows are encoded in fixed slices (sf_sae_encoder_run_sliced), so the
 * output is the same for any --batch and --threads. */
#define SLICE SF_SAE_ENCODE_SLICE

/* Fills x (B, d) and rows (B) from the source, batch after batch, while
 * another full batch fits; returns how many rows, 0 at the end, -1 on error.
 * Skipped examples are counted (and the first few named) in *skipped. */
static int64_t fill(sf_act_source *src, float *x, int64_t *rows, int32_t *pos, int64_t B,
                    int64_t max_batch, int64_t *skipped, int64_t *next_row) {
    int64_t m = 0;
    while (m + max_batch <= B) {
        sf_act_batch b;
        int r = sf_act_source_next(src, &b);
        if (r < 0) return -1;
        if (r == 0) break;
        for (int64_t i = 0; i < b.n_skipped; i++)
            if ((*skipped)++ < 5)
                fprintf(stderr, "saeflow topk: warning: row %lld has no decodable image, skipped\n",
                        (long long)b.skipped[i].row);
        const sf_act_stream *st = &b.stream[0];
        memcpy(x + m * st->d, st->x, (size_t)(st->n * st->d) * sizeof(float));
        memcpy(rows + m, st->rows, (size_t)st->n * sizeof(int64_t));
        if (pos) memcpy(pos + m, st->pos, (size_t)st->n * sizeof(int32_t));
        m += st->n;
        *next_row = b.next_row;
    }
    return m;
}

/* Token layout for per-token rows (see sf_topk_set_tokens): T positions;
 * CLIP's T = 1 + g*g is a CLS token then a g x g patch grid. */
static void token_layout(int T, int *gh, int *gw, int *first) {
    int g = (int)lround(sqrt((double)(T - 1)));
    if (g > 0 && g * g == T - 1) {
        *gh = *gw = g, *first = 1;
        return;
    }
    g = (int)lround(sqrt((double)T));
    *gh = *gw = g * g == T ? g : 0;
    *first = 0;
}

/* Tokens per image of a CLIP checkpoint, from its config.json. */
static int clip_vision_tokens(const char *model) {
    char *path = sf_path_join(model, "config.json");
    char *txt = sf_read_file(path, NULL);
    cJSON *j = txt ? cJSON_Parse(txt) : NULL;
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(j, "vision_config");
    const cJSON *is = cJSON_GetObjectItemCaseSensitive(vc, "image_size");
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(vc, "patch_size");
    int T = -1;
    if (cJSON_IsNumber(is) && cJSON_IsNumber(ps) && ps->valueint > 0 &&
        is->valueint / ps->valueint > 0 && is->valueint / ps->valueint <= 256)
        T = 1 + (is->valueint / ps->valueint) * (is->valueint / ps->valueint);
    else if (txt)
        sf_error("%s: no vision_config.image_size / patch_size", path);
    cJSON_Delete(j);
    free(txt);
    free(path);
    return T;
}

/* Tokens per example of per-token activation files: the largest position
 * in the first file's '<key>_pos' + 1. */
static int file_tokens(const char *path, const char *key) {
    sf_st st;
    if (sf_st_open(&st, path)) return -1;
    char name[512];
    snprintf(name, sizeof name, "%s_pos", key);
    const sf_tensor_info *t = sf_st_find(&st, name);
    int T = 0;
    for (int64_t i = 0; t && i < t->shape[0]; i++) {
        int32_t p;
        memcpy(&p, (const char *)t->data + i * 4, 4);
        if (p >= T) T = p + 1;
    }
    sf_st_close(&st);
    if (T <= 0 || T > 1 << 16) return sf_error("%s: tensor '%s': no usable positions", path, name);
    return T;
}

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow topk --checkpoint DIR --acts FILE [--acts FILE ...] --out FILE [options]\n"
        "       saeflow topk --checkpoint DIR --dataset SPEC --model CLIP_DIR --out FILE "
        "[options]\n"
        "\n"
        "For every SAE feature, keeps the N rows with the highest activation and\n"
        "per-feature statistics (density, mean and max activation, histogram), in one\n"
        "safetensors file for `saeflow explore`. Memory does not grow with the number\n"
        "of rows; results are identical for any --batch and --threads (equal values:\n"
        "the lower row id is kept first).\n"
        "\n"
        "  --checkpoint DIR   SAE checkpoint (config.json + model.safetensors)\n"
        "  --out FILE         output top-k file (written atomically)\n"
        "  -N, --top N        rows kept per feature (default 16)\n"
        "  --limit ROWS       only the first ROWS activation (or dataset) rows\n"
        "  --batch B          rows per batch, rounded up to a multiple of 256 (default 4096)\n"
        "  --threads T        threads (default: all cores)\n"
        "  --quiet            no progress bar or summary\n"
        "activation files:\n"
        "  --acts FILE        activations, safetensors [rows, d]; repeat for shards\n"
        "                     (row ids continue across files, in the order given)\n"
        "  --key NAME         tensor name in the activation files (default: activations)\n"
        "  --data SPEC        dataset the activation rows come from, recorded for\n"
        "                     explore (default: the activation file's 'dataset' metadata)\n"
        "  --rows-key NAME    I64 tensor giving each activation row's dataset row\n"
        "                     (default: '<key>_rows', else 'rows', as `saeflow extract`\n"
        "                     writes them, when present; 'none' to ignore them)\n"
        "  --row-offset R     without a row map: dataset row of activation row 0\n"
        "                     (default 0; row i is dataset row R + i)\n"
        "a dataset through CLIP's vision tower (no activation file):\n"
        "  --dataset SPEC     cc3m:, wds: or folder: (see saeflow data); rows whose image\n"
        "                     does not decode are skipped with a warning\n"
        "  --model DIR        Hugging Face CLIP checkpoint (+ preprocessor_config.json)\n"
        "  --vision WHAT      layer:N (CLS token of hidden_states[N]), pooled or embeds\n"
        "                     (default layer:-2, what the reference SAEs were trained on)\n"
        "  --clip-batch G     images per forward: 1, 2, 4 ... 256 (default 32); results\n"
        "                     depend on G in the last bits, like extract's --batch_size\n"
        "  --pillow 13|12     resize like this Pillow release (default 13; see extract)\n"
        "  --alpha drop|white transparent images: drop alpha (transformers 4, default) or\n"
        "                     composite onto white (transformers 5); see extract\n"
        "  --tokens cls|all   with --vision layer:N: the CLS token (default) or every\n"
        "                     token of every image\n"
        "per-token activations (--tokens all, or files with '<key>_pos' as `saeflow\n"
        "extract --tokens all` writes them): the top-N holds images, each with its best\n"
        "token and a heat map of the feature over all its tokens (for explore);\n"
        "density, mean and histogram stay per token.\n"
        "FLUX (docs/analysis.md): `extract --source flux --tokens_per_image 0` files\n"
        "(--acts FILE --key HOOK), or sampled on the fly with the same settings:\n"
        "  --source flux      with --model DIR, --hook H (one) and --prompts FILE |\n"
        "                     --captions FILE | --dataset SPEC, --text_model DIR,\n"
        "                     --max_sequence_length L, --height H, --width W,\n"
        "                     --prompt_batch N, --seed S, --rng avx2|default,\n"
        "                     --dtype as-stored|f32|bf16, --limit PROMPTS (as extract)\n"
        "  rows are prompt rows; heat maps cover the hook's tokens (text tokens, the\n"
        "  H/16 x W/16 image grid); the sampling settings are recorded for explore.\n");
}

int cmd_topk(int argc, char **argv) {
    const char *cmd = "topk";
    const char *ckpt = NULL, *out = NULL, *key = "activations", *data_spec = NULL, *rows_key = NULL;
    const char *dataset = NULL, *model = NULL, *vision = "layer:-2";
    const char **acts = sf_calloc((size_t)argc + 1, sizeof(char *));
    int n_acts = 0, quiet = 0, pillow_legacy = 0, tokens_all = 0, alpha_white = 0;
    long long top = 16, batch = 4096, threads = 0, limit = -1, row_offset = 0, G = 32;
    static const struct option opts[] = {{"checkpoint", required_argument, 0, 'c'},
                                         {"acts", required_argument, 0, 'a'},
                                         {"key", required_argument, 0, 'k'},
                                         {"out", required_argument, 0, 'o'},
                                         {"top", required_argument, 0, 'N'},
                                         {"data", required_argument, 0, 'd'},
                                         {"row-offset", required_argument, 0, 'r'},
                                         {"limit", required_argument, 0, 'l'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 't'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {"rows-key", required_argument, 0, 'R'},
                                         {"dataset", required_argument, 0, 'D'},
                                         {"model", required_argument, 0, 'M'},
                                         {"vision", required_argument, 0, 'V'},
                                         {"clip-batch", required_argument, 0, 'G'},
                                         {"pillow", required_argument, 0, 'P'},
                                         {"tokens", required_argument, 0, 'T'},
                                         {"alpha", required_argument, 0, 'A'},
                                         {"source", required_argument, 0, 1000},
                                         {"hook", required_argument, 0, 1001},
                                         {"prompts", required_argument, 0, 1002},
                                         {"captions", required_argument, 0, 1003},
                                         {"text_model", required_argument, 0, 1004},
                                         {"max_sequence_length", required_argument, 0, 1005},
                                         {"height", required_argument, 0, 1006},
                                         {"width", required_argument, 0, 1007},
                                         {"prompt_batch", required_argument, 0, 1008},
                                         {"seed", required_argument, 0, 1009},
                                         {"rng", required_argument, 0, 1010},
                                         {"dtype", required_argument, 0, 1011},
                                         {0, 0, 0, 0}};
    const char *source = NULL, *hook = NULL;
    sf_flux_source_opts fo = {.limit = -1};
    int flux_flags = 0;
    cli_flux_meta fm = {0};
    char *fp = NULL;
    int c, rc = 2;
    while ((c = getopt_long(argc, argv, "N:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            ckpt = optarg;
            break;
        case 'a':
            acts[n_acts++] = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'd':
            data_spec = optarg;
            break;
        case 'R':
            rows_key = optarg;
            break;
        case 'D':
            dataset = optarg;
            break;
        case 'M':
            model = optarg;
            break;
        case 'V':
            vision = optarg;
            break;
        case 'P':
            if (cli_parse_pillow(cmd, optarg, &pillow_legacy)) goto done;
            break;
        case 'A':
            if (cli_parse_alpha(cmd, optarg, &alpha_white)) goto done;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'T':
            if (strcmp(optarg, "cls") && strcmp(optarg, "all")) {
                rc = cli_usage_error(cmd, "--tokens must be cls or all");
                goto done;
            }
            tokens_all = !strcmp(optarg, "all");
            break;
        case 'N':
            if (cli_parse_int(cmd, "top", optarg, &top)) goto done;
            break;
        case 'r':
            if (cli_parse_int(cmd, "row-offset", optarg, &row_offset)) goto done;
            break;
        case 'l':
            if (cli_parse_int(cmd, "limit", optarg, &limit)) goto done;
            break;
        case 'b':
            if (cli_parse_int(cmd, "batch", optarg, &batch)) goto done;
            break;
        case 't':
            if (cli_parse_int(cmd, "threads", optarg, &threads)) goto done;
            break;
        case 'G':
            if (cli_parse_int(cmd, "clip-batch", optarg, &G)) goto done;
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto done;
        case 1000:
            source = optarg;
            break;
        case 1001:
            hook = optarg;
            break;
        case 1011:
            if (!strcmp(optarg, "f32"))
                fo.dtype = SF_DT_F32;
            else if (!strcmp(optarg, "bf16"))
                fo.dtype = SF_DT_BF16;
            else if (strcmp(optarg, "as-stored")) {
                rc = cli_usage_error(cmd, "--dtype must be as-stored, f32 or bf16");
                goto done;
            }
            flux_flags = 1;
            break;
        case 1010: {
            sf_torch_rng_kind kind;
            if (sf_torch_rng_kind_parse(optarg, &kind)) {
                rc = cli_usage_error(cmd, "--rng must be avx2 or default");
                goto done;
            }
            fo.rng_kind = (int)kind, flux_flags = 1;
            break;
        }
        case 1002:
        case 1003:
        case 1004:
            *(c == 1002 ? &fo.prompts : c == 1003 ? &fo.captions : &fo.text_model) = optarg;
            flux_flags = 1;
            break;
        case 1005:
        case 1006:
        case 1007:
        case 1008:
        case 1009: {
            long long v;
            static const char *const names[] = {"max_sequence_length", "height", "width",
                                                "prompt_batch", "seed"};
            if (cli_parse_int(cmd, names[c - 1005], optarg, &v)) goto done;
            if (v < 0 || v > (1LL << 40)) {
                rc = cli_usage_error(cmd, "--%s must be >= 0", names[c - 1005]);
                goto done;
            }
            if (c == 1005) fo.max_sequence_length = (int)v;
            if (c == 1006) fo.height = (int)v;
            if (c == 1007) fo.width = (int)v;
            if (c == 1008) fo.batch = (int)v;
            if (c == 1009) fo.seed = (uint64_t)v;
            flux_flags = 1;
            break;
        }
        default:
            rc = cli_usage_error(cmd, "unknown option");
            goto done;
        }
    }
    const int flux = source && !strcmp(source, "flux");
    if (source && !flux) {
        rc = cli_usage_error(cmd, "--source must be flux (files: --acts; CLIP: --dataset)");
        goto done;
    }
    if (flux_flags && !flux) {
        rc = cli_usage_error(cmd, "--prompts, --captions, --height ... apply to --source flux");
        goto done;
    }
    if (hook && !flux) {
        rc = cli_usage_error(cmd, "--hook applies to --source flux (files: --key HOOK)");
        goto done;
    }
    if (flux) { /* the prompts: --dataset names them here */
        if (!hook || !model || n_acts || !!fo.prompts + !!fo.captions + !!dataset != 1 ||
            tokens_all || strcmp(vision, "layer:-2") || rows_key || row_offset || data_spec) {
            rc = cli_usage_error(cmd, "--source flux takes --model, one --hook and one of "
                                      "--prompts, --captions, --dataset (no --acts, --vision, "
                                      "--tokens, --rows-key, --row-offset, --data)");
            goto done;
        }
        fo.dataset = dataset, dataset = NULL;
        fo.model = model;
    }
    if (optind < argc) {
        rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        goto done;
    }
    if (!ckpt || !out || (!n_acts && !dataset && !flux)) {
        rc = cli_usage_error(cmd, "--checkpoint, --out and --acts (or --dataset) are required");
        goto done;
    }
    if (n_acts && dataset) {
        rc = cli_usage_error(cmd, "give --acts or --dataset, not both");
        goto done;
    }
    if (dataset && !model) {
        rc = cli_usage_error(cmd, "--dataset needs --model (a CLIP checkpoint)");
        goto done;
    }
    if (tokens_all && !dataset) {
        rc = cli_usage_error(cmd, "--tokens applies to --dataset (activation files say it "
                                  "with their '<key>_pos' tensor)");
        goto done;
    }
    if (dataset && (rows_key || row_offset || data_spec)) {
        rc = cli_usage_error(cmd, "--rows-key, --row-offset and --data apply to --acts only");
        goto done;
    }
    if (top < 1 || top > 4096) {
        rc = cli_usage_error(cmd, "--top must be in [1, 4096]");
        goto done;
    }
    if (batch < 1 || batch > (1 << 20)) {
        rc = cli_usage_error(cmd, "--batch must be in [1, 1048576]");
        goto done;
    }
    if (threads < 0 || threads > 4096) {
        rc = cli_usage_error(cmd, "--threads must be >= 0");
        goto done;
    }
    if (row_offset < 0) {
        rc = cli_usage_error(cmd, "--row-offset must be >= 0");
        goto done;
    }
    if (G < 1 || G > SLICE || (G & (G - 1))) {
        rc = cli_usage_error(cmd, "--clip-batch must be a power of two <= 256");
        goto done;
    }

    sf_sae_set_threads((int)threads);
    omp_set_max_active_levels(1); /* sf_sae_encode inside our slice loop runs single-threaded */
    batch = (batch + SLICE - 1) / SLICE *
            SLICE; /* whole slices (sf_sae_encoder_run_sliced); G divides it */

    sf_sae sae;
    sf_act_source *src = NULL;
    sf_topk tk;
    int have_tk = 0, have_clip = !n_acts && !flux;
    float *x = NULL;
    int64_t *row_ids = NULL, total, skipped = 0, max_batch;
    int32_t *pos = NULL;
    int T = 0, per_token = 0;
    const char *map_name = NULL;
    sf_sae_codes codes = {0};
    sf_sae_encoder *enc = NULL;
    rc = 1;
    if (sf_sae_load(&sae, ckpt)) {
        rc = cli_fail(cmd);
        goto done;
    }
    enc = sf_sae_encoder_new(&sae);
    const char *src_name;
    int gh = 0, gw = 0, gf = 0, have_layout = 0;
    if (flux) {
        /* every token of every prompt, in (prompt, token) order: what
         * `extract --source flux --tokens_per_image 0` writes */
        fo.hooks = &hook, fo.n_hooks = 1, fo.limit = limit;
        if (!(src = sf_flux_source_open(&fo))) {
            rc = cli_fail(cmd);
            goto close;
        }
        src_name = hook;
        fp = sf_flux_source_fingerprint(src, 0);
        if (cli_flux_meta_parse(fp, &fm) || cli_flux_layout(&fm, hook, &T, &gh, &gw, &gf)) {
            rc = cli_fail(cmd);
            goto close;
        }
        have_layout = per_token = 1;
        if (src->d[0] != sae.d) {
            sf_error("%s: hook %s has width %lld, the SAE in %s expects %d", model, hook,
                     (long long)src->d[0], ckpt, sae.d);
            rc = cli_fail(cmd);
            goto close;
        }
        /* one group of prompts per source batch */
        max_batch = (int64_t)(fo.batch ? fo.batch : 32) * T;
        if (batch < max_batch) batch = (max_batch + SLICE - 1) / SLICE * SLICE;
    } else if (n_acts) {
        sf_file_source_opts fo = {acts, n_acts, key, rows_key, row_offset, limit, batch};
        if (!(src = sf_file_source_open(&fo))) {
            rc = cli_fail(cmd);
            goto close;
        }
        src_name = acts[0];
        if (src->d[0] != sae.d) {
            sf_error("%s: key '%s' has width %lld, the SAE in %s expects %d", acts[0], key,
                     (long long)src->d[0], ckpt, sae.d);
            rc = cli_fail(cmd);
            goto close;
        }
        if (!data_spec) data_spec = sf_file_source_meta(src, "dataset");
        map_name = sf_file_source_rows_key(src);
        per_token = src->per_token[0];
        /* an `extract --source flux` file: its sampling settings give the layout */
        const char *xfp = sf_file_source_meta(src, "saeflow_extract");
        if (per_token && xfp && !strncmp(xfp, "saeflow-flux-extract-v1 ", 24)) {
            if (cli_flux_meta_parse(xfp, &fm) || cli_flux_check_tokens(&fm) ||
                cli_flux_layout(&fm, key, &T, &gh, &gw, &gf)) {
                sf_error_prefix("%s", acts[0]);
                rc = cli_fail(cmd);
                goto close;
            }
            have_layout = 1;
            data_spec = NULL;
        } else if (per_token && (T = file_tokens(acts[0], key)) < 0) {
            rc = cli_fail(cmd);
            goto close;
        }
        if (map_name && row_offset) {
            rc = cli_usage_error(
                cmd, "--row-offset cannot be combined with a row map (use --rows-key none)");
            goto close;
        }
        max_batch = batch;
    } else {
        sf_clip_request req; /* checked first, for an error naming the flag */
        if (sf_clip_parse_request(vision, SF_CLIP_TOK_FIRST, &req)) {
            sf_error_prefix("--vision");
            rc = cli_fail(cmd);
            goto close;
        }
        /* groups of exactly G decoded images from row 0: the activations do
         * not depend on --batch or --threads (see sf_clip_source_opts) */
        sf_clip_source_opts co = {.model = model,
                                  .dataset = dataset,
                                  .vision = vision,
                                  .vision_required = 1,
                                  .dtype = SF_DT_F32,
                                  .batch = (int)G,
                                  .fixed_groups = 1,
                                  .pillow_legacy = pillow_legacy,
                                  .tokens_all = tokens_all,
                                  .alpha_white = alpha_white,
                                  .limit = limit};
        if (!(src = sf_clip_source_open(&co))) {
            rc = cli_fail(cmd);
            goto close;
        }
        src_name = dataset;
        data_spec = dataset;
        per_token = src->per_token[0];
        if (per_token && (T = clip_vision_tokens(model)) < 0) {
            rc = cli_fail(cmd);
            goto close;
        }
        if (src->d[0] != sae.d) {
            sf_error("%s: --vision %s gives width %lld, the SAE in %s expects %d", model, vision,
                     (long long)src->d[0], ckpt, sae.d);
            rc = cli_fail(cmd);
            goto close;
        }
        max_batch = G * (per_token ? T : 1);
        if (batch < max_batch) batch = (max_batch + SLICE - 1) / SLICE * SLICE;
    }
    total = src->n_rows;
    if (sf_topk_init(&tk, sae.n, (int)top)) {
        rc = cli_fail(cmd);
        goto close;
    }
    have_tk = 1;
    if (per_token) {
        if (!have_layout) token_layout(T, &gh, &gw, &gf);
        if (sf_topk_set_tokens(&tk, T, gh, gw, gf)) {
            rc = cli_fail(cmd);
            goto close;
        }
    }

    const int64_t B = have_clip || flux ? batch : (batch < total ? batch : (total > 0 ? total : 1));
    if (!have_clip && !flux) max_batch = B;
    x = sf_malloc((size_t)B * (size_t)sae.d * sizeof(float));    // (B, d)
    row_ids = sf_malloc((size_t)B * sizeof(int64_t));            // (B)
    if (per_token) pos = sf_malloc((size_t)B * sizeof(int32_t)); // (B)
    sf_sae_codes_alloc(&codes, B, sae.k);
    sf_progress pg;
    sf_progress_start(&pg, "topk", (uint64_t)total, "rows");
    if (quiet) pg.enabled = 0;
    double t0 = sf_now(), t_enc = 0;
    int err = 0;
    int64_t r0 = 0, next_row = 0; /* activation rows so far; source position */
    /* Under MPI (docs/mpi.md) chunk c -- the rows the c-th fill() of one
     * process reads: B file rows, or B / max_batch groups of G images -- runs
     * on rank c % R, and rank 0 adds the chunks in order: the same codes
     * (slices start where one process starts them) in the same order, so the
     * same file. With skipped images the CLIP groups after the first skip
     * can differ from one process's (rounding only). */
    const int R = sf_dist_size(), me = sf_dist_rank();
    if (me) pg.enabled = 0;
    if (flux && R > 1) { /* its chunks would be prompt groups: not done */
        sf_error("--source flux does not run under MPI with several ranks yet (extract "
                 "--source flux does; run topk --acts on its output)");
        err = 1;
    }
    const int64_t chunk_src = have_clip ? B / max_batch * G : B;         /* source rows */
    const int64_t chunk_act = have_clip ? B / max_batch * max_batch : B; /* activation rows */
    const int64_t n_chunks = R == 1 ? INT64_MAX : (total + chunk_src - 1) / chunk_src;
    cli_chunk cc = {.codes = codes, .rows = row_ids, .pos = pos};
    int64_t local_skipped = 0; /* this rank's, for fill()'s first warnings */
    for (int64_t round = 0; !err && round * R < n_chunks; round++) {
        const int64_t c = round * R + me;
        int64_t m = 0, sk0 = local_skipped;
        if (c < n_chunks) {
            if (R > 1) {
                int64_t s0 = c * chunk_src, s1 = s0 + chunk_src < total ? s0 + chunk_src : total;
                if (sf_act_source_seek(src, s0, s1)) {
                    err = 1;
                    break;
                }
            }
            m = fill(src, x, row_ids, pos, B, max_batch, &local_skipped, &next_row);
            if (m < 0) {
                err = 1;
                break;
            }
            if (m == 0 && R == 1) break; /* one process: the end of the source */
            double te = sf_now();
            if (m && sf_sae_encoder_run_sliced(enc, x, m, R == 1 ? r0 : c * chunk_act, &codes)) {
                sf_error_prefix("%s", src_name);
                err = 1;
                break;
            }
            t_enc += sf_now() - te;
            cc.m = m, cc.next_row = next_row, cc.skipped = local_skipped - sk0;
            if (me && cli_chunk_send(&cc)) {
                err = 1;
                break;
            }
        }
        for (int q = 0; !me && q < R && round * R + q < n_chunks; q++) {
            if (q && cli_chunk_recv(&cc, q)) {
                err = 1;
                break;
            }
            if (cc.m && (per_token ? sf_topk_add_tokens(&tk, cc.m, sae.k, codes.idx, codes.val,
                                                        codes.cnt, row_ids, pos)
                                   : sf_topk_add_sparse(&tk, cc.m, sae.k, codes.idx, codes.val,
                                                        codes.cnt, 0, row_ids))) {
                err = 1;
                break;
            }
            r0 += cc.m;
            skipped += cc.skipped;
            sf_progress_update(&pg, (uint64_t)cc.next_row, NULL);
        }
    }
    sf_progress_finish(&pg, NULL);
    double dt = sf_now() - t0;
    /* rank 0 writes once every rank is through (see cmd_encode.c) */
    if (!err && R > 1 && sf_dist_barrier()) err = 1;
    if (!err && me) { /* rank 0 writes */
        rc = 0;
        goto close;
    }
    if (!err) {
        char nbuf[32], kbuf[32], obuf[32], gbuf[32], skbuf[32];
        snprintf(nbuf, sizeof nbuf, "%lld", (long long)top);
        snprintf(kbuf, sizeof kbuf, "%d", sae.k);
        snprintf(obuf, sizeof obuf, "%lld", row_offset);
        snprintf(gbuf, sizeof gbuf, "%lld", G);
        snprintf(skbuf, sizeof skbuf, "%lld", (long long)skipped);
        /* the activation file list, comma-separated */
        size_t al = 1;
        for (int i = 0; i < n_acts; i++)
            al += strlen(acts[i]) + 1;
        char *alist = sf_calloc(al, 1);
        for (int i = 0; i < n_acts; i++) {
            if (i) strcat(alist, ",");
            strcat(alist, acts[i]);
        }
        const char *meta_acts[] = {"dataset",     data_spec ? data_spec : "",
                                   "activations", alist,
                                   "key",         key,
                                   "checkpoint",  ckpt,
                                   "top_n",       nbuf,
                                   "sae_k",       kbuf,
                                   "row_offset",  obuf,
                                   "rows_key",    map_name ? map_name : "",
                                   NULL};
        const char *meta_clip[] = {
            "dataset",    dataset, "model",      model, "vision",        vision,
            "clip_batch", gbuf,    "checkpoint", ckpt,  "top_n",         nbuf,
            "sae_k",      kbuf,    "skipped",    skbuf, "vision_tokens", tokens_all ? "all" : "cls",
            NULL};
        /* FLUX: the sampling settings, for explore to make the images again */
        const char *meta_flux[] = {"dataset",     "",
                                   "source",      "flux",
                                   "flux_source", fm.fingerprint ? fm.fingerprint : "",
                                   "hook",        flux ? src->names[0] : key,
                                   "activations", alist,
                                   "checkpoint",  ckpt,
                                   "top_n",       nbuf,
                                   "sae_k",       kbuf,
                                   NULL};
        if (sf_topk_write(&tk, out, fm.fingerprint ? meta_flux : have_clip ? meta_clip : meta_acts))
            err = 1;
        free(alist);
    }
    if (err) {
        rc = cli_fail(cmd);
    } else {
        rc = 0;
        if (!quiet) {
            int64_t dead = 0;
            for (int64_t j = 0; j < tk.n; j++)
                dead += tk.count[j] == 0;
            printf("topk: %lld rows x %d features in %.2f s (%.0f rows/s; encode %.2f s), "
                   "%lld dead features, wrote %s\n",
                   (long long)r0, sae.n, dt, dt > 0 ? (double)r0 / dt : 0.0, t_enc, (long long)dead,
                   out);
            if (skipped)
                printf("topk: %lld dataset rows skipped (no decodable image)\n",
                       (long long)skipped);
        }
    }
close:
    sf_sae_encoder_free(enc);
    free(x);
    free(row_ids);
    free(pos);
    sf_sae_codes_free(&codes);
    if (have_tk) sf_topk_free(&tk);
    sf_act_source_close(src);
    sf_sae_free(&sae);
done:
    cli_flux_meta_free(&fm);
    free(fp);
    free(acts);
    return rc;
}
