/* The epoch loop: shuffle, gather, step, log, checkpoint. */
#include <math.h>
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

static int save_ckpt(sf_sae *s, const sf_sae_run_opts *o) {
    if (sf_sae_save(s, o->outdir)) return sf_error_prefix("saving checkpoint");
    return 0;
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
    if (sf_sae_data_check_finite(D)) return -1;
    const int B = (int)(o->batch_size < D->N ? o->batch_size : D->N);
    /* Data parallel under MPI (docs/mpi.md): every rank draws the same
     * permutation and takes its slice of B / R rows of each global batch. */
    const int R = sf_dist_size(), rank = sf_dist_rank(), lead = rank == 0;
    if (R > 1) {
        if (s->arch != SF_SAE_TOPK)
            return sf_error("under MPI only the topk architecture is data-parallel so far (got %s)",
                            sf_sae_arch_name(s->arch));
        if (o->train.resample_every > 0)
            return sf_error("under MPI dead-latent resampling is not supported yet");
        if (B % R) return sf_error("batch_size %d is not divisible by the %d MPI ranks", B, R);
    }
    const int Bl = B / R;
    sf_sae_trainer *t = sf_sae_trainer_new(s, &o->train, Bl);
    if (t) sf_sae_trainer_set_data(t, D);
    if (!t) return -1;
    struct stat st_out;
    const int had_dir = stat(o->outdir, &st_out) == 0;
    if (lead && sf_mkdirs(o->outdir)) {
        sf_sae_trainer_free(t);
        return -1;
    }
    char *mpath = sf_path_join(o->outdir, "metrics.jsonl");
    sf_atomic_file mf;
    memset(&mf, 0, sizeof mf);
    /* rank 0 alone writes metrics and checkpoints; the others write nothing */
    FILE *mfp = NULL;
    if (lead) {
        if (sf_atomic_open(&mf, mpath)) {
            free(mpath);
            sf_sae_trainer_free(t);
            return -1;
        }
        mfp = mf.fp;
    }
    int64_t *perm = sf_malloc((size_t)D->N * sizeof(int64_t));
    float *x = sf_malloc_aligned((size_t)Bl * D->d * sizeof(float));
    sf_rng rng;
    sf_rng_seed(&rng, o->seed);
    /* Drop the last partial batch (as a DataLoader with drop_last would):
     * every step sees B rows, so the loss scale is constant. */
    const int64_t steps_per_epoch = D->N / B;
    const int64_t total = steps_per_epoch * o->num_epochs;
    sf_progress pb;
    if (lead) sf_progress_start(&pb, "train", (uint64_t)(total * B), "samples");
    sf_sae_metrics m;
    memset(&m, 0, sizeof m);
    int rc = 0;
    int64_t step = 0;
    char line[2048], extra[128];
    double t0 = sf_now();
    for (int ep = 0; ep < o->num_epochs && !rc; ep++) {
        for (int64_t i = 0; i < D->N; i++)
            perm[i] = i;
        sf_rng_shuffle_u64(&rng, (uint64_t *)perm, (size_t)D->N);
        for (int64_t it = 0; it < steps_per_epoch; it++) {
            const int64_t *rows = perm + it * B + (int64_t)rank * Bl;
            if (sf_sae_data_gather(D, rows, Bl, x) || sf_sae_trainer_step(t, x, Bl, &m)) {
                sf_error_prefix("step %lld", (long long)step);
                rc = -1;
                break;
            }
            step++;
            if (!lead) continue;
            sf_sae_metrics_json(&m, step, ep, step * B, line, sizeof line);
            fprintf(mfp, "%s\n", line);
            snprintf(extra, sizeof extra, " loss %.4g l0 %.1f dead %.3f", m.loss, m.l0, m.dead);
            sf_progress_update(&pb, (uint64_t)(step * B), extra);
            if (o->save_every > 0 && step % o->save_every == 0 && step < total) {
                if (save_ckpt(s, o)) {
                    rc = -1;
                    break;
                }
            }
        }
    }
    double el = sf_now() - t0;
    if (R > 1 && rc) {
        /* The other ranks wait in the next MPI_Allreduce: stop them all with
         * this rank's message. (When another rank fails, rank 0 is killed
         * and its metrics.jsonl.tmp is left behind.) */
        if (lead) sf_atomic_abort(&mf);
        sf_dist_abort(1, sf_errmsg());
    }
    if (lead) {
        if (!rc && save_ckpt(s, o)) rc = -1;
        if (!rc) {
            rc = sf_atomic_commit(&mf);
        } else {
            sf_atomic_abort(&mf);
            /* leave no empty checkpoint folder behind (rmdir fails if not empty) */
            if (!had_dir) rmdir(o->outdir);
        }
        sf_progress_finish(&pb, rc ? " failed" : "");
    }
    if (R > 1 && sf_dist_barrier()) rc = -1; /* checkpoint complete before any rank returns */
    if (!rc && !o->quiet && lead) {
        const sf_sae_timing *tm = sf_sae_trainer_timing(t);
        printf("trained %lld steps (%d epochs, batch %d) in %.1f s, %.0f samples/s\n",
               (long long)step, o->num_epochs, B, el, el > 0 ? (double)step * B / el : 0.0);
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
                   100.0 * (double)tm->pf_rows / ((double)step * Bl),
                   (double)tm->pf_cands / (double)tm->pf_rows, s->k);
        printf("checkpoint: %s (config.json, model.safetensors, metrics.jsonl)\n", o->outdir);
    }
    if (last) *last = m;
    free(mpath);
    free(perm);
    sf_free_aligned(x);
    sf_sae_trainer_free(t);
    return rc;
}
