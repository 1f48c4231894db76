/* FLUX sampler pieces (see include/saeflow/flux_sched.h): the
 * FlowMatchEulerDiscreteScheduler schedule, the Euler step, latent packing,
 * image ids and the initial noise, in the arithmetic diffusers uses:
 * numpy float64 for linspace and mu, numpy float32 (NEP 50: a Python float
 * meeting a float32 array is cast to float32 first) for the shift, torch F32
 * for timesteps and the step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/flux_sched.h"

void sf_flow_sched_config_default(sf_flow_sched_config *c) {
    c->num_train_timesteps = 1000;
    c->shift = 1.0;
    c->use_dynamic_shifting = 0;
    c->base_shift = 0.5, c->max_shift = 1.15;
    c->base_image_seq_len = 256, c->max_image_seq_len = 4096;
    c->time_shift_linear = 0;
}

static int get_num(const cJSON *o, const char *key, double *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return sf_error("%s: \"%s\" must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return sf_error("%s: \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

int sf_flow_sched_config_load(sf_flow_sched_config *c, const char *path) {
    sf_flow_sched_config_default(c);
    size_t len;
    char *txt = sf_read_file(path, &len);
    if (!txt) return -1;
    cJSON *root = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sf_error("%s: not a JSON object", path);
    }
    int rc = -1;
    double ntt = c->num_train_timesteps, bsl = (double)c->base_image_seq_len,
           msl = (double)c->max_image_seq_len;
    if (get_num(root, "num_train_timesteps", &ntt, path) ||
        get_num(root, "shift", &c->shift, path) ||
        get_bool(root, "use_dynamic_shifting", &c->use_dynamic_shifting, path) ||
        get_num(root, "base_shift", &c->base_shift, path) ||
        get_num(root, "max_shift", &c->max_shift, path) ||
        get_num(root, "base_image_seq_len", &bsl, path) ||
        get_num(root, "max_image_seq_len", &msl, path))
        goto out;
    if (ntt != (double)(int)ntt || ntt < 1) {
        sf_error("%s: \"num_train_timesteps\" must be a positive integer", path);
        goto out;
    }
    if (bsl != floor(bsl) || msl != floor(msl) || msl == bsl) {
        sf_error("%s: \"base_image_seq_len\" and \"max_image_seq_len\" must be distinct integers",
                 path);
        goto out;
    }
    if (!(c->shift > 0)) {
        sf_error("%s: \"shift\" must be positive", path);
        goto out;
    }
    c->num_train_timesteps = (int)ntt;
    c->base_image_seq_len = (int64_t)bsl, c->max_image_seq_len = (int64_t)msl;
    const cJSON *tst = cJSON_GetObjectItemCaseSensitive(root, "time_shift_type");
    if (tst && !cJSON_IsNull(tst)) {
        if (cJSON_IsString(tst) && !strcmp(tst->valuestring, "exponential"))
            c->time_shift_linear = 0;
        else if (cJSON_IsString(tst) && !strcmp(tst->valuestring, "linear"))
            c->time_shift_linear = 1;
        else {
            sf_error("%s: \"time_shift_type\" must be \"exponential\" or \"linear\"", path);
            goto out;
        }
    }
    /* options that would change the schedule: refuse rather than ignore */
    static const char *unsupported[] = {"use_karras_sigmas",   "use_exponential_sigmas",
                                        "use_beta_sigmas",     "invert_sigmas",
                                        "stochastic_sampling", "shift_terminal"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, unsupported[i]);
        int on = v && !cJSON_IsNull(v) && !cJSON_IsFalse(v) &&
                 !(cJSON_IsNumber(v) && v->valuedouble == 0);
        if (on) {
            sf_error("%s: \"%s\" is not supported by saeflow's FLUX sampler", path, unsupported[i]);
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

double sf_flux_calculate_shift(int64_t image_seq_len, int64_t base_seq_len, int64_t max_seq_len,
                               double base_shift, double max_shift) {
    double m = (max_shift - base_shift) / (double)(max_seq_len - base_seq_len);
    double b = base_shift - m * (double)base_seq_len;
    return (double)image_seq_len * m + b;
}

int sf_flow_sched_sigmas(const sf_flow_sched_config *c, int N, int64_t image_seq_len, float *sigmas,
                         float *timesteps) {
    if (N < 1) return sf_error("flux sampler: steps must be >= 1, got %d", N);
    /* np.linspace(1.0, 1 / N, N): i * step + start in float64, the last
     * element set to stop; then .astype(float32) */
    const double stop = 1.0 / (double)N, step = N > 1 ? (stop - 1.0) / (double)(N - 1) : 0.0;
    const double mu = sf_flux_calculate_shift(image_seq_len, c->base_image_seq_len,
                                              c->max_image_seq_len, c->base_shift, c->max_shift);
    for (int i = 0; i < N; i++) {
        double y = i == N - 1 ? stop : (double)i * step + 1.0;
        float s = (float)y, r;
        if (c->use_dynamic_shifting) {
            /* time_shift(mu, 1.0, s): the ** 1.0 is exact */
            float a = c->time_shift_linear ? (float)mu : (float)exp(mu);
            float inv = 1.0f / s;
            float t = inv - 1.0f;
            float den = a + t;
            r = a / den;
        } else {
            /* shift * s / (1 + (shift - 1) * s) */
            float sh = (float)c->shift, sh1 = (float)(c->shift - 1.0);
            float num = sh * s;
            float p = sh1 * s;
            float den = 1.0f + p;
            r = num / den;
        }
        sigmas[i] = r;
        if (timesteps) timesteps[i] = r * (float)c->num_train_timesteps;
    }
    sigmas[N] = 0.0f;
    return 0;
}

void sf_flow_euler_step(float *x, const float *v, int64_t n, float sigma, float sigma_next) {
    // prev_sample = sample + dt * model_output, dt = sigma_next - sigma (F32)
    const float dt = sigma_next - sigma;
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float p = dt * v[i];
        x[i] = x[i] + p;
    }
}

