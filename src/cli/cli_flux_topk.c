/* FLUX feature analysis, the command-line half (topk and explore share it):
 *
 *   - the sampling settings of a FLUX activation stream, read from the
 *     fingerprint `extract --source flux` stores (and sf_flux_source_fingerprint
 *     gives for a live source), so `topk --source flux` and `topk --acts`
 *     over an extracted file record the same thing in the top-k file;
 *   - the token layout of a hook (text tokens, the H/16 x W/16 image grid);
 *   - the images of prompt rows, made by the FLUX pipeline from the prompt's
 *     embeddings and exactly the noise the sampler drew for it (its group's
 *     randn, that prompt's slice), cached on disk;
 *   - the T5 token strings of a caption.
 * The analysis layer never calls the pipeline: explore gets the cached PNGs
 * and the token strings through its sf_row_source. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "saeflow/buf.h"
#include "saeflow/flux_generate.h"
#include "saeflow/flux_prompts.h"
#include "saeflow/image.h"
#include "saeflow/pipeline.h"
#include "saeflow/safetensors.h"
#include "saeflow/t5.h"
#include "saeflow/t5_tokenizer.h"

static const char FP_HEAD[] = "saeflow-flux-extract-v1 model=";

void cli_flux_meta_free(cli_flux_meta *m) {
    free(m->fingerprint), free(m->model), free(m->prompts), free(m->captions), free(m->dataset);
    memset(m, 0, sizeof *m);
}

static char *dup_n(const char *s, size_t n) {
    char *d = sf_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* A captions value that names a dataset spec rather than a text file. */
static int is_dataset_spec(const char *s) {
    return !strncmp(s, "cc3m:", 5) || !strncmp(s, "wds:", 4) || !strncmp(s, "folder:", 7);
}

int cli_flux_meta_parse(const char *fp, cli_flux_meta *m) {
    memset(m, 0, sizeof *m);
    const char *hooks = fp ? strstr(fp, " hooks=") : NULL;
    if (!fp || strncmp(fp, FP_HEAD, sizeof FP_HEAD - 1) || !hooks)
        return sf_error("not a FLUX extraction fingerprint ('%s')", fp ? fp : "");
    /* "model=M prompts|captions=P L=T hooks=...": paths may hold spaces, so
     * cut at the last " L=" and the last " prompts=" / " captions=" */
    const char *b = fp + sizeof FP_HEAD - 1, *L = NULL, *kind = NULL;
    for (const char *p = b; p < hooks; p++) {
        if (!strncmp(p, " L=", 3)) L = p;
        if (!strncmp(p, " prompts=", 9) || !strncmp(p, " captions=", 10)) kind = p;
    }
    if (!L || !kind || kind > L) return sf_error("FLUX fingerprint: no prompts / L ('%s')", fp);
    int is_caps = kind[1] == 'c';
    const char *val = kind + (is_caps ? 10 : 9);
    char *v = dup_n(val, (size_t)(L - val));
    if (!is_caps)
        m->prompts = v;
    else if (is_dataset_spec(v))
        m->dataset = v;
    else
        m->captions = v;
    m->model = dup_n(b, (size_t)(kind - b));
    const char *he = strchr(hooks + 7, ' ');
    long long T = 0, tpi = 0, rpb = 0, n = 0;
    unsigned long long seed = 0;
    int shuffle = 0, got = 0;
    if (he)
        got = sscanf(he,
                     " size=%dx%d batch=%d seed=%llu rng=%d tokens_per_image=%lld "
                     "rows_per_batch=%lld shuffle=%d dtype=%d n=%lld",
                     &m->height, &m->width, &m->batch, &seed, &m->rng_kind, &tpi, &rpb, &shuffle,
                     &m->dtype, &n);
    if (sscanf(L, " L=%lld", &T) != 1 || got != 10 || T < 1 || m->batch < 1 || m->height < 16 ||
        m->width < 16) {
        cli_flux_meta_free(m);
        return sf_error("FLUX fingerprint: unreadable settings ('%s')", fp);
    }
    m->T = (int)T, m->seed = seed, m->n = n, m->tokens_per_image = tpi;
    m->rows_per_batch = rpb, m->shuffle = shuffle;
    m->fingerprint = sf_strdup(fp);
    return 0;
}

