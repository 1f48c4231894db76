/* CLIPImageProcessor (transformers' PIL-based image processor) in C.
 *
 * Order, as in transformers' PilBackend._preprocess: resize -> center_crop ->
 * rescale -> normalize. Arithmetic of the float stage (transformers
 * image_transforms.rescale / normalize):
 *   rescale:   float32( float64(v) * rescale_factor )
 *   normalize: (x - float32(mean)) / float32(std), all float32
 * so the floats equal transformers' to the bit when the uint8 stage does.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "saeflow/config.h"
#include "saeflow/image.h"

void sf_clip_preproc_default(sf_clip_preproc *p) {
    /* double -> float, as numpy's np.array(list_of_python_floats, float32) */
    static const float mean[3] = {(float)0.48145466, (float)0.4578275, (float)0.40821073};
    static const float std[3] = {(float)0.26862954, (float)0.26130258, (float)0.27577711};
    memset(p, 0, sizeof *p);
    p->do_convert_rgb = 1;
    p->do_resize = 1;
    p->shortest_edge = 224;
    p->resample = SF_RESAMPLE_BICUBIC;
    p->do_center_crop = 1;
    p->crop_height = p->crop_width = 224;
    p->do_rescale = 1;
    p->rescale_factor = 1.0 / 255.0;
    p->do_normalize = 1;
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
}

static int json_triple(const cJSON *root, const char *key, float out[3], const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsNumber(v)) { /* a single number applies to all channels */
        out[0] = out[1] = out[2] = (float)v->valuedouble;
        return 0;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3)
        return sf_error("%s: '%s' must be a list of 3 numbers", path, key);
    for (int i = 0; i < 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(e)) return sf_error("%s: '%s'[%d] is not a number", path, key, i);
        out[i] = (float)e->valuedouble;
    }
    return 0;
}

