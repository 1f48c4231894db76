/* saeflow flux: run the FLUX.1 transformer on given inputs and write the
 * activations at the requested hooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/flux.h"
#include "saeflow/flux_sched.h"
#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow flux run --model PATH --inputs FILE --hook H [--hook H ...] --out "
        "FILE [options]\n"
        "\n"
        "       saeflow flux encode-prompts ... (see saeflow flux encode-prompts --help)\n"
        "       saeflow flux generate ...       (see saeflow flux generate --help)\n"
        "\n"
        "Runs the FLUX.1 transformer (FluxTransformer2DModel) on one batch and writes the\n"
        "activations at each hook, as (B, tokens, width) F32 tensors named by the hook.\n"
        "The forward stops after the last block a hook needs.\n"
        "\n"
        "  --model PATH     diffusers folder (pipeline root or its transformer/), or a BFL\n"
        "                   single file (flux1-schnell.safetensors)\n"
        "  --inputs FILE    safetensors with diffusers' forward arguments (F32/BF16/F16):\n"
        "                     hidden_states (B, N, in) packed latents, or latents (B, C, h, w)\n"
        "                     encoder_hidden_states (B, T, joint)   pooled_projections (B, P)\n"
        "                     timestep (B) sigma in [0, 1]          guidance (B) (dev only)\n"
        "                     img_ids (N, 3) (made from latents if absent), txt_ids (T, 3)\n"
        "  --hook H         transformer_blocks.N.0 (text) / .1 (image);\n"
        "                   single_transformer_blocks.N (text+image; :text or :image for a\n"
        "                   part); add :delta for output - input; output (the model output).\n"
        "                   Repeatable and comma-separated.\n"
        "  --out FILE       output safetensors (written atomically)\n"
        "  --dtype D        weights in memory: stored (default), f32, bf16, f16\n"
        "  --axes A,B,C     RoPE axes when the model has no config.json and head dim != 128\n"
        "  --threads T      OpenMP threads (default: all cores)\n");
}

typedef struct {
    sf_st st;
    float **owned;
    int n_owned;
} inputs_file;

/* Tensor `name` as F32 with a shape check (shape entries < 0: any), or NULL:
 * an error when required, silently otherwise. */
static const float *input(inputs_file *f, const char *name, int ndim, const int64_t *shape,
                          int required, const sf_tensor_info **info) {
    const sf_tensor_info *t = sf_st_find(&f->st, name);
    if (info) *info = t;
    if (!t) {
        if (required) sf_error("%s: tensor '%s' is missing", f->st.path, name);
        return NULL;
    }
    float *owned = NULL;
    const float *p = sf_st_get_f32(&f->st, name, ndim, shape, &owned);
    if (owned) f->owned[f->n_owned++] = owned;
    return p;
}

static int parse_axes(const char *s, sf_flux_load_opts *o) {
    o->n_axes = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 4096 || o->n_axes == SF_FLUX_MAX_AXES) return -1;
        o->axes_dim[o->n_axes++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return o->n_axes ? 0 : -1;
}