int cli_flux_layout(const cli_flux_meta *m, const char *hook, int *T, int *gh, int *gw,
                    int *first) {
    sf_flux_request r;
    if (sf_flux_parse_request(hook, &r)) return -1;
    const int ih = m->height / 16, iw = m->width / 16; /* image tokens: 2x2 latent patches */
    if (r.site == SF_FLUX_OUTPUT) return sf_error("hook 'output' has no token layout");
    switch (r.site == SF_FLUX_DOUBLE && r.stream == SF_FLUX_BOTH ? SF_FLUX_IMAGE : r.stream) {
    case SF_FLUX_TEXT: /* text tokens only: no grid; all of them are "outside" it */
        *T = m->T, *gh = *gw = 0, *first = m->T;
        break;
    case SF_FLUX_IMAGE:
        *T = ih * iw, *gh = ih, *gw = iw, *first = 0;
        break;
    default: /* single block: cat[text; image] */
        *T = m->T + ih * iw, *gh = ih, *gw = iw, *first = m->T;
    }
    return 0;
}

int cli_flux_check_tokens(const cli_flux_meta *m) {
    if (m->shuffle > 0 || m->rows_per_batch > 0)
        return sf_error("FLUX activations drawn with shuffle %d / rows_per_batch %lld: topk needs "
                        "each image's tokens together (extract with --shuffle 0, and preferably "
                        "--tokens_per_image 0 for whole heat maps)",
                        m->shuffle, (long long)m->rows_per_batch);
    return 0;
}

/* ---- images -------------------------------------------------------------- */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* realpath when it exists (so the cache does not depend on how a path was
 * spelt), else the string itself. */
static char *canon(const char *p) {
    char *r = p ? realpath(p, NULL) : NULL;
    return r ? r : sf_strdup(p ? p : "");
}

char *cli_flux_image_dir(const cli_flux_meta *m, const char *cache, const char *gen_model,
                         int steps) {
    char *mo = canon(gen_model), *pr = canon(m->prompts ? m->prompts : m->captions);
    sf_sbuf k = {0};
    sf_sb_printf(&k,
                 "model=%s prompts=%s dataset=%s L=%d size=%dx%d batch=%d seed=%llu rng=%d "
                 "n=%lld dtype=%d steps=%d",
                 mo, pr, m->dataset ? m->dataset : "", m->T, m->height, m->width, m->batch,
                 (unsigned long long)m->seed, m->rng_kind, (long long)m->n, m->dtype, steps);
    char name[64];
    snprintf(name, sizeof name, "flux-%016llx", (unsigned long long)fnv1a(k.s));
    char *dir = sf_path_join(cache, name);
    free(mo), free(pr);
    sf_sb_free(&k);
    return dir;
}

