/* The --steer flags of `saeflow flux generate` (saeflow/flux_steer.h):
 * checkpoints loaded and checked before anything is sampled, output names
 * per steered image, and the strengths x seeds grid PNG with its JSON
 * sidecar. docs/generate.md, "Steering". */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "saeflow/image.h"

void cli_steer_free(cli_steer *s) {
    for (int i = 0; i < s->n; i++) {
        if (s->have_sae[i]) sf_sae_free(&s->sae[i]);
        free(s->ckpt[i]);
    }
    free(s->mask);
    free(s->strengths);
    sf_flux_steer_ctx_free(&s->ctx);
    memset(s, 0, sizeof *s);
}

int cli_steer_prepare(const char *cmd, cli_steer *s, int steps, int latents_only, int batch) {
    if (!s->n) {
        if (s->hook || s->mode || s->steps || s->tokens || s->grid)
            return cli_usage_error(cmd, "--steer-hook/-mode/-steps/-tokens/-grid need --steer");
        return 0;
    }
    sf_steer_mode mode = SF_STEER_ADD;
    sf_flux_stream tokens = SF_FLUX_IMAGE;
    sf_flux_request hook;
    if ((s->mode && sf_flux_steer_parse_mode(s->mode, &mode)) ||
        (s->tokens && sf_flux_steer_parse_tokens(s->tokens, &tokens)) ||
        (s->hook && sf_flux_parse_request(s->hook, &hook)))
        return cli_usage_error(cmd, "%s", sf_errmsg());
    s->n_steps = steps;
    s->mask = sf_malloc((size_t)steps);
    if (sf_flux_steer_parse_steps(s->steps ? s->steps : "all", steps, s->mask))
        return cli_usage_error(cmd, "%s", sf_errmsg());
    if (s->grid) {
        if (s->n != 1)
            return cli_usage_error(cmd, "--steer-grid takes exactly one --steer CKPT:FEATURE");
        if (latents_only)
            return cli_usage_error(cmd, "--steer-grid writes PNGs: drop --latents-only");
        s->n_grid = sf_flux_steer_parse_list(s->grid, s->grid_s, CLI_STEER_MAX_GRID);
        if (s->n_grid < 1) return cli_usage_error(cmd, "--steer-grid %s", sf_errmsg());
        s->strengths = sf_calloc((size_t)batch, sizeof(float));
    }
    // the specs first (usage errors), then the checkpoints
    float str[CLI_STEER_MAX];
    for (int i = 0; i < s->n; i++)
        if (sf_flux_steer_parse_spec(s->spec[i], !s->grid, &s->ckpt[i], &s->st[i].feature, &str[i]))
            return cli_usage_error(cmd, "--steer: %s%s", sf_errmsg(),
                                   s->grid ? " (with --steer-grid the strengths come from the "
                                             "grid)"
                                           : "");
    for (int i = 0; i < s->n; i++) {
        sf_flux_steer *t = &s->st[i];
        if (sf_sae_load(&s->sae[i], s->ckpt[i])) {
            sf_error_prefix("--steer %s", s->spec[i]);
            cli_fail(cmd);
            if (s->grid && strchr(s->ckpt[i], ':'))
                fprintf(stderr,
                        "saeflow %s: note: with --steer-grid the spec is CKPT:FEATURE "
                        "(no strength)\n",
                        cmd);
            return 1;
        }
        s->have_sae[i] = 1;
        t->sae = &s->sae[i];
        t->mode = mode;
        t->strength = s->grid ? 0 : str[i];
        t->strengths = s->grid ? s->strengths : NULL;
        int hr = sf_flux_steer_hook_of(t->sae, &t->hook);
        if (hr < 0) {
            sf_error_prefix("--steer %s", s->ckpt[i]);
            return cli_fail(cmd);
        }
        if (s->hook) {
            char a[128], b[128];
            sf_flux_request_name(&hook, a, sizeof a);
            sf_flux_request_name(&t->hook, b, sizeof b);
            if (hr == 0 && strcmp(a, b))
                fprintf(stderr,
                        "saeflow %s: note: %s was trained at %s; steering %s (--steer-hook)\n", cmd,
                        s->ckpt[i], b, a);
            t->hook = hook;
        } else if (hr == 1) {
            sf_error("--steer %s: config.json has no \"hook\" (checkpoints of `train --source "
                     "flux` record it): give --steer-hook transformer_blocks.N.0|1 or "
                     "single_transformer_blocks.N",
                     s->ckpt[i]);
            return cli_fail(cmd);
        }
        t->tokens = s->tokens ? tokens : sf_flux_steer_default_tokens(&t->hook);
        if (t->feature >= t->sae->n) {
            sf_error("--steer %s: feature %d outside [0, %d) (pages of %s)", s->spec[i], t->feature,
                     t->sae->n, s->ckpt[i]);
            return cli_fail(cmd);
        }
    }
    s->ctx = (sf_flux_steer_ctx){s->st, s->n, s->mask, steps, NULL, 0};
    return 0;
}

