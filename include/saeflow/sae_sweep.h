/* Sweeps: train a grid of SAEs (architecture x k-or-lmbda x expansion) on the
 * same data in lockstep (each batch is read and shuffled once and fed to
 * every model), evaluate each (FVU, L0, dead, MMCS against a known
 * dictionary), and write a table (TSV + markdown) and an SVG plot of the
 * L0-vs-FVU frontier (and MMCS vs L0 when a dictionary is given). */
#ifndef SAEFLOW_SAE_SWEEP_H
#define SAEFLOW_SAE_SWEEP_H

#include "saeflow/sae_eval.h"
#include "saeflow/sae_train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    sf_sae_arch arch;
    int batch_select; /* matryoshka over BatchTopK */
    int k;            /* topk, batchtopk, matryoshka */
    double lmbda;     /* standard, gated, jumprelu */
    int expansion;
} sf_sweep_point;

typedef struct {
    sf_sae_train_opts train; /* shared optimiser settings (lmbda per point) */
    int batch_size, num_epochs;
    uint64_t seed;
    double jumpthreshold;
    const char *outdir; /* checkpoints under outdir/<name>/ when save_checkpoints */
    int save_checkpoints;
    int64_t eval_rows; /* <= 0: all rows */
    const float *dict; /* (n_true, d) or NULL */
    int n_true;
    int quiet;
} sf_sweep_opts;

typedef struct {
    sf_sweep_point p;
    char name[64]; /* e.g. "jumprelu-l0.3-x4" */
    sf_sae_eval_result r;
    double train_seconds; /* time in this model's steps */
} sf_sweep_result;

/* Label of an architecture in sweep output ("matryoshka-batchtopk" etc.). */
const char *sf_sweep_arch_label(const sf_sweep_point *p);
int sf_sae_sweep(const sf_sae_data *D, const sf_sweep_point *pts, int npts, const sf_sweep_opts *o,
                 sf_sweep_result *res);
int sf_sweep_write_tsv(const sf_sweep_result *r, int n, const char *path);
int sf_sweep_write_markdown(const sf_sweep_result *r, int n, const char *path);
/* The SVG: L0 (log axis) vs FVU per architecture, each architecture's
 * Pareto frontier drawn as a line; a second panel MMCS vs L0 when known. */
int sf_sweep_write_svg(const sf_sweep_result *r, int n, const char *path, const char *title);

#ifdef __cplusplus
}
#endif
#endif