char *cli_flux_image_path(const char *dir, int64_t row) {
    char name[48];
    snprintf(name, sizeof name, "row%08lld.png", (long long)row);
    return sf_path_join(dir, name);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int cli_flux_captions(const cli_flux_meta *m, cli_prompt_list *pl) {
    memset(pl, 0, sizeof *pl);
    if (m->captions) return cli_read_prompts(m->captions, 0, m->n, pl);
    if (m->dataset) return cli_read_prompt_dataset(m->dataset, 0, m->n, pl);
    return 0;
}

/* prompt_embeds (n, T, J) and pooled (n, P) of prompt rows: the prompts
 * file's rows, what the sampler read. */
static int row_embeds(const cli_flux_meta *m, const int64_t *rows, int64_t n, int64_t J, int64_t P,
                      float *pe, float *po) {
    sf_st st;
    if (sf_st_open(&st, m->prompts)) return -1;
    const sf_tensor_info *a = sf_st_find(&st, "prompt_embeds"),
                         *b = sf_st_find(&st, "pooled_prompt_embeds");
    int rc = 0;
    if (!a || !b || a->ndim != 3 || b->ndim != 2 || a->shape[1] != m->T || a->shape[2] != J ||
        b->shape[1] != P)
        rc = sf_error("%s: prompt_embeds (N, %d, %lld) / pooled_prompt_embeds (N, %lld) expected",
                      m->prompts, m->T, (long long)J, (long long)P);
    for (int64_t i = 0; i < n && !rc; i++)
        if (rows[i] >= a->shape[0] || sf_tensor_rows_f32(a, rows[i], 1, pe + i * m->T * J) ||
            sf_tensor_rows_f32(b, rows[i], 1, po + i * P))
            rc = sf_error("%s: prompt row %lld unreadable", m->prompts, (long long)rows[i]);
    sf_st_close(&st);
    return rc;
}

/* Captions prompts (rows ascending): encoded first and the text encoders
 * freed before the transformer loads (T5-XXL and FLUX do not fit together;
 * for large sites encode the prompts to a file first: 4 MB per prompt here).
 * Each row's whole group of prompts is encoded in one call, as the sampler
 * encoded it, so the embeddings are the sampler's to the bit. */
static int encode_captions(const cli_flux_meta *m, const char *text_model,
                           const cli_prompt_list *caps, const int64_t *rows, int64_t n, float **pe,
                           float **po, int64_t *J, int64_t *P) {
    int rc = 0;
    if (!caps || rows[n - 1] >= caps->n)
        return sf_error("prompt row %lld: only %lld captions", (long long)rows[n - 1],
                        (long long)(caps ? caps->n : 0));
    sf_flux_text *tm = sf_flux_text_load(text_model, SF_T5_AS_STORED);
    if (!tm) return -1;
    const int64_t j = *J = sf_flux_text_joint_dim(tm), p = *P = sf_flux_text_pooled_dim(tm),
                  T = m->T;
    *pe = sf_malloc((size_t)(n * T * j) * sizeof(float));
    *po = sf_malloc((size_t)(n * p) * sizeof(float));
    float *ge = sf_malloc((size_t)(m->batch * T * j) * sizeof(float)),
          *gp = sf_malloc((size_t)(m->batch * p) * sizeof(float));
    for (int64_t i = 0; i < n && !rc;) {
        const int64_t g0 = rows[i] / m->batch * m->batch,
                      gn = m->n - g0 < m->batch ? m->n - g0 : m->batch;
        if (g0 + gn > caps->n) {
            rc = sf_error("prompt rows %lld..%lld: only %lld captions", (long long)g0,
                          (long long)(g0 + gn - 1), (long long)caps->n);
            break;
        }
        rc = sf_flux_encode_prompts(tm, (const char *const *)caps->s + g0, gn, (int)T, ge, gp);
        for (; !rc && i < n && rows[i] < g0 + gn; i++) {
            memcpy(*pe + i * T * j, ge + (rows[i] - g0) * T * j, (size_t)(T * j) * sizeof(float));
            memcpy(*po + i * p, gp + (rows[i] - g0) * p, (size_t)p * sizeof(float));
        }
    }
    free(ge), free(gp);
    sf_flux_text_free(tm);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int cli_flux_make_images(const cli_flux_images_opts *io, const int64_t *rows_in, int64_t n_in,
                         int64_t *made) {
    const cli_flux_meta *m = io->meta;
    *made = 0;
    /* the rows without a cached image, ascending (so one group's noise serves
     * all its rows) */
    int64_t *rows = sf_malloc((size_t)(n_in + 1) * sizeof *rows), n = 0;
    for (int64_t i = 0; i < n_in; i++) {
        if (rows_in[i] < 0) continue;
        char *p = cli_flux_image_path(io->dir, rows_in[i]);
        if (!exists(p)) rows[n++] = rows_in[i];
        free(p);
    }
    qsort(rows, (size_t)n, sizeof *rows, cmp_i64);
    int64_t u = 0;
    for (int64_t i = 0; i < n; i++)
        if (!u || rows[i] != rows[u - 1]) rows[u++] = rows[i];
    n = u;
    if (!n) {
        free(rows);
        return 0;
    }
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++)
        if (rows[i] >= m->n)
            rc = sf_error("prompt row %lld: the sampler covered %lld prompts", (long long)rows[i],
                          (long long)m->n);
    if (!rc && sf_mkdirs(io->dir)) rc = -1;
    if (!rc) { /* what the folder holds, for whoever finds it */
        char *kp = sf_path_join(io->dir, "source.txt");
        sf_sbuf k = {0};
        sf_sb_printf(&k, "%s\nimage steps %d, generation model %s\n", m->fingerprint, io->steps,
                     io->gen_model);
        rc = sf_write_file_atomic(kp, k.s, k.len);
        sf_sb_free(&k);
        free(kp);
    }
    float *cap_pe = NULL, *cap_po = NULL;
    int64_t cJ = 0, cP = 0;
    if (!rc && !m->prompts)
        rc = encode_captions(m, io->text_model, io->captions, rows, n, &cap_pe, &cap_po, &cJ, &cP);
    sf_flux_load_opts lo = {.dtype = (sf_dtype)m->dtype};
    sf_flux_gen *g = rc ? NULL : sf_flux_gen_load(io->gen_model, 0, &lo);
    if (!rc && !g) rc = -1;
    const sf_flux_config *c = g ? sf_flux_get_config(g->flux) : NULL;
    if (!rc && cap_pe && (c->joint_dim != cJ || c->pooled_dim != cP))
        rc = sf_error("%s: text encoders give widths %lld / %lld, the transformer takes %d / %d",
                      io->text_model, (long long)cJ, (long long)cP, c->joint_dim, c->pooled_dim);
    const int64_t B = io->batch > 0 ? io->batch : 4, C4 = c ? c->in_channels : 0, C = C4 / 4,
                  h = sf_flux_latent_side(m->height), w = sf_flux_latent_side(m->width),
                  N = (h / 2) * (w / 2), J = c ? c->joint_dim : 0, P = c ? c->pooled_dim : 0;
    float *pe = NULL, *po = NULL, *init = NULL, *noise = NULL;
    uint8_t *rgb = NULL;
    if (!rc) {
        pe = sf_malloc((size_t)(B * m->T * J) * sizeof(float));
        po = sf_malloc((size_t)(B * P) * sizeof(float));
        init = sf_malloc((size_t)(B * N * C4) * sizeof(float));
        noise = sf_malloc((size_t)((int64_t)m->batch * N * C4) * sizeof(float));
        rgb = sf_malloc((size_t)(B * m->height * m->width * 3));
    }
    sf_flux_gen_opts o;
    sf_flux_gen_opts_default(&o);
    o.height = m->height, o.width = m->width, o.steps = io->steps;
    o.guidance = 0.0f; /* the sampler's guidance (read only by guidance-embedding models) */
    o.rng = (sf_torch_rng_kind)m->rng_kind;
    sf_progress bar;
    sf_progress_start(&bar, "images", (uint64_t)n, "img");
    if (io->quiet) bar.enabled = 0;
    for (int64_t i0 = 0; i0 < n && !rc; i0 += B) {
        const int64_t bs = n - i0 < B ? n - i0 : B;
        /* each image's noise: its group's one randn (B_g, C, h, w) from
         * manual_seed(seed + g), the prompt's slice (as the sampler drew it) */
        for (int64_t j = 0; j < bs && !rc; j++)
            rc = sf_flux_source_prompt_noise(m->seed, m->batch, m->n, rows[i0 + j], C, h, w,
                                             m->rng_kind, noise, init + j * N * C4);
        if (!rc && cap_pe) {
            memcpy(pe, cap_pe + i0 * m->T * J, (size_t)(bs * m->T * J) * sizeof(float));
            memcpy(po, cap_po + i0 * P, (size_t)(bs * P) * sizeof(float));
        } else if (!rc) {
            rc = row_embeds(m, rows + i0, bs, J, P, pe, po);
        }
        if (!rc) rc = sf_flux_generate(g, &o, bs, m->T, pe, po, NULL, init, NULL, rgb);
        for (int64_t j = 0; j < bs && !rc; j++) {
            char *p = cli_flux_image_path(io->dir, rows[i0 + j]);
            rc = sf_png_write(p, rgb + j * m->height * m->width * 3, m->width, m->height);
            free(p);
            if (!rc) ++*made;
        }
        sf_progress_update(&bar, (uint64_t)(i0 + bs), NULL);
    }
    sf_progress_finish(&bar, NULL);
    sf_flux_gen_free(g);
    free(pe), free(po), free(init), free(noise), free(rgb), free(rows), free(cap_pe), free(cap_po);
    return rc;
}

/* ---- T5 token strings ------------------------------------------------------ */

char **cli_flux_token_strings(sf_t5_tokenizer *tok, const char *caption, int T, int *n) {
    *n = 0;
    int32_t *ids = sf_malloc((size_t)T * sizeof *ids);
    int k = sf_t5_tokenizer_encode(tok, caption ? caption : "", T, ids, NULL);
    char **s = NULL;
    if (k > 0) {
        s = sf_malloc((size_t)k * sizeof *s);
        for (int i = 0; i < k; i++) {
            const char *t = sf_t5_tokenizer_token(tok, ids[i]);
            s[i] = sf_strdup(t ? t : "?");
        }
        *n = k;
    }
    free(ids);
    return s;
}