static int run(const char *model, const char *inputs, const cli_paths *hooks, const char *outp,
               const sf_flux_load_opts *lo) {
    const char *cmd = "flux";
    int rc = 1, nreq = hooks->n;
    sf_flux_request *req = sf_calloc((size_t)nreq, sizeof *req);
    float **out = sf_calloc((size_t)nreq, sizeof *out);
    float *packed = NULL, *ids = NULL, *tbuf = NULL, *gbuf = NULL;
    inputs_file f = {0};
    f.owned = sf_calloc(16, sizeof *f.owned);
    sf_flux *m = NULL;
    sf_st_writer *w = NULL;
    for (int i = 0; i < nreq; i++)
        if (sf_flux_parse_request(hooks->v[i], &req[i])) {
            free(req), free(out), free(f.owned);
            fprintf(stderr, "saeflow %s: %s\n", cmd, sf_errmsg());
            return 2;
        }
    if (sf_st_open(&f.st, inputs)) goto done;
    sf_flux_load_opts o = *lo;
    o.only = req, o.n_only = nreq; /* bind only the blocks the hooks reach */
    if (!(m = sf_flux_load(model, &o))) goto done;
    const sf_flux_config *c = sf_flux_get_config(m);
    sf_flux_inputs in = {0};
    const sf_tensor_info *t;
    // text side first: it fixes B and T
    const int64_t sh_txt[3] = {-1, -1, c->joint_dim};
    if (!(in.txt = input(&f, "encoder_hidden_states", 3, sh_txt, 1, &t))) goto done;
    in.B = t->shape[0], in.T = t->shape[1];
    const int64_t sh_pool[2] = {in.B, c->pooled_dim};
    if (!(in.pooled = input(&f, "pooled_projections", 2, sh_pool, 1, NULL))) goto done;
    // image side: packed hidden_states + img_ids, or latents (packed here)
    const int64_t sh_img[3] = {in.B, -1, c->in_channels};
    if ((in.img = input(&f, "hidden_states", 3, sh_img, 0, &t))) {
        in.N = t->shape[1];
        const int64_t sh_ids[2] = {in.N, c->n_axes};
        if (!(in.img_ids = input(&f, "img_ids", 2, sh_ids, 0, NULL))) {
            sf_error("%s: packed hidden_states need img_ids (N, %d), or give latents (B, C, h, "
                     "w) instead",
                     inputs, c->n_axes);
            goto done;
        }
    } else if (t) {
        goto done; /* hidden_states present with a bad shape */
    } else {
        const int64_t sh_lat[4] = {in.B, c->in_channels / 4, -1, -1};
        const float *lat = input(&f, "latents", 4, sh_lat, 0, &t);
        if (!lat) {
            if (!t)
                sf_error("%s: tensor 'hidden_states' (B, N, %d) or 'latents' (B, %d, h, w) is "
                         "missing",
                         inputs, c->in_channels, c->in_channels / 4);
            goto done;
        }
        const int64_t h = t->shape[2], wd = t->shape[3];
        if (h % 2 || wd % 2 || h < 2 || wd < 2 || c->in_channels % 4 || c->n_axes != 3) {
            sf_error("%s: latents (%lld, %lld) must have even height and width (and the model "
                     "4C channels, 3 RoPE axes)",
                     inputs, (long long)h, (long long)wd);
            goto done;
        }
        in.N = (h / 2) * (wd / 2);
        packed = sf_malloc((size_t)(in.B * in.N * c->in_channels) * sizeof(float));
        sf_flux_pack_latents(lat, in.B, c->in_channels / 4, h, wd, packed);
        in.img = packed;
        ids = sf_malloc((size_t)(in.N * 3) * sizeof(float));
        const int64_t sh_ids[2] = {in.N, 3};
        if (!(in.img_ids = input(&f, "img_ids", 2, sh_ids, 0, &t))) {
            if (t) goto done;
            sf_flux_image_ids(h / 2, wd / 2, ids);
            in.img_ids = ids;
        }
    }
    const int64_t sh_tid[2] = {in.T, c->n_axes};
    in.txt_ids = input(&f, "txt_ids", 2, sh_tid, 0, &t);
    if (!in.txt_ids && t) goto done;
    // timestep / guidance: (B), or one value for the batch
    const float **scal[2] = {&in.timestep, &in.guidance};
    float **bufs[2] = {&tbuf, &gbuf};
    const char *snames[2] = {"timestep", "guidance"};
    for (int k = 0; k < 2; k++) {
        const float *v = input(&f, snames[k], -1, NULL, k == 0, &t);
        if (!v) {
            if (k == 0 || t) goto done;
            continue;
        }
        int64_t n = sf_tensor_numel(t);
        if (n != in.B && n != 1) {
            sf_error("%s: tensor '%s' has %lld values, expected %lld (one per example) or 1",
                     inputs, snames[k], (long long)n, (long long)in.B);
            goto done;
        }
        *bufs[k] = sf_malloc((size_t)in.B * sizeof(float));
        for (int64_t b = 0; b < in.B; b++)
            (*bufs[k])[b] = v[n == 1 ? 0 : b];
        *scal[k] = *bufs[k];
    }
    w = sf_stw_new();
    for (int i = 0; i < nreq; i++) {
        int64_t rows = sf_flux_request_rows(m, &req[i], in.N, in.T);
        if (rows < 0) goto done;
        int64_t shape[3] = {in.B, rows, sf_flux_request_width(m, &req[i])};
        out[i] = sf_malloc((size_t)(shape[0] * shape[1] * shape[2]) * sizeof(float));
        char name[160];
        sf_flux_request_name(&req[i], name, sizeof name);
        if (sf_stw_add(w, name, SF_DT_F32, 3, shape, out[i])) {
            sf_error("hook '%s' given twice", name);
            goto done;
        }
    }
    if (sf_flux_forward(m, &in, nreq, req, out)) goto done;
    sf_stw_meta(w, "model", model);
    sf_stw_meta(w, "producer", "saeflow flux run " SF_VERSION);
    if (sf_stw_write(w, outp)) goto done;
    fprintf(stderr, "saeflow flux: %d hook%s, batch %lld, %lld image + %lld text tokens -> %s\n",
            nreq, nreq == 1 ? "" : "s", (long long)in.B, (long long)in.N, (long long)in.T, outp);
    rc = 0;
done:
    if (rc) cli_fail(cmd);
    sf_stw_free(w);
    for (int i = 0; i < nreq; i++)
        free(out[i]);
    for (int i = 0; i < f.n_owned; i++)
        free(f.owned[i]);
    free(f.owned), free(out), free(req), free(packed), free(ids), free(tbuf), free(gbuf);
    sf_flux_free(m);
    if (f.st.path) sf_st_close(&f.st);
    return rc;
}