int sf_clip_preproc_load(sf_clip_preproc *p, const char *path) {
    sf_clip_preproc_default(p);
    char *file = NULL;
    size_t len;
    /* A directory: look for preprocessor_config.json inside. */
    char *joined = sf_path_join(path, "preprocessor_config.json");
    FILE *probe = fopen(joined, "rb");
    if (probe) {
        fclose(probe);
        file = joined;
    } else {
        free(joined);
        file = sf_strdup(path);
    }
    char *text = sf_read_file(file, &len);
    if (!text) {
        free(file);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = 0;
    if (!root || !cJSON_IsObject(root)) {
        rc = sf_error("%s: not a JSON object", file);
        goto done;
    }
    if (sf_cfg_bool(root, "do_convert_rgb", *&p->do_convert_rgb, &p->do_convert_rgb, file) ||
        sf_cfg_bool(root, "do_resize", *&p->do_resize, &p->do_resize, file) ||
        sf_cfg_bool(root, "do_center_crop", *&p->do_center_crop, &p->do_center_crop, file) ||
        sf_cfg_bool(root, "do_rescale", *&p->do_rescale, &p->do_rescale, file) ||
        sf_cfg_bool(root, "do_normalize", *&p->do_normalize, &p->do_normalize, file) ||
        json_triple(root, "image_mean", p->mean, file) ||
        json_triple(root, "image_std", p->std, file)) {
        rc = -1;
        goto done;
    }
    for (int i = 0; i < 3; i++)
        if (!(p->std[i] != 0.0f)) {
            rc = sf_error("%s: 'image_std'[%d] must be non-zero", file, i);
            goto done;
        }
    if (sf_cfg_double(root, "rescale_factor", p->rescale_factor, 0, 1, INFINITY, &p->rescale_factor,
                      file)) {
        rc = -1;
        goto done;
    }
    /* sizes: positive integers up to 65536; nested keys name their parent */
    char in_size[4200], in_crop[4200];
    snprintf(in_size, sizeof in_size, "%s ('size')", file);
    snprintf(in_crop, sizeof in_crop, "%s ('crop_size')", file);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "resample");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || (v->valuedouble != 2 && v->valuedouble != 3)) {
            rc = sf_error("%s: 'resample' must be 2 (bilinear) or 3 (bicubic)", file);
            goto done;
        }
        p->resample = (sf_resample)(int)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "size");
    if (v && !cJSON_IsNull(v)) {
        if (cJSON_IsNumber(v)) { /* old configs: "size": 224 = shortest edge for CLIP */
            if (sf_cfg_int_req(root, "size", 1, 65536, &p->shortest_edge, file)) rc = -1;
            p->resize_height = p->resize_width = 0;
        } else if (cJSON_IsObject(v)) {
            const cJSON *se = cJSON_GetObjectItemCaseSensitive(v, "shortest_edge");
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "height");
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(v, "width");
            for (const cJSON *e = v->child; e; e = e->next)
                if (strcmp(e->string, "shortest_edge") && strcmp(e->string, "height") &&
                    strcmp(e->string, "width")) {
                    rc = sf_error(
                        "%s: 'size' key '%s' is not supported (use shortest_edge or height+width)",
                        file, e->string);
                    goto done;
                }
            if (se) {
                if (sf_cfg_int_req(v, "shortest_edge", 1, 65536, &p->shortest_edge, in_size))
                    rc = -1;
                p->resize_height = p->resize_width = 0;
            } else if (h && w) {
                if (sf_cfg_int_req(v, "height", 1, 65536, &p->resize_height, in_size) ||
                    sf_cfg_int_req(v, "width", 1, 65536, &p->resize_width, in_size))
                    rc = -1;
            } else {
                rc = sf_error("%s: 'size' needs shortest_edge or height and width", file);
            }
        } else {
            rc = sf_error("%s: 'size' must be an integer or an object", file);
        }
        if (rc) goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "crop_size");
    if (v && !cJSON_IsNull(v)) {
        if (cJSON_IsNumber(v)) {
            if (sf_cfg_int_req(root, "crop_size", 1, 65536, &p->crop_height, file)) rc = -1;
            p->crop_width = p->crop_height;
        } else if (cJSON_IsObject(v)) {
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "height");
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(v, "width");
            if (!h || !w)
                rc = sf_error("%s: 'crop_size' needs height and width", file);
            else if (sf_cfg_int_req(v, "height", 1, 65536, &p->crop_height, in_crop) ||
                     sf_cfg_int_req(v, "width", 1, 65536, &p->crop_width, in_crop))
                rc = -1;
        } else {
            rc = sf_error("%s: 'crop_size' must be an integer or an object", file);
        }
    }
done:
    cJSON_Delete(root);
    free(file);
    return rc;
}

int sf_clip_preproc_out_size(const sf_clip_preproc *p, int *out_h, int *out_w) {
    if (p->do_center_crop) {
        *out_h = p->crop_height;
        *out_w = p->crop_width;
        return 0;
    }
    *out_h = *out_w = -1;
    return -1;
}

size_t sf_clip_preproc_floats(const sf_clip_preproc *p) {
    return 3 * (size_t)p->crop_height * (size_t)p->crop_width;
}

void sf_clip_resize_size(const sf_clip_preproc *p, int w, int h, int *out_w, int *out_h) {
    if (p->resize_height > 0 && p->resize_width > 0) {
        *out_w = p->resize_width;
        *out_h = p->resize_height;
        return;
    }
    /* get_resize_output_image_size(default_to_square=False): the short side
     * becomes `size`, the long one int(size * long / short) in Python float
     * (double) arithmetic, truncated. Ties (square) count as width <= height. */
    int s = p->shortest_edge;
    if (w <= h) {
        *out_w = s;
        *out_h = (int)((double)s * (double)h / (double)w);
    } else {
        *out_h = s;
        *out_w = (int)((double)s * (double)w / (double)h);
    }
}

