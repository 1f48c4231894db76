/* saeflow: shared conventions.
 *
 * Errors: a function that can fail returns int (0 = ok, -1 = error) or a
 * pointer (NULL = error) and records a message with sf_error(); the caller
 * reads it with sf_errmsg(). Messages name what failed, in which file and
 * which field ("model.safetensors: tensor 'encoder.weight': shape [4,8]
 * needs 128 bytes, range has 96"). The message is thread-local, like errno.
 */
#ifndef SAEFLOW_COMMON_H
#define SAEFLOW_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SF_VERSION "0.1.0"

#if defined(__GNUC__)
#define SF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define SF_UNUSED __attribute__((unused))
#else
#define SF_PRINTF(a, b)
#define SF_UNUSED
#endif

/* Sets the thread's error message (printf-style). Always returns -1 so that
 * `return sf_error(...)` reads naturally. */
int sf_error(const char *fmt, ...) SF_PRINTF(1, 2);
/* Prefixes the current message with more context: "ctx: old message". */
int sf_error_prefix(const char *fmt, ...) SF_PRINTF(1, 2);
const char *sf_errmsg(void);
void sf_error_clear(void);

/* Allocation that never returns NULL for a nonzero size: out of memory is
 * reported and the process exits (there is no sensible recovery mid-GEMM). */
void *sf_malloc(size_t n);
void *sf_calloc(size_t count, size_t size);
void *sf_realloc(void *p, size_t n);
char *sf_strdup(const char *s);
/* 64-byte aligned, for SIMD and to keep threads off each other's cache lines.
 * Free with sf_free_aligned. */
void *sf_malloc_aligned(size_t n);
void sf_free_aligned(void *p);

/* A scratch block kept between calls, for a model's forward activations.
 * A forward allocates the same tens to hundreds of MB on every call; fresh
 * buffers come from mmap, and every call then pays a page fault and the
 * zeroing of each new 4 KB page (measured: a FLUX transformer forward at
 * 256 px ran 1.03x faster with its activations kept). sf_arena_take returns the kept
 * block, grown to at least n bytes (64-byte aligned, contents undefined),
 * and holds it until sf_arena_give. A second thread taking it meanwhile gets
 * a block of its own (freed by its give): one model may serve several
 * threads, only the first one reuses. */
typedef struct sf_arena sf_arena;
sf_arena *sf_arena_new(void);
void sf_arena_free(sf_arena *a); /* NULL is fine; the block must have been given back */
void *sf_arena_take(sf_arena *a, size_t n);
void sf_arena_give(sf_arena *a, void *p);
/* sf_arena_take for n float buffers at once: one block cut into parts of
 * len[i] floats, each rounded up to 64 bytes; *ptr[i] = part i (NULL where
 * len[i] is 0). Returns the block, for sf_arena_give. */
void *sf_arena_take_floats(sf_arena *a, int n, const size_t *len, float **const *ptr);

/* Overflow-checked size arithmetic: returns -1 on overflow. */
int sf_mul_size(size_t a, size_t b, size_t *out);

/* Deterministic RNG (xoshiro256**), seeded with splitmix64. Same seed, same
 * stream on every platform. */
typedef struct {
    uint64_t s[4];
} sf_rng;
void sf_rng_seed(sf_rng *r, uint64_t seed);
uint64_t sf_rng_u64(sf_rng *r);
double sf_rng_uniform(sf_rng *r);             /* [0, 1) */
float sf_rng_normal(sf_rng *r);               /* standard normal (Box-Muller) */
uint64_t sf_rng_below(sf_rng *r, uint64_t n); /* uniform in [0, n), unbiased */
void sf_rng_shuffle_u64(sf_rng *r, uint64_t *a, size_t n);
/* An independent stream for worker `i` (for reproducible parallel RNG). */
void sf_rng_split(const sf_rng *r, uint64_t i, sf_rng *out);

/* Wall-clock seconds (monotonic). */
double sf_now(void);

/* Atomic file output: write to "<path>.tmp.<pid>" in the same folder, then
 * sf_atomic_commit() fsyncs, closes and renames over <path>. On any error
 * before commit, sf_atomic_abort() removes the temp file, so a crash or a
 * failure never leaves a half-written file under the final name. */
typedef struct {
    FILE *fp;
    char *path;
    char *tmp;
} sf_atomic_file;
int sf_atomic_open(sf_atomic_file *f, const char *path);
int sf_atomic_commit(sf_atomic_file *f);
void sf_atomic_abort(sf_atomic_file *f);

/* Whole-file helpers. sf_read_file returns a NUL-terminated buffer. */
char *sf_read_file(const char *path, size_t *len);
int sf_write_file_atomic(const char *path, const void *data, size_t len);
/* mkdir -p */
int sf_mkdirs(const char *path);
/* Join two path parts into a new string. */
char *sf_path_join(const char *a, const char *b);
/* 1 if path exists (stat follows links): anything / a directory / a regular file. */
int sf_path_exists(const char *path);
int sf_is_dir(const char *path);
int sf_is_file(const char *path);

/* Progress bar on stderr (only when stderr is a terminal, unless forced):
 * "label [=====>    ] 45% 1234.5/s ETA 0:12". */
typedef struct {
    const char *label;
    uint64_t total, done;
    double t0, last_draw;
    int enabled;
    const char *unit;
} sf_progress;
void sf_progress_start(sf_progress *p, const char *label, uint64_t total, const char *unit);
void sf_progress_update(sf_progress *p, uint64_t done, const char *extra);
void sf_progress_finish(sf_progress *p, const char *extra);

#ifdef __cplusplus
}
#endif
#endif
