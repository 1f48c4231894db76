/* saeflow sweep: a grid of SAEs trained in lockstep on the same batches,
 * evaluated, tabulated and plotted (include/saeflow/sae_sweep.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/buf.h"
#include "saeflow/sae_arch.h"
#include "saeflow/sae_sweep.h"

const char *sf_sweep_arch_label(const sf_sweep_point *p) {
    if (p->arch == SF_SAE_MATRYOSHKA && p->batch_select) return "matryoshka-batchtopk";
    return sf_sae_arch_name(p->arch);
}

static int uses_lmbda(sf_sae_arch a) {
    return a == SF_SAE_STANDARD || a == SF_SAE_GATED || a == SF_SAE_JUMPRELU;
}

int sf_sae_sweep(const sf_sae_data *D, const sf_sweep_point *pts, int npts, const sf_sweep_opts *o,
                 sf_sweep_result *res) {
    if (npts <= 0) return sf_error("sweep: empty grid");
    if (o->batch_size <= 0 || o->num_epochs <= 0)
        return sf_error("sweep: batch size and epochs must be positive");
    if (sf_sae_data_check_finite(D)) return -1;
    const int d = D->d, B = (int)(o->batch_size < D->N ? o->batch_size : D->N);
    sf_sae *S = sf_calloc((size_t)npts, sizeof(sf_sae));
    sf_sae_trainer **T = sf_calloc((size_t)npts, sizeof(*T));
    sf_sae_train_opts *TO = sf_calloc((size_t)npts, sizeof(*TO));
    int rc = -1, made = 0;
    for (int i = 0; i < npts; i++) {
        const sf_sweep_point *p = &pts[i];
        sf_sweep_result *r = &res[i];
        memset(r, 0, sizeof *r);
        r->p = *p;
        if (uses_lmbda(p->arch))
            snprintf(r->name, sizeof r->name, "%s-l%g-x%d", sf_sweep_arch_label(p), p->lmbda,
                     p->expansion);
        else
            snprintf(r->name, sizeof r->name, "%s-k%d-x%d", sf_sweep_arch_label(p), p->k,
                     p->expansion);
        long long n = (long long)d * p->expansion;
        if (p->expansion < 1 || n > (1 << 26)) {
            sf_error("sweep: %s: bad expansion %d", r->name, p->expansion);
            goto done;
        }
        TO[i] = o->train;
        TO[i].lmbda = p->lmbda;
        /* the same builder as `train`: same settings, same checkpoint */
        sf_sae_spec sp;
        sf_sae_spec_default(&sp);
        sp.arch = p->arch;
        sp.d = d;
        sp.n = (int)n;
        sp.k = p->arch == SF_SAE_TOPK || !uses_lmbda(p->arch) ? p->k : 1;
        sp.seed = o->seed;
        sp.matryoshka_base = p->batch_select ? "batchtopk" : NULL;
        sp.jumpthreshold = p->arch == SF_SAE_JUMPRELU ? o->jumpthreshold : 0;
        if (sf_sae_build(&S[i], &sp, D, &TO[i])) {
            sf_error_prefix("sweep: %s", r->name);
            goto done;
        }
        made = i + 1;
        if (TO[i].aux_k > S[i].n) TO[i].aux_k = S[i].n;
        if (!(T[i] = sf_sae_trainer_new(&S[i], &TO[i], B))) {
            sf_error_prefix("sweep: %s", r->name);
            goto done;
        }
    }
    {
        /* lockstep: one shuffled gather per batch, every model steps on it */
        int64_t *perm = sf_malloc((size_t)D->N * sizeof(int64_t));
        float *x = sf_malloc((size_t)B * d * sizeof(float));
        sf_rng rng;
        sf_rng_seed(&rng, o->seed);
        const int64_t spe = D->N / B, total = spe * o->num_epochs;
        sf_progress pb;
        sf_progress_start(&pb, "sweep", (uint64_t)total, "steps");
        int64_t step = 0;
        int err = 0;
        for (int ep = 0; ep < o->num_epochs && !err; ep++) {
            for (int64_t i = 0; i < D->N; i++)
                perm[i] = i;
            sf_rng_shuffle_u64(&rng, (uint64_t *)perm, (size_t)D->N);
            for (int64_t it = 0; it < spe && !err; it++) {
                if (sf_sae_data_gather(D, perm + it * B, B, x)) {
                    err = 1;
                    break;
                }
                for (int i = 0; i < npts; i++) {
                    double t0 = sf_now();
                    if (sf_sae_trainer_step(T[i], x, B, NULL)) {
                        sf_error_prefix("sweep: %s: step %lld", res[i].name, (long long)step);
                        err = 1;
                        break;
                    }
                    res[i].train_seconds += sf_now() - t0;
                }
                sf_progress_update(&pb, (uint64_t)++step, NULL);
            }
        }
        sf_progress_finish(&pb, err ? " failed" : "");
        free(perm);
        free(x);
        if (err) goto done;
    }
    for (int i = 0; i < npts; i++) {
        if (o->save_checkpoints && o->outdir) {
            char *dir = sf_path_join(o->outdir, res[i].name);
            int src = sf_sae_save(&S[i], dir);
            free(dir);
            if (src) goto done;
        }
        if (sf_sae_evaluate(&S[i], D, o->eval_rows, o->dict, o->n_true, &res[i].r)) goto done;
        if (!o->quiet)
            fprintf(stderr, "%-32s L0 %7.2f  FVU %.4f  dead %5.1f%%%s", res[i].name, res[i].r.l0,
                    res[i].r.fvu, 100 * res[i].r.dead, o->dict ? "" : "\n");
        if (!o->quiet && o->dict) fprintf(stderr, "  MMCS %.4f\n", res[i].r.mmcs);
    }
    rc = 0;
