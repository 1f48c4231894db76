/* saeflow synth: synthetic activations with a known dictionary. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "saeflow/sae_eval.h"

static void usage(FILE *out, const sf_synth_opts *o) {
    fprintf(out,
            "usage: saeflow synth --out FILE [options]\n"
            "\n"
            "Writes rows x = sum_i c_i f_i + noise: sparse non-negative combinations\n"
            "(c_i ~ U(0.5, 1.5)) of the rows f_i of a random unit-norm dictionary, feature i\n"
            "active with probability ~ (i+1)^-alpha scaled to --active features per row on\n"
            "average. Saves the activations and the true dictionary in one safetensors file.\n"
            "\n"
            "  --out FILE        output (written atomically)\n"
            "  --key KEY         activations tensor name (default activations)\n"
            "  --dictkey KEY     dictionary tensor name (default dictionary)\n"
            "  --d D             activation width (default %d)\n"
            "  --n_true N        dictionary size (default %d)\n"
            "  --samples S       rows (default %lld)\n"
            "  --active A        mean active features per row (default %g)\n"
            "  --alpha A         power-law exponent of feature frequencies (default %g)\n"
            "  --noise S         Gaussian noise std per dimension (default %g)\n"
            "  --seed S          (default %llu)\n",
            o->d, o->n_true, (long long)o->samples, o->active, o->alpha, o->noise,
            (unsigned long long)o->seed);
}

int cmd_synth(int argc, char **argv) {
    const char *cmd = "synth";
    sf_synth_opts o;
    sf_synth_opts_default(&o);
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},     {"key", required_argument, 0, 'k'},
        {"dictkey", required_argument, 0, 'K'}, {"d", required_argument, 0, 'd'},
        {"n_true", required_argument, 0, 'n'},  {"samples", required_argument, 0, 's'},
        {"active", required_argument, 0, 'a'},  {"alpha", required_argument, 0, 'A'},
        {"noise", required_argument, 0, 'N'},   {"seed", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    const char *outp = NULL, *key = "activations", *dkey = "dictionary";
    long long v;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            outp = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'K':
            dkey = optarg;
            break;
        case 'd':
            if (cli_parse_int(cmd, "d", optarg, &v)) return 2;
            if (v < 1 || v > (1 << 20)) return cli_usage_error(cmd, "--d must be in [1, 2^20]");
            o.d = (int)v;
            break;
        case 'n':
            if (cli_parse_int(cmd, "n_true", optarg, &v)) return 2;
            if (v < 1 || v > (1 << 24))
                return cli_usage_error(cmd, "--n_true must be in [1, 2^24]");
            o.n_true = (int)v;
            break;
        case 's':
            if (cli_parse_int(cmd, "samples", optarg, &v)) return 2;
            if (v < 1) return cli_usage_error(cmd, "--samples must be positive");
            o.samples = v;
            break;
        case 'a':
            if (cli_parse_double(cmd, "active", optarg, &o.active)) return 2;
            break;
        case 'A':
            if (cli_parse_double(cmd, "alpha", optarg, &o.alpha)) return 2;
            break;
        case 'N':
            if (cli_parse_double(cmd, "noise", optarg, &o.noise)) return 2;
            break;
        case 'S':
            if (cli_parse_int(cmd, "seed", optarg, &v)) return 2;
            o.seed = (uint64_t)v;
            break;
        case 'h':
            usage(stdout, &o);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!outp) return cli_usage_error(cmd, "--out is required");
    if (sf_sae_synth(&o, outp, key, dkey)) return cli_fail_flags(cmd, opts, 1);
    printf("wrote %s: '%s' [%lld, %d], '%s' [%d, %d] (%.3g active features per row, alpha %g, "
           "noise %g)\n",
           outp, key, (long long)o.samples, o.d, dkey, o.n_true, o.d, o.active, o.alpha, o.noise);
    return 0;
}
