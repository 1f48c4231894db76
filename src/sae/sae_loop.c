/* The epoch loop: shuffle, gather, step, log, checkpoint. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saeflow/dist.h"
#include "saeflow/sae_train.h"

int sf_sae_metrics_json(const sf_sae_metrics *m, int64_t step, int epoch, int64_t samples,
                        char *buf, size_t n) {
    size_t w = (size_t)snprintf(
        buf, n,
        "{\"step\": %lld, \"epoch\": %d, \"samples\": %lld, \"loss\": %.9g, \"l2\": %.9g, "
        "\"l2_normalised\": %.9g, \"l1\": %.9g, \"l0\": %.9g, \"cossim\": %.9g, "
        "\"alive\": %.9g, \"survival\": %.9g, \"dead\": %.9g, \"auxk\": %.9g, \"lr\": %.9g, "
        "\"grad_norm\": %.9g, \"log10_density_hist\": {\"lo\": -6, \"width\": 0.5, \"counts\": [",
        (long long)step, epoch, (long long)samples, m->loss, m->l2, m->l2_normalised, m->l1, m->l0,
        m->cossim, m->alive, m->survival, m->dead, m->auxk, m->lr, m->grad_norm);
    for (int i = 0; i < SF_SAE_HIST_BINS && w < n; i++)
        w += (size_t)snprintf(buf + w, n - w, "%s%d", i ? ", " : "", m->hist[i]);
    if (w < n) w += (size_t)snprintf(buf + w, n - w, "]}}");
    return w < n ? 0 : -1;
}

/* Test hooks (docs/DEVELOPING.md): SAEFLOW_TEST_KILL=[RANK:]STEP sends
 * SIGKILL to the process after global step STEP (and its checkpoint);
 * SAEFLOW_TEST_KILL_SAVE=STEP between the trainer state and the checkpoint
 * of step STEP; SAEFLOW_TEST_FAIL=[RANK:]STEP makes reading that step's rows
 * fail. The resume and fault tests use them. */
static int64_t test_hook(const char *env) {
    const char *v = getenv(env);
    if (!v || !*v) return -1;
    int rank = 0;
    const char *colon = strchr(v, ':');
    if (colon) {
        rank = atoi(v);
        v = colon + 1;
    }
    return rank == sf_dist_rank() ? (int64_t)strtoll(v, NULL, 10) : -1;
}

/* The trainer state (first, with the data position) then the checkpoint,
 * each atomically. A crash between the two leaves a state one save ahead of
 * the checkpoint: resume reads the weights from the state, so it is still
 * whole, and the next save rewrites the checkpoint. */
static int save_all(sf_sae *s, sf_sae_trainer *t, const sf_sae_run_opts *o, int64_t step, int epoch,
                    const sf_rng *rng_epoch, int64_t N, int B) {
    sf_st_writer *w = sf_stw_new();
    char v[160];
    int rc = sf_sae_trainer_state_add(t, w);
    snprintf(v, sizeof v, "%lld", (long long)step);
    sf_stw_meta(w, "run_step", v);
    snprintf(v, sizeof v, "%d", epoch);
    sf_stw_meta(w, "run_epoch", v);
    snprintf(v, sizeof v, "%016llx%016llx%016llx%016llx", (unsigned long long)rng_epoch->s[0],
             (unsigned long long)rng_epoch->s[1], (unsigned long long)rng_epoch->s[2],
             (unsigned long long)rng_epoch->s[3]);
    sf_stw_meta(w, "run_rng_epoch", v);
    snprintf(v, sizeof v, "%lld %d %llu", (long long)N, B, (unsigned long long)o->seed);
    sf_stw_meta(w, "run_rows_batch_seed", v);
    char *spath = sf_path_join(o->outdir, SF_SAE_STATE_FILE);
    if (!rc) rc = sf_stw_write(w, spath);
    sf_stw_free(w);
    free(spath);
    if (!rc && step == test_hook("SAEFLOW_TEST_KILL_SAVE")) raise(SIGKILL); /* between the two */
    if (!rc && sf_sae_save(s, o->outdir)) rc = -1;
    return rc ? sf_error_prefix("saving checkpoint") : 0;
}

typedef struct {
    int64_t step;
    int epoch;
    sf_rng rng;
} run_pos;