int cli_steer_check_model(cli_steer *s, const sf_flux *m) {
    for (int i = 0; i < s->n; i++)
        if (sf_flux_steer_check(&s->st[i], m))
            return sf_error_prefix("--steer %s (%s)", s->spec[i], s->ckpt[i]);
    return 0;
}

void cli_steer_suffix(const cli_steer *s, int cell, char *buf, size_t n) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < s->n && o < n; i++) {
        const double st = s->grid ? s->grid_s[cell] : s->st[i].strength;
        int w = snprintf(buf + o, n - o, "_f%d_s%g", s->st[i].feature, st);
        if (w < 0) break;
        o += (size_t)w;
    }
}

/* rows = strengths, columns = seeds, CLI_STEER_GAP white pixels between */
int cli_steer_write_grid(const cli_steer *s, const char *outd, int64_t row, const char *prompt,
                         const uint64_t *seeds, int nseed, const uint8_t *cells, int width,
                         int height, char *const *names) {
    const int g = CLI_STEER_GAP, nr = s->n_grid, gw = nseed * width + (nseed - 1) * g,
              gh = nr * height + (nr - 1) * g;
    uint8_t *canvas = sf_malloc((size_t)gw * gh * 3);
    memset(canvas, 255, (size_t)gw * gh * 3);
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nseed; c++) {
            const uint8_t *im = cells + (size_t)(r * nseed + c) * width * height * 3;
            for (int y = 0; y < height; y++)
                memcpy(canvas + ((size_t)(r * (height + g) + y) * gw + (size_t)c * (width + g)) * 3,
                       im + (size_t)y * width * 3, (size_t)width * 3);
        }
    char base[96], name[128];
    snprintf(base, sizeof base, "row%06lld_f%d_grid", (long long)row, s->st[0].feature);
    snprintf(name, sizeof name, "%s.png", base);
    char *path = sf_path_join(outd, name);
    int rc = sf_png_write(path, canvas, gw, gh);
    free(path);
    free(canvas);
    if (rc) return -1;
    // the sidecar last: its presence says the grid and its cells are complete
    char hook[128];
    sf_flux_request_name(&s->st[0].hook, hook, sizeof hook);
    static const char *tok[3] = {"text", "image", "both"};
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "row", (double)row);
    if (prompt) cJSON_AddStringToObject(j, "prompt", prompt);
    cJSON_AddStringToObject(j, "checkpoint", s->ckpt[0]);
    cJSON_AddStringToObject(j, "hook", hook);
    cJSON_AddNumberToObject(j, "feature", s->st[0].feature);
    cJSON_AddStringToObject(j, "mode", s->st[0].mode == SF_STEER_ADD ? "add" : "surgery");
    cJSON_AddStringToObject(j, "tokens", tok[s->st[0].tokens]);
    cJSON_AddStringToObject(j, "steps", s->steps ? s->steps : "all");
    cJSON *a = cJSON_AddArrayToObject(j, "strengths");
    for (int r = 0; r < nr; r++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(s->grid_s[r]));
    a = cJSON_AddArrayToObject(j, "seeds");
    for (int c = 0; c < nseed; c++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)seeds[c]));
    cJSON_AddNumberToObject(j, "cell_width", width);
    cJSON_AddNumberToObject(j, "cell_height", height);
    cJSON_AddNumberToObject(j, "gap", g);
    cJSON_AddStringToObject(j, "grid", name);
    a = cJSON_AddArrayToObject(j, "images"); // [strength][seed]
    for (int r = 0; r < nr; r++) {
        cJSON *rr = cJSON_CreateArray();
        for (int c = 0; c < nseed; c++)
            cJSON_AddItemToArray(rr, cJSON_CreateString(names[r * nseed + c]));
        cJSON_AddItemToArray(a, rr);
    }
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(name, sizeof name, "%s.json", base);
    path = sf_path_join(outd, name);
    rc = txt ? sf_write_file_atomic(path, txt, strlen(txt)) : sf_error("out of memory");
    free(path);
    free(txt);
    return rc;
}
