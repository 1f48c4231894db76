/* saeflow flux generate: FLUX.1 text-to-image as diffusers' FluxPipeline
 * (saeflow/flux_generate.h), one image per prompt, PNGs named by prompt row
 * and seed. Prompts are encoded first and the text encoders freed before the
 * transformer loads (or come from an `encode-prompts` file), so T5 and the
 * transformer are never in memory together. Dispatched from main.c as
 * `saeflow flux generate ...`. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/flux_generate.h"
#include "saeflow/flux_prompts.h"
#include "saeflow/image.h"
#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"
#include "saeflow/t5.h"

#define CMD "flux generate"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: saeflow flux generate --model DIR (--prompt TEXT | --prompts FILE | --dataset "
        "SPEC | --embeds FILE) --out DIR [options]\n"
        "\n"
        "Generates one image per prompt as diffusers' FluxPipeline does on CPU (F32): the\n"
        "same seed gives the same initial noise as torch.Generator(\"cpu\").manual_seed(seed).\n"
        "Writes OUT/rowRRRRRR_seedS.png (R: line number / dataset row / embeds row), or with\n"
        "--latents-only OUT/rowRRRRRR_seedS.safetensors (\"latents\" (1, C, h, w), unpacked).\n"
        "\n"
        "  --model DIR       diffusers FLUX pipeline folder (transformer/, scheduler/, vae/;\n"
        "                    tokenizer/, text_encoder/, tokenizer_2/, text_encoder_2/ for text)\n"
        "  --prompt TEXT     one prompt (row 0)\n"
        "  --prompts FILE    one prompt per line (UTF-8)\n"
        "  --dataset SPEC    the captions of cc3m:PATTERN, wds:PATTERN or folder:DIR\n"
        "  --embeds FILE     prompt embeddings written by `saeflow flux encode-prompts`\n"
        "                    (the text encoders are not loaded)\n"
        "  --out DIR         output folder (created)\n"
        "  --size S          height = width = S pixels (default 256; multiple of 16)\n"
        "  --height H, --width W\n"
        "  --steps N         Euler steps (default 4)\n"
        "  --seed S          the seed of every image (default 0)\n"
        "  --guidance G      guidance scale for guidance-distilled (dev) models (default 3.5)\n"
        "  --max-sequence-length L   T5 tokens (default 256, FLUX schnell; dev uses 512)\n"
        "  --offset N, --limit N     prompts [N, N + limit) of the list\n"
        "  --latents-only    skip the VAE, write the final latents\n"
        "  --t5-dtype D      T5 weights in memory: stored (default), f32, bf16, f16\n"
        "  --rng K           torch randn kernel: avx2 (default) or libm (AVX512 machines)\n"
        "  --seeds LIST      several seeds (e.g. 1,2,3): one image per prompt and seed\n"
        "  --threads T       OpenMP threads (default: all cores)\n"
        "\n"
        "Steering with SAE features (docs/generate.md):\n"
        "  --steer CKPT:FEATURE:STRENGTH   edit the block output the SAE checkpoint CKPT was\n"
        "                    trained on (config.json \"hook\"), repeatable. Files get\n"
        "                    _fFEATURE_sSTRENGTH per steer before the extension\n"
        "  --steer-mode M    add (default): x + S * W_dec[:, F] (keeps the SAE's error;\n"
        "                    strength 0 = the unsteered image); surgery: decode(encode(x) +\n"
        "                    S * e_F), the reference's sae.surgery (x becomes its reconstruction)\n"
        "  --steer-steps S   all (default) or steps like 0,2 or 0-1\n"
        "  --steer-tokens T  image, text or both (default: the hook's rows; image for a\n"
        "                    single block trained on text+image)\n"
        "  --steer-hook H    the hook for checkpoints without one, or instead of theirs\n"
        "  --steer-grid LIST strengths (e.g. 0,4,8,16) for one --steer CKPT:FEATURE: with\n"
        "                    --seeds, OUT/rowRRRRRR_fF_grid.png (rows = strengths, columns =\n"
        "                    seeds) + .json, and every cell as rowRRRRRR_seedS_fF_sS.png\n");
}

typedef struct {
    sf_progress *bar;
    uint64_t done;
} progress_ctx;

static int on_step(void *ctx, int step, const float *x, int64_t B, int64_t N, int64_t C4) {
    progress_ctx *p = ctx;
    (void)step, (void)x, (void)N, (void)C4;
    p->done += (uint64_t)B; // one step of B prompts
    sf_progress_update(p->bar, p->done, NULL);
    return 0;
}

/* "1,2,3" -> seeds (at most max); count or -1. */
static int parse_seeds(const char *s, uint64_t *v, int max) {
    int n = 0;
    for (const char *p = s;;) {
        char *end;
        if (!isdigit((unsigned char)*p) || n == max) return -1;
        errno = 0;
        v[n++] = strtoull(p, &end, 10);
        if (errno || (*end && *end != ',')) return -1;
        if (!*end) return n;
        p = end + 1;
    }
}

