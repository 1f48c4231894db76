/* saeflow topk: stream activations through an SAE, keep the top-N activating
 * rows of every feature plus density / mean / max / histogram. The rows come
 * from activation files (--acts) or from a dataset run through a CLIP vision
 * tower on the fly (--dataset + --model). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "saeflow/analysis.h"
#include "saeflow/clip.h"
#include "saeflow/dataset.h"
#include "saeflow/image.h"
#include "saeflow/sae.h"
#include "saeflow/sae_train.h"

/* Rows are encoded in fixed slices (sf_sae_encoder_run_sliced), so the
 * output is the same for any --batch and --threads. */
#define SLICE SF_SAE_ENCODE_SLICE

/* The dataset row of each activation row, from an I64 [rows] tensor stored
 * next to the activations in every file (what `saeflow extract` writes:
 * `rows`, or `<key>_rows` with --tokens all). */
typedef struct {
    const sf_tensor_info **t; /* per file */
} row_map;

/* Picks the map tensor: `name` if given ("none": no map), else `<key>_rows`,
 * else `rows`, when present in the first file. Checks every file. 1 = map
 * found, 0 = none, -1 = error. */
static int row_map_open(row_map *rm, const sf_sae_data *D, const char *key, const char *name) {
    rm->t = NULL;
    if (name && !strcmp(name, "none")) return 0;
    char auto_name[512];
    if (!name) {
        snprintf(auto_name, sizeof auto_name, "%s_rows", key);
        if (!sf_st_find(&D->files[0], auto_name)) snprintf(auto_name, sizeof auto_name, "rows");
        if (!sf_st_find(&D->files[0], auto_name)) return 0;
        name = auto_name;
    }
    rm->t = sf_calloc((size_t)D->n_files, sizeof *rm->t);
    for (int i = 0; i < D->n_files; i++) {
        const sf_tensor_info *t = sf_st_find(&D->files[i], name);
        int64_t want = D->start[i + 1] - D->start[i];
        if (!t || t->dtype != SF_DT_I64 || t->ndim != 1 || t->shape[0] != want) {
            sf_error("%s: row map '%s' must be an I64 tensor of %lld entries (one per '%s' row)%s",
                     D->files[i].path, name, (long long)want, key, t ? "" : ", but it is missing");
            free(rm->t);
            rm->t = NULL;
            return -1;
        }
        rm->t[i] = t;
    }
    return 1;
}

/* out[i] = dataset row of activation row r0 + i, i < m. */
static int row_map_read(const row_map *rm, const sf_sae_data *D, int64_t r0, int64_t m,
                        int64_t *out) {
    int f = 0;
    for (int64_t i = 0; i < m; i++) {
        int64_t r = r0 + i;
        while (r >= D->start[f + 1])
            f++;
        int64_t v;
        memcpy(&v, (const char *)rm->t[f]->data + (size_t)(r - D->start[f]) * 8,
               8); /* may be unaligned */
        if (v < 0)
            return sf_error("%s: row map: entry %lld is negative", D->files[f].path,
                            (long long)(r - D->start[f]));
        out[i] = v;
    }
    return 0;
}

/* ---- rows from a dataset through CLIP's vision tower ---------------------- */

/* Images are decoded and preprocessed in parallel, G at a time; the ones
 * that decode are queued and go through the vision tower in groups of
 * exactly G (the last group may be shorter). Groups are counted over the
 * decoded images from row 0, so their boundaries, and with them the GEMM
 * shapes and every activation bit, do not depend on --batch (a multiple of
 * G) or --threads. With no undecodable images the groups are those of
 * `saeflow extract --batch_size G`, so both paths give the same activations. */
typedef struct {
    sf_dataset *ds;
    sf_clip *m;
    sf_clip_preproc pp;
    sf_clip_request req;
    int G, d;
    int64_t pxf;   /* floats per preprocessed image */
    float *px;     /* (2G, pxf) queue of preprocessed images */
    int64_t *qrow; /* (2G) their dataset rows */
    int qn;        /* queued */
    uint8_t **img; /* (G) image bytes of the samples being decoded */
    size_t *img_len;
    int64_t *img_row;
    int *ok;
    int64_t next_row, end_row, skipped;
    int eof;
} clip_src;

