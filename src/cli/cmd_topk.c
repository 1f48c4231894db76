/* saeflow topk: stream activations through an SAE, keep the top-N activating
 * rows of every feature plus density / mean / max / histogram. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/analysis.h"
#include "saeflow/sae.h"
#include "saeflow/sae_train.h"

/* Rows are encoded in slices of SLICE rows at global multiples of SLICE,
 * one slice per thread (each a single-threaded sf_sae_encode call). The
 * encoder GEMM's rounding can depend on its row count (OpenBLAS picks other
 * kernels for small M), so fixing the slices makes every row's code, and so
 * the whole output, identical for any --batch and --threads. */
#define SLICE 256

static int encode_slices(const sf_sae *s, const float *x, int64_t m, sf_sae_codes *codes, int64_t r0) {
    const int64_t ns = (m + SLICE - 1) / SLICE;
    int64_t bad = -1;
    char msg[1024] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < ns; i++) {
        int64_t b0 = i * SLICE, mb = m - b0 < SLICE ? m - b0 : SLICE;
        /* a view of the slice's rows in the batch's code buffer */
        sf_sae_codes v = {mb, codes->k, codes->idx + b0 * codes->k, codes->val + b0 * codes->k, codes->cnt + b0};
        if (sf_sae_encode(s, x + b0 * s->d, mb, &v)) {
#pragma omp critical(topk_encode_err)
            if (bad < 0 || i < bad) {
                bad = i;
                snprintf(msg, sizeof msg, "%s", sf_errmsg());
            }
        }
    }
    if (bad >= 0)
        return sf_error("rows %lld..%lld: %s", (long long)(r0 + bad * SLICE),
                        (long long)(r0 + bad * SLICE + SLICE - 1), msg);
    return 0;
}

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
static int row_map_read(const row_map *rm, const sf_sae_data *D, int64_t r0, int64_t m, int64_t *out) {
    int f = 0;
    for (int64_t i = 0; i < m; i++) {
        int64_t r = r0 + i;
        while (r >= D->start[f + 1]) f++;
        int64_t v;
        memcpy(&v, (const char *)rm->t[f]->data + (size_t)(r - D->start[f]) * 8, 8); /* may be unaligned */
        if (v < 0) return sf_error("%s: row map: entry %lld is negative", D->files[f].path, (long long)(r - D->start[f]));
        out[i] = v;
    }
    return 0;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: saeflow topk --checkpoint DIR --acts FILE [--acts FILE ...] --out FILE [options]\n"
            "\n"
            "For every SAE feature, keeps the N rows with the highest activation and\n"
            "per-feature statistics (density, mean and max activation, histogram), in one\n"
            "safetensors file for `saeflow explore`. Memory does not grow with the number\n"
            "of rows; results are identical for any --batch and --threads (equal values:\n"
            "the lower row id is kept first).\n"
            "\n"
            "  --checkpoint DIR   SAE checkpoint (config.json + model.safetensors)\n"
            "  --acts FILE        activations, safetensors [rows, d]; repeat for shards\n"
            "                     (row ids continue across files, in the order given)\n"
            "  --key NAME         tensor name in the activation files (default: activations)\n"
            "  --out FILE         output top-k file (written atomically)\n"
            "  -N, --top N        rows kept per feature (default 16)\n"
            "  --data SPEC        dataset the activation rows come from, recorded for\n"
            "                     explore (default: the activation file's 'dataset' metadata)\n"
            "  --rows-key NAME    I64 tensor giving each activation row's dataset row\n"
            "                     (default: '<key>_rows', else 'rows', as `saeflow extract`\n"
            "                     writes them, when present; 'none' to ignore them)\n"
            "  --row-offset R     without a row map: dataset row of activation row 0\n"
            "                     (default 0; row i is dataset row R + i)\n"
            "  --limit ROWS       stop after ROWS rows (default: all)\n"
            "  --batch B          rows read per batch, rounded up to a multiple of 256\n"
            "                     (default 4096)\n"
            "  --threads T        threads (default: all cores)\n"
            "  --quiet            no progress bar or summary\n");
}

