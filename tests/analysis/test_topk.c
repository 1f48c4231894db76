/* Online top-k against a brute-force sort on random data with many ties;
 * identical results for every batch size, thread count and input form
 * (dense / sparse); histogram against a direct computation; file round trip. */
#include <omp.h>
#include <stdint.h>

#include "saeflow/analysis.h"
#include "test.h"

enum { ROWS = 1000, NF = 37, KEEP = 16, K = 6 };

typedef struct {
    float v;
    int64_t r;
} vr;

static int vr_cmp(const void *a, const void *b) {
    const vr *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->r < y->r ? -1 : (x->r > y->r);
}

/* Random dense activations: ~K nonzero of NF per row, values on a coarse
 * grid (many exact ties), some negative (must be ignored). Row ids are
 * shuffled-ish (rid[b] = distinct, not monotonic) to check ordering by id. */
static float Z[ROWS][NF];
static int64_t RID[ROWS];
static int32_t IDX[ROWS][K];
static float VAL[ROWS][K];
static int32_t CNT[ROWS];

static void make_data(void) {
    sf_rng r;
    sf_rng_seed(&r, 42);
    for (int b = 0; b < ROWS; b++) {
        RID[b] = (int64_t)((b * 7919) % ROWS) + 5; /* a permutation of 5..ROWS+4 */
        int c = 0;
        memset(Z[b], 0, sizeof Z[b]);
        for (int j = 0; j < NF && c < K; j++) {
            if (sf_rng_below(&r, NF) >= K) continue;
            /* features 0..3 get a wide range to exercise the histogram widening */
            float v = (float)(int)sf_rng_below(&r, 8) * 0.25f - 0.25f;
            if (j < 4)
                v = (float)ldexp(1.0 + (double)sf_rng_below(&r, 4), (int)sf_rng_below(&r, 12) - 4);
            Z[b][j] = v;
            IDX[b][c] = j;
            VAL[b][c] = v;
            c++;
        }
        CNT[b] = c;
    }
}

typedef struct {
    float values[NF * KEEP];
    int64_t rows[NF * KEEP];
    int64_t count[NF], hist[NF * SF_TOPK_HIST_BINS];
    double sum[NF];
    float max[NF];
    int32_t hexp[NF];
} result;

static void run(result *res, int batch, int threads, int sparse) {
    sf_topk t;
    CHECK(sf_topk_init(&t, NF, KEEP) == 0);
    omp_set_num_threads(threads);
    for (int b0 = 0; b0 < ROWS; b0 += batch) {
        int B = ROWS - b0 < batch ? ROWS - b0 : batch;
        int rc = sparse
                     ? sf_topk_add_sparse(&t, B, K, &IDX[b0][0], &VAL[b0][0], &CNT[b0], 0, &RID[b0])
                     : sf_topk_add_dense(&t, &Z[b0][0], B, 0, &RID[b0]);
        CHECK(rc == 0);
    }
    CHECK(t.rows == ROWS);
    memset(res, 0, sizeof *res);
    sf_topk_sorted(&t, res->values, res->rows);
    memcpy(res->count, t.count, sizeof res->count);
    memcpy(res->hist, t.hist, sizeof res->hist);
    memcpy(res->sum, t.sum, sizeof res->sum);
    memcpy(res->max, t.max, sizeof res->max);
    memcpy(res->hexp, t.hist_exp, sizeof res->hexp);
    sf_topk_free(&t);
    omp_set_num_threads(omp_get_num_procs());
}