static void clip_src_close(clip_src *c) {
    if (c->ds) sf_dataset_close(c->ds);
    if (c->m) sf_clip_free(c->m);
    for (int i = 0; c->img && i < c->G; i++)
        free(c->img[i]);
    free(c->img);
    free(c->img_len);
    free(c->img_row);
    free(c->ok);
    free(c->px);
    free(c->qrow);
    memset(c, 0, sizeof *c);
}

static int clip_src_open(clip_src *c, const char *spec, const char *model, const char *what, int G,
                         int64_t limit, int pillow_legacy) {
    memset(c, 0, sizeof *c);
    c->G = G;
    if (sf_clip_parse_request(what, SF_CLIP_TOK_FIRST, &c->req)) return sf_error_prefix("--vision");
    if (c->req.what == SF_CLIP_HIDDEN && c->req.tokens == SF_CLIP_TOK_ALL)
        return sf_error(
            "--vision: per-token activations are not supported here (use saeflow extract)");
    sf_clip_load_opts lo = {SF_DT_F32, 1, 0};
    if (!(c->m = sf_clip_load(model, &lo))) return -1;
    const sf_clip_config *vc = sf_clip_vision_config(c->m);
    if (!vc) return sf_error("%s has no vision tower", model);
    int64_t d = sf_clip_output_size(c->m, 0, &c->req, 0);
    if (d < 0) return sf_error_prefix("--vision");
    c->d = (int)d;
    char *pc = sf_path_join(model, "preprocessor_config.json");
    struct stat st;
    int have = stat(pc, &st) == 0;
    free(pc);
    if (have) {
        if (sf_clip_preproc_load(&c->pp, model)) return -1;
    } else { /* CLIP defaults at the model's resolution */
        sf_clip_preproc_default(&c->pp);
        c->pp.shortest_edge = c->pp.crop_height = c->pp.crop_width = vc->image_size;
    }
    if (!c->pp.do_center_crop || c->pp.crop_height != vc->image_size ||
        c->pp.crop_width != vc->image_size)
        return sf_error(
            "%s: the image processor makes %dx%d crops but the model's image_size is %d", model,
            c->pp.crop_height, c->pp.crop_width, vc->image_size);
    c->pp.pillow_legacy_order = pillow_legacy;
    c->pxf = (int64_t)sf_clip_preproc_floats(&c->pp);
    if (!(c->ds = sf_dataset_open(spec, SF_DS_IMAGES))) return -1;
    int64_t n = sf_dataset_count(c->ds);
    if (n < 0) return -1;
    c->end_row = limit >= 0 && limit < n ? limit : n;
    c->px = sf_malloc((size_t)(2 * G) * (size_t)c->pxf * sizeof(float));
    c->qrow = sf_malloc((size_t)(2 * G) * sizeof(int64_t));
    c->img = sf_calloc((size_t)G, sizeof(uint8_t *));
    c->img_len = sf_calloc((size_t)G, sizeof(size_t));
    c->img_row = sf_calloc((size_t)G, sizeof(int64_t));
    c->ok = sf_calloc((size_t)G, sizeof(int));
    return 0;
}

/* Reads up to G samples, decodes and preprocesses them into the queue. */
static int clip_src_read(clip_src *c) {
    int n = 0;
    while (n < c->G && c->next_row < c->end_row) {
        sf_sample s;
        int r = sf_dataset_next(c->ds, &s);
        if (r < 0) return -1;
        if (r == 0) break;
        c->next_row = s.row + 1;
        free(c->img[n]);
        c->img[n] = NULL;
        c->img_len[n] = 0;
        if (s.image && s.image_len) {
            c->img[n] = sf_malloc(s.image_len);
            memcpy(c->img[n], s.image, s.image_len);
            c->img_len[n] = s.image_len;
        }
        c->img_row[n] = s.row;
        n++;
    }
    c->eof = n == 0 || c->next_row >= c->end_row;
    float *dst = c->px + (size_t)c->qn * (size_t)c->pxf; /* room for G more */
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        sf_image im;
        char name[48];
        snprintf(name, sizeof name, "row %lld", (long long)c->img_row[i]);
        c->ok[i] = c->img[i] && sf_image_decode(c->img[i], c->img_len[i], name, &im) == 0;
        if (c->ok[i]) {
            c->ok[i] = sf_clip_preprocess(&c->pp, &im, dst + (size_t)i * (size_t)c->pxf) == 0;
            sf_image_free(&im);
        }
    }
    for (int i = 0; i < n; i++) { /* compact: decoded images join the queue in row order */
        if (!c->ok[i]) {
            if (c->skipped++ < 5)
                fprintf(stderr, "saeflow topk: warning: row %lld has no decodable image, skipped\n",
                        (long long)c->img_row[i]);
            continue;
        }
        if (c->px + (size_t)c->qn * (size_t)c->pxf != dst + (size_t)i * (size_t)c->pxf)
            memmove(c->px + (size_t)c->qn * (size_t)c->pxf, dst + (size_t)i * (size_t)c->pxf,
                    (size_t)c->pxf * sizeof(float));
        c->qrow[c->qn++] = c->img_row[i];
    }
    return 0;
}