/* Embeddings from an encode-prompts file, rows [offset, offset + limit). */
static int read_embeds(const char *path, int64_t offset, int64_t limit, float **pe, float **po,
                       int64_t **rows, int64_t *n, int64_t *L, int64_t *J, int64_t *P) {
    sf_st st;
    if (sf_st_open(&st, path)) return -1;
    const sf_tensor_info *a = sf_st_find(&st, "prompt_embeds"),
                         *b = sf_st_find(&st, "pooled_prompt_embeds"), *r = sf_st_find(&st, "rows");
    int rc = 0;
    if (!a || !b || a->ndim != 3 || b->ndim != 2 || a->shape[0] != b->shape[0])
        rc = sf_error("%s: expected prompt_embeds (N, L, J) and pooled_prompt_embeds (N, P) "
                      "(saeflow flux encode-prompts)",
                      path);
    else if (r && (r->dtype != SF_DT_I64 || r->ndim != 1 || r->shape[0] != a->shape[0]))
        rc = sf_error("%s: rows must be I64 (N)", path);
    if (!rc) {
        const int64_t total = a->shape[0];
        *L = a->shape[1], *J = a->shape[2], *P = b->shape[1];
        int64_t o = offset < total ? offset : total;
        *n = limit < 0 || total - o < limit ? total - o : limit;
        float *own_a = NULL, *own_b = NULL;
        const float *fa = sf_st_get_f32(&st, "prompt_embeds", 3, a->shape, &own_a),
                    *fb = sf_st_get_f32(&st, "pooled_prompt_embeds", 2, b->shape, &own_b);
        if (!fa || !fb)
            rc = -1;
        else {
            *pe = sf_malloc((size_t)(*n * *L * *J + 1) * sizeof(float));
            *po = sf_malloc((size_t)(*n * *P + 1) * sizeof(float));
            *rows = sf_malloc((size_t)(*n + 1) * sizeof(int64_t));
            memcpy(*pe, fa + o * *L * *J, (size_t)(*n * *L * *J) * sizeof(float));
            memcpy(*po, fb + o * *P, (size_t)(*n * *P) * sizeof(float));
            for (int64_t i = 0; i < *n; i++)
                (*rows)[i] = r ? ((const int64_t *)r->data)[o + i] : o + i;
        }
        free(own_a), free(own_b);
    }
    sf_st_close(&st);
    return rc;
}

