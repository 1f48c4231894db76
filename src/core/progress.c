#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saeflow/common.h"

void sf_progress_start(sf_progress *p, const char *label, uint64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->unit = unit ? unit : "it";
    p->t0 = p->last_draw = sf_now();
    const char *force = getenv("SAEFLOW_PROGRESS");
    p->enabled = force ? atoi(force) != 0 : isatty(2);
}

static void fmt_time(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void draw(sf_progress *p, const char *extra, int final) {
    double now = sf_now(), el = now - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    double frac = p->total ? (double)p->done / (double)p->total : 0;
    if (frac > 1) frac = 1;
    char bar[31];
    int w = (int)(frac * 30);
    for (int i = 0; i < 30; i++)
        bar[i] = i < w ? '=' : (i == w ? '>' : ' ');
    bar[30] = 0;
    char eta[32], elapsed[32];
    fmt_time(eta, sizeof eta, rate > 0 ? (double)(p->total - p->done) / rate : 0);
    fmt_time(elapsed, sizeof elapsed, el);
    fprintf(stderr, "\r%s [%s] %3.0f%% %.1f %s/s %s %s %s\033[K", p->label, bar, 100 * frac, rate,
            p->unit, final ? "in" : "ETA", final ? elapsed : eta, extra ? extra : "");
    if (final) fputc('\n', stderr);
    fflush(stderr);
    p->last_draw = now;
}

void sf_progress_update(sf_progress *p, uint64_t done, const char *extra) {
    p->done = done;
    if (!p->enabled) return;
    if (sf_now() - p->last_draw < 0.1 && done < p->total) return;
    draw(p, extra, 0);
}

void sf_progress_finish(sf_progress *p, const char *extra) {
    if (p->enabled) draw(p, extra, 1);
}