/* --resume: the trainer state and the run's position from outdir; checks
 * that the data, batch size and seed are those of the saved run. */
static int load_resume(sf_sae_trainer *t, const sf_sae_run_opts *o, int64_t N, int B,
                       run_pos *pos) {
    char *spath = sf_path_join(o->outdir, SF_SAE_STATE_FILE);
    sf_st f;
    int rc = sf_st_open(&f, spath);
    free(spath);
    if (rc) return sf_error_prefix("--resume");
    rc = sf_sae_trainer_state_load(t, &f);
    const char *st = sf_st_meta(&f, "run_step"), *ep = sf_st_meta(&f, "run_epoch"),
               *rg = sf_st_meta(&f, "run_rng_epoch"), *rb = sf_st_meta(&f, "run_rows_batch_seed");
    char want[160];
    snprintf(want, sizeof want, "%lld %d %llu", (long long)N, B, (unsigned long long)o->seed);
    if (!rc && (!st || !ep || !rg || !rb || strlen(rg) != 64))
        rc = sf_error("%s: no run position (run_step, run_epoch, run_rng_epoch)", f.path);
    if (!rc && strcmp(rb, want))
        rc = sf_error("%s: saved by a run on other data, batch size or seed (rows, batch, seed: "
                      "%s; now %s)",
                      f.path, rb, want);
    if (!rc) {
        pos->step = strtoll(st, NULL, 10);
        pos->epoch = atoi(ep);
        for (int i = 0; i < 4; i++) {
            char h[17];
            memcpy(h, rg + 16 * i, 16);
            h[16] = 0;
            pos->rng.s[i] = strtoull(h, NULL, 16);
        }
        if (pos->step != sf_sae_trainer_steps(t) || pos->epoch < 0)
            rc = sf_error("%s: run_step %lld differs from the trainer's %lld steps", f.path,
                          (long long)pos->step, (long long)sf_sae_trainer_steps(t));
    }
    sf_st_close(&f);
    return rc ? sf_error_prefix("--resume") : 0;
}

FILE *sf_sae_metrics_open(const char *path, int64_t step) {
    if (step == 0) {
        FILE *fp = fopen(path, "w");
        if (!fp) sf_error("%s: cannot create: %s", path, strerror(errno));
        return fp;
    }
    size_t len = 0;
    char *m = sf_read_file(path, &len);
    if (!m) {
        sf_error_prefix("--resume: the run's metrics");
        return NULL;
    }
    size_t keep = 0;
    int64_t lines = 0;
    while (keep < len && lines < step) {
        char *nl = memchr(m + keep, '\n', len - keep);
        if (!nl) break;
        keep = (size_t)(nl - m) + 1, lines++;
    }
    free(m);
    if (lines < step) {
        sf_error("%s: %lld complete lines, the checkpoint is at step %lld", path, (long long)lines,
                 (long long)step);
        return NULL;
    }
    if (truncate(path, (off_t)keep)) {
        sf_error("%s: truncate: %s", path, strerror(errno));
        return NULL;
    }
    FILE *fp = fopen(path, "a");
    if (!fp) sf_error("%s: cannot append: %s", path, strerror(errno));
    return fp;
}

