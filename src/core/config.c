/* JSON config readers (see include/saeflow/config.h). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "saeflow/common.h"
#include "saeflow/config.h"

static const cJSON *get(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

int sf_cfg_has(const cJSON *o, const char *key) {
    return get(o, key) != NULL;
}

static int int_error(const char *where, const char *key, int64_t lo, int64_t hi) {
    if (lo == 1 && hi >= 1000000000)
        return sf_error("%s: key '%s' must be a positive integer", where, key);
    if (lo == 0 && hi >= 1000000000)
        return sf_error("%s: key '%s' must be a non-negative integer", where, key);
    if (lo <= INT_MIN && hi >= INT_MAX)
        return sf_error("%s: key '%s' must be an integer", where, key);
    return sf_error("%s: key '%s' must be an integer in [%lld, %lld]", where, key, (long long)lo,
                    (long long)hi);
}

int sf_cfg_int_range(const cJSON *o, const char *key, int required, int def, int lo, int hi,
                     int *out, const char *where) {
    const cJSON *v = get(o, key);
    if (!v) {
        if (required) return sf_error("%s: missing key '%s'", where, key);
        *out = def;
        return 1;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi) || d != floor(d)) return int_error(where, key, lo, hi);
    *out = (int)d;
    return 0;
}

int sf_cfg_int(const cJSON *o, const char *key, int def, int *out, const char *where) {
    return sf_cfg_int_range(o, key, 0, def, INT_MIN, INT_MAX, out, where) < 0 ? -1 : 0;
}

int sf_cfg_int_req(const cJSON *o, const char *key, int lo, int hi, int *out, const char *where) {
    return sf_cfg_int_range(o, key, 1, 0, lo, hi, out, where);
}

int sf_cfg_int64(const cJSON *o, const char *key, int64_t def, int64_t *out, const char *where) {
    const cJSON *v = get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(fabs(d) <= 9007199254740992.0) || d != floor(d))
        return sf_error("%s: key '%s' must be an integer", where, key);
    *out = (int64_t)d;
    return 0;
}

int sf_cfg_double(const cJSON *o, const char *key, double def, double lo, int lo_open, double hi,
                  double *out, const char *where) {
    const cJSON *v = get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || d < lo || (lo_open && d == lo) || d > hi) {
        if (lo == 0 && lo_open && isinf(hi))
            return sf_error("%s: key '%s' must be a positive number", where, key);
        if (isinf(lo) && isinf(hi))
            return sf_error("%s: key '%s' must be a finite number", where, key);
        return sf_error("%s: key '%s' must be a number in %s%g, %g]", where, key,
                        lo_open ? "(" : "[", lo, hi);
    }
    *out = d;
    return 0;
}

int sf_cfg_float(const cJSON *o, const char *key, float def, float lo, int lo_open, float hi,
                 float *out, const char *where) {
    double d = def;
    if (sf_cfg_double(o, key, def, lo, lo_open, hi, &d, where)) return -1;
    *out = (float)d;
    return 0;
}

int sf_cfg_bool(const cJSON *o, const char *key, int def, int *out, const char *where) {
    const cJSON *v = get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v)) return sf_error("%s: key '%s' must be true or false", where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

int sf_cfg_str(const cJSON *o, const char *key, const char *def, const char **out,
               const char *where) {
    const cJSON *v = get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsString(v)) return sf_error("%s: key '%s' must be a string", where, key);
    *out = v->valuestring;
    return 0;
}

int sf_cfg_int_array(const cJSON *o, const char *key, int lo, int hi, int *out, int cap, int *n,
                     const char *where) {
    const cJSON *v = get(o, key);
    *n = 0;
    if (!v) return 0;
    int m = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (m < 0 || m > cap)
        return sf_error("%s: key '%s' must be an array of at most %d integers", where, key, cap);
    for (int i = 0; i < m; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!(d >= lo && d <= hi) || d != floor(d))
            return sf_error("%s: key '%s': entry %d is not an integer in [%d, %d]", where, key, i,
                            lo, hi);
        out[i] = (int)d;
    }
    *n = m;
    return 0;
}

cJSON *sf_cfg_load(const char *path) {
    size_t len;
    char *text = sf_read_file(path, &len);
    if (!text) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        sf_error("%s: not a JSON object", path);
        return NULL;
    }
    return j;
}
