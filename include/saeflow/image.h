/* saeflow: image decoding and CLIP preprocessing.
 *
 * Decoding: JPEG (libjpeg-turbo), PNG (libpng), WebP (libwebp) and binary
 * PPM/PGM (raw pixels) from a memory buffer, format sniffed from the magic bytes (the file name is
 * only used in error messages). Every image becomes 8-bit RGB the way Pillow's
 * `Image.open(f).convert("RGB")` does it: grey is replicated, palettes are
 * expanded, alpha is DROPPED (not composited onto a background; see
 * SF_IMAGE_ALPHA_WHITE for transformers 5's white compositing), 16-bit PNG
 * samples are reduced like Pillow (see docs/inputs.md for the exact rules,
 * including CMYK/YCCK JPEG). EXIF orientation
 * is NOT applied (neither Pillow's open nor CLIPImageProcessor applies it).
 * Corrupt or truncated data gives -1 and an sf_error message, never a crash.
 *
 * Preprocessing reproduces transformers' CLIPImageProcessor (the slow, PIL
 * based one) on the uint8 stage bit-exactly:
 *   convert RGB -> resize shortest edge to `shortest_edge` with Pillow
 *   BICUBIC (antialiased, uint8 between the two passes), long edge
 *   int(shortest_edge * long / short) -> center crop crop_h x crop_w ->
 *   * rescale_factor (1/255) -> (x - mean) / std -> CHW float.
 *
 * Typical use (what `saeflow extract` does per image):
 *
 *   sf_clip_preproc pp;
 *   sf_clip_preproc_default(&pp);              // or sf_clip_preproc_load(&pp, dir)
 *   float *px = sf_malloc(sf_clip_preproc_floats(&pp) * sizeof(float));
 *   sf_image im;
 *   if (sf_image_load(path, &im)) return -1;   // sf_errmsg() names the file
 *   sf_clip_preprocess(&pp, &im, px);           // px (3, crop_h, crop_w)
 *   sf_image_free(&im);
 *
 * All functions are thread-safe (no global state); distinct images may be
 * decoded and preprocessed from different threads at once.
 */
#ifndef SAEFLOW_IMAGE_H
#define SAEFLOW_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "saeflow/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An 8-bit RGB image, row-major, interleaved: rgb (height, width, 3). */
typedef struct {
    int width, height;
    uint8_t *rgb;
} sf_image;

typedef enum {
    SF_IMAGE_UNKNOWN = 0,
    SF_IMAGE_JPEG,
    SF_IMAGE_PNG,
    SF_IMAGE_WEBP,
    SF_IMAGE_PPM, /* binary PPM (P6) / PGM (P5), maxval 255: raw pixels from a binding */
} sf_image_format;

/* Guesses the format from the first bytes (SF_IMAGE_UNKNOWN if none fits). */
sf_image_format sf_image_sniff(const void *data, size_t len);
const char *sf_image_format_name(sf_image_format f); /* "jpeg", "png", "webp", "ppm", "unknown" */

/* Images larger than this many pixels (width * height) are refused, so a
 * hostile header cannot make us allocate gigabytes. 2^28 = 268M pixels, well
 * above Pillow's own decompression-bomb error threshold (2 * 89.5M). */
#define SF_IMAGE_MAX_PIXELS ((int64_t)1 << 28)

/* Decodes an image in memory to RGB. `name` (may be NULL) is used only to
 * prefix error messages. On success fills *out (free with sf_image_free) and
 * returns 0; on error returns -1, *out is zeroed, sf_errmsg() says why. */
int sf_image_decode(const void *data, size_t len, const char *name, sf_image *out);
/* Reads a file and decodes it; errors are prefixed with the path. */
int sf_image_load(const char *path, sf_image *out);

/* Decoding options (flags of the _ex variants).
 * SF_IMAGE_ALPHA_WHITE: composite transparency onto white, as transformers
 *   >= 5 convert_to_rgb does (Pillow convert("RGBA") + alpha_composite over
 *   opaque white, Pillow's integer arithmetic), for PNG with an alpha channel
 *   or tRNS and WebP with alpha. Default (0): alpha dropped, as Pillow's
 *   convert("RGB") and transformers 4.x (the reference) do. */
#define SF_IMAGE_ALPHA_WHITE 1u
int sf_image_decode_ex(const void *data, size_t len, const char *name, unsigned flags,
                       sf_image *out);
int sf_image_load_ex(const char *path, unsigned flags, sf_image *out);
/* Allocates a zero-filled width x height image (sizes must be > 0). */
int sf_image_alloc(sf_image *im, int width, int height);
/* rgb (height, width, 3) -> an 8-bit RGB PNG at path, atomically. */
int sf_png_write(const char *path, const uint8_t *rgb, int width, int height);
void sf_image_free(sf_image *im);

