/* Thumbnails for the explorer: decode (sf_image), downscale with the
 * Pillow-compatible antialiased bilinear resize, encode JPEG with libjpeg
 * (libjpeg-turbo) into memory. */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE and size_t */

#include "saeflow/analysis.h"
#include "saeflow/image.h"

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jerr_mgr;

/* libjpeg's default error_exit calls exit(); jump back to the caller instead. */
static void jerr_exit(j_common_ptr cinfo) {
    jerr_mgr *e = (jerr_mgr *)cinfo->err;
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jb, 1);
}

int sf_jpeg_encode(const uint8_t *rgb, int w, int h, int quality, uint8_t **jpg, size_t *jpg_len) {
    *jpg = NULL;
    *jpg_len = 0;
    if (w <= 0 || h <= 0 || w > 65500 || h > 65500) return sf_error("jpeg: bad size %dx%d", w, h);
    struct jpeg_compress_struct ci;
    jerr_mgr je;
    /* volatile: modified between setjmp and a possible longjmp */
    unsigned char *volatile buf = NULL;
    unsigned long volatile len = 0;
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jerr_exit;
    if (setjmp(je.jb)) {
        jpeg_destroy_compress(&ci);
        free(buf);
        return sf_error("jpeg encode: %s", je.msg);
    }
    jpeg_create_compress(&ci);
    jpeg_mem_dest(&ci, (unsigned char **)&buf, (unsigned long *)&len);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = 3;
    ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    ci.optimize_coding = TRUE; /* smaller files for the same pixels */
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)ci.next_scanline * (size_t)w * 3);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    /* jpeg_mem_dest allocates with malloc; hand it over as is */
    *jpg = buf;
    *jpg_len = len;
    return 0;
}

int sf_thumbnail_jpeg(const void *data, size_t len, const char *name, int size, int quality,
                      uint8_t **jpg, size_t *jpg_len) {
    *jpg = NULL;
    *jpg_len = 0;
    if (size < 8 || size > 4096) return sf_error("thumbnail: size %d outside [8, 4096]", size);
    sf_image im, small;
    if (sf_image_decode(data, len, name, &im)) return -1;
    int w = im.width, h = im.height;
    /* longest edge -> size, keep the aspect ratio, never upscale */
    if (w > size || h > size) {
        if (w >= h) {
            h = (int)((int64_t)h * size / w);
            w = size;
        } else {
            w = (int)((int64_t)w * size / h);
            h = size;
        }
        if (w < 1) w = 1;
        if (h < 1) h = 1;
        int rc = sf_image_resize(&im, w, h, SF_RESAMPLE_BILINEAR, &small);
        sf_image_free(&im);
        if (rc) return sf_error_prefix("%s: resize", name ? name : "image");
    } else {
        small = im;
    }
    int rc = sf_jpeg_encode(small.rgb, small.width, small.height, quality, jpg, jpg_len);
    sf_image_free(&small);
    if (rc) return sf_error_prefix("%s", name ? name : "image");
    return 0;
}