done:
    for (int i = 0; i < npts; i++)
        sf_sae_trainer_free(T[i]);
    for (int i = 0; i < made; i++)
        sf_sae_free(&S[i]);
    free(S);
    free(T);
    free(TO);
    return rc;
}

/* ----------------------------------------------------------------- tables -- */

static int write_text(const char *path, const char *text) {
    return sf_write_file_atomic(path, text, strlen(text));
}

static const char *knob(const sf_sweep_result *r, char *buf, size_t n) {
    if (uses_lmbda(r->p.arch))
        snprintf(buf, n, "lmbda=%g", r->p.lmbda);
    else
        snprintf(buf, n, "k=%d", r->p.k);
    return buf;
}

int sf_sweep_write_tsv(const sf_sweep_result *r, int n, const char *path) {
    sf_sbuf b = {0};
    sf_sb_printf(
        &b,
        "name\tarch\tk\tlmbda\texpansion\tl0\tfvu\tmse\tdead\tmmcs\trecovered\ttrain_seconds\n");
    for (int i = 0; i < n; i++)
        sf_sb_printf(
            &b, "%s\t%s\t%d\t%g\t%d\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.3f\n", r[i].name,
            sf_sweep_arch_label(&r[i].p), uses_lmbda(r[i].p.arch) ? 0 : r[i].p.k,
            uses_lmbda(r[i].p.arch) ? r[i].p.lmbda : 0, r[i].p.expansion, r[i].r.l0, r[i].r.fvu,
            r[i].r.mse, r[i].r.dead, r[i].r.mmcs, r[i].r.recovered, r[i].train_seconds);
    int rc = write_text(path, b.s);
    free(b.s);
    return rc;
}

int sf_sweep_write_markdown(const sf_sweep_result *r, int n, const char *path) {
    sf_sbuf b = {0};
    char kb[64];
    int dict = n > 0 && !isnan(r[0].r.mmcs);
    sf_sb_printf(&b, "| architecture | setting | expansion | L0 | FVU | dead %% |%s train s |\n",
                 dict ? " MMCS | recovered |" : "");
    sf_sb_printf(&b, "|---|---|---:|---:|---:|---:|%s---:|\n", dict ? "---:|---:|" : "");
    for (int i = 0; i < n; i++) {
        sf_sb_printf(&b, "| %s | %s | %d | %.2f | %.4f | %.1f |", sf_sweep_arch_label(&r[i].p),
                     knob(&r[i], kb, sizeof kb), r[i].p.expansion, r[i].r.l0, r[i].r.fvu,
                     100 * r[i].r.dead);
        if (dict) sf_sb_printf(&b, " %.4f | %.1f%% |", r[i].r.mmcs, 100 * r[i].r.recovered);
        sf_sb_printf(&b, " %.1f |\n", r[i].train_seconds);
    }
    int rc = write_text(path, b.s);
    free(b.s);
    return rc;
}

/* -------------------------------------------------------------------- SVG -- */

