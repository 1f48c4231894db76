/* MPI wrapper (include/saeflow/dist.h). Large buffers go in chunks of
 * 2^28 elements: MPI counts are int. */
#include "saeflow/dist.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/common.h"

#ifdef SF_HAVE_MPI
#include <mpi.h>

static int g_on, g_rank, g_size = 1;

static int launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

int sf_dist_init(int *argc, char ***argv) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (g_on || inited || !launched_by_mpi()) return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return sf_error("MPI_Init failed");
    /* errors come back as codes: a failed collective is reported, not a hang */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_on = 1;
    return 0;
}

void sf_dist_finalize(void) {
    if (g_on) MPI_Finalize();
    g_on = 0;
}

int sf_dist_rank(void) {
    return g_on ? g_rank : 0;
}
int sf_dist_size(void) {
    return g_on ? g_size : 1;
}

#define CHUNK ((size_t)1 << 28)
static int allreduce(void *buf, size_t n, size_t esz, MPI_Datatype ty, MPI_Op op,
                     const char *what) {
    if (!g_on || g_size == 1) return 0;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t m = n - i < CHUNK ? n - i : CHUNK;
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + i * esz, (int)m, ty, op, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) {
            char s[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, s, &len);
            return sf_error("rank %d: MPI_Allreduce (%s, %zu values): %s", g_rank, what, n, s);
        }
    }
    return 0;
}
int sf_dist_allreduce_sum_f32(float *buf, size_t n) {
    return allreduce(buf, n, sizeof(float), MPI_FLOAT, MPI_SUM, "f32 sum");
}
int sf_dist_allreduce_sum_f64(double *buf, size_t n) {
    return allreduce(buf, n, sizeof(double), MPI_DOUBLE, MPI_SUM, "f64 sum");
}
int sf_dist_allreduce_max_u8(unsigned char *buf, size_t n) {
    return allreduce(buf, n, 1, MPI_UNSIGNED_CHAR, MPI_MAX, "u8 max");
}
int sf_dist_allreduce_min_i64(int64_t *buf, size_t n) {
    return allreduce(buf, n, sizeof(int64_t), MPI_INT64_T, MPI_MIN, "i64 min");
}
int sf_dist_bcast(void *buf, size_t bytes, int root) {
    if (!g_on || g_size == 1) return 0;
    for (size_t i = 0; i < bytes; i += CHUNK) {
        size_t m = bytes - i < CHUNK ? bytes - i : CHUNK;
        if (MPI_Bcast((char *)buf + i, (int)m, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS)
            return sf_error("rank %d: MPI_Bcast of %zu bytes failed", g_rank, bytes);
    }
    return 0;
}
int sf_dist_send(const void *buf, size_t bytes, int dest) {
    if (!g_on || g_size == 1) return sf_error("sf_dist_send: not running under MPI");
    for (size_t i = 0; i < bytes; i += CHUNK) {
        size_t m = bytes - i < CHUNK ? bytes - i : CHUNK;
        if (MPI_Send((const char *)buf + i, (int)m, MPI_BYTE, dest, 0, MPI_COMM_WORLD) !=
            MPI_SUCCESS)
            return sf_error("rank %d: MPI_Send of %zu bytes to rank %d failed", g_rank, bytes,
                            dest);
    }
    return 0;
}
int sf_dist_recv(void *buf, size_t bytes, int src) {
    if (!g_on || g_size == 1) return sf_error("sf_dist_recv: not running under MPI");
    for (size_t i = 0; i < bytes; i += CHUNK) {
        size_t m = bytes - i < CHUNK ? bytes - i : CHUNK;
        if (MPI_Recv((char *)buf + i, (int)m, MPI_BYTE, src, 0, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return sf_error("rank %d: MPI_Recv of %zu bytes from rank %d failed", g_rank, bytes,
                            src);
    }
    return 0;
}
int sf_dist_barrier(void) {
    if (g_on && g_size > 1 && MPI_Barrier(MPI_COMM_WORLD) != MPI_SUCCESS)
        return sf_error("rank %d: MPI_Barrier failed", g_rank);
    return 0;
}

/* Collective error check: the lowest failed rank's message goes to all. */
static int g_quiet, g_together;
int sf_dist_check(int failed) {
    if (!g_on || g_size == 1) return failed ? -1 : 0;
    int mine = failed ? g_rank : g_size, first = g_size;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS)
        return sf_error("rank %d: MPI_Allreduce (error check) failed", g_rank);
    if (first == g_size) return 0;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", g_rank == first ? sf_errmsg() : "");
    if (MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD) != MPI_SUCCESS)
        return sf_error("rank %d: MPI_Bcast (error message of rank %d) failed", g_rank, first);
    msg[sizeof msg - 1] = 0;
    g_quiet = g_rank != 0;
    g_together = 1;
    return sf_error("rank %d of %d: %s", first, g_size, msg);
}
int sf_dist_quiet(void) {
    return g_quiet;
}
int sf_dist_failed_together(void) {
    return g_together;
}
int sf_dist_allgather_f32(const float *mine, size_t n, float **all, size_t *total) {
    *all = NULL;
    *total = n;
    if (!g_on || g_size == 1) {
        *all = sf_malloc((n ? n : 1) * sizeof(float));
        memcpy(*all, mine, n * sizeof(float));
        return 0;
    }
    if (n > (size_t)INT32_MAX) return sf_error("rank %d: allgather of %zu values", g_rank, n);
    int cnt = (int)n, *cnts = sf_malloc((size_t)g_size * sizeof(int)),
        *displs = sf_malloc((size_t)g_size * sizeof(int));
    int rc = MPI_Allgather(&cnt, 1, MPI_INT, cnts, 1, MPI_INT, MPI_COMM_WORLD);
    size_t tot = 0;
    for (int r = 0; r < g_size && rc == MPI_SUCCESS; r++) {
        displs[r] = (int)tot;
        tot += (size_t)cnts[r];
    }
    if (rc == MPI_SUCCESS && tot > (size_t)INT32_MAX) {
        free(cnts), free(displs);
        return sf_error("rank %d: allgather of %zu values", g_rank, tot);
    }
    if (rc == MPI_SUCCESS) {
        *all = sf_malloc((tot ? tot : 1) * sizeof(float));
        rc = MPI_Allgatherv(mine, cnt, MPI_FLOAT, *all, cnts, displs, MPI_FLOAT, MPI_COMM_WORLD);
    }
    free(cnts), free(displs);
    if (rc != MPI_SUCCESS) {
        free(*all);
        *all = NULL;
        return sf_error("rank %d: MPI_Allgatherv of %zu floats failed", g_rank, n);
    }
    *total = tot;
    return 0;
}
_Noreturn void sf_dist_abort(int code, const char *msg) {
    if (msg) fprintf(stderr, "saeflow: rank %d of %d: %s\n", sf_dist_rank(), sf_dist_size(), msg);
    fflush(stderr);
    if (g_on && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

#else /* 1 process: every collective is the identity */

int sf_dist_init(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}
void sf_dist_finalize(void) {}
int sf_dist_rank(void) {
    return 0;
}
int sf_dist_size(void) {
    return 1;
}
int sf_dist_allreduce_sum_f32(float *buf, size_t n) {
    (void)buf;
    (void)n;
    return 0;
}
int sf_dist_allreduce_sum_f64(double *buf, size_t n) {
    (void)buf;
    (void)n;
    return 0;
}
int sf_dist_allreduce_max_u8(unsigned char *buf, size_t n) {
    (void)buf;
    (void)n;
    return 0;
}
int sf_dist_allreduce_min_i64(int64_t *buf, size_t n) {
    (void)buf;
    (void)n;
    return 0;
}
int sf_dist_bcast(void *buf, size_t bytes, int root) {
    (void)buf;
    (void)bytes;
    (void)root;
    return 0;
}
int sf_dist_send(const void *buf, size_t bytes, int dest) {
    (void)buf;
    (void)bytes;
    (void)dest;
    return sf_error("sf_dist_send: built without MPI");
}
int sf_dist_recv(void *buf, size_t bytes, int src) {
    (void)buf;
    (void)bytes;
    (void)src;
    return sf_error("sf_dist_recv: built without MPI");
}
int sf_dist_barrier(void) {
    return 0;
}
int sf_dist_check(int failed) {
    return failed ? -1 : 0;
}
int sf_dist_quiet(void) {
    return 0;
}
int sf_dist_failed_together(void) {
    return 0;
}
int sf_dist_allgather_f32(const float *mine, size_t n, float **all, size_t *total) {
    *all = sf_malloc((n ? n : 1) * sizeof(float));
    memcpy(*all, mine, n * sizeof(float));
    *total = n;
    return 0;
}
_Noreturn void sf_dist_abort(int code, const char *msg) {
    if (msg) fprintf(stderr, "saeflow: %s\n", msg);
    exit(code);
}
#endif
