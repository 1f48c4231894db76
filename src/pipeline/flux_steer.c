/* Steering FLUX.1 sampling with SAE features: the edit callback that
 * sf_flux_generate calls after every block, and the parsers of the CLI's
 * --steer flags (saeflow/flux_steer.h, docs/generate.md). */
#include "saeflow/flux_steer.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Rows [r0, r0 + n) of example b in a view: the text rows first, then the
 * image rows (each a contiguous (rows, D) span in the buffers). */
typedef struct {
    float *p;
    const float *in; /* the block input at the same rows (or NULL) */
    int64_t n;
} span;

/* The (at most two) spans of example b that tokens select. */
static int spans_of(const sf_flux_block_view *v, sf_flux_stream tokens, int64_t b, span out[2]) {
    int k = 0;
    if (tokens == SF_FLUX_TEXT || tokens == SF_FLUX_BOTH)
        out[k++] = (span){v->txt + b * v->txt_stride,
                          v->txt_in ? v->txt_in + b * v->txt_stride : NULL, v->T};
    if (tokens == SF_FLUX_IMAGE || tokens == SF_FLUX_BOTH)
        out[k++] = (span){v->img + b * v->img_stride,
                          v->img_in ? v->img_in + b * v->img_stride : NULL, v->N};
    return k;
}

static int steer_one(sf_flux_steer_ctx *c, const sf_flux_steer *s, const sf_flux_block_view *v) {
    const int64_t D = v->D;
    const float *w = s->sae->W_decT + (size_t)s->feature * D; /* decoder column f (D) */
    for (int64_t b = 0; b < v->B; b++) {
        const float st = s->strengths ? s->strengths[b] : s->strength;
        span sp[2];
        const int ns = spans_of(v, s->tokens, b, sp);
        if (s->mode == SF_STEER_ADD) {
            /* strength 0 is no edit at all: the unsteered result bit for bit */
            if (st == 0) continue;
            for (int k = 0; k < ns; k++)
                for (int64_t r = 0; r < sp[k].n; r++) {
                    float *x = sp[k].p + r * D;
                    for (int64_t q = 0; q < D; q++)
                        x[q] += st * w[q];
                }
            continue;
        }
        /* surgery: gather the example's rows (x, or out - in for a delta
         * hook), one sf_sae_surgery call, scatter back */
        int64_t R = 0;
        for (int k = 0; k < ns; k++)
            R += sp[k].n;
        const size_t need = (size_t)(2 * R * D);
        if (need > c->cap) {
            free(c->buf);
            c->buf = sf_malloc(need * sizeof(float));
            c->cap = need;
        }
        float *x = c->buf, *y = c->buf + R * D; // x, y (R, D)
        int64_t r0 = 0;
        for (int k = 0; k < ns; k++) {
            if (s->hook.delta && !sp[k].in)
                return sf_error("steer: a delta hook needs the block inputs "
                                "(sf_flux_gen_opts.edit_input)");
            for (int64_t i = 0; i < sp[k].n * D; i++)
                x[r0 * D + i] = s->hook.delta ? sp[k].p[i] - sp[k].in[i] : sp[k].p[i];
            r0 += sp[k].n;
        }
        if (sf_sae_surgery(s->sae, x, R, s->feature, st, y)) return -1;
        r0 = 0;
        for (int k = 0; k < ns; k++) {
            for (int64_t i = 0; i < sp[k].n * D; i++)
                sp[k].p[i] = s->hook.delta ? sp[k].in[i] + y[r0 * D + i] : y[r0 * D + i];
            r0 += sp[k].n;
        }
    }
    return 0;
}

int sf_flux_steer_edit(void *ctx, int step, float sigma, const sf_flux_block_view *v) {
    sf_flux_steer_ctx *c = ctx;
    (void)sigma;
    if (c->steps && (step < 0 || step >= c->n_steps || !c->steps[step])) return 0;
    for (int i = 0; i < c->n; i++) {
        const sf_flux_steer *s = &c->steers[i];
        if (s->hook.site != v->site || s->hook.block != v->block) continue;
        if (s->sae->d != v->D)
            return sf_error("steer %d: SAE width %d, block rows %lld", i, s->sae->d,
                            (long long)v->D);
        if (steer_one(c, s, v)) return sf_error_prefix("steer %d (feature %d)", i, s->feature);
    }
    return 0;
}

void sf_flux_steer_ctx_free(sf_flux_steer_ctx *c) {
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
}

int sf_flux_steer_needs_input(const sf_flux_steer *s, int n) {
    for (int i = 0; i < n; i++)
        if (s[i].hook.delta && s[i].mode == SF_STEER_SURGERY) return 1;
    return 0;
}

int sf_flux_steer_check(const sf_flux_steer *s, const sf_flux *m) {
    char name[128];
    sf_flux_request_name(&s->hook, name, sizeof name);
    if (s->hook.site != SF_FLUX_DOUBLE && s->hook.site != SF_FLUX_SINGLE)
        return sf_error("hook %s: only block outputs (transformer_blocks.N.0|1, "
                        "single_transformer_blocks.N) can be steered",
                        name);
    if (sf_flux_request_rows(m, &s->hook, 1, 1) < 0) return sf_error_prefix("hook %s", name);
    const int64_t D = sf_flux_request_width(m, &s->hook);
    if (s->sae->d != D)
        return sf_error("SAE width (features) %d, but %s rows are %lld wide", s->sae->d, name,
                        (long long)D);
    if (s->feature < 0 || s->feature >= s->sae->n)
        return sf_error("feature %d outside [0, %d) (pages)", s->feature, s->sae->n);
    if ((unsigned)s->tokens > SF_FLUX_BOTH) return sf_error("bad steer tokens %d", s->tokens);
    if (s->hook.site == SF_FLUX_DOUBLE && s->tokens != s->hook.stream)
        return sf_error("hook %s is the %s stream of a double block: its SAE cannot steer %s "
                        "tokens (the other stream is another residual stream)",
                        name, s->hook.stream == SF_FLUX_TEXT ? "text" : "image",
                        s->tokens == SF_FLUX_TEXT    ? "text"
                        : s->tokens == SF_FLUX_IMAGE ? "image"
                                                     : "both");
    if (!(isfinite(s->strength))) return sf_error("strength %g is not finite", s->strength);
    return 0;
}