int cli_flux_generate(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt", required_argument, 0, 'P'},
                                         {"prompts", required_argument, 0, 'p'},
                                         {"dataset", required_argument, 0, 'D'},
                                         {"embeds", required_argument, 0, 'E'},
                                         {"out", required_argument, 0, 'o'},
                                         {"size", required_argument, 0, 's'},
                                         {"height", required_argument, 0, 'H'},
                                         {"width", required_argument, 0, 'W'},
                                         {"steps", required_argument, 0, 'S'},
                                         {"seed", required_argument, 0, 'r'},
                                         {"guidance", required_argument, 0, 'g'},
                                         {"max-sequence-length", required_argument, 0, 'L'},
                                         {"offset", required_argument, 0, 'O'},
                                         {"limit", required_argument, 0, 'n'},
                                         {"latents-only", no_argument, 0, 'l'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"t5-dtype", required_argument, 0, 'w'},
                                         {"rng", required_argument, 0, 'R'},
                                         {"threads", required_argument, 0, 't'},
                                         {"seeds", required_argument, 0, 'Z'},
                                         {"steer", required_argument, 0, 1000},
                                         {"steer-mode", required_argument, 0, 1001},
                                         {"steer-steps", required_argument, 0, 1002},
                                         {"steer-tokens", required_argument, 0, 1003},
                                         {"steer-hook", required_argument, 0, 1004},
                                         {"steer-grid", required_argument, 0, 1005},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *prompts = NULL, *dataset = NULL, *embeds = NULL,
               *outd = NULL;
    long long size = 256, height = -1, width = -1, steps = 4, seed = 0, L = 256, offset = 0,
              limit = -1, threads = 0, batch = 1;
    double guidance = 3.5;
    int latents_only = 0, c;
    sf_dtype t5_dt = SF_T5_AS_STORED;
    sf_torch_rng_kind rng = SF_TORCH_RANDN_AVX2;
    const char *seed_list = NULL;
    cli_steer steer = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'P':
            prompt = optarg;
            break;
        case 'p':
            prompts = optarg;
            break;
        case 'D':
            dataset = optarg;
            break;
        case 'E':
            embeds = optarg;
            break;
        case 'o':
            outd = optarg;
            break;
        case 'l':
            latents_only = 1;
            break;
        case 's':
            if (cli_parse_int(CMD, "size", optarg, &size)) return 2;
            break;
        case 'H':
            if (cli_parse_int(CMD, "height", optarg, &height)) return 2;
            break;
        case 'W':
            if (cli_parse_int(CMD, "width", optarg, &width)) return 2;
            break;
        case 'S':
            if (cli_parse_int(CMD, "steps", optarg, &steps)) return 2;
            break;
        case 'r':
            if (cli_parse_int(CMD, "seed", optarg, &seed)) return 2;
            break;
        case 'g':
            if (cli_parse_double(CMD, "guidance", optarg, &guidance)) return 2;
            break;
        case 'b':
            if (cli_parse_int(CMD, "batch", optarg, &batch)) return 2;
            break;
        case 'L':
            if (cli_parse_int(CMD, "max-sequence-length", optarg, &L)) return 2;
            break;
        case 'O':
            if (cli_parse_int(CMD, "offset", optarg, &offset)) return 2;
            break;
        case 'n':
            if (cli_parse_int(CMD, "limit", optarg, &limit)) return 2;
            break;
        case 't':
            if (cli_parse_int(CMD, "threads", optarg, &threads)) return 2;
            break;
        case 'R':
            if (sf_torch_rng_kind_parse(optarg, &rng))
                return cli_usage_error(CMD, "%s", sf_errmsg());
            break;
        case 'w':
            if (cli_parse_weight_dtype(optarg, SF_T5_AS_STORED, &t5_dt))
                return cli_usage_error(CMD, "--t5-dtype must be stored, f32, bf16 or f16");
            break;
        case 'Z':
            seed_list = optarg;
            break;
        case 1000:
            if (steer.n == CLI_STEER_MAX)
                return cli_usage_error(CMD, "at most %d --steer", CLI_STEER_MAX);
            steer.spec[steer.n++] = optarg;
            break;
        case 1001:
            steer.mode = optarg;
            break;
        case 1002:
            steer.steps = optarg;
            break;
        case 1003:
            steer.tokens = optarg;
            break;
        case 1004:
            steer.hook = optarg;
            break;
        case 1005:
            steer.grid = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!model || !outd || (!!prompt + !!prompts + !!dataset + !!embeds) != 1)
        return cli_usage_error(CMD, "--model, --out and one of --prompt / --prompts / --dataset "
                                    "/ --embeds are required");
    if (height < 0) height = size;
    if (width < 0) width = size;
    if (sf_flux_gen_check_size(height, width)) return cli_usage_error(CMD, "%s", sf_errmsg());
    if (steps < 1 || steps > 10000 || seed < 0 || batch < 1 || batch > 4096 || offset < 0 ||
        limit < -1 || L < 1 || L > 100000 || threads < 0 || threads > 4096)
        return cli_usage_error(CMD, "--steps in [1, 10000], --seed >= 0, --batch in [1, 4096], "
                                    "--offset >= 0, --limit "
                                    ">= 0, --max-sequence-length in [1, 100000], --threads in "
                                    "[0, 4096]");
    uint64_t seedv[CLI_STEER_MAX_GRID];
    int nseed = 1;
    seedv[0] = (uint64_t)seed;
    if (seed_list && (nseed = parse_seeds(seed_list, seedv, CLI_STEER_MAX_GRID)) < 0)
        return cli_usage_error(CMD, "--seeds '%s': expected up to %d comma-separated integers >= 0",
                               seed_list, CLI_STEER_MAX_GRID);
    int src = cli_steer_prepare(CMD, &steer, (int)steps, latents_only, (int)batch);
    if (src) {
        cli_steer_free(&steer);
        return src;
    }
    sf_kernels_set_threads((int)threads);

    /* 1. prompt embeddings; the text encoders are gone before the transformer loads */
    float *pe = NULL, *po = NULL;
    int64_t *rows = NULL, n = 0, T = L, J = 0, P = 0;
    cli_prompt_list pl = {0};
    int rc = 0;
    if (embeds) {
        rc = read_embeds(embeds, offset, limit, &pe, &po, &rows, &n, &T, &J, &P);
    } else {
        if (prompt) {
            cli_prompt_list one = {0};
            one.s = sf_malloc(sizeof(char *)), one.row = sf_malloc(sizeof(int64_t));
            one.s[0] = sf_strdup(prompt), one.row[0] = 0, one.n = one.cap = 1;
            pl = one;
        } else {
            rc = prompts ? cli_read_prompts(prompts, offset, limit, &pl)
                         : cli_read_prompt_dataset(dataset, offset, limit, &pl);
        }
        sf_flux_text *tm = rc ? NULL : sf_flux_text_load(model, t5_dt);
        if (!tm) rc = -1;
        if (!rc && pl.n > 0) {
            n = pl.n, J = sf_flux_text_joint_dim(tm), P = sf_flux_text_pooled_dim(tm);
            pe = sf_malloc((size_t)(n * T * J) * sizeof(float));
            po = sf_malloc((size_t)(n * P) * sizeof(float));
            rows = sf_malloc((size_t)n * sizeof(int64_t));
            memcpy(rows, pl.row, (size_t)n * sizeof(int64_t));
            double t0 = sf_now();
            rc = sf_flux_encode_prompts(tm, (const char *const *)pl.s, n, (int)T, pe, po);
            if (!rc)
                fprintf(stderr, "saeflow %s: %lld prompts encoded in %.1f s\n", CMD, (long long)n,
                        sf_now() - t0);
        }
        sf_flux_text_free(tm);
    }
    if (!rc && n == 0) rc = sf_error("no prompts");

    /* 2. the sampler */
    sf_flux_gen *g = rc ? NULL : sf_flux_gen_load(model, latents_only, NULL);
    if (!rc && !g) rc = -1;
    if (!rc) {
        const sf_flux_config *fc = sf_flux_get_config(g->flux);
        if (fc->joint_dim != J || fc->pooled_dim != P)
            rc = sf_error("prompt embeddings of width %lld / pooled %lld, but the transformer "
                          "takes joint_attention_dim %d / pooled_projection_dim %d",
                          (long long)J, (long long)P, fc->joint_dim, fc->pooled_dim);
    }
    // every steer is checked against the transformer before the first image
    if (!rc && steer.n) rc = cli_steer_check_model(&steer, g->flux);
    if (!rc && sf_mkdirs(outd)) rc = -1;
    if (!rc) {
        /* jobs: prompt i, grid row (strength) c, seed j, in that order;
         * --batch of them share a forward */
        const int ncell = steer.n_grid ? steer.n_grid : 1;
        const int64_t njobs = n * ncell * nseed;
        sf_flux_gen_opts o;
        sf_flux_gen_opts_default(&o);
        o.height = height, o.width = width, o.steps = (int)steps, o.guidance = (float)guidance;
        o.rng = rng;
        if (steer.n) {
            o.edit = sf_flux_steer_edit, o.edit_ctx = &steer.ctx;
            o.edit_input = sf_flux_steer_needs_input(steer.st, steer.n);
        }
        sf_progress bar;
        sf_progress_start(&bar, "generate", (uint64_t)(njobs * steps), "step");
        progress_ctx pc = {&bar, 0};
        o.on_step = on_step, o.step_ctx = &pc;
        const int64_t C4 = sf_flux_get_config(g->flux)->in_channels, C = C4 / 4,
                      h = sf_flux_latent_side(height), w = sf_flux_latent_side(width),
                      img = height * width * 3;
        float *lat = sf_malloc((size_t)(batch * C4 * h * w / 4) * sizeof(float)),
              *unp = sf_malloc((size_t)(C4 * h * w / 4) * sizeof(float)),
              *bpe = sf_malloc((size_t)(batch * T * J) * sizeof(float)),
              *bpo = sf_malloc((size_t)(batch * P) * sizeof(float));
        uint8_t *rgb = latents_only ? NULL : sf_malloc((size_t)(batch * img));
        // grid: the current prompt's cells until its last one is done
        uint8_t *cells = steer.n_grid ? sf_malloc((size_t)(ncell * nseed * img)) : NULL;
        char **cname = steer.n_grid ? sf_calloc((size_t)(ncell * nseed), sizeof(char *)) : NULL;
        uint64_t *seeds = sf_malloc((size_t)batch * sizeof(uint64_t));
        double t0 = sf_now();
        for (int64_t j0 = 0; j0 < njobs && !rc; j0 += batch) {
            const int64_t bs = njobs - j0 < batch ? njobs - j0 : batch;
            for (int64_t k = 0; k < bs; k++) {
                const int64_t jb = j0 + k, i = jb / (ncell * nseed);
                memcpy(bpe + k * T * J, pe + i * T * J, (size_t)(T * J) * sizeof(float));
                memcpy(bpo + k * P, po + i * P, (size_t)P * sizeof(float));
                seeds[k] = seedv[jb % nseed];
                if (steer.n_grid) steer.strengths[k] = (float)steer.grid_s[(jb / nseed) % ncell];
            }
            rc = sf_flux_generate(g, &o, bs, T, bpe, bpo, seeds, NULL, lat, rgb);
            if (rc) {
                sf_error_prefix("rows %lld..%lld", (long long)rows[j0 / (ncell * nseed)],
                                (long long)rows[(j0 + bs - 1) / (ncell * nseed)]);
                break;
            }
            for (int64_t k = 0; k < bs && !rc; k++) {
                const int64_t jb = j0 + k, i = jb / (ncell * nseed), sj = jb % nseed;
                const int cell = (int)((jb / nseed) % ncell);
                char name[512], sfx[400];
                cli_steer_suffix(&steer, cell, sfx, sizeof sfx);
                snprintf(name, sizeof name, "row%06lld_seed%llu%s.%s", (long long)rows[i],
                         (unsigned long long)seeds[k], sfx, latents_only ? "safetensors" : "png");
                if (steer.n_grid) {
                    // kept until the prompt's grid is complete, then written together
                    memcpy(cells + (cell * nseed + sj) * img, rgb + k * img, (size_t)img);
                    free(cname[cell * nseed + sj]);
                    cname[cell * nseed + sj] = sf_strdup(name);
                    if (cell < ncell - 1 || sj < nseed - 1) continue;
                    for (int q = 0; q < ncell * nseed && !rc; q++) {
                        char *path = sf_path_join(outd, cname[q]);
                        rc = sf_png_write(path, cells + q * img, (int)width, (int)height);
                        free(path);
                    }
                    if (!rc)
                        rc = cli_steer_write_grid(&steer, outd, rows[i], pl.n ? pl.s[i] : NULL,
                                                  seedv, nseed, cells, (int)width, (int)height,
                                                  cname);
                    continue;
                }
                char *path = sf_path_join(outd, name);
                if (latents_only) {
                    sf_flux_unpack_latents(lat + k * C4 * h * w / 4, 1, C, h, w, unp);
                    sf_st_writer *wr = sf_stw_new();
                    const int64_t shp[4] = {1, C, h, w};
                    char buf[64];
                    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seeds[k]);
                    sf_stw_meta(wr, "seed", buf);
                    snprintf(buf, sizeof buf, "%lld", (long long)rows[i]);
                    sf_stw_meta(wr, "row", buf);
                    snprintf(buf, sizeof buf, "%lld", steps);
                    sf_stw_meta(wr, "steps", buf);
                    if (pl.n) sf_stw_meta(wr, "prompt", pl.s[i]);
                    if (steer.n) sf_stw_meta(wr, "steer", sfx + 1);
                    rc =
                        sf_stw_add(wr, "latents", SF_DT_F32, 4, shp, unp) || sf_stw_write(wr, path);
                    sf_stw_free(wr);
                } else {
                    rc = sf_png_write(path, rgb + k * img, (int)width, (int)height);
                }
                free(path);
            }
        }
        sf_progress_finish(&bar, NULL);
        if (!rc)
            fprintf(stderr, "saeflow %s: %lld images, %lld steps, %.2f s per image -> %s\n", CMD,
                    (long long)njobs, steps, (sf_now() - t0) / (double)njobs, outd);
        for (int64_t q = 0; cname && q < ncell * nseed; q++)
            free(cname[q]);
        free(cname), free(cells), free(seeds);
        free(lat), free(unp), free(rgb), free(bpe), free(bpo);
    }
    sf_flux_gen_free(g);
    cli_steer_free(&steer);
    free(pe), free(po), free(rows);
    cli_prompt_list_free(&pl);
    return rc ? cli_fail(CMD) : 0;
}