/* Fills x (B, d) and rows (B) with up to B activation rows (B a multiple of
 * G); returns how many, 0 at the end, -1 on error. */
static int64_t clip_src_fill(clip_src *c, float *x, int64_t *rows, int64_t B) {
    int64_t m = 0;
    while (m + c->G <= B) {
        while (c->qn < c->G && !c->eof)
            if (clip_src_read(c)) return -1;
        int g = c->qn < c->G ? c->qn : c->G;
        if (g == 0) break;
        if (sf_clip_vision_forward(c->m, c->px, g, &c->req, x + m * c->d)) return -1;
        memcpy(rows + m, c->qrow, (size_t)g * sizeof(int64_t));
        m += g;
        c->qn -= g; /* move the rest (< G) to the front */
        memmove(c->px, c->px + (size_t)g * (size_t)c->pxf,
                (size_t)c->qn * (size_t)c->pxf * sizeof(float));
        memmove(c->qrow, c->qrow + g, (size_t)c->qn * sizeof(int64_t));
        if (g < c->G) break; /* the last, short group */
    }
    return m;
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
        "  --pillow 13|12     resize like this Pillow release (default 13; see extract)\n");
}

int cmd_topk(int argc, char **argv) {
    const char *cmd = "topk";
    const char *ckpt = NULL, *out = NULL, *key = "activations", *data_spec = NULL, *rows_key = NULL;
    const char *dataset = NULL, *model = NULL, *vision = "layer:-2";
    const char **acts = sf_calloc((size_t)argc + 1, sizeof(char *));
    int n_acts = 0, quiet = 0, pillow_legacy = 0;
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
                                         {0, 0, 0, 0}};
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
        case 'q':
            quiet = 1;
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
        default:
            rc = cli_usage_error(cmd, "unknown option");
            goto done;
        }
    }
    if (optind < argc) {
        rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        goto done;
    }
    if (!ckpt || !out || (!n_acts && !dataset)) {
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
    sf_sae_data D;
    clip_src cs;
    row_map rm = {NULL};
    sf_topk tk;
    int have_map = 0, have_data = 0, have_clip = 0, have_tk = 0;
    float *x = NULL;
    int64_t *row_ids = NULL, total;
    sf_sae_codes codes = {0};
    sf_sae_encoder *enc = NULL;
    rc = 1;
    if (sf_sae_load(&sae, ckpt)) {
        rc = cli_fail(cmd);
        goto done;
    }
    enc = sf_sae_encoder_new(&sae);
    const char *src_name;
    if (n_acts) {
        if (sf_sae_data_open(&D, acts, n_acts, key)) {
            rc = cli_fail(cmd);
            goto close;
        }
        have_data = 1;
        src_name = acts[0];
        if (D.d != sae.d) {
            sf_error("%s: key '%s' has width %d, the SAE in %s expects %d", acts[0], key, D.d, ckpt,
                     sae.d);
            rc = cli_fail(cmd);
            goto close;
        }
        if (!data_spec) data_spec = sf_st_meta(&D.files[0], "dataset");
        have_map = row_map_open(&rm, &D, key, rows_key);
        if (have_map < 0) {
            rc = cli_fail(cmd);
            goto close;
        }
        if (have_map && row_offset) {
            rc = cli_usage_error(
                cmd, "--row-offset cannot be combined with a row map (use --rows-key none)");
            goto close;
        }
        total = limit >= 0 && limit < D.N ? limit : D.N;
    } else {
        have_clip = 1;
        if (clip_src_open(&cs, dataset, model, vision, (int)G, limit, pillow_legacy)) {
            rc = cli_fail(cmd);
            goto close;
        }
        src_name = dataset;
        data_spec = dataset;
        if (cs.d != sae.d) {
            sf_error("%s: --vision %s gives width %d, the SAE in %s expects %d", model, vision,
                     cs.d, ckpt, sae.d);
            rc = cli_fail(cmd);
            goto close;
        }
        total = cs.end_row;
    }
    if (sf_topk_init(&tk, sae.n, (int)top)) {
        rc = cli_fail(cmd);
        goto close;
    }
    have_tk = 1;

    const int64_t B = batch < total ? batch : (total > 0 ? total : 1);
    x = sf_malloc((size_t)(have_clip ? batch : B) * (size_t)sae.d * sizeof(float)); // (B, d)
    row_ids = sf_malloc((size_t)(have_clip ? batch : B) * sizeof(int64_t));         // (B)
    sf_sae_codes_alloc(&codes, have_clip ? batch : B, sae.k);
    sf_progress pg;
    sf_progress_start(&pg, "topk", (uint64_t)total, "rows");
    if (quiet) pg.enabled = 0;
    double t0 = sf_now(), t_enc = 0;
    int err = 0;
    int64_t r0 = 0; /* activation rows so far */
    for (;;) {
        int64_t m;
        if (have_data) {
            m = total - r0 < B ? total - r0 : B;
            if (m <= 0) break;
            if (sf_sae_data_range(&D, r0, m, x) ||
                (have_map && row_map_read(&rm, &D, r0, m, row_ids))) {
                err = 1;
                break;
            }
            if (!have_map)
                for (int64_t i = 0; i < m; i++)
                    row_ids[i] = row_offset + r0 + i;
        } else {
            m = clip_src_fill(&cs, x, row_ids, batch);
            if (m < 0) {
                err = 1;
                break;
            }
            if (m == 0) break;
        }
        double te = sf_now();
        if (sf_sae_encoder_run_sliced(enc, x, m, r0, &codes)) {
            sf_error_prefix("%s", src_name);
            err = 1;
            break;
        }
        t_enc += sf_now() - te;
        if (sf_topk_add_sparse(&tk, m, sae.k, codes.idx, codes.val, codes.cnt, 0, row_ids)) {
            err = 1;
            break;
        }
        r0 += m;
        sf_progress_update(&pg, (uint64_t)(have_data ? r0 : cs.next_row), NULL);
    }
    sf_progress_finish(&pg, NULL);
    double dt = sf_now() - t0;
    if (!err) {
        char nbuf[32], kbuf[32], obuf[32], gbuf[32], skbuf[32];
        snprintf(nbuf, sizeof nbuf, "%lld", (long long)top);
        snprintf(kbuf, sizeof kbuf, "%d", sae.k);
        snprintf(obuf, sizeof obuf, "%lld", row_offset);
        snprintf(gbuf, sizeof gbuf, "%lld", G);
        snprintf(skbuf, sizeof skbuf, "%lld", have_clip ? (long long)cs.skipped : 0LL);
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
                                   "rows_key",    have_map ? rm.t[0]->name : "",
                                   NULL};
        const char *meta_clip[] = {"dataset",    dataset, "model",      model, "vision", vision,
                                   "clip_batch", gbuf,    "checkpoint", ckpt,  "top_n",  nbuf,
                                   "sae_k",      kbuf,    "skipped",    skbuf, NULL};
        if (sf_topk_write(&tk, out, have_clip ? meta_clip : meta_acts)) err = 1;
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
            if (have_clip && cs.skipped)
                printf("topk: %lld dataset rows skipped (no decodable image)\n",
                       (long long)cs.skipped);
        }
    }
close:
    sf_sae_encoder_free(enc);
    free(x);
    free(row_ids);
    sf_sae_codes_free(&codes);
    if (have_tk) sf_topk_free(&tk);
    free(rm.t);
    if (have_data) sf_sae_data_close(&D);
    if (have_clip) clip_src_close(&cs);
    sf_sae_free(&sae);
done:
    free(acts);
    return rc;
}