static const char *palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

typedef struct {
    double x0, y0, w, h; /* plot area in pixels */
    double lx0, lx1;     /* log10 L0 range */
    double y_lo, y_hi;   /* value range */
} panel;

static double px(const panel *p, double l0) {
    double v = log10(l0 > 1e-3 ? l0 : 1e-3);
    return p->x0 + (v - p->lx0) / (p->lx1 - p->lx0) * p->w;
}
static double py(const panel *p, double v) {
    return p->y0 + p->h - (v - p->y_lo) / (p->y_hi - p->y_lo) * p->h;
}

static void axes(sf_sbuf *b, const panel *p, const char *ylabel) {
    sf_sb_printf(b,
                 "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#444'/>\n",
                 p->x0, p->y0, p->w, p->h);
    /* x: decades and 2x, 5x ticks */
    for (int e = (int)floor(p->lx0); e <= (int)ceil(p->lx1); e++)
        for (int t = 0; t < 3; t++) {
            const int mult[3] = {1, 2, 5};
            double v = e + log10((double)mult[t]);
            if (v < p->lx0 - 1e-9 || v > p->lx1 + 1e-9) continue;
            double x = p->x0 + (v - p->lx0) / (p->lx1 - p->lx0) * p->w;
            sf_sb_printf(b, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", x,
                         p->y0, x, p->y0 + p->h);
            sf_sb_printf(b,
                         "<text x='%.1f' y='%.1f' font-size='11' text-anchor='middle'>%g</text>\n",
                         x, p->y0 + p->h + 14, pow(10, v));
        }
    for (int i = 0; i <= 5; i++) {
        double v = p->y_lo + (p->y_hi - p->y_lo) * i / 5, y = py(p, v);
        sf_sb_printf(b, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#eee'/>\n", p->x0, y,
                     p->x0 + p->w, y);
        sf_sb_printf(b, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='end'>%.3g</text>\n",
                     p->x0 - 4, y + 4, v);
    }
    sf_sb_printf(
        b,
        "<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle'>L0 (active latents per "
        "row, log scale)</text>\n",
        p->x0 + p->w / 2, p->y0 + p->h + 32);
    sf_sb_printf(
        b,
        "<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle' transform='rotate(-90 "
        "%.1f %.1f)'>%s</text>\n",
        p->x0 - 42, p->y0 + p->h / 2, p->x0 - 42, p->y0 + p->h / 2, ylabel);
}

/* sort indices of one architecture's points by L0 */
static const sf_sweep_result *sort_ctx;
static int cmp_idx(const void *a, const void *b) {
    double x = sort_ctx[*(const int *)a].r.l0, y = sort_ctx[*(const int *)b].r.l0;
    return (x > y) - (x < y);
}

