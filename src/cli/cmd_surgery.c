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
    static const struct option opts[] = {CLI_SAE_IO_OPTIONS,
                                         {"outkey", required_argument, 0, CLI_IO_OUTKEY},
                                         {"feature", required_argument, 0, 'f'},
                                         {"strength", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    cli_sae_io io = {.key = "activations", .outkey = "steered"};
    long long feature = -1;
    double strength = NAN;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int shared = cli_sae_io_flag(cmd, c, optarg, &io);
        if (shared < 0) return 2;
        if (shared) continue;
        switch (c) {
        case 'f':
            if (cli_parse_int(cmd, "feature", optarg, &feature)) return 2;
            break;
        case 's':
            if (cli_parse_double(cmd, "strength", optarg, &strength)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (feature < 0 || strength != strength)
        return cli_usage_error(cmd, "--feature (>= 0) and --strength are required");
    sf_sae s;
    int lrc = cli_sae_io_load(cmd, &io, argc, argv, &s);
    if (lrc) return lrc;
    if (feature >= s.n) {
        int n = s.n;
        sf_sae_free(&s);
        return cli_usage_error(cmd, "--feature %lld is outside [0, %d) of %s", feature, n, io.ckpt);
    }
    sf_sae_data D;
    if (cli_sae_io_data(cmd, &io, &s, &D)) {
        sf_sae_free(&s);
        return 1;
    }
    int rc = 1;
    float *x = NULL, *out = NULL;
    x = sf_malloc((size_t)D.N * s.d * sizeof(float));
    out = sf_malloc((size_t)D.N * s.d * sizeof(float));
    if (sf_sae_data_range(&D, 0, D.N, x)) goto done;
    if (sf_sae_surgery(&s, x, D.N, (int)feature, (float)strength, out)) goto done;
    sf_st_writer *w = sf_stw_new();
    int64_t shape[2] = {D.N, s.d};
    sf_stw_add(w, io.outkey, SF_DT_F32, 2, shape, out);
    int wrc = sf_stw_write(w, io.out);
    sf_stw_free(w);
    if (wrc) goto done;
    printf("steered %lld rows with feature %lld x %g -> %s ('%s')\n", (long long)D.N, feature,
           strength, io.out, io.outkey);
    rc = 0;
done:
    if (rc) cli_fail(cmd);
    free(x);
    free(out);
    sf_sae_data_close(&D);
    sf_sae_free(&s);
    return rc;
}
