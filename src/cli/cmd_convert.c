/* saeflow convert: SAE checkpoints between the reference (seed), SAELens and
 * EleutherAI sparsify layouts. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/sae_formats.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow convert --checkpoint DIR --out DIR --to seed|saelens|sparsify\n"
        "\n"
        "Reads a checkpoint in any layout (detected from its files) and writes it in\n"
        "another, with the same reconstructions and (but for the fold below) codes:\n"
        "  seed      config.json + model.safetensors (the reference project's layout)\n"
        "  saelens   cfg.json + sae_weights.safetensors (W_enc [d,n], b_enc, W_dec [n,d],\n"
        "            b_dec; threshold for jumprelu and batchtopk; gated: b_gate, b_mag, r_mag)\n"
        "  sparsify  cfg.json + sae.safetensors (encoder.weight, encoder.bias, W_dec, b_dec;\n"
        "            TopK SAEs only)\n"
        "Standard and gated SAEs are written with unit decoder columns, the norms folded\n"
        "into the encoder (codes in the reference's units, the same in every layout;\n"
        "reconstructions unchanged; docs/architectures.md).\n"
        "BatchTopK (and matryoshka over it) is written to SAELens as a JumpReLU with its\n"
        "learned threshold; matryoshka over TopK as a plain TopK.\n"
        "\n"
        "  --checkpoint DIR   input checkpoint\n"
        "  --out DIR          output directory (created; files written atomically)\n"
        "  --to FORMAT        seed, saelens or sparsify\n"
        "  --save_dtype T     f32 (default), bf16 or f16: tensors of the written checkpoint\n");
}

int cmd_convert(int argc, char **argv) {
    const char *cmd = "convert";
    static const struct option opts[] = {{"checkpoint", required_argument, 0, 'c'},
                                         {"out", required_argument, 0, 'o'},
                                         {"to", required_argument, 0, 't'},
                                         {"save_dtype", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *in = NULL, *out = NULL, *to = NULL;
    int c, save_half = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            in = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 't':
            to = optarg;
            break;
        case 'd':
            if (cli_parse_save_dtype(cmd, optarg, &save_half)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!in || !out || !to)
        return cli_usage_error(cmd, "--checkpoint, --out and --to are required");
    sf_sae_format f, from;
    if (sf_sae_format_parse(to, &f)) return cli_usage_error(cmd, "%s", sf_errmsg());
    if (sf_sae_detect_format(in, &from)) return cli_fail(cmd);
    sf_sae s;
    if (sf_sae_load_any(&s, in)) return cli_fail(cmd);
    s.save_half = save_half;
    int rc = sf_sae_save_as(&s, out, f);
    if (!rc)
        printf("%s (%s, %s SAE: features %d, pages %d) -> %s (%s)\n", in, sf_sae_format_name(from),
               sf_sae_arch_name(s.arch), s.d, s.n, out, sf_sae_format_name(f));
    sf_sae_free(&s);
    return rc ? cli_fail(cmd) : 0;
}
