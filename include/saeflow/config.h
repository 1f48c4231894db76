/* Readers for JSON config keys (config.json, cfg.json, preprocessor_config.json):
 * the one set used by every model, SAE format and preprocessor.
 *
 * Each reads key `key` of object `o` (o may be NULL: every key is absent).
 * A key that is absent or JSON null leaves the default (optional readers)
 * or is an error (required readers). A key of the wrong type or out of range
 * is always an error. Errors name `where` (the file, plus context such as
 * " (vision_config)") and the key: "config.json: key 'patch_size' must be a
 * positive integer". Return 0 on success, -1 with sf_error on error. */
#ifndef SAEFLOW_CONFIG_H
#define SAEFLOW_CONFIG_H

#include <stdint.h>

#include <cjson/cJSON.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the key is present and not null. */
int sf_cfg_has(const cJSON *o, const char *key);

/* Integer keys (a JSON number with no fractional part) in [lo, hi].
 * Optional: absent -> *out = def and returns 1 (so callers can tell). */
int sf_cfg_int_range(const cJSON *o, const char *key, int required, int def, int lo, int hi,
                     int *out, const char *where);
/* Optional integer, any int value; absent -> def (returns 0). */
int sf_cfg_int(const cJSON *o, const char *key, int def, int *out, const char *where);
/* Required integer in [lo, hi]: "missing key 'k'" when absent. */
int sf_cfg_int_req(const cJSON *o, const char *key, int lo, int hi, int *out, const char *where);
/* Optional 64-bit integer (|v| <= 2^53, exact in a double); absent -> def. */
int sf_cfg_int64(const cJSON *o, const char *key, int64_t def, int64_t *out, const char *where);
/* Optional finite number in [lo, hi] (use -INFINITY / INFINITY for no
 * bound; lo_open: must be > lo); absent -> def. */
int sf_cfg_double(const cJSON *o, const char *key, double def, double lo, int lo_open, double hi,
                  double *out, const char *where);
int sf_cfg_float(const cJSON *o, const char *key, float def, float lo, int lo_open, float hi,
                 float *out, const char *where);
/* Optional true/false; absent -> def. */
int sf_cfg_bool(const cJSON *o, const char *key, int def, int *out, const char *where);
/* Optional string; absent -> def (may be NULL). *out points into o. */
int sf_cfg_str(const cJSON *o, const char *key, const char *def, const char **out,
               const char *where);
/* Optional array of integers in [lo, hi], at most `cap` of them; absent ->
 * *n = 0 (out untouched). */
int sf_cfg_int_array(const cJSON *o, const char *key, int lo, int hi, int *out, int cap, int *n,
                     const char *where);

/* Reads `path` and parses it as a JSON object; NULL + sf_error naming the
 * file otherwise. Free with cJSON_Delete. */
cJSON *sf_cfg_load(const char *path);

#ifdef __cplusplus
}
#endif
#endif