int cmd_topk(int argc, char **argv) {
    const char *cmd = "topk";
    const char *ckpt = NULL, *out = NULL, *key = "activations", *data_spec = NULL, *rows_key = NULL;
    const char **acts = sf_calloc((size_t)argc + 1, sizeof(char *));
    int n_acts = 0, quiet = 0;
    long long top = 16, batch = 4096, threads = 0, limit = -1, row_offset = 0;
    static const struct option opts[] = {
        {"checkpoint", required_argument, 0, 'c'}, {"acts", required_argument, 0, 'a'},
        {"key", required_argument, 0, 'k'},        {"out", required_argument, 0, 'o'},
        {"top", required_argument, 0, 'N'},        {"data", required_argument, 0, 'd'},
        {"row-offset", required_argument, 0, 'r'}, {"limit", required_argument, 0, 'l'},
        {"batch", required_argument, 0, 'b'},      {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},            {"help", no_argument, 0, 'h'},
        {"rows-key", required_argument, 0, 'R'},
        {0, 0, 0, 0}};
    int c, rc = 2;
    while ((c = getopt_long(argc, argv, "N:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'a': acts[n_acts++] = optarg; break;
        case 'k': key = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data_spec = optarg; break;
        case 'R': rows_key = optarg; break;
        case 'q': quiet = 1; break;
        case 'N': if (cli_parse_int(cmd, "top", optarg, &top)) goto done; break;
        case 'r': if (cli_parse_int(cmd, "row-offset", optarg, &row_offset)) goto done; break;
        case 'l': if (cli_parse_int(cmd, "limit", optarg, &limit)) goto done; break;
        case 'b': if (cli_parse_int(cmd, "batch", optarg, &batch)) goto done; break;
        case 't': if (cli_parse_int(cmd, "threads", optarg, &threads)) goto done; break;
        case 'h': usage(stdout); rc = 0; goto done;
        default: rc = cli_usage_error(cmd, "unknown option"); goto done;
        }
    }
    if (optind < argc) { rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]); goto done; }
    if (!ckpt || !n_acts || !out) { rc = cli_usage_error(cmd, "--checkpoint, --acts and --out are required"); goto done; }
    if (top < 1 || top > 4096) { rc = cli_usage_error(cmd, "--top must be in [1, 4096]"); goto done; }
    if (batch < 1 || batch > (1 << 20)) { rc = cli_usage_error(cmd, "--batch must be in [1, 1048576]"); goto done; }
    if (threads < 0 || threads > 4096) { rc = cli_usage_error(cmd, "--threads must be >= 0"); goto done; }
    if (row_offset < 0) { rc = cli_usage_error(cmd, "--row-offset must be >= 0"); goto done; }

    sf_sae_blas_fixup(); /* may re-exec with a faster OpenBLAS core; before any output */
    sf_sae_set_threads((int)threads);
    omp_set_max_active_levels(1); /* sf_sae_encode inside our slice loop runs single-threaded */
    batch = (batch + SLICE - 1) / SLICE * SLICE; /* whole slices (see encode_slices) */

    sf_sae sae;
    sf_sae_data D;
    sf_topk tk;
    rc = 1;
    if (sf_sae_load(&sae, ckpt)) { rc = cli_fail(cmd); goto done; }
    if (sf_sae_data_open(&D, acts, n_acts, key)) { sf_sae_free(&sae); rc = cli_fail(cmd); goto done; }
    if (D.d != sae.d) {
        sf_error("%s: key '%s' has width %d, the SAE in %s expects %d", acts[0], key, D.d, ckpt, sae.d);
        rc = cli_fail(cmd);
        goto close_data;
    }
    if (!data_spec) data_spec = sf_st_meta(&D.files[0], "dataset");
    row_map rm;
    int have_map = row_map_open(&rm, &D, key, rows_key);
    if (have_map < 0) { rc = cli_fail(cmd); goto close_data; }
    if (have_map && row_offset) {
        rc = cli_usage_error(cmd, "--row-offset cannot be combined with a row map (use --rows-key none)");
        goto close_map;
    }
    int64_t rows = D.N;
    if (limit >= 0 && limit < rows) rows = limit;
    if (sf_topk_init(&tk, sae.n, (int)top)) { rc = cli_fail(cmd); goto close_map; }

    const int64_t B = batch < rows ? batch : (rows > 0 ? rows : 1);
    float *x = sf_malloc((size_t)B * (size_t)sae.d * sizeof(float)); // (B, d)
    int64_t *row_ids = have_map ? sf_malloc((size_t)B * sizeof(int64_t)) : NULL; // (B)
    sf_sae_codes codes;
    sf_sae_codes_alloc(&codes, B, sae.k);
    sf_progress pg;
    sf_progress_start(&pg, "topk", (uint64_t)rows, "rows");
    if (quiet) pg.enabled = 0;
    double t0 = sf_now(), t_enc = 0;
    int err = 0;
    for (int64_t r0 = 0; r0 < rows && !err; r0 += B) {
        int64_t m = rows - r0 < B ? rows - r0 : B;
        if (sf_sae_data_range(&D, r0, m, x)) { err = 1; break; }
        double te = sf_now();
        if (encode_slices(&sae, x, m, &codes, r0)) {
            err = 1;
            break;
        }
        t_enc += sf_now() - te;
        if (have_map && row_map_read(&rm, &D, r0, m, row_ids)) {
            err = 1;
            break;
        }
        if (sf_topk_add_sparse(&tk, m, sae.k, codes.idx, codes.val, codes.cnt, row_offset + r0, row_ids)) {
            err = 1;
            break;
        }
        sf_progress_update(&pg, (uint64_t)(r0 + m), NULL);
    }
    sf_progress_finish(&pg, NULL);
    double dt = sf_now() - t0;
    if (!err) {
        char nbuf[32], kbuf[32], obuf[32];
        snprintf(nbuf, sizeof nbuf, "%lld", (long long)top);
        snprintf(kbuf, sizeof kbuf, "%d", sae.k);
        snprintf(obuf, sizeof obuf, "%lld", row_offset);
        /* the activation file list, comma-separated */
        size_t al = 1;
        for (int i = 0; i < n_acts; i++) al += strlen(acts[i]) + 1;
        char *alist = sf_calloc(al, 1);
        for (int i = 0; i < n_acts; i++) {
            if (i) strcat(alist, ",");
            strcat(alist, acts[i]);
        }
        const char *meta[] = {"dataset", data_spec ? data_spec : "", "activations", alist,
                              "key", key, "checkpoint", ckpt, "top_n", nbuf, "sae_k", kbuf,
                              "row_offset", obuf, "rows_key", have_map ? rm.t[0]->name : "", NULL};
        if (sf_topk_write(&tk, out, meta)) err = 1;
        free(alist);
    }
    if (err) {
        rc = cli_fail(cmd);
    } else {
        rc = 0;
        if (!quiet) {
            int64_t dead = 0;
            for (int64_t j = 0; j < tk.n; j++) dead += tk.count[j] == 0;
            printf("topk: %lld rows x %d features in %.2f s (%.0f rows/s; encode %.2f s), "
                   "%lld dead features, wrote %s\n",
                   (long long)rows, sae.n, dt, dt > 0 ? (double)rows / dt : 0.0, t_enc, (long long)dead, out);
        }
    }
    free(x);
    free(row_ids);
    sf_sae_codes_free(&codes);
    sf_topk_free(&tk);
close_map:
    free(rm.t);
close_data:
    sf_sae_data_close(&D);
    sf_sae_free(&sae);
done:
    free(acts);
    return rc;
}
