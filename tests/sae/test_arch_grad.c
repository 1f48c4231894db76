/* Finite-difference checks of the hand-written backward of every
 * architecture other than TopK, term by term: reconstruction, sparsity
 * penalty (L1 x decoder norm, gated L1 + aux reconstruction, JumpReLU L0),
 * nested prefixes (matryoshka), AuxK on dead latents. JumpReLU's threshold
 * gradient is a straight-through pseudo-gradient (no finite difference
 * exists), so it is checked against a scalar re-statement of the paper's
 * formula instead. standard, gated and jumprelu are checked on both the dense and
 * the sparse step (SAEFLOW_ARCH_SPARSE=1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/sae_arch.h"
#include "saeflow/sae_train.h"
#include "test.h"

enum { D = 10, N = 24, B = 6 };

static void make_model(sf_sae *s, sf_sae_arch arch, int k, float *x, uint64_t seed) {
    CHECK(sf_sae_init(s, arch, D, N, k, seed) == 0);
    sf_rng r;
    sf_rng_seed(&r, seed + 100);
    for (int q = 0; q < D; q++)
        s->b_dec[q] = 0.3f * sf_rng_normal(&r);
    for (int j = 0; j < N; j++)
        s->b_enc[j] = 0.05f * sf_rng_normal(&r);
    for (int i = 0; i < N * D; i++)
        s->W_decT[i] *= 1.0f + 0.3f * (float)sf_rng_uniform(&r);
    if (s->r_mag)
        for (int j = 0; j < N; j++)
            s->r_mag[j] = 0.3f * sf_rng_normal(&r);
    if (s->b_mag)
        for (int j = 0; j < N; j++)
            s->b_mag[j] = 0.05f * sf_rng_normal(&r);
    if (s->logthres)
        for (int j = 0; j < N; j++)
            s->logthres[j] = logf(0.05f + 0.1f * (float)sf_rng_uniform(&r));
    for (int i = 0; i < B * D; i++)
        x[i] = sf_rng_normal(&r);
}

static double loss_of(sf_sae_trainer *t, const float *x, int which) {
    sf_sae_metrics m;
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    return which == 1 ? m.auxk : which == 2 ? m.loss - m.auxk : m.loss;
}

/* Central differences at two step sizes; where they disagree a kink (a
 * selection or ReLU boundary) lies within reach and the point is skipped.
 * `skip_param` names a parameter not to difference (pseudo-gradients);
 * only_latents restricts to per-latent rows. */
static const char *only_param = NULL;   /* when set, difference only this parameter */
static const float *grad_offset = NULL; /* subtracted from the analytic gradient of only_param */

static void fd_check(sf_sae *s, sf_sae_trainer *t, const float *x, int which,
                     const char *skip_param, const uint8_t *only_latents, int *checked,
                     int *skipped) {
    sf_sae_metrics m;
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    float *g[SF_SAE_MAX_PARAMS];
    for (int i = 0; i < s->n_params; i++) {
        g[i] = malloc(s->params[i].numel * sizeof(float));
        memcpy(g[i], sf_sae_trainer_grad_of(t, i), s->params[i].numel * sizeof(float));
    }
    const float eps = 2e-3f;
    for (int i = 0; i < s->n_params; i++) {
        sf_sae_param *p = &s->params[i];
        if (skip_param && strstr(skip_param, p->name)) continue;
        if (only_param && strcmp(p->name, only_param)) continue;
        for (size_t e = 0; e < p->numel; e++) {
            if (only_latents) {
                if (!p->per_latent) continue;
                if (!only_latents[e / (p->numel / N)]) continue;
            }
            float orig = p->data[e];
            double fd[2];
            for (int h = 0; h < 2; h++) {
                float st = h ? eps / 2 : eps;
                p->data[e] = orig + st;
                double lp = loss_of(t, x, which);
                p->data[e] = orig - st;
                double lm = loss_of(t, x, which);
                fd[h] = (lp - lm) / (2.0 * st);
            }
            p->data[e] = orig;
            if (fabs(fd[0] - fd[1]) > 2e-3 + 2e-2 * fabs(fd[0])) {
                (*skipped)++;
                continue;
            }
            double an = g[i][e] + (only_param && grad_offset ? grad_offset[e] : 0);
            double tol = 3e-3 + 2e-2 * fabs(fd[1]);
            CHECK_MSG(fabs(fd[1] - an) <= tol, "%s %s[%zu]: fd %.6g analytic %.6g",
                      sf_sae_arch_name(s->arch), p->name, e, fd[1], an);
            (*checked)++;
        }
    }
    for (int i = 0; i < s->n_params; i++)
        free(g[i]);
}