int cmd_flux(int argc, char **argv) {
    const char *cmd = "flux";
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "run"))
        return cli_usage_error(cmd, "unknown subcommand '%s' (run, encode-prompts, generate)",
                               argv[1]);
    argc--, argv++;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"inputs", required_argument, 0, 'i'},
                                         {"hook", required_argument, 0, 'k'},
                                         {"out", required_argument, 0, 'o'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"axes", required_argument, 0, 'a'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *inputs = NULL, *outp = NULL;
    cli_paths hooks = {0};
    sf_flux_load_opts lo = {0};
    long long threads = 0;
    int c, rc = 2;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'i':
            inputs = optarg;
            break;
        case 'k':
            cli_paths_add(&hooks, optarg);
            break;
        case 'o':
            outp = optarg;
            break;
        case 'd':
            if (cli_parse_weight_dtype(optarg, 0, &lo.dtype)) {
                cli_usage_error(cmd, "--dtype must be stored, f32, bf16 or f16");
                goto out;
            }
            break;
        case 'a':
            if (parse_axes(optarg, &lo)) {
                cli_usage_error(cmd, "--axes takes 1 to %d positive widths, e.g. 16,56,56",
                                SF_FLUX_MAX_AXES);
                goto out;
            }
            break;
        case 't':
            if (cli_parse_int(cmd, "threads", optarg, &threads)) goto out;
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            cli_usage_error(cmd, "unknown option");
            goto out;
        }
    }
    if (optind < argc) {
        cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!model || !inputs || !outp || !hooks.n) {
        cli_usage_error(cmd, "--model, --inputs, --hook and --out are required");
        goto out;
    }
    if (threads < 0 || threads > 4096) {
        cli_usage_error(cmd, "--threads must be in [0, 4096]");
        goto out;
    }
    sf_kernels_set_threads((int)threads);
    rc = run(model, inputs, &hooks, outp, &lo);
out:
    cli_paths_free(&hooks);
    return rc;
}
