#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/common.h"

static void oom(size_t n) {
    fprintf(stderr, "saeflow: out of memory allocating %zu bytes\n", n);
    exit(3);
}

void *sf_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *sf_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size);
    return p;
}

void *sf_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *sf_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = sf_malloc(n);
    memcpy(d, s, n);
    return d;
}

void *sf_malloc_aligned(size_t n) {
    void *p = NULL;
    size_t sz = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, sz ? sz : 64)) oom(n);
    return p;
}

void sf_free_aligned(void *p) {
    free(p);
}

int sf_mul_size(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}