TEST(against_brute_force) {
    result res;
    run(&res, 64, 2, 1);
    static vr all[ROWS];
    int ties = 0;
    for (int j = 0; j < NF; j++) {
        int m = 0;
        double sum = 0;
        float mx = 0;
        for (int b = 0; b < ROWS; b++)
            if (Z[b][j] > 0) {
                all[m].v = Z[b][j];
                all[m].r = RID[b];
                sum += Z[b][j];
                if (Z[b][j] > mx) mx = Z[b][j];
                m++;
            }
        qsort(all, (size_t)m, sizeof(vr), vr_cmp);
        for (int i = 0; i < KEEP; i++) {
            float ev = i < m ? all[i].v : 0.0f;
            int64_t er = i < m ? all[i].r : -1;
            CHECK_MSG(res.values[j * KEEP + i] == ev && res.rows[j * KEEP + i] == er,
                      "feature %d slot %d: got (%g, %lld) want (%g, %lld)", j, i,
                      res.values[j * KEEP + i], (long long)res.rows[j * KEEP + i], ev,
                      (long long)er);
            if (i + 1 < m && i + 1 < KEEP && all[i].v == all[i + 1].v) ties++;
        }
        /* the tie at the cut-off: the (N+1)-th must not beat the N-th */
        CHECK(res.count[j] == m);
        CHECK_NEAR(res.sum[j], sum, 1e-9 * (1 + sum));
        CHECK(res.max[j] == mx);
        /* histogram: direct binning over [0, 2^e), e = frexp exponent of max */
        if (m) {
            int e;
            frexp(mx, &e);
            CHECK(res.hexp[j] == e);
            int64_t h[SF_TOPK_HIST_BINS] = {0};
            for (int i = 0; i < m; i++)
                h[(int)(all[i].v / ldexp(1.0, e) * SF_TOPK_HIST_BINS)]++;
            CHECK(memcmp(h, res.hist + j * SF_TOPK_HIST_BINS, sizeof h) == 0);
        }
    }
    CHECK(ties > 50); /* the data really has ties inside the kept sets */
}

TEST(independent_of_batch_threads_form) {
    static result ref, other;
    run(&ref, ROWS, 1, 0);
    const int batches[] = {1, 3, 64, 999, ROWS};
    const int threads[] = {1, 2, 3, 5};
    for (int bi = 0; bi < 5; bi++)
        for (int ti = 0; ti < 4; ti++)
            for (int sp = 0; sp < 2; sp++) {
                run(&other, batches[bi], threads[ti], sp);
                CHECK_MSG(memcmp(&ref, &other, sizeof ref) == 0,
                          "batch %d threads %d sparse %d differs", batches[bi], threads[ti], sp);
            }
}

TEST(bad_input) {
    sf_topk t;
    CHECK(sf_topk_init(&t, 4, 2) == 0);
    int32_t idx[2] = {1, 4};
    float val[2] = {1, 2};
    CHECK(sf_topk_add_sparse(&t, 1, 2, idx, val, NULL, 0, NULL) == -1);
    CHECK_ERR_HAS("feature index 4");
    idx[1] = 1;
    CHECK(sf_topk_add_sparse(&t, 1, 2, idx, val, NULL, 0, NULL) == -1);
    CHECK_ERR_HAS("listed twice");
    idx[1] = 2;
    val[0] = NAN;
    CHECK(sf_topk_add_sparse(&t, 1, 2, idx, val, NULL, 0, NULL) == -1);
    CHECK_ERR_HAS("non-finite");
    int32_t cnt = 3;
    val[0] = 1;
    CHECK(sf_topk_add_sparse(&t, 1, 2, idx, val, &cnt, 0, NULL) == -1);
    CHECK(t.rows == 0 && t.count[1] == 0); /* nothing added by failed calls */
    cnt = 1;
    CHECK(sf_topk_add_sparse(&t, 1, 2, idx, val, &cnt, 0, NULL) == 0);
    CHECK(t.rows == 1 && t.count[1] == 1 && t.count[2] == 0);
    float z[4] = {0, INFINITY, 0, 0};
    CHECK(sf_topk_add_dense(&t, z, 1, 1, NULL) == -1);
    sf_topk_free(&t);
    CHECK(sf_topk_init(&t, 0, 2) == -1);
    sf_topk_free(&t);
}

