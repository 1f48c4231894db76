/* saeflow explore: build the static explorer site from a top-k file. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "saeflow/analysis.h"
#include "saeflow/dataset.h"
#include "saeflow/sae.h"
#include "saeflow/t5_tokenizer.h"

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
        "  --quiet            no progress output\n"
        "  --steer-dir DIR    steering grids shown on feature j's page: DIR/feature_<j>.png,\n"
        "                     else `flux generate --steer-grid`'s rowRRRRRR_f<j>_grid.png\n"
        "FLUX top-k files (`topk --source flux`, or over `extract --source flux` files):\n"
        "the images of the prompt rows are made by the FLUX pipeline from the recorded\n"
        "prompts, seed and group noise (the exact noise the activations were taken at),\n"
        "and cached; captions and T5 tokens come from the recorded captions / dataset.\n"
        "  --flux-model DIR   FLUX pipeline folder (transformer/, vae/, scheduler/;\n"
        "                     default: the recorded model)\n"
        "  --text-model DIR   its text encoders, for captions prompts (default: same)\n"
        "  --tokenizer DIR    T5 tokenizer folder (default: FLUX_MODEL/tokenizer_2 if\n"
        "                     present; without one text tokens are shown by position)\n"
        "  --captions FILE    the prompts' text when the run used an encode-prompts file\n"
        "  --image-cache DIR  image cache (default: TOPK.images); reruns reuse images\n"
        "  --image-steps N    sampling steps of the images (default 1: the image the\n"
        "                     1-step sampler made; schnell's 4 share that first step)\n"
        "  --image-batch N    images per forward (default 4)\n"
        "  --no-images        no images (cached ones are still used)\n");
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

/* FLUX rows: the cached image of a prompt row, its caption and T5 tokens. */
typedef struct {
    const char *dir; /* image folder, NULL: none */
    cli_prompt_list caps;
    sf_t5_tokenizer *tok;
    int T;
} flux_ctx;

static int flux_get(void *ctx, int64_t row, uint8_t **bytes, size_t *len, char **caption) {
    flux_ctx *c = ctx;
    *bytes = NULL, *len = 0, *caption = NULL;
    if (c->dir) {
        char *p = cli_flux_image_path(c->dir, row);
        if (access(p, R_OK) == 0) {
            *bytes = (uint8_t *)sf_read_file(p, len);
            if (!*bytes) {
                free(p);
                return -1;
            }
        }
        free(p);
    }
    if (row >= 0 && row < c->caps.n) *caption = sf_strdup(c->caps.s[row]);
    return 0;
}