static sf_sae_train_opts opts(void) {
    sf_sae_train_opts o;
    sf_sae_train_opts_default(&o);
    o.auxk_coef = 0;
    o.lmbda = 0.05;
    o.lmbda_warmup_steps = 0;
    o.bandwidth = 0.02;
    return o;
}

static void check_arch(sf_sae_arch arch, int k, int batch_select, const char *skip, uint64_t seed) {
    sf_sae s;
    float x[B * D];
    make_model(&s, arch, k, x, seed);
    if (arch == SF_SAE_MATRYOSHKA) {
        int groups[3] = {4, 8, 12};
        CHECK(sf_sae_set_matryoshka(&s, batch_select, groups, 3) == 0);
    }
    sf_sae_train_opts o = opts();
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    CHECK(t != NULL);
    int checked = 0, skipped = 0;
    fd_check(&s, t, x, 0, skip, NULL, &checked, &skipped);
    int total = 0;
    for (int i = 0; i < s.n_params; i++)
        total += (int)s.params[i].numel;
    fprintf(stderr, "%s%s: %d of %d coordinates checked, %d skipped (kinks)\n",
            sf_sae_arch_name(arch), batch_select ? "/batchtopk" : "", checked, total, skipped);
    CHECK(checked > total / 2);
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
}

TEST(grad_standard) {
    check_arch(SF_SAE_STANDARD, 0, 0, NULL, 1);
}
/* Gated: the aux reconstruction runs through a frozen decoder copy, so the
 * decoder's gradient is that of the loss without the aux term, and the
 * decoder bias's gradient lacks the frozen copy's share (2/B sum (x_aux - x)),
 * re-stated here. Encoder-side parameters see the full loss. */
TEST(grad_gated) {
    check_arch(SF_SAE_GATED, 0, 0, "decoder.weight decoder_bias", 2);
    sf_sae s;
    float x[B * D];
    make_model(&s, SF_SAE_GATED, 0, x, 2);
    sf_sae_train_opts o = opts();
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    int checked = 0, skipped = 0;
    only_param = "decoder.weight";
    fd_check(&s, t, x, 2, NULL, NULL, &checked, &skipped);
    float frozen[D] = {0};
    for (int b = 0; b < B; b++) {
        double xa[D];
        for (int q = 0; q < D; q++)
            xa[q] = s.b_dec[q];
        for (int j = 0; j < N; j++) {
            double a = s.b_enc[j];
            for (int q = 0; q < D; q++)
                a += (double)s.W_enc[j * D + q] * (x[b * D + q] - s.b_dec[q]);
            if (a > 0)
                for (int q = 0; q < D; q++)
                    xa[q] += a * s.W_decT[j * D + q];
        }
        for (int q = 0; q < D; q++)
            frozen[q] += (float)(2.0 / B * (xa[q] - x[b * D + q]));
    }
    only_param = "decoder_bias";
    grad_offset = frozen;
    fd_check(&s, t, x, 0, NULL, NULL, &checked, &skipped);
    only_param = NULL;
    grad_offset = NULL;
    CHECK(checked > N * D / 2);
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
}
TEST(grad_jumprelu) {
    check_arch(SF_SAE_JUMPRELU, 0, 0, "logthres", 3);
}
TEST(grad_batchtopk) {
    check_arch(SF_SAE_BATCHTOPK, 4, 0, NULL, 4);
}
TEST(grad_matryoshka_topk) {
    check_arch(SF_SAE_MATRYOSHKA, 4, 0, NULL, 5);
}
TEST(grad_matryoshka_batchtopk) {
    check_arch(SF_SAE_MATRYOSHKA, 4, 1, NULL, 6);
}

