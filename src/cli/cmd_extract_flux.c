/* saeflow extract --source flux: FLUX activations sampled on the fly
 * (sf_flux_source_open) written through the resumable sharded extraction
 * (sf_extract_run), the same rows `train --source flux` trains on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/pipeline.h"
#include "saeflow/torch_rng.h"

static const char *CMD = "extract";

int cli_has_source_flag(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) return 0;
        if (!strcmp(argv[i], "--source") || !strncmp(argv[i], "--source=", 9)) return 1;
    }
    return 0;
}

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow extract --source flux --model DIR --prompts FILE --hook H [--hook H "
        "...] --out FILE [options]\n"
        "\n"
        "One FLUX.1 step per group of prompts as the reference sampled it (1 step,\n"
        "sigma 1, guidance 0, seeded noise), stopped after the last hooked block; per\n"
        "hook a tensor <hook> F32 [M, d] with <hook>_rows (I64, prompt) and <hook>_pos\n"
        "(I32, token: text 0..T-1 then image, within the hook's rows); rows I64 [N].\n"
        "Rerunning the same command resumes after the last finished shard.\n"
        "\n"
        "  --hook H              transformer_blocks.N:0|1 (0 text, 1 image),\n"
        "                        single_transformer_blocks.N[:text|:image], +:delta\n"
        "  --model DIR           FLUX pipeline / transformer folder or BFL file\n"
        "  --prompts FILE        `saeflow flux encode-prompts` output, or prompts encoded\n"
        "                        on the fly (T5 and the transformer in memory together):\n"
        "  --captions FILE       one prompt per line\n"
        "  --dataset SPEC        the captions of cc3m:PATTERN, wds:PATTERN (see saeflow data)\n"
        "  --text_model DIR      FLUX pipeline folder with the text encoders (default --model)\n"
        "  --max_sequence_length L  T5 tokens (default 256)\n"
        "  --out FILE            output safetensors\n"
        "  --height H --width W  pixels (default 256 x 256)\n"
        "  --prompt_batch N      prompts per forward (default 32)\n"
        "  --tokens_per_image N  random rows per prompt and hook (default 0: every token)\n"
        "  --shuffle W           mix the rows of W groups of prompts (default 0: off)\n"
        "  --seed S              noise / selection seed (default 0)\n"
        "  --rng avx2|default    torch randn kernels to reproduce (default avx2)\n"
        "  --dtype D             transformer weights: as-stored (default), f32, bf16\n"
        "  --shard_rows N        prompts per resumable shard, a multiple of prompt_batch x\n"
        "                        max(shuffle, 1) (default: the first multiple >= 128; a\n"
        "                        shard's rows are held in memory: 128 prompts x 512 tokens\n"
        "                        x 3072 F32 is 0.8 GB per single-block hook)\n"
        "  --limit N             only the first N prompts\n"
        "  --threads N           threads (default: all cores)\n"
        "With the same source flags, `train --source file --tensorpath FILE` gives\n"
        "the checkpoints `train --source flux` gives.\n");
}

int cmd_extract_flux(int argc, char **argv) {
    static const struct option opts[] = {{"source", required_argument, 0, 'S'},
                                         {"model", required_argument, 0, 'm'},
                                         {"prompts", required_argument, 0, 'p'},
                                         {"hook", required_argument, 0, 'k'},
                                         {"out", required_argument, 0, 'o'},
                                         {"height", required_argument, 0, 'H'},
                                         {"width", required_argument, 0, 'W'},
                                         {"prompt_batch", required_argument, 0, 'b'},
                                         {"tokens_per_image", required_argument, 0, 't'},
                                         {"shuffle", required_argument, 0, 'x'},
                                         {"seed", required_argument, 0, 's'},
                                         {"rng", required_argument, 0, 'r'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"shard_rows", required_argument, 0, 'R'},
                                         {"limit", required_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {"captions", required_argument, 0, 'C'},
                                         {"rows_per_batch", required_argument, 0, 'B'},
                                         {"dataset", required_argument, 0, 'D'},
                                         {"text_model", required_argument, 0, 'M'},
                                         {"max_sequence_length", required_argument, 0, 'L'},
                                         {0, 0, 0, 0}};
    sf_flux_source_opts fo = {.limit = -1};
    cli_paths hooks = {0};
    const char *out = NULL, *source = NULL;
    long long v, shard_rows = 0, threads = 0, seed = 0, tpi = 0, shuffle = 0;
    int c, rc = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'S':
            source = optarg;
            break;
        case 'm':
            fo.model = optarg;
            break;
        case 'p':
            fo.prompts = optarg;
            break;
        case 'B':
            bad = cli_parse_int(CMD, "rows_per_batch", optarg, &v);
            fo.rows_per_batch = v;
            break;
        case 'C':
            fo.captions = optarg;
            break;
        case 'D':
            fo.dataset = optarg;
            break;
        case 'M':
            fo.text_model = optarg;
            break;
        case 'L':
            bad = cli_parse_int(CMD, "max_sequence_length", optarg, &v);
            fo.max_sequence_length = (int)v;
            break;
        case 'k':
            cli_paths_add(&hooks, optarg);
            break;
        case 'o':
            out = optarg;
            break;
        case 'H':
            bad = cli_parse_int(CMD, "height", optarg, &v), fo.height = (int)v;
            break;
        case 'W':
            bad = cli_parse_int(CMD, "width", optarg, &v), fo.width = (int)v;
            break;
        case 'b':
            bad = cli_parse_int(CMD, "prompt_batch", optarg, &v), fo.batch = (int)v;
            break;
        case 't':
            bad = cli_parse_int(CMD, "tokens_per_image", optarg, &tpi);
            break;
        case 'x':
            bad = cli_parse_int(CMD, "shuffle", optarg, &shuffle);
            break;
        case 's':
            bad = cli_parse_int(CMD, "seed", optarg, &seed);
            break;
        case 'r': {
            sf_torch_rng_kind kind;
            if (sf_torch_rng_kind_parse(optarg, &kind)) {
                rc = cli_usage_error(CMD, "--rng must be avx2 or default");
                goto out;
            }
            fo.rng_kind = (int)kind;
            break;
        }
        case 'd':
            if (!strcmp(optarg, "f32"))
                fo.dtype = SF_DT_F32;
            else if (!strcmp(optarg, "bf16"))
                fo.dtype = SF_DT_BF16;
            else if (strcmp(optarg, "as-stored")) {
                rc = cli_usage_error(CMD, "--dtype must be as-stored, f32 or bf16");
                goto out;
            }
            break;
        case 'R':
            bad = cli_parse_int(CMD, "shard_rows", optarg, &shard_rows);
            break;
        case 'n':
            bad = cli_parse_int(CMD, "limit", optarg, &v), fo.limit = v;
            break;
        case 'j':
            bad = cli_parse_int(CMD, "threads", optarg, &threads);
            break;
        case 'h':
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
    if (!source || strcmp(source, "flux")) {
        rc = cli_usage_error(CMD, "--source must be flux (CLIP: leave --source out)");
        goto out;
    }
    if (!fo.model || !out || !hooks.n || !!fo.prompts + !!fo.captions + !!fo.dataset != 1) {
        rc = cli_usage_error(CMD, "--model, --hook, --out and one of --prompts, --captions, "
                                  "--dataset are required");
        goto out;
    }
    if (fo.height < 0 || fo.width < 0 || fo.batch < 0 || tpi < 0 || shuffle < 0 ||
        fo.rows_per_batch < 0 || shard_rows < 0 || threads < 0 || threads > 1024 || seed < 0) {
        rc = cli_usage_error(CMD, "sizes, --seed, --tokens_per_image, --shuffle must be "
                                  "non-negative");
        goto out;
    }
    const long long window = (fo.batch ? fo.batch : 32) * (shuffle > 1 ? shuffle : 1);
    if (!shard_rows) shard_rows = (128 + window - 1) / window * window;
    if (shard_rows % window) {
        rc = cli_usage_error(CMD,
                             "--shard_rows %lld must be a multiple of prompt_batch x shuffle "
                             "(%lld), so that shards cut no forward group or shuffle window",
                             shard_rows, window);
        goto out;
    }
    sf_kernels_set_threads((int)threads);
    fo.hooks = hooks.v, fo.n_hooks = hooks.n;
    fo.seed = (uint64_t)seed, fo.tokens_per_image = tpi, fo.shuffle = (int)shuffle;
    rc = 1;
    sf_act_source *src = sf_flux_source_open(&fo);
    if (!src) {
        cli_fail(CMD);
        goto out;
    }
    char *fp = sf_flux_source_fingerprint(src, shard_rows);
    sf_extract_opts eo = {out, fp, NULL, shard_rows, "extract", NULL, NULL};
    sf_extract_result res;
    int e = sf_extract_run(src, &eo, &res);
    if (e)
        cli_fail(CMD);
    else if (res.worker)
        ; /* rank 0 reports */
    else if (res.already_complete)
        fprintf(stderr, "saeflow extract: %s is already complete\n", out);
    else
        fprintf(stderr, "saeflow extract: %lld prompts -> %s (%lld of %lld shards computed now)\n",
                (long long)res.rows, out, (long long)res.fresh_shards, (long long)res.n_shards);
    free(fp);
    sf_act_source_close(src);
    rc = e ? 1 : 0;
out:
    cli_paths_free(&hooks);
    return rc;
}