/* Python's floor division, for the crop offsets that may be negative. */
static int floordiv2(int a) {
    return a >= 0 ? a / 2 : -((-a + 1) / 2);
}

int sf_clip_resize_crop(const sf_clip_preproc *p, const sf_image *in, sf_image *out) {
    memset(out, 0, sizeof *out);
    sf_image rs = {0};
    const sf_image *cur = in;
    if (p->do_resize) {
        int w, h;
        sf_clip_resize_size(p, in->width, in->height, &w, &h);
        if (w < 1 || h < 1)
            return sf_error("resize: %dx%d image gives an empty %dx%d result", in->width,
                            in->height, w, h);
        if (sf_image_resize_compat(in, w, h, p->resample, p->pillow_legacy_order, &rs)) return -1;
        cur = &rs;
    }
    if (!p->do_center_crop) {
        if (cur == &rs) {
            *out = rs;
            return 0;
        }
        if (sf_image_alloc(out, in->width, in->height)) return -1;
        memcpy(out->rgb, in->rgb, (size_t)in->width * in->height * 3);
        return 0;
    }
    int H = cur->height, W = cur->width, ch = p->crop_height, cw = p->crop_width;
    if (sf_image_alloc(out, cw, ch)) {
        sf_image_free(&rs);
        return -1;
    }
    /* transformers' center_crop: top = (H - ch) // 2; when the image is
     * smaller it is first zero-padded to max(H, ch) x max(W, cw) with
     * ceil((new - old) / 2) before it, and the same top/left (shifted by the
     * padding) are used. Both cases: crop pixel (y, x) is source pixel
     * (top + y - pad_top, left + x - pad_left), zero outside the image. */
    int top = floordiv2(H - ch), left = floordiv2(W - cw);
    int pad_top = 0, pad_left = 0;
    if (top < 0 || left < 0 || top + ch > H || left + cw > W) {
        int nh = ch > H ? ch : H, nw = cw > W ? cw : W;
        pad_top = (nh - H + 1) / 2;
        pad_left = (nw - W + 1) / 2;
        top += pad_top;
        left += pad_left;
        /* transformers slices [max(0, top):min(nh, top + ch)]; with the
         * offsets above that range always has ch rows, so no clipping. */
    }
    for (int y = 0; y < ch; y++) {
        int sy = top + y - pad_top;
        uint8_t *o = out->rgb + (size_t)y * cw * 3;
        if (sy < 0 || sy >= H) continue; /* zero padding (already zero) */
        for (int x = 0; x < cw; x++) {
            int sx = left + x - pad_left;
            if (sx < 0 || sx >= W) continue;
            memcpy(o + 3 * x, cur->rgb + ((size_t)sy * W + sx) * 3, 3);
        }
    }
    sf_image_free(&rs);
    return 0;
}

void sf_clip_normalize(const sf_clip_preproc *p, const sf_image *in, float *px) {
    /* Per channel, a 256-entry table: the result depends on the byte only. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = p->do_rescale ? (float)((double)v * p->rescale_factor) : (float)v;
            if (p->do_normalize) x = (x - p->mean[c]) / p->std[c];
            lut[c][v] = x;
        }
    size_t n = (size_t)in->width * in->height;
    const uint8_t *s = in->rgb;
    for (size_t i = 0; i < n; i++) { /* HWC uint8 -> CHW float */
        px[i] = lut[0][s[3 * i]];
        px[n + i] = lut[1][s[3 * i + 1]];
        px[2 * n + i] = lut[2][s[3 * i + 2]];
    }
}

int sf_clip_preprocess(const sf_clip_preproc *p, const sf_image *in, float *px) {
    if (!p->do_center_crop)
        return sf_error(
            "preprocess: do_center_crop=false gives image-dependent sizes; not supported for "
            "fixed-size pixel_values");
    sf_image crop;
    if (sf_clip_resize_crop(p, in, &crop)) return -1;
    sf_clip_normalize(p, &crop, px);
    sf_image_free(&crop);
    return 0;
}