static int flux_tokens(void *ctx, int64_t row, char ***toks, int *n) {
    flux_ctx *c = ctx;
    *toks = NULL, *n = 0;
    if (c->tok && row >= 0 && row < c->caps.n) {
        *toks = cli_flux_token_strings(c->tok, c->caps.s[row], c->T, n);
        if (!*toks && !*n) return sf_error_prefix("caption of row %lld", (long long)row);
    }
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
                                         {"steer-dir", required_argument, 0, 1000},
                                         {"flux-model", required_argument, 0, 1001},
                                         {"text-model", required_argument, 0, 1002},
                                         {"tokenizer", required_argument, 0, 1003},
                                         {"captions", required_argument, 0, 1004},
                                         {"image-cache", required_argument, 0, 1005},
                                         {"image-steps", required_argument, 0, 1006},
                                         {"image-batch", required_argument, 0, 1007},
                                         {"no-images", no_argument, 0, 1008},
                                         {0, 0, 0, 0}};
    const char *flux_model = NULL, *text_model = NULL, *tok_dir = NULL, *captions = NULL,
               *cache = NULL;
    long long img_steps = 1, img_batch = 4;
    int no_images = 0;
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
        case 1000:
            o.steer_dir = optarg;
            break;
        case 1001:
            flux_model = optarg;
            break;
        case 1002:
            text_model = optarg;
            break;
        case 1003:
            tok_dir = optarg;
            break;
        case 1004:
            captions = optarg;
            break;
        case 1005:
            cache = optarg;
            break;
        case 1006:
            if (cli_parse_int(cmd, "image-steps", optarg, &img_steps)) return 2;
            break;
        case 1007:
            if (cli_parse_int(cmd, "image-batch", optarg, &img_batch)) return 2;
            break;
        case 1008:
            no_images = 1;
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
    if (img_steps < 1 || img_steps > 1000 || img_batch < 1 || img_batch > 1024)
        return cli_usage_error(cmd,
                               "--image-steps must be in [1, 1000], --image-batch in [1, 1024]");
    if (o.steer_dir && !sf_is_dir(o.steer_dir))
        return cli_usage_error(cmd, "--steer-dir %s is not a folder", o.steer_dir);
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
    const char *mf = sf_st_meta(&tf.st, "flux_source");
    cli_flux_meta fm = {0};
    int flux = mf && *mf, grid_first = tf.grid_first;
    if (flux && cli_flux_meta_parse(mf, &fm)) {
        sf_error_prefix("%s: flux_source", o.topk_path);
        sf_topk_close(&tf);
        free(rec_data), free(rec_ckpt);
        return cli_fail(cmd);
    }
    sf_topk_close(&tf);
    if (!flux && (flux_model || text_model || tok_dir || captions || cache || no_images)) {
        free(rec_data), free(rec_ckpt);
        return cli_usage_error(cmd, "--flux-model, --tokenizer, --captions, --image-cache, "
                                    "--no-images apply to FLUX top-k files");
    }
    if (!data && rec_data && *rec_data) data = rec_data;
    if (!o.checkpoint && rec_ckpt && *rec_ckpt) o.checkpoint = rec_ckpt;

    int rc = 1;
    ds_ctx dc = {NULL};
    sf_row_source src = {ds_get, &dc, NULL};
    flux_ctx fc = {0};
    sf_row_source fsrc = {flux_get, &fc, flux_tokens};
    char *img_dir = NULL, *def_cache = NULL, *def_tok = NULL;
    int64_t *rows = NULL;
    if (flux) {
        /* captions: the recorded captions file / dataset, or --captions */
        if (!flux_model) flux_model = fm.model;
        if (!text_model) text_model = flux_model;
        cli_flux_meta cm = fm;
        if (captions) cm.captions = (char *)captions, cm.dataset = NULL;
        if ((captions || !fm.prompts) && cli_flux_captions(&cm, &fc.caps)) {
            rc = cli_fail(cmd);
            goto done;
        }
        /* T5 tokens, where the hook has text tokens */
        if (!tok_dir) {
            def_tok = sf_path_join(flux_model, "tokenizer_2");
            if (sf_is_dir(def_tok)) tok_dir = def_tok;
        }
        fc.T = fm.T;
        if (tok_dir && grid_first > 0 && fc.caps.n &&
            !(fc.tok = sf_t5_tokenizer_load_dir(tok_dir))) {
            rc = cli_fail(cmd);
            goto done;
        }
        if (!cache) {
            def_cache = sf_malloc(strlen(o.topk_path) + 8);
            sprintf(def_cache, "%s.images", o.topk_path);
            cache = def_cache;
        }
        img_dir = cli_flux_image_dir(&fm, cache, flux_model, (int)img_steps);
        fc.dir = img_dir;
        int64_t nr = 0, made = 0;
        if (!no_images) {
            cli_flux_images_opts io = {&fm,      img_dir,        flux_model,     text_model,
                                       &fc.caps, (int)img_steps, (int)img_batch, o.quiet};
            double t0 = sf_now();
            if (sf_explore_rows(&o, &rows, &nr) || cli_flux_make_images(&io, rows, nr, &made)) {
                sf_error_prefix("FLUX images");
                rc = cli_fail(cmd);
                goto done;
            }
            if (!o.quiet)
                fprintf(stderr,
                        "saeflow explore: %lld FLUX images made (%.1f s), %lld cached, in %s\n",
                        (long long)made, sf_now() - t0, (long long)(nr - made), img_dir);
        }
        o.rows = &fsrc;
    } else if (data && strcmp(data, "none")) {
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
    cli_prompt_list_free(&fc.caps);
    sf_t5_tokenizer_free(fc.tok);
    cli_flux_meta_free(&fm);
    free(img_dir), free(def_cache), free(def_tok), free(rows);
    free(rec_data);
    free(rec_ckpt);
    return rc;
}
