/* saeflow flux encode-prompts: FLUX's text conditioning for a prompt list,
 * computed once and written to one safetensors file (T5-XXL and the FLUX
 * transformer do not fit in 24 GiB together; see saeflow/flux_prompts.h).
 * Dispatched from main.c as `saeflow flux encode-prompts ...`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/buf.h"
#include "saeflow/dataset.h"
#include "saeflow/flux_prompts.h"
#include "saeflow/kernels.h"
#include "saeflow/safetensors.h"
#include "saeflow/t5.h"

#define CMD "flux encode-prompts"

static void usage(FILE *out) {
    fprintf(out,
            "usage: saeflow flux encode-prompts --model DIR (--prompts FILE | --dataset SPEC) "
            "--out FILE [options]\n"
            "\n"
            "Encodes prompts as diffusers' FluxPipeline.encode_prompt does and writes\n"
            "  prompt_embeds        (N, L, 4096)  T5 last_hidden_state, L tokens, no mask\n"
            "  pooled_prompt_embeds (N, 768)      CLIP text pooler_output (F32)\n"
            "  rows                 (N) I64       line number / dataset row of each prompt\n"
            "to one safetensors file, atomically. Encode first, then run the transformer on the\n"
            "file: T5-XXL (9.5 GB) and the FLUX transformer (23.8 GB) do not fit in 24 GiB.\n"
            "\n"
            "  --model DIR       diffusers FLUX folder (tokenizer/, text_encoder/, tokenizer_2/,\n"
            "                    text_encoder_2/)\n"
            "  --prompts FILE    one prompt per line (UTF-8)\n"
            "  --dataset SPEC    the captions of cc3m:PATTERN, wds:PATTERN or folder:DIR\n"
            "  --out FILE        output safetensors\n"
            "  --offset N        skip the first N prompts (default 0)\n"
            "  --limit N         at most N prompts (default: all)\n"
            "  --max-sequence-length L   T5 tokens (default 256, FLUX schnell; dev uses 512)\n"
            "  --dtype D         prompt_embeds stored as f32 (default) or bf16\n"
            "  --t5-dtype D      T5 weights in memory: stored (default), f32, bf16, f16\n"
            "  --threads T       OpenMP threads (default: all cores)\n");
}

static void pl_add(cli_prompt_list *p, const char *s, size_t len, int64_t row) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->s = sf_realloc(p->s, (size_t)p->cap * sizeof(char *));
        p->row = sf_realloc(p->row, (size_t)p->cap * sizeof(int64_t));
    }
    p->s[p->n] = sf_malloc(len + 1);
    memcpy(p->s[p->n], s, len);
    p->s[p->n][len] = 0;
    p->row[p->n++] = row;
}

void cli_prompt_list_free(cli_prompt_list *p) {
    for (int64_t i = 0; i < p->n; i++)
        free(p->s[i]);
    free(p->s), free(p->row);
}

/* Lines [offset, offset + limit) of a text file; "\r\n" ends a line too. */
int cli_read_prompts(const char *path, int64_t offset, int64_t limit, cli_prompt_list *p) {
    size_t len;
    char *txt = sf_read_file(path, &len);
    if (!txt) return -1;
    int64_t line = 0;
    for (size_t i = 0; i < len && (limit < 0 || p->n < limit);) {
        char *nl = memchr(txt + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - txt) : len, l = e - i;
        if (l && txt[i + l - 1] == '\r') l--;
        if (strlen(txt + i) < l) { /* a NUL inside the line */
            free(txt);
            return sf_error("%s: line %lld contains a NUL byte", path, (long long)line + 1);
        }
        for (size_t k = 0; k < l;) { /* the tokenizers need UTF-8: say where it is not */
            int n = sf_utf8_len((const unsigned char *)txt + i + k, l - k);
            if (n <= 0) {
                free(txt);
                return sf_error("%s: line %lld, byte %zu: not UTF-8 (prompt files must be UTF-8)",
                                path, (long long)line + 1, k + 1);
            }
            k += (size_t)n;
        }
        if (line >= offset) pl_add(p, txt + i, l, line);
        line++;
        i = e + 1;
    }
    free(txt);
    return 0;
}

int cli_read_prompt_dataset(const char *spec, int64_t offset, int64_t limit, cli_prompt_list *p) {
    sf_dataset *ds = sf_dataset_open(spec, SF_DS_CAPTIONS);
    if (!ds) return -1;
    int rc = offset > 0 ? sf_dataset_seek(ds, offset) : 0;
    sf_sample s;
    while (!rc && (limit < 0 || p->n < limit)) {
        int got = sf_dataset_next(ds, &s);
        if (got < 0) rc = -1;
        if (got <= 0) break;
        /* a row without a caption keeps its place, as an empty prompt */
        pl_add(p, s.caption ? s.caption : "", s.caption ? strlen(s.caption) : 0, s.row);
    }
    sf_dataset_close(ds);
    return rc;
}