/* The L1 term alone (zero reconstruction signal is impossible, so compare
 * lmbda on/off: the difference of the gradients is the penalty's gradient,
 * checked against finite differences of the difference of the losses). */
TEST(grad_standard_penalty_only) {
    sf_sae s;
    float x[B * D];
    make_model(&s, SF_SAE_STANDARD, 0, x, 11);
    sf_sae_train_opts o = opts();
    o.lmbda = 0.5;
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    int checked = 0, skipped = 0;
    fd_check(&s, t, x, 0, NULL, NULL, &checked, &skipped);
    CHECK(checked > (2 * N * D) / 2);
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
}

/* lmbda warms up linearly: step 0 has no penalty. */
TEST(lmbda_warmup) {
    sf_sae s;
    float x[B * D];
    make_model(&s, SF_SAE_STANDARD, 0, x, 12);
    sf_sae_train_opts o = opts();
    o.lmbda = 1.0;
    o.lmbda_warmup_steps = 4;
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    sf_sae_metrics m;
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    CHECK_NEAR(m.loss, m.l2, 1e-9 * (1 + m.l2));
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
}

/* JumpReLU threshold pseudo-gradient against a scalar re-statement. */
TEST(jumprelu_threshold_ste) {
    sf_sae s;
    float x[B * D];
    make_model(&s, SF_SAE_JUMPRELU, 0, x, 13);
    sf_sae_train_opts o = opts();
    o.bandwidth = 0.2; /* wide window: many entries inside */
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    sf_sae_metrics m;
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    int it = -1;
    for (int i = 0; i < s.n_params; i++)
        if (!strcmp(s.params[i].name, "logthres")) it = i;
    CHECK(it >= 0);
    const float *g = sf_sae_trainer_grad_of(t, it);
    double want[N] = {0};
    int inside = 0;
    for (int b = 0; b < B; b++) {
        double pi[N], xh[D], gx[D];
        for (int j = 0; j < N; j++) {
            double a = s.b_enc[j];
            for (int q = 0; q < D; q++)
                a += (double)s.W_enc[j * D + q] * (x[b * D + q] - s.b_dec[q]);
            pi[j] = a;
        }
        for (int q = 0; q < D; q++)
            xh[q] = s.b_dec[q];
        for (int j = 0; j < N; j++)
            if (pi[j] > exp(s.logthres[j]))
                for (int q = 0; q < D; q++)
                    xh[q] += pi[j] * s.W_decT[j * D + q];
        for (int q = 0; q < D; q++)
            gx[q] = 2.0 / B * (xh[q] - x[b * D + q]);
        for (int j = 0; j < N; j++) {
            double th = exp(s.logthres[j]);
            if (fabs(pi[j] - th) >= o.bandwidth / 2) continue;
            inside++;
            double gz = 0;
            for (int q = 0; q < D; q++)
                gz += s.W_decT[j * D + q] * gx[q];
            want[j] += th * (-(th / o.bandwidth) * gz - o.lmbda / B / o.bandwidth);
        }
    }
    CHECK(inside > 3);
    for (int j = 0; j < N; j++)
        CHECK_NEAR(g[j], want[j], 1e-4 + 1e-3 * fabs(want[j]));
    /* and the L0 part of it is exactly the derivative of the smoothed L0
     * sum clamp((pi - theta + eps/2) / eps, 0, 1): check by differences */
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
}

/* AuxK for batchtopk and matryoshka: dead latents outside the main selection
 * only enter the aux term, so its finite differences are their gradient. */
