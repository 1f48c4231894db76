/* saeflow explore: build the static explorer site from a top-k file. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/analysis.h"
#include "saeflow/dataset.h"
#include "saeflow/sae.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow explore --topk FILE --out SITE [--data SPEC] [--checkpoint DIR] [options]\n"
        "\n"
        "Writes a self-contained static site (HTML + JS + CSS + data, no network access,\n"
        "no build step) to SITE: a feature index sortable by density and activation with\n"
        "a log-density histogram, search by feature id and caption words, and a page per\n"
        "feature with its top images, activation histogram and decoder neighbours, plus\n"
        "the training curves. Open SITE/index.html directly or run `saeflow serve`.\n"
        "\n"
        "  --topk FILE        output of `saeflow topk`\n"
        "  --out SITE         site folder (created; files in it are replaced)\n"
        "  --data SPEC        dataset for images and captions (cc3m:, wds:, folder:);\n"
        "                     default: the 'dataset' recorded in the top-k file (a\n"
        "                     relative path there is relative to where topk ran);\n"
        "                     'none' builds a site without images\n"
        "  --checkpoint DIR   SAE checkpoint, for decoder neighbours and metrics.jsonl\n"
        "                     (default: the 'checkpoint' recorded in the top-k file)\n"
        "  --log FILE         training log (default: DIR/metrics.jsonl if present)\n"
        "  --title TEXT       page title\n"
        "  --thumb PX         longest thumbnail edge (default 160)\n"
        "  --quality Q        JPEG quality (default 85)\n"
        "  --neighbours M     decoder neighbours per feature (default 10)\n"
        "  --range-examples R examples per quartile of a feature's activations, from\n"
        "                     the top-k file's samples (default 3; 0: none)\n"
        "  --word-rows R      search: a caption word must be in R of a feature's top rows\n"
        "                     (default 2 when N >= 8, else 1)\n"
        "  --threads T        threads (default: all cores)\n"
        "  --quiet            no progress output\n");
}

typedef struct {
    sf_dataset *ds;
} ds_ctx;

/* sf_row_source over a dataset: copies the bytes and caption out, since the
 * dataset's pointers only live until the next call. */
static int ds_get(void *ctx, int64_t row, uint8_t **bytes, size_t *len, char **caption) {
    ds_ctx *c = ctx;
    sf_sample s;
    *bytes = NULL;
    *len = 0;
    *caption = NULL;
    if (sf_dataset_get(c->ds, row, &s)) return sf_error_prefix("dataset row %lld", (long long)row);
    if (s.image && s.image_len) {
        *bytes = sf_malloc(s.image_len);
        memcpy(*bytes, s.image, s.image_len);
        *len = s.image_len;
    }
    if (s.caption) *caption = sf_strdup(s.caption);
    return 0;
}

int cmd_explore(int argc, char **argv) {
    const char *cmd = "explore";
    sf_explore_opts o;
    memset(&o, 0, sizeof o);
    const char *data = NULL;
    long long thumb = 160, quality = 85, nb = 10, threads = 0, word_rows = 0, range_n = 3;
    static const struct option opts[] = {{"topk", required_argument, 0, 't'},
                                         {"out", required_argument, 0, 'o'},
                                         {"data", required_argument, 0, 'd'},
                                         {"checkpoint", required_argument, 0, 'c'},
                                         {"log", required_argument, 0, 'l'},
                                         {"title", required_argument, 0, 'T'},
                                         {"thumb", required_argument, 0, 's'},
                                         {"quality", required_argument, 0, 'q'},
                                         {"neighbours", required_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"quiet", no_argument, 0, 'Q'},
                                         {"help", no_argument, 0, 'h'},
                                         {"word-rows", required_argument, 0, 'w'},
                                         {"range-examples", required_argument, 0, 'r'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            o.topk_path = optarg;
            break;
        case 'o':
            o.out_dir = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'c':
            o.checkpoint = optarg;
            break;
        case 'l':
            o.train_log = optarg;
            break;
        case 'T':
            o.title = optarg;
            break;
        case 'Q':
            o.quiet = 1;
            break;
        case 's':
            if (cli_parse_int(cmd, "thumb", optarg, &thumb)) return 2;
            break;
        case 'q':
            if (cli_parse_int(cmd, "quality", optarg, &quality)) return 2;
            break;
        case 'n':
            if (cli_parse_int(cmd, "neighbours", optarg, &nb)) return 2;
            break;
        case 'j':
            if (cli_parse_int(cmd, "threads", optarg, &threads)) return 2;
            break;
        case 'w':
            if (cli_parse_int(cmd, "word-rows", optarg, &word_rows)) return 2;
            break;
        case 'r':
            if (cli_parse_int(cmd, "range-examples", optarg, &range_n)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!o.topk_path || !o.out_dir) return cli_usage_error(cmd, "--topk and --out are required");
    if (thumb < 16 || thumb > 1024) return cli_usage_error(cmd, "--thumb must be in [16, 1024]");
    if (quality < 1 || quality > 100) return cli_usage_error(cmd, "--quality must be in [1, 100]");
    if (nb < 0 || nb > 100) return cli_usage_error(cmd, "--neighbours must be in [0, 100]");
    if (threads < 0) return cli_usage_error(cmd, "--threads must be >= 0");
    if (word_rows < 0 || word_rows > 4096)
        return cli_usage_error(cmd, "--word-rows must be in [0, 4096]");
    if (range_n < 0 || range_n > 16)
        return cli_usage_error(cmd, "--range-examples must be in [0, 16]");
    o.range_per_quartile = range_n ? (int)range_n : -1;
    o.min_word_rows = (int)word_rows;
    o.thumb_size = (int)thumb;
    o.jpeg_quality = (int)quality;
    o.neighbours = (int)nb;
    sf_kernels_set_threads((int)threads);

    /* defaults recorded by `saeflow topk` */
    /* (validated here, before a recorded dataset is opened, so a wrong file
     * is reported as such) */
    sf_topk_file tf;
    if (sf_topk_open(&tf, o.topk_path)) return cli_fail(cmd);
    const char *md = sf_st_meta(&tf.st, "dataset"), *mc = sf_st_meta(&tf.st, "checkpoint");
    char *rec_data = md ? sf_strdup(md) : NULL;
    char *rec_ckpt = mc ? sf_strdup(mc) : NULL;
    sf_topk_close(&tf);
    if (!data && rec_data && *rec_data) data = rec_data;
    if (!o.checkpoint && rec_ckpt && *rec_ckpt) o.checkpoint = rec_ckpt;

    int rc = 1;
    ds_ctx dc = {NULL};
    sf_row_source src = {ds_get, &dc};
    if (data && strcmp(data, "none")) {
        dc.ds = sf_dataset_open(data, SF_DS_ALL);
        if (!dc.ds) {
            rc = cli_fail(cmd);
            goto done;
        }
        o.rows = &src;
    } else if (!o.quiet) {
        fprintf(stderr,
                "saeflow explore: no dataset (--data): the site will have no images or captions\n");
    }
    rc = sf_explore_build(&o) ? cli_fail(cmd) : 0;
done:
    if (dc.ds) sf_dataset_close(dc.ds);
    free(rec_data);
    free(rec_ckpt);
    return rc;
}