int sf_sweep_write_svg(const sf_sweep_result *r, int n, const char *path, const char *title) {
    const int dict = n > 0 && !isnan(r[0].r.mmcs);
    const double W = dict ? 980 : 560, H = 430;
    panel pf = {70, 50, 400, 310, 0, 1, 0, 1}, pm = {570, 50, 340, 310, 0, 1, 0, 1};
    double lmin = INFINITY, lmax = -INFINITY, fvmax = 0, mmin = 1;
    for (int i = 0; i < n; i++) {
        if (!(r[i].r.l0 > 0)) continue;
        lmin = fmin(lmin, r[i].r.l0);
        lmax = fmax(lmax, r[i].r.l0);
        if (isfinite(r[i].r.fvu)) fvmax = fmax(fvmax, r[i].r.fvu);
        if (dict && isfinite(r[i].r.mmcs)) mmin = fmin(mmin, r[i].r.mmcs);
    }
    if (!isfinite(lmin)) lmin = 1, lmax = 10;
    pf.lx0 = pm.lx0 = floor(log10(lmin) * 2) / 2 - 0.05;
    pf.lx1 = pm.lx1 = ceil(log10(lmax) * 2) / 2 + 0.05;
    pf.y_hi = fvmax > 0 ? ceil(fvmax * 10 + 0.5) / 10 : 1;
    if (pf.y_hi > 1.5) pf.y_hi = ceil(fvmax);
    pm.y_lo = floor(mmin * 10 - 0.5) / 10;
    if (pm.y_lo < 0) pm.y_lo = 0;
    pm.y_hi = 1.0;
    sf_sbuf b = {0};
    sf_sb_printf(&b,
                 "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 "
                 "%.0f %.0f' "
                 "font-family='Helvetica, Arial, sans-serif'>\n<rect width='100%%' height='100%%' "
                 "fill='white'/>\n",
                 W, H, W, H);
    sf_sb_printf(&b, "<text x='%.1f' y='24' font-size='15' text-anchor='middle'>%s</text>\n", W / 2,
                 title ? title : "saeflow sweep");
    axes(&b, &pf, "FVU (lower is better)");
    if (dict) axes(&b, &pm, "MMCS with the true dictionary");
    /* architectures in first-seen order */
    const char *labels[16];
    int nl = 0;
    for (int i = 0; i < n; i++) {
        const char *l = sf_sweep_arch_label(&r[i].p);
        int f = 0;
        for (int u = 0; u < nl; u++)
            f |= !strcmp(labels[u], l);
        if (!f && nl < 16) labels[nl++] = l;
    }
    int *idx = sf_malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    for (int a = 0; a < nl; a++) {
        const char *col = palette[a % 8];
        int m = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(sf_sweep_arch_label(&r[i].p), labels[a]) && r[i].r.l0 > 0 &&
                isfinite(r[i].r.fvu))
                idx[m++] = i;
        sort_ctx = r;
        qsort(idx, (size_t)m, sizeof(int), cmp_idx);
        /* Pareto frontier: points whose FVU beats every point with smaller L0 */
        sf_sbuf line = {0};
        double best = INFINITY;
        for (int u = 0; u < m; u++) {
            const sf_sweep_result *q = &r[idx[u]];
            if (q->r.fvu < best) {
                best = q->r.fvu;
                sf_sb_printf(&line, "%s%.1f,%.1f", line.len ? " " : "", px(&pf, q->r.l0),
                             py(&pf, q->r.fvu));
            }
        }
        if (line.s)
            sf_sb_printf(&b, "<polyline points='%s' fill='none' stroke='%s' stroke-width='2'/>\n",
                         line.s, col);
        free(line.s);
        for (int u = 0; u < m; u++) {
            const sf_sweep_result *q = &r[idx[u]];
            sf_sb_printf(&b,
                         "<circle cx='%.1f' cy='%.1f' r='4' fill='%s'><title>%s: L0 %.2f, FVU "
                         "%.4f</title></circle>\n",
                         px(&pf, q->r.l0), py(&pf, q->r.fvu), col, q->name, q->r.l0, q->r.fvu);
            if (dict && isfinite(q->r.mmcs))
                sf_sb_printf(&b,
                             "<circle cx='%.1f' cy='%.1f' r='4' fill='%s'><title>%s: L0 %.2f, MMCS "
                             "%.4f</title></circle>\n",
                             px(&pm, q->r.l0), py(&pm, q->r.mmcs), col, q->name, q->r.l0,
                             q->r.mmcs);
        }
        if (dict) {
            sf_sbuf l2 = {0};
            for (int u = 0; u < m; u++)
                if (isfinite(r[idx[u]].r.mmcs))
                    sf_sb_printf(&l2, "%s%.1f,%.1f", l2.len ? " " : "", px(&pm, r[idx[u]].r.l0),
                                 py(&pm, r[idx[u]].r.mmcs));
            if (l2.s)
                sf_sb_printf(&b,
                             "<polyline points='%s' fill='none' stroke='%s' stroke-width='1' "
                             "stroke-dasharray='4 3'/>\n",
                             l2.s, col);
            free(l2.s);
        }
        /* legend */
        double lx = pf.x0 + pf.w - 150, ly = pf.y0 + 14 + 16 * a;
        sf_sb_printf(&b,
                     "<rect x='%.1f' y='%.1f' width='12' height='4' fill='%s'/><text x='%.1f' "
                     "y='%.1f' font-size='11'>%s</text>\n",
                     lx, ly - 4, col, lx + 16, ly + 1, labels[a]);
    }
    free(idx);
    sf_sb_printf(&b,
                 "<text x='%.1f' y='%.1f' font-size='10' fill='#666'>lines: each architecture's "
                 "L0-FVU Pareto frontier%s</text>\n",
                 pf.x0, H - 12, dict ? "; right: dictionary recovery" : "");
    sf_sb_printf(&b, "</svg>\n");
    int rc = write_text(path, b.s);
    free(b.s);
    return rc;
}
