/* saeflow extract: CLIP activations of an image-caption dataset -> safetensors.
 *
 * The work is the pipeline layer's (saeflow/pipeline.h): a CLIP activation
 * source over the dataset, run through resumable shards (sf_extract_run).
 * This file parses the flags and reports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/clip.h"
#include "saeflow/kernels.h"
#include "saeflow/pipeline.h"

static const char *CMD = "extract";

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow extract --model DIR (--images DIR | --dataset SPEC) --out FILE [options]\n"
        "\n"
        "Runs a Hugging Face CLIP checkpoint over a dataset and writes activations:\n"
        "  vision F32 [N, d_v]   default hidden_states[-2][:, 0] (CLS of the penultimate layer)\n"
        "  text   F32 [N, d_t]   default pooler_output (final-normed state at the first EOS)\n"
        "  rows   I64 [N]        dataset row of each output row; ids U8: the rows' source ids,\n"
        "                        newline-separated (parquet id, tar key or file name)\n"
        "With --tokens all, vision/text hold one row per token ([M, d]) and\n"
        "vision_rows/text_rows (I64, dataset row) + vision_pos/text_pos (I32, token\n"
        "position) say where each came from; text keeps non-padding tokens only.\n"
        "\n"
        "  --model DIR          config.json + model.safetensors (or sharded); the tokenizer\n"
        "                       (tokenizer.json or vocab.json+merges.txt) and\n"
        "                       preprocessor_config.json are read from here too\n"
        "  --images DIR         a folder of images (= --dataset folder:DIR)\n"
        "  --dataset SPEC       cc3m:PATTERN, wds:PATTERN or folder:DIR (see saeflow data)\n"
        "  --captions FILE      one caption per line, line i for dataset row i (overrides\n"
        "                       the dataset's captions)\n"
        "  --out FILE           output safetensors\n"
        "  --vision WHAT        layer:N (hidden_states[N], negative from the end), pooled,\n"
        "                       embeds (projected) or none (default layer:-2)\n"
        "  --vision-layer N     same as --vision layer:N\n"
        "  --text WHAT          pooled, embeds, layer:N or none (default pooled)\n"
        "  --tokens cls|all     for layer outputs: vision CLS / text EOS token (cls, the\n"
        "                       default), or every token (all)\n"
        "  --batch_size N       images/captions per forward (default 32)\n"
        "  --threads N          threads (default: all cores)\n"
        "  --dtype f32|bf16     weights in memory (compute is F32; default f32)\n"
        "  --shard_rows N       dataset rows per resumable shard (default 4096)\n"
        "  --limit N            only the first N dataset rows\n"
        "  --tokenizer DIR      tokenizer files from DIR instead of --model\n"
        "  --pillow 13|12       resize like this Pillow release (default 13; 12 and older\n"
        "                       run the bicubic passes in another order for tall images:\n"
        "                       +-1 on some pixels)\n"
        "  --alpha drop|white   transparent images: drop alpha like transformers 4 and\n"
        "                       Pillow convert(\"RGB\") (default, the reference) or\n"
        "                       composite onto white like transformers 5\n"
        "\n"
        "A row whose image does not decode, or that lacks an image or caption a tower\n"
        "needs, is skipped with a warning (both towers, so rows stay aligned). Rerunning\n"
        "the same command resumes after the last finished shard.\n"
        "\n"
        "saeflow extract --source flux ... writes FLUX activations sampled on the fly\n"
        "(see saeflow extract --source flux --help).\n");
}

/* Skipped rows: the first few are named, then only counted (the totals are
 * printed at the end and stored in the output's metadata). */
static void warn_skip(void *ctx, const sf_act_skip *s, int bar) {
    int *warned = ctx;
    if (*warned < 20)
        fprintf(stderr, "%ssaeflow extract: warning: row %lld (%s) skipped: %s\n", bar ? "\n" : "",
                (long long)s->row, s->id, s->why);
    else if (*warned == 20)
        fprintf(stderr, "%ssaeflow extract: warning: more rows skipped; not naming them\n",
                bar ? "\n" : "");
    (*warned)++;
}

static int run(const sf_clip_source_opts *so, const char *out, int64_t shard_rows) {
    sf_act_source *src = sf_clip_source_open(so);
    if (!src) return -1;
    char *fp = sf_clip_source_fingerprint(src, shard_rows);
    int warned = 0;
    sf_extract_opts eo = {out, fp, NULL, shard_rows, "extract", warn_skip, &warned};
    sf_extract_result res;
    int rc = sf_extract_run(src, &eo, &res);
    if (rc == 1) { /* no row had its inputs */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sf_errmsg());
        sf_error("%s (use --text none / --vision none, or --captions FILE)", msg);
    } else if (rc == 0 && res.worker) {
        /* rank 0 reports */
    } else if (rc == 0 && res.already_complete)
        fprintf(stderr, "saeflow extract: %s is already complete\n", out);
    else if (rc == 0)
        fprintf(stderr,
                "saeflow extract: %lld rows -> %s (%lld skipped, %lld of %lld shards computed "
                "now)\n",
                (long long)res.rows, out, (long long)res.skipped, (long long)res.fresh_shards,
                (long long)res.n_shards);
    free(fp);
    sf_act_source_close(src);
    return rc ? -1 : 0;
}