int sf_sae_train_run(sf_sae *s, const sf_sae_data *D, const sf_sae_run_opts *o,
                     sf_sae_metrics *last) {
    if (D->d != s->d)
        return sf_error("data width %d (tensor '%s' in %s) does not match the SAE's features %d",
                        D->d, D->key, D->files[0].path, s->d);
    if (o->batch_size <= 0) return sf_error("batch_size must be positive");
    if (o->num_epochs <= 0) return sf_error("num_epochs must be positive");
    /* Validate all data first: a NaN discovered mid-run would otherwise leave
     * a half-trained checkpoint behind. One streaming pass over the mmap. */
    if (sf_dist_check(sf_sae_data_check_finite(D) != 0)) return -1; /* all ranks stop */
    const int B = (int)(o->batch_size < D->N ? o->batch_size : D->N);
    /* Data parallel under MPI (docs/mpi.md): every rank draws the same
     * permutation and takes its slice of B / R rows of each global batch. */
    const int R = sf_dist_size(), rank = sf_dist_rank(), lead = rank == 0;
    if (R > 1) {
        if (o->train.resample_every > 0 && o->train.resample_pool <= 0)
            return sf_error("under MPI dead-latent resampling needs a pool (--resample_pool > 0): "
                            "the current batch is split across ranks");
        if (B % R) return sf_error("batch_size %d is not divisible by the %d MPI ranks", B, R);
    }
    const int Bl = B / R;
    sf_sae_trainer *t = sf_sae_trainer_new(s, &o->train, Bl);
    if (t) sf_sae_trainer_set_data(t, D);
    if (!t) return -1;
    /* Drop the last partial batch (as a DataLoader with drop_last would):
     * every step sees B rows, so the loss scale is constant. */
    const int64_t steps_per_epoch = D->N / B;
    const int64_t total = steps_per_epoch * o->num_epochs;
    run_pos pos = {0, 0, {{0}}};
    sf_rng_seed(&pos.rng, o->seed);
    if (sf_dist_check(o->resume && load_resume(t, o, D->N, B, &pos))) {
        sf_sae_trainer_free(t);
        return -1;
    }
    if (pos.step > total) {
        sf_sae_trainer_free(t);
        return sf_error("--resume: the saved run is at step %lld, past this run's %lld steps",
                        (long long)pos.step, (long long)total);
    }
    struct stat st_out;
    const int had_dir = stat(o->outdir, &st_out) == 0;
    char *mpath = sf_path_join(o->outdir, "metrics.jsonl");
    /* rank 0 alone writes metrics and checkpoints; the others write nothing */
    FILE *mfp = NULL;
    int rc = 0;
    if (lead) {
        if (sf_mkdirs(o->outdir)) rc = -1;
        if (!rc && !o->resume) { /* a stale state must not pair with this run's files */
            char *spath = sf_path_join(o->outdir, SF_SAE_STATE_FILE);
            if (unlink(spath) && errno != ENOENT)
                rc = sf_error("%s: cannot remove: %s", spath, strerror(errno));
            free(spath);
        }
        if (!rc && !(mfp = sf_sae_metrics_open(mpath, pos.step))) rc = -1;
    }
    if (sf_dist_check(rc != 0)) {
        free(mpath);
        sf_sae_trainer_free(t);
        return -1;
    }
    int64_t *perm = sf_malloc((size_t)D->N * sizeof(int64_t));
    float *x = sf_malloc_aligned((size_t)Bl * D->d * sizeof(float));
    sf_rng rng = pos.rng, rng_epoch;
    const int64_t kill_at = test_hook("SAEFLOW_TEST_KILL"),
                  fail_at = test_hook("SAEFLOW_TEST_FAIL");
    sf_progress pb;
    if (lead) sf_progress_start(&pb, "train", (uint64_t)(total * B), "samples");
    sf_sae_metrics m;
    memset(&m, 0, sizeof m);
    int64_t step = pos.step;
    const int64_t step0 = step;
    int local_err = 0;   /* this rank failed since the last collective check */
    int coll_failed = 0; /* a collective check failed: every rank knows */
    int step_failed = 0; /* failed inside a step, possibly alone (mid-reduction) */
    char line[2048], extra[128];
    double t0 = sf_now();
    for (int ep = pos.epoch; ep < o->num_epochs && !rc; ep++) {
        rng_epoch = rng; /* the shuffle RNG before this epoch's draw, for a resume */
        for (int64_t i = 0; i < D->N; i++)
            perm[i] = i;
        sf_rng_shuffle_u64(&rng, (uint64_t *)perm, (size_t)D->N);
        for (int64_t it = step - (int64_t)ep * steps_per_epoch; it < steps_per_epoch; it++) {
            const int64_t *rows = perm + it * B + (int64_t)rank * Bl;
            if (!local_err && (step == fail_at ? sf_error("injected failure (SAEFLOW_TEST_FAIL)")
                                               : sf_sae_data_gather(D, rows, Bl, x)))
                local_err = sf_error_prefix("step %lld", (long long)step);
            /* a rank that fails (bad rows, a failed save on rank 0) stops
             * every rank here, between steps: no rank waits in a reduction
             * the failed one never joins */
            if (sf_dist_check(local_err != 0)) {
                rc = -1, coll_failed = 1;
                break;
            }
            if (sf_sae_trainer_step(t, x, Bl, &m)) {
                sf_error_prefix("step %lld", (long long)step);
                rc = -1, step_failed = 1;
                break;
            }
            step++;
            if (lead) {
                sf_sae_metrics_json(&m, step, ep, step * B, line, sizeof line);
                if (fprintf(mfp, "%s\n", line) < 0 || fflush(mfp))
                    local_err = sf_error("%s: write: %s", mpath, strerror(errno));
                snprintf(extra, sizeof extra, " loss %.4g l0 %.1f dead %.3f", m.loss, m.l0, m.dead);
                sf_progress_update(&pb, (uint64_t)(step * B), extra);
                if (!local_err && o->save_every > 0 && step % o->save_every == 0 && step < total)
                    local_err = save_all(s, t, o, step, ep, &rng_epoch, D->N, B);
            }
            if (step == kill_at) raise(SIGKILL);
        }
    }
    if (!rc && sf_dist_check(local_err != 0)) rc = -1, coll_failed = 1;
    double el = sf_now() - t0;
    if (R > 1 && step_failed) {
        /* An error inside a step, maybe on this rank alone: the others may
         * wait in a reduction it left. End them all with its message (rank 0
         * closes nothing half-written: every file is atomic or appended). */
        if (lead && mfp) fflush(mfp);
        sf_dist_abort(1, sf_errmsg());
    }
    if (lead) {
        /* the state at the end lets --resume extend a finished run by epochs */
        if (!rc && save_all(s, t, o, step, o->num_epochs, &rng, D->N, B)) rc = -1;
        if (mfp && fclose(mfp) && !rc) rc = sf_error("%s: close: %s", mpath, strerror(errno));
        if (rc && !had_dir && step == step0) {
            /* nothing trained: leave no empty folder behind */
            unlink(mpath);
            rmdir(o->outdir);
        }
        sf_progress_finish(&pb, rc ? " failed" : "");
    }
    /* the final checkpoint complete (or its failure known) before any rank returns */
    if (R > 1 && !coll_failed && sf_dist_check(rc != 0)) rc = -1;
    if (!rc && !o->quiet && lead) {
        const sf_sae_timing *tm = sf_sae_trainer_timing(t);
        printf("trained %lld steps (%d epochs, batch %d) in %.1f s, %.0f samples/s\n",
               (long long)(step - step0), o->num_epochs, B, el,
               el > 0 ? (double)(step - step0) * B / el : 0.0);
        printf("final: loss %.6g  l2_normalised %.4g  l0 %.2f  cossim %.4f  survival %.3f  dead "
               "%.3f  auxk %.4g\n",
               m.loss, m.l2_normalised, m.l0, m.cossim, m.survival, m.dead, m.auxk);
        double st = tm->encode + tm->aux + tm->backward + tm->adam;
        if (st > 0)
            printf(
                "time: encoder GEMM %.0f%%, rest of forward %.0f%%, colsums+auxk %.0f%%, backward "
                "%.0f%%, adam %.0f%%\n",
                100 * tm->gemm / st, 100 * (tm->encode - tm->gemm) / st, 100 * tm->aux / st,
                100 * tm->backward / st, 100 * tm->adam / st);
        if (tm->pf_rows > 0)
            printf("exact TopK via the int16 pre-filter on %.0f%% of rows: %.1f F32 candidates "
                   "per row (k = %d, plus AuxK's while latents are dead)\n",
                   100.0 * (double)tm->pf_rows / ((double)(step - step0) * Bl),
                   (double)tm->pf_cands / (double)tm->pf_rows, s->k);
        if (R > 1 && st > 0) {
            size_t nf = 0;
            for (int i = 0; i < s->n_params; i++)
                nf += s->params[i].numel;
            printf("MPI: %d ranks, the gradient allreduce (%zu floats = %.1f MB per step) took "
                   "%.0f%% of the step on rank 0\n",
                   R, nf, 4e-6 * (double)nf, 100 * tm->comm / st);
        }
        printf("checkpoint: %s (config.json, model.safetensors, metrics.jsonl, %s)\n", o->outdir,
               SF_SAE_STATE_FILE);
    }
    if (last) *last = m;
    free(mpath);
    free(perm);
    sf_free_aligned(x);
    sf_sae_trainer_free(t);
    return rc;
}
