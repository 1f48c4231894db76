/* Distributed runs: a thin wrapper over MPI so the rest of the code has no
 * #ifdef. Built with -DSAEFLOW_MPI=ON it calls MPI; otherwise (or when the
 * process was not launched by mpirun/srun) every call is the 1-process no-op:
 * rank 0 of 1, reductions leave the buffer as it is.
 * Reductions are in place, on all ranks (MPI_Allreduce with MPI_IN_PLACE). */
#ifndef SAEFLOW_DIST_H
#define SAEFLOW_DIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Initialises MPI when built with it and launched by an MPI launcher (env
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK set); a plain run stays 1 process
 * and never touches MPI. Idempotent. Returns 0, or -1 with sf_error. */
int sf_dist_init(int *argc, char ***argv);
void sf_dist_finalize(void);
int sf_dist_rank(void);
int sf_dist_size(void);
int sf_dist_allreduce_sum_f32(float *buf, size_t n);
int sf_dist_allreduce_sum_f64(double *buf, size_t n);
int sf_dist_allreduce_max_u8(unsigned char *buf, size_t n);
int sf_dist_allreduce_min_i64(int64_t *buf, size_t n);
int sf_dist_bcast(void *buf, size_t bytes, int root);
/* Point to point (blocking; large buffers in pieces): the receiver must ask
 * for exactly the bytes sent. For streaming work from every rank to rank 0
 * in a fixed order (encode, topk: docs/mpi.md). */
int sf_dist_send(const void *buf, size_t bytes, int dest);
int sf_dist_recv(void *buf, size_t bytes, int src);
int sf_dist_barrier(void);
/* Collective error check, called by every rank at the same point: failed =
 * this rank has an error (in sf_errmsg). Returns 0 when no rank failed;
 * otherwise -1 on every rank with the message "rank r of R: <its message>"
 * of the lowest failed rank, so all ranks stop together, cleanly. */
int sf_dist_check(int failed);
/* 1 on ranks other than 0 after a failed sf_dist_check: rank 0 prints the
 * same message, once. */
int sf_dist_quiet(void);
/* 1 after a failed sf_dist_check: every rank stops by itself, no MPI_Abort. */
int sf_dist_failed_together(void);
/* Concatenation over ranks (rank order) of each rank's n floats, into a new
 * buffer *all (free) of *total floats, on every rank. */
int sf_dist_allgather_f32(const float *mine, size_t n, float **all, size_t *total);
/* Ends every rank (MPI_Abort) after printing msg; with 1 process: exit(code). */
_Noreturn void sf_dist_abort(int code, const char *msg);

#ifdef __cplusplus
}
#endif
#endif