int cmd_extract(int argc, char **argv) {
    if (cli_has_source_flag(argc, argv)) return cmd_extract_flux(argc, argv);
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"images", required_argument, 0, 'I'},
                                         {"dataset", required_argument, 0, 'D'},
                                         {"captions", required_argument, 0, 'c'},
                                         {"out", required_argument, 0, 'o'},
                                         {"vision", required_argument, 0, 'v'},
                                         {"vision-layer", required_argument, 0, 'L'},
                                         {"text", required_argument, 0, 't'},
                                         {"tokens", required_argument, 0, 'k'},
                                         {"batch_size", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"shard_rows", required_argument, 0, 's'},
                                         {"limit", required_argument, 0, 'n'},
                                         {"tokenizer", required_argument, 0, 'T'},
                                         {"pillow", required_argument, 0, 'P'},
                                         {"alpha", required_argument, 0, 'A'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    sf_clip_source_opts so = {0};
    const char *out = NULL;
    char *spec = NULL;
    const char *images = NULL, *dataset = NULL, *vision_s = "layer:-2", *text_s = "pooled",
               *tokens = "cls", *dtype = "f32";
    char vl_buf[32];
    long long batch = 32, threads = 0, shard_rows = 4096, limit = -1, v;
    int vision_explicit = 0, text_explicit = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            so.model = optarg;
            break;
        case 'I':
            images = optarg;
            break;
        case 'D':
            dataset = optarg;
            break;
        case 'c':
            so.captions_path = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'v':
            vision_s = optarg, vision_explicit = 1;
            break;
        case 'L':
            if (cli_parse_int(CMD, "vision-layer", optarg, &v)) return 2;
            snprintf(vl_buf, sizeof vl_buf, "layer:%lld", v);
            vision_s = vl_buf, vision_explicit = 1;
            break;
        case 't':
            text_s = optarg, text_explicit = 1;
            break;
        case 'k':
            tokens = optarg;
            break;
        case 'b':
            if (cli_parse_int(CMD, "batch_size", optarg, &batch)) return 2;
            break;
        case 'j':
            if (cli_parse_int(CMD, "threads", optarg, &threads)) return 2;
            break;
        case 'd':
            dtype = optarg;
            break;
        case 's':
            if (cli_parse_int(CMD, "shard_rows", optarg, &shard_rows)) return 2;
            break;
        case 'n':
            if (cli_parse_int(CMD, "limit", optarg, &limit)) return 2;
            break;
        case 'T':
            so.tokenizer_dir = optarg;
            break;
        case 'P':
            if (cli_parse_pillow(CMD, optarg, &so.pillow_legacy)) return 2;
            break;
        case 'A':
            if (cli_parse_alpha(CMD, optarg, &so.alpha_white)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!so.model || !out) return cli_usage_error(CMD, "--model and --out are required");
    if (!images == !dataset)
        return cli_usage_error(CMD, "give exactly one of --images DIR and --dataset SPEC");
    if (batch < 1 || batch > 65536)
        return cli_usage_error(CMD, "--batch_size must be in [1, 65536]");
    if (threads < 0 || threads > 1024)
        return cli_usage_error(CMD, "--threads must be in [0, 1024]");
    if (shard_rows < 1 || limit < -1)
        return cli_usage_error(CMD, "--shard_rows must be >= 1, --limit >= 0");
    if (strcmp(tokens, "cls") && strcmp(tokens, "all"))
        return cli_usage_error(CMD, "--tokens must be cls or all");
    if (!strcmp(dtype, "f32"))
        so.dtype = SF_DT_F32;
    else if (!strcmp(dtype, "bf16"))
        so.dtype = SF_DT_BF16;
    else
        return cli_usage_error(CMD, "--dtype must be f32 or bf16");
    sf_clip_request probe;
    if ((strcmp(vision_s, "none") && sf_clip_parse_request(vision_s, SF_CLIP_TOK_FIRST, &probe)) ||
        (strcmp(text_s, "none") && sf_clip_parse_request(text_s, SF_CLIP_TOK_FIRST, &probe)))
        return cli_usage_error(CMD, "%s", sf_errmsg());
    sf_kernels_set_threads((int)threads);
    so.tokens_all = !strcmp(tokens, "all");
    so.batch = (int)batch, so.limit = limit;
    so.vision = vision_s, so.text = text_s;
    so.vision_required = vision_explicit, so.text_required = text_explicit;
    if (images) {
        size_t n = strlen(images) + 8;
        spec = sf_malloc(n);
        snprintf(spec, n, "folder:%s", images);
    } else {
        spec = sf_strdup(dataset);
    }
    so.dataset = spec;
    int rc = run(&so, out, shard_rows);
    if (rc) cli_fail(CMD);
    free(spec);
    return rc ? 1 : 0;
}
