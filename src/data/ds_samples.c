/* A dataset over samples the caller holds in memory (sf_dataset_open_samples):
 * what a binding hands over (python/saeflow/clip.py) so that its images and
 * captions go through the same extraction as a dataset on disk. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/ds_internal.h"
#include "saeflow/common.h"

typedef struct {
    const sf_sample *s; /* borrowed */
    int64_t n, pos;
    char id[32]; /* "#<row>" for a sample without an id */
} samples_src;

static int samples_next(sf_dataset *ds, sf_sample *out) {
    samples_src *m = ds->impl;
    if (m->pos >= m->n) return 0;
    const sf_sample *s = &m->s[m->pos];
    if ((ds->flags & SF_DS_IMAGES) && s->image) {
        out->image = s->image;
        out->image_len = s->image_len;
        out->image_ext = sf_image_ext_from_magic(s->image, s->image_len);
    }
    if ((ds->flags & SF_DS_CAPTIONS) && s->caption) {
        out->caption = s->caption;
        out->caption_len = strlen(s->caption);
    }
    snprintf(m->id, sizeof m->id, "#%" PRId64, m->pos);
    out->id = s->id ? s->id : m->id;
    out->row = m->pos++;
    return 1;
}

static int samples_seek(sf_dataset *ds, int64_t row) {
    samples_src *m = ds->impl;
    if (row > m->n)
        return sf_error("row %lld: dataset has %lld rows", (long long)row, (long long)m->n);
    m->pos = row;
    return 0;
}

static int64_t samples_count(sf_dataset *ds) {
    return ((samples_src *)ds->impl)->n;
}

static int samples_describe(sf_dataset *ds, FILE *out) {
    fprintf(out, "source:     %lld samples in memory\n", (long long)samples_count(ds));
    return 0;
}

static void samples_close(sf_dataset *ds) {
    free(ds->impl);
    ds->impl = NULL;
}

static const ds_ops SAMPLES_OPS = {samples_count, samples_next, samples_seek, samples_describe,
                                   samples_close};

sf_dataset *sf_dataset_open_samples(const sf_sample *samples, int64_t n, unsigned flags) {
    if (n < 0 || (n && !samples)) return sf_error("sf_dataset_open_samples: no samples"), NULL;
    sf_dataset *ds = sf_calloc(1, sizeof *ds);
    samples_src *m = sf_calloc(1, sizeof *m);
    m->s = samples;
    m->n = n;
    ds->flags = flags;
    ds->kind = "memory";
    ds->ops = &SAMPLES_OPS;
    ds->impl = m;
    return ds;
}
