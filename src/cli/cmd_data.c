/* saeflow data: inspect and export datasets (cc3m parquet, webdataset tar,
 * image folders). Subcommands: info, write, captions. See docs/data.md. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/buf.h"
#include "saeflow/dataset.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: saeflow data info     --dataset SPEC [--images] [--limit N]\n"
            "       saeflow data write    --dataset SPEC --out DIR [--start R] [--limit N]\n"
            "       saeflow data captions --dataset SPEC [--out FILE] [--start R] [--limit N]\n"
            "\n"
            "  info      files, rows, columns / schema, caption length statistics\n"
            "            (--images: also image count, bytes and formats; reads every image)\n"
            "  write     images to DIR/<row>.<ext>, bytes as stored (no re-encode); ext from\n"
            "            the bytes: jpg, png, webp (bin if unknown); rows without an image are\n"
            "            reported and skipped; each file is written atomically\n"
            "  captions  one caption per line, line k+1 = row k; a row without caption gives\n"
            "            an empty line; CR, LF and TAB inside a caption become spaces\n"
            "            (to --out FILE atomically, else stdout)\n"
            "\n"
            "  --dataset SPEC   cc3m:DIR/*.parquet | wds:DIR/{00000..00009}.tar | folder:DIR\n"
            "                   (brace ranges and globs expand; files are sorted; row\n"
            "                   numbers are stable across runs)\n"
            "  --start R        first row (default 0)\n"
            "  --limit N        at most N rows (default: all)\n"
            "  --quiet          no progress bar or summary\n");
}

typedef struct {
    const char *spec, *out;
    long long start, limit;
    int images, quiet;
} data_opts;

static int parse(const char *cmd, int argc, char **argv, data_opts *o) {
    static const struct option opts[] = {
        {"dataset", required_argument, 0, 'd'}, {"out", required_argument, 0, 'o'},
        {"start", required_argument, 0, 's'},   {"limit", required_argument, 0, 'l'},
        {"images", no_argument, 0, 'i'},        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->limit = -1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->spec = optarg;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 'i':
            o->images = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 's':
            if (cli_parse_int(cmd, "start", optarg, &o->start)) return 2;
            break;
        case 'l':
            if (cli_parse_int(cmd, "limit", optarg, &o->limit)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!o->spec) return cli_usage_error(cmd, "--dataset is required");
    if (o->start < 0) return cli_usage_error(cmd, "--start must be >= 0");
    return 0;
}

static int data_info(int argc, char **argv) {
    const char *cmd = "data info";
    data_opts o;
    int rc = parse(cmd, argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    sf_dataset *ds = sf_dataset_open(o.spec, SF_DS_CAPTIONS | (o.images ? SF_DS_IMAGES : 0));
    if (!ds) return cli_fail(cmd);
    if (sf_dataset_describe(ds, stdout)) {
        sf_dataset_close(ds);
        return cli_fail(cmd);
    }
    int64_t total = sf_dataset_count(ds);
    if (total < 0) {
        sf_dataset_close(ds);
        return cli_fail(cmd);
    }
    int64_t n = total - o.start;
    if (n < 0) n = 0;
    if (o.limit >= 0 && n > o.limit) n = o.limit;
    if (sf_dataset_seek(ds, o.start < total ? o.start : total)) {
        sf_dataset_close(ds);
        return cli_fail(cmd);
    }
    sf_progress pg;
    sf_progress_start(&pg, "scanning", (uint64_t)n, "rows");
    if (o.quiet) pg.enabled = 0;
    int64_t rows = 0, with_cap = 0, empty = 0, with_img = 0, img_bytes = 0, ext_jpg = 0,
            ext_png = 0, ext_webp = 0, ext_other = 0;
    size_t cmin = SIZE_MAX, cmax = 0, bmin = SIZE_MAX, bmax = 0;
    double csum = 0, bsum = 0;
    sf_sample s;
    int r = 1;
    while (rows < n && (r = sf_dataset_next(ds, &s)) == 1) {
        rows++;
        if (s.caption) {
            with_cap++;
            size_t cl = sf_utf8_count(s.caption, s.caption_len);
            if (!cl) empty++;
            csum += (double)cl;
            bsum += (double)s.caption_len;
            if (cl < cmin) cmin = cl;
            if (cl > cmax) cmax = cl;
            if (s.caption_len < bmin) bmin = s.caption_len;
            if (s.caption_len > bmax) bmax = s.caption_len;
        }
        if (s.image) {
            with_img++;
            img_bytes += (int64_t)s.image_len;
            if (!strcmp(s.image_ext, "jpg"))
                ext_jpg++;
            else if (!strcmp(s.image_ext, "png"))
                ext_png++;
            else if (!strcmp(s.image_ext, "webp"))
                ext_webp++;
            else
                ext_other++;
        }
        if ((rows & 1023) == 0) sf_progress_update(&pg, (uint64_t)rows, NULL);
    }
    sf_progress_finish(&pg, NULL);
    if (r < 0) {
        sf_dataset_close(ds);
        return cli_fail(cmd);
    }
    printf("scanned:    %lld rows (from row %lld)\n", (long long)rows, o.start);
    printf("captions:   %lld present, %lld missing, %lld empty\n", (long long)with_cap,
           (long long)(rows - with_cap), (long long)empty);
    if (with_cap)
        printf("caption length: chars min %zu mean %.1f max %zu; bytes min %zu mean %.1f max %zu\n",
               cmin, csum / (double)with_cap, cmax, bmin, bsum / (double)with_cap, bmax);
    if (o.images)
        printf("images:     %lld present, %lld missing, %.1f MB (jpg %lld, png %lld, webp %lld, "
               "other %lld)\n",
               (long long)with_img, (long long)(rows - with_img), (double)img_bytes / 1e6,
               (long long)ext_jpg, (long long)ext_png, (long long)ext_webp, (long long)ext_other);
    sf_dataset_close(ds);
    return 0;
}

static int data_write(int argc, char **argv) {
    const char *cmd = "data write";
    data_opts o;
    int rc = parse(cmd, argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (!o.out) return cli_usage_error(cmd, "--out DIR is required");
    sf_dataset *ds = sf_dataset_open(o.spec, SF_DS_IMAGES);
    if (!ds) return cli_fail(cmd);
    int64_t total = sf_dataset_count(ds);
    if (total < 0 || sf_mkdirs(o.out) || sf_dataset_seek(ds, o.start < total ? o.start : total)) {
        sf_dataset_close(ds);
        return cli_fail(cmd);
    }
    int64_t n = total - o.start;
    if (n < 0) n = 0;
    if (o.limit >= 0 && n > o.limit) n = o.limit;
    sf_progress pg;
    sf_progress_start(&pg, "writing", (uint64_t)n, "img");
    if (o.quiet) pg.enabled = 0;
    int64_t done = 0, written = 0, missing = 0;
    double bytes = 0;
    sf_sample s;
    int r = 1;
    size_t plen = strlen(o.out) + 64;
    char *path = sf_malloc(plen);
    while (done < n && (r = sf_dataset_next(ds, &s)) == 1) {
        done++;
        if (!s.image) {
            missing++;
            if (!o.quiet)
                fprintf(stderr, "saeflow %s: row %lld (id %s): no image, skipped\n", cmd,
                        (long long)s.row, s.id);
            continue;
        }
        snprintf(path, plen, "%s/%lld.%s", o.out, (long long)s.row, s.image_ext);
        if (sf_write_file_atomic(path, s.image, s.image_len)) {
            r = -1;
            break;
        }
        written++;
        bytes += (double)s.image_len;
        if ((done & 255) == 0) sf_progress_update(&pg, (uint64_t)done, NULL);
    }
    free(path);
    sf_progress_finish(&pg, NULL);
    sf_dataset_close(ds);
    if (r < 0) return cli_fail(cmd);
    if (!o.quiet)
        fprintf(stderr, "saeflow %s: wrote %lld images (%.1f MB) to %s; %lld rows without image\n",
                cmd, (long long)written, bytes / 1e6, o.out, (long long)missing);
    return 0;
}

static int data_captions(int argc, char **argv) {
    const char *cmd = "data captions";
    data_opts o;
    int rc = parse(cmd, argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    sf_dataset *ds = sf_dataset_open(o.spec, SF_DS_CAPTIONS);
    if (!ds) return cli_fail(cmd);
    int64_t total = sf_dataset_count(ds);
    if (total < 0 || sf_dataset_seek(ds, o.start < total ? o.start : total)) {
        sf_dataset_close(ds);
        return cli_fail(cmd);
    }
    int64_t n = total - o.start;
    if (n < 0) n = 0;
    if (o.limit >= 0 && n > o.limit) n = o.limit;
    sf_atomic_file af = {0};
    FILE *fp = stdout;
    if (o.out) {
        if (sf_atomic_open(&af, o.out)) {
            sf_dataset_close(ds);
            return cli_fail(cmd);
        }
        fp = af.fp;
    }
    sf_progress pg;
    sf_progress_start(&pg, "captions", (uint64_t)n, "rows");
    if (o.quiet || !o.out) pg.enabled = 0;
    int64_t done = 0, missing = 0;
    sf_sample s;
    int r = 1;
    char *line = NULL;
    size_t cap = 0;
    while (done < n && (r = sf_dataset_next(ds, &s)) == 1) {
        done++;
        if (!s.caption) {
            missing++;
            fputc('\n', fp);
            continue;
        }
        if (s.caption_len + 2 > cap) {
            free(line);
            line = sf_malloc(cap = s.caption_len + 2);
        }
        for (size_t i = 0; i < s.caption_len; i++) {
            char ch = s.caption[i];
            line[i] = (ch == '\n' || ch == '\r' || ch == '\t') ? ' ' : ch;
        }
        line[s.caption_len] = '\n';
        fwrite(line, 1, s.caption_len + 1, fp);
        if ((done & 4095) == 0) sf_progress_update(&pg, (uint64_t)done, NULL);
    }
    free(line);
    sf_progress_finish(&pg, NULL);
    sf_dataset_close(ds);
    if (r < 0) {
        if (o.out) sf_atomic_abort(&af);
        return cli_fail(cmd);
    }
    if (o.out) {
        if (sf_atomic_commit(&af)) return cli_fail(cmd);
        if (!o.quiet)
            fprintf(stderr,
                    "saeflow %s: %lld captions to %s (%lld rows without caption: empty lines)\n",
                    cmd, (long long)done, o.out, (long long)missing);
    } else if (fflush(stdout) != 0) {
        fprintf(stderr, "saeflow %s: write to stdout failed\n", cmd);
        return 1;
    }
    return 0;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    optind = 1; /* each subcommand parses argv[1..] afresh */
    if (!strcmp(sub, "info")) return data_info(argc - 1, argv + 1);
    if (!strcmp(sub, "write")) return data_write(argc - 1, argv + 1);
    if (!strcmp(sub, "captions")) return data_captions(argc - 1, argv + 1);
    fprintf(stderr, "saeflow data: unknown subcommand '%s' (info, write, captions)\n", sub);
    return 2;
}