int sf_flux_steer_hook_of(const sf_sae *s, sf_flux_request *r) {
    const cJSON *h = s->config ? cJSON_GetObjectItem(s->config, "hook") : NULL;
    if (!h) return 1;
    if (!cJSON_IsString(h)) return sf_error("config.json: \"hook\" is not a string");
    if (sf_flux_parse_request(h->valuestring, r))
        return sf_error_prefix("config.json: \"hook\" is not a FLUX hook");
    return 0;
}

sf_flux_stream sf_flux_steer_default_tokens(const sf_flux_request *r) {
    return r->site == SF_FLUX_SINGLE && r->stream == SF_FLUX_BOTH ? SF_FLUX_IMAGE : r->stream;
}

/* a whole-string integer >= 0 in [p, e) */
static int parse_index(const char *p, const char *e, long *out) {
    if (p == e || !isdigit((unsigned char)*p)) return -1;
    long v = 0;
    for (; p < e; p++) {
        if (!isdigit((unsigned char)*p) || v > 100000000) return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

int sf_flux_steer_parse_spec(const char *s, int with_strength, char **ckpt, int *feature,
                             float *strength) {
    const char *form = with_strength ? "CKPT:FEATURE:STRENGTH" : "CKPT:FEATURE";
    const char *c2 = strrchr(s, ':'), *c1 = with_strength ? NULL : c2;
    for (const char *q = s; with_strength && c2 && q < c2; q++)
        if (*q == ':') c1 = q;
    if (!c1 || c1 == s)
        return sf_error("steer '%s': expected %s (e.g. ckpt/dir:12%s)", s, form,
                        with_strength ? ":8" : "");
    long f;
    const char *fend = with_strength ? c2 : s + strlen(s);
    if (parse_index(c1 + 1, fend, &f))
        return sf_error("steer '%s': feature '%.*s' is not an integer >= 0 (%s)", s,
                        (int)(fend - c1 - 1), c1 + 1, form);
    if (with_strength) {
        char *end;
        errno = 0;
        double v = strtod(c2 + 1, &end);
        if (end == c2 + 1 || *end || errno || !isfinite(v) || fabs(v) > 3e38)
            return sf_error("steer '%s': strength '%s' is not a finite number (%s)", s, c2 + 1,
                            form);
        *strength = (float)v;
    }
    *feature = (int)f;
    *ckpt = sf_malloc((size_t)(c1 - s) + 1);
    memcpy(*ckpt, s, (size_t)(c1 - s));
    (*ckpt)[c1 - s] = 0;
    return 0;
}

int sf_flux_steer_parse_steps(const char *s, int steps, uint8_t *mask) {
    if (!strcmp(s, "all")) {
        memset(mask, 1, (size_t)steps);
        return 0;
    }
    memset(mask, 0, (size_t)steps);
    const char *p = s;
    for (;;) {
        const char *e = p + strcspn(p, ","), *dash = memchr(p, '-', (size_t)(e - p));
        long a, b;
        if (parse_index(p, dash ? dash : e, &a) || (dash ? parse_index(dash + 1, e, &b) : 0))
            return sf_error("--steer-steps '%s': expected all, or steps and ranges like 0,2 "
                            "or 0-1",
                            s);
        if (!dash) b = a;
        if (a > b || b >= steps)
            return sf_error("--steer-steps '%s': %ld-%ld outside the %d steps [0, %d)", s, a, b,
                            steps, steps);
        for (long i = a; i <= b; i++)
            mask[i] = 1;
        if (!*e) return 0;
        p = e + 1;
    }
}

int sf_flux_steer_parse_tokens(const char *s, sf_flux_stream *t) {
    if (!strcmp(s, "image"))
        *t = SF_FLUX_IMAGE;
    else if (!strcmp(s, "text"))
        *t = SF_FLUX_TEXT;
    else if (!strcmp(s, "both"))
        *t = SF_FLUX_BOTH;
    else
        return sf_error("--steer-tokens '%s': expected image, text or both", s);
    return 0;
}

int sf_flux_steer_parse_mode(const char *s, sf_steer_mode *m) {
    if (!strcmp(s, "add"))
        *m = SF_STEER_ADD;
    else if (!strcmp(s, "surgery"))
        *m = SF_STEER_SURGERY;
    else
        return sf_error("--steer-mode '%s': expected add or surgery", s);
    return 0;
}

int sf_flux_steer_parse_list(const char *s, double *v, int max) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (end == p || (*end && *end != ',') || errno || !isfinite(x) || fabs(x) > 3e38)
            return sf_error("'%s': expected a comma-separated list of numbers", s);
        if (n == max) return sf_error("'%s': more than %d values", s, max);
        v[n++] = x;
        if (!*end) return n;
        p = end + 1;
    }
}