/* Pillow-compatible resize of the whole image (Image.resize((w, h), filter)
 * with box = the full image), bit-exact with Pillow's fixed-point path:
 * separable, horizontal pass first, then vertical, uint8 in between, support
 * widened by the scale factor when downscaling (antialias). */
typedef enum {
    SF_RESAMPLE_NEAREST = 0,  /* PIL.Image.NEAREST */
    SF_RESAMPLE_BILINEAR = 2, /* PIL.Image.BILINEAR */
    SF_RESAMPLE_BICUBIC = 3,  /* PIL.Image.BICUBIC (CLIP's default) */
} sf_resample;
int sf_image_resize(const sf_image *in, int width, int height, sf_resample filter, sf_image *out);
/* The order of the two passes changed in Pillow 13: it runs the vertical pass
 * first when the height shrinks by more than twice as many pixels as the
 * width ((in_h - h) > 2 * (in_w - w), h < in_h); Pillow <= 12 always goes
 * horizontal first. The results differ in a few +-1 values for such (tall)
 * images only. sf_image_resize follows Pillow 13 (legacy_order = 0);
 * legacy_order = 1 gives Pillow <= 12. */
int sf_image_resize_compat(const sf_image *in, int width, int height, sf_resample filter,
                           int legacy_order, sf_image *out);

/* CLIPImageProcessor parameters. The defaults are those of
 * openai/clip-vit-large-patch14 (and every OpenAI CLIP checkpoint at 224):
 * shortest_edge 224, crop 224x224, bicubic, rescale 1/255, CLIP mean/std. */
typedef struct {
    int do_convert_rgb; /* images are always RGB here; kept for completeness */
    int do_resize;
    int shortest_edge;               /* size["shortest_edge"] */
    int resize_height, resize_width; /* size {"height","width"}: exact resize
                                      * target instead of shortest_edge (0 = unused) */
    sf_resample resample;            /* "resample" (PIL enum value) */
    int do_center_crop;
    int crop_height, crop_width; /* crop_size */
    int do_rescale;
    double rescale_factor; /* 1/255 (a double, as in Python) */
    int do_normalize;
    float mean[3], std[3];   /* image_mean, image_std */
    int pillow_legacy_order; /* 1: resize pass order of Pillow <= 12 (see
                              * sf_image_resize_compat); default 0 = Pillow 13 */
} sf_clip_preproc;

void sf_clip_preproc_default(sf_clip_preproc *p);
/* Reads a Hugging Face preprocessor_config.json (a path to the file, or to a
 * model directory containing one). Keys not present keep the CLIP defaults;
 * `size` may be {"shortest_edge": n}, {"height": h, "width": w} (then the
 * resize is to exactly h x w) or a plain int (shortest edge); `crop_size`
 * {"height","width"} or an int. Unsupported values (resample other than
 * 0/2/3, non-positive sizes) are errors naming the key. */
int sf_clip_preproc_load(sf_clip_preproc *p, const char *path);

/* Size of the output of the uint8 stage / the float tensor:
 * (crop_height, crop_width) when do_center_crop, else the resized size (which
 * depends on the image, so this returns -1 for out_h/out_w then). */
int sf_clip_preproc_out_size(const sf_clip_preproc *p, int *out_h, int *out_w);
/* Number of floats in one pixel_values tensor: 3 * crop_height * crop_width.
 * Requires do_center_crop (what every CLIP config uses). */
size_t sf_clip_preproc_floats(const sf_clip_preproc *p);

/* The resize size transformers computes for an image of w x h
 * (get_resize_output_image_size with default_to_square=False). */
void sf_clip_resize_size(const sf_clip_preproc *p, int w, int h, int *out_w, int *out_h);

/* The uint8 stage: resize (if do_resize) then center crop (if do_center_crop,
 * padding with zeros where the image is smaller than the crop, as
 * transformers does). `out` is allocated; free with sf_image_free. */
int sf_clip_resize_crop(const sf_clip_preproc *p, const sf_image *in, sf_image *out);
/* The float stage: rescale + normalise the (already cropped) uint8 image
 * into px (3, h, w), channel-major like pixel_values[0]. */
void sf_clip_normalize(const sf_clip_preproc *p, const sf_image *in, float *px);
/* Both stages: px must hold sf_clip_preproc_floats(p) floats. */
int sf_clip_preprocess(const sf_clip_preproc *p, const sf_image *in, float *px);

#ifdef __cplusplus
}
#endif
#endif
