#include <pthread.h>
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

struct sf_arena {
    pthread_mutex_t lock;
    void *block;
    size_t n;
};

sf_arena *sf_arena_new(void) {
    sf_arena *a = sf_calloc(1, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
    return a;
}

void sf_arena_free(sf_arena *a) {
    if (!a) return;
    pthread_mutex_destroy(&a->lock);
    sf_free_aligned(a->block);
    free(a);
}

void *sf_arena_take(sf_arena *a, size_t n) {
    if (!a || pthread_mutex_trylock(&a->lock)) return sf_malloc_aligned(n);
    if (n > a->n) { /* free first: old and new block never both resident */
        sf_free_aligned(a->block);
        a->block = sf_malloc_aligned(n);
        a->n = n;
    }
    return a->block;
}

void *sf_arena_take_floats(sf_arena *a, int n, const size_t *len, float **const *ptr) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += (len[i] + 15) / 16 * 16;
    float *p = sf_arena_take(a, total * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        *ptr[i] = len[i] ? p + off : NULL;
        off += (len[i] + 15) / 16 * 16;
    }
    return p;
}

void sf_arena_give(sf_arena *a, void *p) {
    if (a && p == a->block) {
        pthread_mutex_unlock(&a->lock);
        return;
    }
    sf_free_aligned(p);
}

int sf_mul_size(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}
