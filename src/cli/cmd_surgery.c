/* saeflow surgery: activations -> steered reconstructions
 * decode(encode(x) + strength * e_feature), as the reference's
 * sae.surgery(acts, k=feature, strength=strength). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/sae_train.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow surgery --checkpoint DIR --input FILE --feature F --strength S --out FILE\n"
        "\n"
        "Writes decode(encode(x) + S * e_F) for every row x of the input tensor: the\n"
        "reconstruction with latent F raised by S (the reference's sae.surgery).\n"
        "\n"
        "  --checkpoint DIR   SAE checkpoint\n"
        "  --input FILE       safetensors file with the activations\n"
        "  --key KEY          input tensor name (default activations)\n"
        "  --feature F        latent index in [0, pages)\n"
        "  --strength S       amount added to the latent (e.g. 42)\n"
        "  --out FILE         output safetensors (written atomically)\n"
        "  --outkey KEY       output tensor name (default steered)\n"
        "  --threads T        OpenMP threads (default: all cores)\n");
}

int cmd_surgery(int argc, char **argv) {
    const char *cmd = "surgery";
    static const struct option opts[] = {{"checkpoint", required_argument, 0, 'c'},
                                         {"input", required_argument, 0, 'i'},
                                         {"key", required_argument, 0, 'k'},
                                         {"feature", required_argument, 0, 'f'},
                                         {"strength", required_argument, 0, 's'},
                                         {"out", required_argument, 0, 'o'},
                                         {"outkey", required_argument, 0, 'K'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *ckpt = NULL, *input = NULL, *key = "activations", *outp = NULL, *outkey = "steered";
    long long feature = -1, threads = 0;
    double strength = NAN;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            ckpt = optarg;
            break;
        case 'i':
            input = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'f':
            if (cli_parse_int(cmd, "feature", optarg, &feature)) return 2;
            break;
        case 's':
            if (cli_parse_double(cmd, "strength", optarg, &strength)) return 2;
            break;
        case 'o':
            outp = optarg;
            break;
        case 'K':
            outkey = optarg;
            break;
        case 't':
            if (cli_parse_int(cmd, "threads", optarg, &threads)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!ckpt || !input || !outp || feature < 0 || strength != strength)
        return cli_usage_error(
            cmd, "--checkpoint, --input, --feature (>= 0), --strength and --out are required");
    if (threads < 0 || threads > 1024) return cli_usage_error(cmd, "--threads must be >= 0");
    sf_sae_set_threads((int)threads);
    sf_sae s;
    if (sf_sae_load(&s, ckpt)) return cli_fail(cmd);
    if (feature >= s.n) {
        int n = s.n;
        sf_sae_free(&s);
        return cli_usage_error(cmd, "--feature %lld is outside [0, %d) of %s", feature, n, ckpt);
    }
    sf_sae_data D;
    const char *paths[1] = {input};
    if (sf_sae_data_open(&D, paths, 1, key)) {
        sf_sae_free(&s);
        return cli_fail(cmd);
    }
    int rc = 1;
    float *x = NULL, *out = NULL;
    if (D.d != s.d) {
        sf_error("%s: tensor '%s' has width %d but the checkpoint %s has features %d", input, key,
                 D.d, ckpt, s.d);
        goto done;
    }
    x = sf_malloc((size_t)D.N * s.d * sizeof(float));
    out = sf_malloc((size_t)D.N * s.d * sizeof(float));
    if (sf_sae_data_range(&D, 0, D.N, x)) goto done;
    if (sf_sae_surgery(&s, x, D.N, (int)feature, (float)strength, out)) goto done;
    sf_st_writer *w = sf_stw_new();
    int64_t shape[2] = {D.N, s.d};
    sf_stw_add(w, outkey, SF_DT_F32, 2, shape, out);
    int wrc = sf_stw_write(w, outp);
    sf_stw_free(w);
    if (wrc) goto done;
    printf("steered %lld rows with feature %lld x %g -> %s ('%s')\n", (long long)D.N, feature,
           strength, outp, outkey);
    rc = 0;
done:
    if (rc) cli_fail(cmd);
    free(x);
    free(out);
    sf_sae_data_close(&D);
    sf_sae_free(&s);
    return rc;
}
