/* Chunks of encoded rows from every MPI rank to rank 0 (cli.h, docs/mpi.md).
 * The wire format is the header (m, next_row, skipped) and then, when m > 0,
 * cnt (m), idx and val (m x k), rows (m), pos (m) for whichever the chunk
 * has; both ends know which from the command's settings. */
#include "cli/cli.h"
#include "saeflow/dist.h"

int cli_chunk_send(const cli_chunk *c) {
    int64_t head[3] = {c->m, c->next_row, c->skipped};
    const size_t m = (size_t)c->m, k = (size_t)c->codes.k;
    if (sf_dist_send(head, sizeof head, 0)) return -1;
    if (!m) return 0;
    if (sf_dist_send(c->codes.cnt, m * sizeof(int32_t), 0) ||
        sf_dist_send(c->codes.idx, m * k * sizeof(int32_t), 0) ||
        sf_dist_send(c->codes.val, m * k * sizeof(float), 0))
        return -1;
    if (c->rows && sf_dist_send(c->rows, m * sizeof(int64_t), 0)) return -1;
    if (c->pos && sf_dist_send(c->pos, m * sizeof(int32_t), 0)) return -1;
    return 0;
}

int cli_chunk_recv(cli_chunk *c, int src) {
    int64_t head[3];
    if (sf_dist_recv(head, sizeof head, src)) return -1;
    if (head[0] < 0 || head[0] > c->codes.B)
        return sf_error("rank %d sent a chunk of %lld rows (at most %lld expected)", src,
                        (long long)head[0], (long long)c->codes.B);
    c->m = head[0], c->next_row = head[1], c->skipped = head[2];
    const size_t m = (size_t)c->m, k = (size_t)c->codes.k;
    if (!m) return 0;
    if (sf_dist_recv(c->codes.cnt, m * sizeof(int32_t), src) ||
        sf_dist_recv(c->codes.idx, m * k * sizeof(int32_t), src) ||
        sf_dist_recv(c->codes.val, m * k * sizeof(float), src))
        return -1;
    if (c->rows && sf_dist_recv(c->rows, m * sizeof(int64_t), src)) return -1;
    if (c->pos && sf_dist_recv(c->pos, m * sizeof(int32_t), src)) return -1;
    return 0;
}