int cli_flux_encode_prompts(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompts", required_argument, 0, 'p'},
                                         {"dataset", required_argument, 0, 'D'},
                                         {"out", required_argument, 0, 'o'},
                                         {"offset", required_argument, 0, 'O'},
                                         {"limit", required_argument, 0, 'n'},
                                         {"max-sequence-length", required_argument, 0, 'L'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"t5-dtype", required_argument, 0, 'w'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *prompts = NULL, *dataset = NULL, *outp = NULL;
    long long offset = 0, limit = -1, L = 256, threads = 0;
    sf_dtype out_dt = SF_DT_F32, t5_dt = SF_T5_AS_STORED;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'p':
            prompts = optarg;
            break;
        case 'D':
            dataset = optarg;
            break;
        case 'o':
            outp = optarg;
            break;
        case 'O':
            if (cli_parse_int(CMD, "offset", optarg, &offset)) return 2;
            break;
        case 'n':
            if (cli_parse_int(CMD, "limit", optarg, &limit)) return 2;
            break;
        case 'L':
            if (cli_parse_int(CMD, "max-sequence-length", optarg, &L)) return 2;
            break;
        case 'd':
            if (!strcmp(optarg, "f32"))
                out_dt = SF_DT_F32;
            else if (!strcmp(optarg, "bf16"))
                out_dt = SF_DT_BF16;
            else
                return cli_usage_error(CMD, "--dtype must be f32 or bf16");
            break;
        case 'w':
            if (cli_parse_weight_dtype(optarg, SF_T5_AS_STORED, &t5_dt))
                return cli_usage_error(CMD, "--t5-dtype must be stored, f32, bf16 or f16");
            break;
        case 't':
            if (cli_parse_int(CMD, "threads", optarg, &threads)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!model || !outp || !prompts == !dataset)
        return cli_usage_error(CMD, "--model, --out and one of --prompts / --dataset are required");
    if (offset < 0 || limit < -1 || L < 1 || L > 100000 || threads < 0 || threads > 4096)
        return cli_usage_error(CMD, "--offset >= 0, --limit >= 0, --max-sequence-length in [1, "
                                    "100000] and --threads in [0, 4096]");
    sf_kernels_set_threads((int)threads);
    cli_prompt_list pl = {0};
    int rc = prompts ? cli_read_prompts(prompts, offset, limit, &pl)
                     : cli_read_prompt_dataset(dataset, offset, limit, &pl);
    if (rc) {
        cli_prompt_list_free(&pl);
        return cli_fail(CMD);
    }
    if (pl.n == 0) {
        cli_prompt_list_free(&pl);
        sf_error("no prompts to encode");
        return cli_fail(CMD);
    }
    sf_flux_text *m = sf_flux_text_load(model, t5_dt);
    if (!m) {
        cli_prompt_list_free(&pl);
        return cli_fail(CMD);
    }
    const int64_t N = pl.n, J = sf_flux_text_joint_dim(m), P = sf_flux_text_pooled_dim(m);
    float *pe = sf_malloc((size_t)(N * L * J) * sizeof(float));
    float *po = sf_malloc((size_t)(N * P) * sizeof(float));
    double t0 = sf_now();
    rc = sf_flux_encode_prompts(m, (const char *const *)pl.s, N, (int)L, pe, po);
    if (!rc) {
        sf_st_writer *w = sf_stw_new();
        const int64_t s3[3] = {N, L, J}, s2[2] = {N, P}, s1[1] = {N};
        char buf[64];
        snprintf(buf, sizeof buf, "%lld", L);
        sf_stw_meta(w, "max_sequence_length", buf);
        sf_stw_meta(w, "source", prompts ? prompts : dataset);
        rc = sf_stw_add_f32(w, "prompt_embeds", out_dt, 3, s3, pe) ||
             sf_stw_add_f32(w, "pooled_prompt_embeds", SF_DT_F32, 2, s2, po) ||
             sf_stw_add(w, "rows", SF_DT_I64, 1, s1, pl.row) || sf_stw_write(w, outp);
        sf_stw_free(w);
    }
    if (!rc)
        fprintf(stderr, "saeflow %s: %lld prompts in %.1f s -> %s\n", CMD, (long long)N,
                sf_now() - t0, outp);
    free(pe), free(po);
    sf_flux_text_free(m);
    cli_prompt_list_free(&pl);
    return rc ? cli_fail(CMD) : 0;
}

int cli_parse_weight_dtype(const char *s, sf_dtype stored, sf_dtype *out) {
    if (!strcmp(s, "stored"))
        *out = stored;
    else if (!strcmp(s, "f32"))
        *out = SF_DT_F32;
    else if (!strcmp(s, "bf16"))
        *out = SF_DT_BF16;
    else if (!strcmp(s, "f16"))
        *out = SF_DT_F16;
    else
        return -1;
    return 0;
}