void sf_flux_pack_latents(const float *lat, int64_t B, int64_t C, int64_t h, int64_t w,
                          float *packed) {
    // lat (B, C, h, w) -> view (B, C, h/2, 2, w/2, 2), permute (0, 2, 4, 1, 3, 5)
    // -> packed (B, h/2 * w/2, C * 4)
    const int64_t hp = h / 2, wp = w / 2, rows = B * hp;
#pragma omp parallel for schedule(static) if (B * C * h * w > 65536)
    for (int64_t br = 0; br < rows; br++) {
        const int64_t b = br / hp, r = br % hp;
        for (int64_t q = 0; q < wp; q++) {
            float *o = packed + ((b * hp + r) * wp + q) * 4 * C;
            for (int64_t c = 0; c < C; c++)
                for (int64_t dy = 0; dy < 2; dy++)
                    for (int64_t dx = 0; dx < 2; dx++)
                        o[c * 4 + dy * 2 + dx] =
                            lat[((b * C + c) * h + 2 * r + dy) * w + 2 * q + dx];
        }
    }
}

void sf_flux_unpack_latents(const float *packed, int64_t B, int64_t C, int64_t h, int64_t w,
                            float *lat) {
    // packed (B, h/2 * w/2, 4C) -> view (B, h/2, w/2, C, 2, 2), permute (0, 3, 1, 4, 2, 5)
    // -> lat (B, C, h, w)
    const int64_t hp = h / 2, wp = w / 2, rows = B * hp;
#pragma omp parallel for schedule(static) if (B * C * h * w > 65536)
    for (int64_t br = 0; br < rows; br++) {
        const int64_t b = br / hp, r = br % hp;
        for (int64_t q = 0; q < wp; q++) {
            const float *o = packed + ((b * hp + r) * wp + q) * 4 * C;
            for (int64_t c = 0; c < C; c++)
                for (int64_t dy = 0; dy < 2; dy++)
                    for (int64_t dx = 0; dx < 2; dx++)
                        lat[((b * C + c) * h + 2 * r + dy) * w + 2 * q + dx] =
                            o[c * 4 + dy * 2 + dx];
        }
    }
}

void sf_flux_image_ids(int64_t hp, int64_t wp, float *ids) {
    for (int64_t r = 0; r < hp; r++)
        for (int64_t q = 0; q < wp; q++) {
            float *o = ids + (r * wp + q) * 3;
            o[0] = 0.0f, o[1] = (float)r, o[2] = (float)q;
        }
}

int sf_flux_noise(uint64_t seed, const uint64_t *seeds, int64_t B, int64_t C, int64_t h, int64_t w,
                  sf_torch_rng_kind kind, float *packed) {
    if (B < 1 || C < 1 || h < 2 || w < 2 || (h & 1) || (w & 1))
        return sf_error("flux noise: bad latent shape (%lld, %lld, %lld, %lld): need h, w even",
                        (long long)B, (long long)C, (long long)h, (long long)w);
    const int64_t per = C * h * w;
    float *lat = malloc(sizeof(float) * (size_t)(B * per));
    if (!lat) return sf_error("flux noise: out of memory");
    if (seeds)
        for (int64_t b = 0; b < B; b++)
            sf_torch_randn_ex(seeds[b], lat + b * per, per, kind);
    else
        sf_torch_randn_ex(seed, lat, B * per, kind);
    sf_flux_pack_latents(lat, B, C, h, w, packed);
    free(lat);
    return 0;
}