TEST(file_round_trip) {
    const char *dir = test_tmpdir("analysis_topk");
    char path[4096];
    snprintf(path, sizeof path, "%s/topk.safetensors", dir);
    sf_topk t;
    CHECK(sf_topk_init(&t, NF, KEEP) == 0);
    CHECK(sf_topk_add_dense(&t, &Z[0][0], ROWS, 0, RID) == 0);
    const char *meta[] = {"dataset", "folder:x", "checkpoint", "ck", NULL};
    CHECK(sf_topk_write(&t, path, meta) == 0);
    static result res;
    sf_topk_sorted(&t, res.values, res.rows);
    sf_topk_file f;
    CHECK(sf_topk_open(&f, path) == 0);
    CHECK(f.n == NF && f.N == KEEP && f.rows == ROWS && f.bins == SF_TOPK_HIST_BINS);
    CHECK(memcmp(f.values, res.values, sizeof res.values) == 0);
    CHECK(memcmp(f.row_ids, res.rows, sizeof res.rows) == 0);
    CHECK(memcmp(f.hist, t.hist, sizeof res.hist) == 0);
    CHECK(memcmp(f.count, t.count, sizeof res.count) == 0);
    CHECK_STR(sf_st_meta(&f.st, "dataset"), "folder:x");
    CHECK_STR(sf_st_meta(&f.st, "format"), "saeflow-topk");
    for (int j = 0; j < NF; j++) {
        CHECK_NEAR(f.density[j], (double)t.count[j] / ROWS, 1e-7);
        CHECK(f.max[j] == t.max[j]);
        if (t.count[j]) CHECK(f.hist_max[j] == ldexpf(1, t.hist_exp[j]));
    }
    sf_topk_close(&f);
    sf_topk_free(&t);
    /* not a top-k file */
    snprintf(path, sizeof path, "%s/other.safetensors", dir);
    sf_st_writer *w = sf_stw_new();
    int64_t s[1] = {2};
    float x[2] = {1, 2};
    sf_stw_add(w, "x", SF_DT_F32, 1, s, x);
    CHECK(sf_stw_write(w, path) == 0);
    sf_stw_free(w);
    CHECK(sf_topk_open(&f, path) == -1);
    CHECK_ERR_HAS("topk_values");
    /* the right names with shapes that disagree, and a row id below -1 */
    float vals[6] = {3, 2, 1, 0, 0, 0}, one[2] = {1, 1};
    int64_t rows[6] = {0, 1, 2, -1, -1, -1}, rows_bad[4] = {0, 1, 2, 3}, cnt[2] = {3, 0},
            hist[64] = {0};
    int64_t s23[2] = {2, 3}, s22[2] = {2, 2}, s2[1] = {2}, sh[2] = {2, 32};
    for (int variant = 0; variant < 2; variant++) {
        w = sf_stw_new();
        sf_stw_add(w, "topk_values", SF_DT_F32, 2, s23, vals);
        if (variant == 0)
            sf_stw_add(w, "topk_rows", SF_DT_I64, 2, s22, rows_bad);
        else {
            rows[5] = -7;
            sf_stw_add(w, "topk_rows", SF_DT_I64, 2, s23, rows);
        }
        sf_stw_add(w, "count", SF_DT_I64, 1, s2, cnt);
        sf_stw_add(w, "hist", SF_DT_I64, 2, sh, hist);
        sf_stw_add(w, "density", SF_DT_F32, 1, s2, one);
        sf_stw_add(w, "mean", SF_DT_F32, 1, s2, one);
        sf_stw_add(w, "max", SF_DT_F32, 1, s2, one);
        sf_stw_add(w, "hist_max", SF_DT_F32, 1, s2, one);
        CHECK(sf_stw_write(w, path) == 0);
        sf_stw_free(w);
        CHECK(sf_topk_open(&f, path) == -1);
        CHECK_ERR_HAS(variant == 0 ? "tensor 'topk_rows': expected I64 [2, 3], got I64 [2, 2]"
                                   : "negative row id");
    }
}

/* Samples across the range: per bin, the S rows of smallest priority, the
 * same for any batch size and thread count. */