static void check_auxk(sf_sae_arch arch, uint64_t seed) {
    sf_sae s;
    float x[B * D];
    make_model(&s, arch, 3, x, seed);
    for (int j = 0; j < N; j++)
        s.b_enc[j] += 0.2f;
    sf_sae_train_opts o = opts();
    o.auxk_coef = 0.5;
    o.aux_k = 5;
    o.bodycount = 100;
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, B, s.k);
    sf_sae_metrics m;
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    int64_t *since = sf_sae_trainer_since_fired(t);
    uint8_t used[N] = {0}, only[N] = {0};
    CHECK(sf_sae_encode(&s, x, B, &c) == 0);
    if (arch == SF_SAE_MATRYOSHKA)
        for (int b = 0; b < B; b++)
            for (int u = 0; u < c.cnt[b]; u++)
                used[c.idx[b * s.k + u]] = 1;
    if (arch == SF_SAE_BATCHTOPK) {
        /* batch selection: top 3 * B of all ReLU pre-activations */
        float v[B * N];
        for (int b = 0; b < B; b++)
            for (int j = 0; j < N; j++) {
                double a = s.b_enc[j];
                for (int q = 0; q < D; q++)
                    a += (double)s.W_enc[j * D + q] * (x[b * D + q] - s.b_dec[q]);
                v[b * N + j] = (float)a;
            }
        float sorted[B * N];
        memcpy(sorted, v, sizeof v);
        for (int i = 0; i < B * N; i++)
            for (int u = i + 1; u < B * N; u++)
                if (sorted[u] > sorted[i]) {
                    float tt = sorted[i];
                    sorted[i] = sorted[u];
                    sorted[u] = tt;
                }
        float T = sorted[3 * B - 1];
        for (int b = 0; b < B; b++)
            for (int j = 0; j < N; j++)
                if (v[b * N + j] >= T && v[b * N + j] > 0) used[j] = 1;
    }
    int nd = 0;
    for (int j = 0; j < N; j++) {
        since[j] = !used[j] ? 100 : 0;
        only[j] = !used[j];
        nd += only[j];
    }
    CHECK(nd > 4);
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    CHECK(m.auxk > 0);
    int checked = 0, skipped = 0;
    fd_check(&s, t, x, 1, NULL, only, &checked, &skipped);
    fprintf(stderr, "%s auxk: %d checked, %d skipped\n", sf_sae_arch_name(arch), checked, skipped);
    CHECK(checked > 40);
    sf_sae_codes_free(&c);
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
}
TEST(grad_auxk_batchtopk) {
    check_auxk(SF_SAE_BATCHTOPK, 21);
}
TEST(grad_auxk_matryoshka) {
    check_auxk(SF_SAE_MATRYOSHKA, 22);
}

/* Ghost grads: the gradient reaches only dead latents, and for them it is
 * the derivative of the ghost MSE with the per-row scale and the MSE ratio
 * held at their current values (re-stated here in double). */
TEST(ghost_grads) {
    /* ghost grads run on the dense step; compare with the dense step */
    const char *env = getenv("SAEFLOW_ARCH_SPARSE");
    char saved[8] = "";
    if (env) snprintf(saved, sizeof saved, "%s", env);
    setenv("SAEFLOW_ARCH_SPARSE", "0", 1);
    sf_sae s;
    float x[B * D];
    make_model(&s, SF_SAE_STANDARD, 0, x, 31);
    sf_sae_train_opts o = opts();
    o.lmbda = 0;
    o.ghost_grads = 1;
    o.bodycount = 100;
    sf_sae_trainer *t = sf_sae_trainer_new(&s, &o, B);
    int64_t *since = sf_sae_trainer_since_fired(t);
    uint8_t dead[N];
    for (int j = 0; j < N; j++)
        since[j] = (dead[j] = (j % 3 == 0)) ? 100 : 0;
    sf_sae_metrics m;
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    CHECK_NEAR(m.auxk, m.l2, 1e-6 * m.l2); /* ghost loss rescaled to the MSE */
    float gw_on[N * D];
    memcpy(gw_on, sf_sae_trainer_grad_of(t, 0), sizeof gw_on);
    sf_sae_trainer_free(t);
    o.ghost_grads = 0;
    t = sf_sae_trainer_new(&s, &o, B);
    CHECK(sf_sae_trainer_grad(t, x, B, &m) == 0);
    const float *gw_off = sf_sae_trainer_grad_of(t, 0);
    /* re-statement of the ghost gradient wrt W_enc of dead latents */
    double want[N * D];
    memset(want, 0, sizeof want);
    double e[B][D], za[B][N], h[B][D], sb[B], raw = 0, mse = 0;
    for (int b = 0; b < B; b++) {
        double pi[N], xh[D];
        for (int j = 0; j < N; j++) {
            double a = s.b_enc[j];
            for (int q = 0; q < D; q++)
                a += (double)s.W_enc[j * D + q] * (x[b * D + q] - s.b_dec[q]);
            pi[j] = a;
        }
        for (int q = 0; q < D; q++)
            xh[q] = s.b_dec[q];
        for (int j = 0; j < N; j++)
            if (pi[j] > 0)
                for (int q = 0; q < D; q++)
                    xh[q] += pi[j] * s.W_decT[j * D + q];
        double ee = 0, hh = 0;
        for (int q = 0; q < D; q++) {
            e[b][q] = x[b * D + q] - xh[q];
            ee += e[b][q] * e[b][q];
            h[b][q] = 0;
        }
        for (int j = 0; j < N; j++) {
            za[b][j] = dead[j] ? exp(pi[j]) : 0;
            for (int q = 0; q < D; q++)
                h[b][q] += za[b][j] * s.W_decT[j * D + q];
        }
        for (int q = 0; q < D; q++)
            hh += h[b][q] * h[b][q];
        sb[b] = sqrt(ee) / (2 * sqrt(hh));
        for (int q = 0; q < D; q++) {
            double r = sb[b] * h[b][q] - e[b][q];
            raw += r * r;
        }
        mse += ee;
    }
    double c = mse / raw;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < N; j++) {
            if (!dead[j]) continue;
            double gz = 0;
            for (int q = 0; q < D; q++)
                gz += s.W_decT[j * D + q] * c * 2.0 / B * (sb[b] * h[b][q] - e[b][q]);
            double gp = sb[b] * za[b][j] * gz;
            for (int q = 0; q < D; q++)
                want[j * D + q] += gp * (x[b * D + q] - s.b_dec[q]);
        }
    for (int j = 0; j < N; j++)
        for (int q = 0; q < D; q++) {
            double diff = (double)gw_on[j * D + q] - gw_off[j * D + q];
            if (!dead[j])
                CHECK(diff == 0);
            else
                CHECK_NEAR(diff, want[j * D + q], 1e-4 + 1e-3 * fabs(want[j * D + q]));
        }
    sf_sae_trainer_free(t);
    sf_sae_free(&s);
    if (env)
        setenv("SAEFLOW_ARCH_SPARSE", saved, 1);
    else
        unsetenv("SAEFLOW_ARCH_SPARSE");
}

int main(void) {
    RUN(grad_standard);
    RUN(grad_gated);
    RUN(grad_jumprelu);
    RUN(grad_batchtopk);
    RUN(grad_matryoshka_topk);
    RUN(grad_matryoshka_batchtopk);
    RUN(grad_standard_penalty_only);
    RUN(lmbda_warmup);
    RUN(jumprelu_threshold_ste);
    RUN(grad_auxk_batchtopk);
    RUN(grad_auxk_matryoshka);
    RUN(ghost_grads);
    /* standard, gated and jumprelu switch to the sparse step once codes are sparse:
     * the same checks with it forced */
    setenv("SAEFLOW_ARCH_SPARSE", "1", 1);
    RUN(grad_standard);
    RUN(grad_gated);
    RUN(grad_jumprelu);
    RUN(grad_standard_penalty_only);
    RUN(lmbda_warmup);
    RUN(jumprelu_threshold_ste);
    unsetenv("SAEFLOW_ARCH_SPARSE");
    return test_summary();
}