static int samp_cmp(const void *a, const void *b) {
    const sf_topk_sample *x = a, *y = b;
    if (x->pri != y->pri) return x->pri < y->pri ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

TEST(samples_across_range) {
    enum { S = SF_TOPK_SAMPLES, NB = SF_TOPK_HIST_BINS };
    static sf_topk_sample ref[NF * NB * S];
    static const int batches[] = {ROWS, 1, 13};
    static const int threads[] = {1, 4, 3};
    for (int v = 0; v < 3; v++) {
        omp_set_num_threads(threads[v]);
        sf_topk t;
        CHECK(sf_topk_init(&t, NF, KEEP) == 0);
        for (int b0 = 0; b0 < ROWS; b0 += batches[v]) {
            int B = ROWS - b0 < batches[v] ? ROWS - b0 : batches[v];
            CHECK(sf_topk_add_sparse(&t, B, K, &IDX[b0][0], &VAL[b0][0], &CNT[b0], 0, &RID[b0]) ==
                  0);
        }
        if (v == 0) {
            memcpy(ref, t.samples, sizeof ref);
            /* brute force over the final histogram range */
            int checked = 0;
            for (int j = 0; j < NF; j++) {
                static sf_topk_sample c[NB][ROWS];
                int nc[NB] = {0};
                for (int b = 0; b < ROWS; b++) {
                    float z = Z[b][j];
                    if (!(z > 0)) continue;
                    int bin = (int)ldexpf(z, 5 - t.hist_exp[j]);
                    c[bin][nc[bin]++] =
                        (sf_topk_sample){sf_topk_sample_pri(RID[b], -1), RID[b], z, -1};
                }
                for (int q = 0; q < NB; q++) {
                    qsort(c[q], (size_t)nc[q], sizeof(sf_topk_sample), samp_cmp);
                    CHECK(nc[q] == t.hist[j * NB + q]);
                    for (int i = 0; i < S; i++) {
                        const sf_topk_sample *got = &t.samples[(j * NB + q) * S + i];
                        if (i < nc[q]) {
                            CHECK(got->row == c[q][i].row && got->val == c[q][i].val);
                            checked++;
                        } else
                            CHECK(got->row == -1);
                    }
                }
            }
            CHECK(checked > 100);
        } else {
            CHECK_MSG(memcmp(ref, t.samples, sizeof ref) == 0,
                      "samples differ, batch %d threads %d", batches[v], threads[v]);
        }
        sf_topk_free(&t);
    }
    omp_set_num_threads(1);
}

/* Token mode: EX examples of TT tokens (CLS + a 2x2 grid) against a
 * brute-force per-example max / argmax / heat map, for batches that cut
 * examples apart and several thread counts; then the file round trip. */
enum { EX = 90, TT = 5, TR = EX * TT };
static float ZT[TR][NF];

static int32_t TIDX[TR][NF];
static float TVAL[TR][NF];
static int32_t TCNT[TR];
static int64_t TROW[TR];
static int32_t TPOS[TR];

static void token_mode(void) {
    sf_rng r;
    sf_rng_seed(&r, 7);
    for (int b = 0; b < TR; b++) {
        TROW[b] = 2 * (b / TT) + 1;      /* increasing dataset rows */
        TPOS[b] = (b % TT + 2 * b) % TT; /* positions in a scrambled order */
        TCNT[b] = 0;
        for (int j = 0; j < NF; j++) {
            ZT[b][j] = sf_rng_below(&r, 3) ? 0.0f : (float)(int)sf_rng_below(&r, 6) * 0.5f;
            if (ZT[b][j] > 0) {
                TIDX[b][TCNT[b]] = j;
                TVAL[b][TCNT[b]++] = ZT[b][j];
            }
        }
    }
    /* brute force */
    static float bv[NF][KEEP];
    static int64_t br[NF][KEEP];
    static int32_t bp[NF][KEEP];
    static uint8_t bh[NF][KEEP][TT];
    for (int j = 0; j < NF; j++) {
        vr c[EX];
        int32_t cp[EX];
        int nc = 0;
        for (int e = 0; e < EX; e++) {
            float m = 0;
            int mp = -1;
            for (int q = 0; q < TT; q++) {
                int b = e * TT + q;
                float v = ZT[b][j];
                if (v > 0 && (v > m || (v == m && TPOS[b] < mp))) m = v, mp = TPOS[b];
            }
            if (mp < 0) continue;
            c[nc].v = m;
            c[nc].r = 2 * e + 1;
            cp[e] = mp;
            nc++;
        }
        qsort(c, (size_t)nc, sizeof(vr), vr_cmp);
        for (int i = 0; i < KEEP; i++) {
            memset(bh[j][i], 0, TT);
            if (i >= nc) {
                bv[j][i] = 0, br[j][i] = -1, bp[j][i] = -1;
                continue;
            }
            int e = (int)(c[i].r - 1) / 2;
            bv[j][i] = c[i].v, br[j][i] = c[i].r, bp[j][i] = cp[e];
            for (int q = 0; q < TT; q++) {
                int b = e * TT + q;
                if (ZT[b][j] > 0) bh[j][i][TPOS[b]] = (uint8_t)lrintf(255.0f * (ZT[b][j] / c[i].v));
            }
        }
    }
    static const int batches[] = {1, 3, 7, TR};
    static const int threads[] = {1, 4};
    static float v[NF * KEEP];
    static int64_t rw[NF * KEEP];
    static int32_t ps[NF * KEEP];
    static uint8_t ht[NF * KEEP * TT];
    for (int bi = 0; bi < 4; bi++)
        for (int ti = 0; ti < 2; ti++) {
            omp_set_num_threads(threads[ti]);
            sf_topk t;
            CHECK(sf_topk_init(&t, NF, KEEP) == 0);
            CHECK(sf_topk_set_tokens(&t, TT, 2, 2, 1) == 0);
            for (int b0 = 0; b0 < TR; b0 += batches[bi]) {
                int B = TR - b0 < batches[bi] ? TR - b0 : batches[bi];
                CHECK(sf_topk_add_tokens(&t, B, NF, &TIDX[b0][0], &TVAL[b0][0], &TCNT[b0],
                                         &TROW[b0], &TPOS[b0]) == 0);
            }
            sf_topk_sorted_tokens(&t, v, rw, ps, ht);
            CHECK(memcmp(v, bv, sizeof v) == 0);
            CHECK(memcmp(rw, br, sizeof rw) == 0);
            CHECK(memcmp(ps, bp, sizeof ps) == 0);
            CHECK(memcmp(ht, bh, sizeof ht) == 0);
            CHECK(t.examples == EX && t.rows == TR);
            if (bi == 1 && ti == 1) { /* file round trip */
                const char *dir = test_tmpdir("analysis_topk_tokens");
                char path[2600];
                snprintf(path, sizeof path, "%s/t.safetensors", dir);
                CHECK(sf_topk_write(&t, path, NULL) == 0);
                sf_topk_file f;
                CHECK(sf_topk_open(&f, path) == 0);
                CHECK(f.T == TT && f.grid_h == 2 && f.grid_w == 2 && f.grid_first == 1);
                CHECK(f.examples == EX);
                CHECK(memcmp(f.pos, bp, sizeof ps) == 0);
                CHECK(memcmp(f.heat, bh, sizeof ht) == 0);
                CHECK(memcmp(f.ex_count, t.ex_count, NF * sizeof(int64_t)) == 0);
                sf_topk_close(&f);
            }
            /* an example's tokens must come together */
            int32_t i1[1] = {0};
            float v1[1] = {1};
            int64_t r_old[1] = {1};
            int32_t p1[1] = {0}, p_bad[1] = {TT};
            int64_t r_new[1] = {1000};
            CHECK(sf_topk_add_tokens(&t, 1, 1, i1, v1, NULL, r_old, p1) == -1);
            CHECK_ERR_HAS("must come together");
            CHECK(sf_topk_add_tokens(&t, 1, 1, i1, v1, NULL, r_new, p_bad) == -1);
            CHECK_ERR_HAS("token position");
            CHECK(sf_topk_add_sparse(&t, 1, 1, i1, v1, NULL, 0, NULL) == -1);
            sf_topk_free(&t);
        }
    omp_set_num_threads(1);
}

int main(void) {
    make_data();
    RUN(token_mode);
    RUN(samples_across_range);
    RUN(against_brute_force);
    RUN(independent_of_batch_threads_form);
    RUN(bad_input);
    RUN(file_round_trip);
    return test_summary();
}
