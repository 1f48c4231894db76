/* Image decoding to 8-bit RGB, matching Pillow's Image.open(f).convert("RGB").
 *
 * The per-format rules (all read from Pillow's plugins and libImaging, see
 * docs/inputs.md):
 *   JPEG: libjpeg defaults (islow IDCT, fancy upsampling, block smoothing);
 *         grey -> replicated; 4-component (CMYK or YCCK, libjpeg converts
 *         YCCK to CMYK) is read Adobe-inverted ("CMYK;I") and converted with
 *         Pillow's cmyk2rgb. A premature end of data is an error (Pillow's
 *         "image file is truncated"); other libjpeg warnings are ignored.
 *   PNG:  palette -> RGB, 1/2/4-bit grey scaled to 8 bits, tRNS ignored,
 *         alpha dropped, 16-bit colour keeps the high byte ("RGB;16B",
 *         "LA;16B"), but 16-bit grey without alpha is Pillow mode "I;16" whose
 *         conversion to RGB CLAMPS to 255 (min(v, 255)), not the high byte.
 *   WebP: first (only) frame, alpha dropped; animated WebP is refused.
 *   PPM/PGM: binary P6 (RGB) and P5 (grey, replicated), maxval 255 only; the
 *         lossless container a binding wraps decoded pixels in (Pillow reads
 *         it as "RGB" / "L").
 * EXIF orientation is never applied.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "saeflow/image.h"

sf_image_format sf_image_sniff(const void *data, size_t len) {
    const unsigned char *p = data;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return SF_IMAGE_JPEG;
    if (len >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return SF_IMAGE_PNG;
    if (len >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return SF_IMAGE_WEBP;
    if (len >= 3 && p[0] == 'P' && (p[1] == '5' || p[1] == '6') &&
        (p[2] == ' ' || p[2] == '\t' || p[2] == '\n' || p[2] == '\r' || p[2] == '#'))
        return SF_IMAGE_PPM;
    return SF_IMAGE_UNKNOWN;
}

const char *sf_image_format_name(sf_image_format f) {
    switch (f) {
    case SF_IMAGE_JPEG:
        return "jpeg";
    case SF_IMAGE_PNG:
        return "png";
    case SF_IMAGE_WEBP:
        return "webp";
    case SF_IMAGE_PPM:
        return "ppm";
    default:
        return "unknown";
    }
}

int sf_image_alloc(sf_image *im, int width, int height) {
    memset(im, 0, sizeof *im);
    if (width <= 0 || height <= 0)
        return sf_error("image size %dx%d is not positive", width, height);
    if ((int64_t)width * height > SF_IMAGE_MAX_PIXELS)
        return sf_error("image %dx%d has more than %lld pixels", width, height,
                        (long long)SF_IMAGE_MAX_PIXELS);
    im->rgb = sf_calloc((size_t)width * (size_t)height, 3);
    im->width = width;
    im->height = height;
    return 0;
}

void sf_image_free(sf_image *im) {
    if (!im) return;
    free(im->rgb);
    memset(im, 0, sizeof *im);
}

/* ---- JPEG ---------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_error_exit_(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings (level -1) are ignored like Pillow does, except running out of
 * data, which Pillow reports as a truncated file. */
static void jpeg_emit_message_(j_common_ptr c, int level) {
    jpeg_err *e = (jpeg_err *)c->err;
    if (level == -1 && c->err->msg_code == JWRN_JPEG_EOF) {
        snprintf(e->msg, sizeof e->msg, "truncated file (premature end of JPEG data)");
        longjmp(e->jb, 1);
    }
}

static void jpeg_output_message_(j_common_ptr c) {
    (void)c;
}

static int decode_jpeg(const unsigned char *data, size_t len, sf_image *out) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    /* volatile: modified between setjmp and a possible longjmp */
    uint8_t *volatile row = NULL;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_error_exit_;
    err.pub.emit_message = jpeg_emit_message_;
    err.pub.output_message = jpeg_output_message_;
    err.msg[0] = 0;
    if (setjmp(err.jb)) {
        jpeg_destroy_decompress(&cinfo);
        free(row);
        sf_image_free(out);
        return sf_error("jpeg: %s", err.msg);
    }
    if (len > ULONG_MAX) return sf_error("jpeg: data too large");
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    int nc = cinfo.num_components;
    if (nc == 1)
        cinfo.out_color_space = JCS_GRAYSCALE;
    else if (nc == 3)
        cinfo.out_color_space = JCS_RGB;
    else if (nc == 4)
        cinfo.out_color_space = JCS_CMYK; /* libjpeg turns YCCK into CMYK */
    else {
        snprintf(err.msg, sizeof err.msg, "unsupported number of components %d", nc);
        longjmp(err.jb, 1);
    }
    if (cinfo.image_width == 0 || cinfo.image_height == 0 || cinfo.image_width > INT_MAX ||
        cinfo.image_height > INT_MAX ||
        (int64_t)cinfo.image_width * cinfo.image_height > SF_IMAGE_MAX_PIXELS) {
        snprintf(err.msg, sizeof err.msg, "image size %ux%u out of range", cinfo.image_width,
                 cinfo.image_height);
        longjmp(err.jb, 1);
    }
    /* Bound libjpeg's own buffers for hostile progressive files. */
    cinfo.mem->max_memory_to_use = 1024L * 1024 * 1024;
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, oc = cinfo.output_components;
    if (sf_image_alloc(out, w, h)) {
        snprintf(err.msg, sizeof err.msg, "%s", sf_errmsg());
        longjmp(err.jb, 1);
    }
    row = sf_malloc((size_t)w * (size_t)oc);
    while (cinfo.output_scanline < cinfo.output_height) {
        int y = (int)cinfo.output_scanline;
        JSAMPROW rp = row;
        jpeg_read_scanlines(&cinfo, &rp, 1);
        uint8_t *o = out->rgb + (size_t)y * (size_t)w * 3;
        if (oc == 1) {
            for (int x = 0; x < w; x++)
                o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = row[x];
        } else if (oc == 3) {
            memcpy(o, row, (size_t)w * 3);
        } else {
            /* Pillow: rawmode "CMYK;I" inverts what libjpeg returns (Adobe
             * polarity), then cmyk2rgb: nk = 255 - k, v = nk - nk*c/255
             * with its MULDIV255 rounding. */
            for (int x = 0; x < w; x++) {
                int k = 255 - row[4 * x + 3];
                int nk = 255 - k;
                for (int c = 0; c < 3; c++) {
                    int cc = 255 - row[4 * x + c];
                    int t = cc * nk + 128;
                    int v = nk - (((t >> 8) + t) >> 8);
                    o[3 * x + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    return 0;
}

/* Pillow's ImagingAlphaComposite of (v, a) over opaque white (dst = 255,
 * alpha 255), 7-bit precision integer arithmetic, one channel. */
static uint8_t over_white(uint32_t v, uint32_t a) {
    if (a == 0) return 255;
    uint32_t blend = 255 * (255 - a);
    uint32_t outa255 = a * 255 + blend;
    uint32_t coef1 = a * 255 * 255 * (1u << 7) / outa255;
    uint32_t coef2 = 255 * (1u << 7) - coef1;
    uint32_t t = v * coef1 + 255 * coef2 + (0x80u << 7);
    return (uint8_t)((((t >> 8) + t) >> 8) >> 7);
}

/* ---- PNG ----------------------------------------------------------------- */

typedef struct {
    const unsigned char *data;
    size_t len, pos;
    char msg[256];
} png_src;

static void png_read_fn_(png_structp p, png_bytep buf, size_t n) {
    png_src *s = png_get_io_ptr(p);
    if (n > s->len - s->pos) png_error(p, "truncated file (premature end of PNG data)");
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
}

static void png_error_fn_(png_structp p, png_const_charp msg) {
    png_src *s = png_get_error_ptr(p);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(p, 1);
}

static void png_warning_fn_(png_structp p, png_const_charp msg) {
    (void)p;
    (void)msg;
}

static int decode_png(const unsigned char *data, size_t len, unsigned flags, sf_image *out) {
    png_src src = {data, len, 0, {0}};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_error_fn_, png_warning_fn_);
    if (!png) return sf_error("png: cannot create decoder");
    png_infop info = png_create_info_struct(png);
    /* volatile: modified between setjmp and a possible longjmp */
    png_bytep *volatile rows = NULL;
    uint8_t *volatile buf = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return sf_error("png: cannot create decoder");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(buf);
        sf_image_free(out);
        return sf_error("png: %s", src.msg[0] ? src.msg : "decoding failed");
    }
    png_set_read_fn(png, &src, png_read_fn_);
    /* Pillow checks nothing beyond what libpng does; keep libpng's default
     * CRC policy (error on critical chunks). Cap dimensions ourselves. */
    png_set_user_limits(png, 1u << 24, 1u << 24);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), ct = png_get_color_type(png, info);
    if ((int64_t)w * h > SF_IMAGE_MAX_PIXELS) {
        snprintf(src.msg, sizeof src.msg, "image size %ux%u out of range", (unsigned)w,
                 (unsigned)h);
        png_longjmp(png, 1);
    }
    /* The one case where Pillow does not take the high byte: 16-bit grey
     * without alpha is mode I;16, and I;16 -> RGB clamps at 255. */
    int grey16_clamp = (ct == PNG_COLOR_TYPE_GRAY && depth == 16);
    /* transformers 5 composites when the mode has alpha or there is a tRNS
     * (Pillow: info["transparency"]); 16-bit grey (I;16) is left alone */
    int white = (flags & SF_IMAGE_ALPHA_WHITE) && !grey16_clamp &&
                ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS));
    if (white && png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !grey16_clamp) png_set_strip_16(png); /* keeps the high byte */
    if (grey16_clamp) png_set_swap(png);                     /* host-order uint16 */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (sf_image_alloc(out, (int)w, (int)h)) {
        snprintf(src.msg, sizeof src.msg, "%s", sf_errmsg());
        png_longjmp(png, 1);
    }
    size_t need;
    if (sf_mul_size(rowbytes, h, &need)) {
        snprintf(src.msg, sizeof src.msg, "image too large");
        png_longjmp(png, 1);
    }
    buf = sf_malloc(need);
    rows = sf_malloc(sizeof(png_bytep) * h);
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = buf + (size_t)y * rowbytes;
    png_read_image(png, rows);
    /* Pillow stops at the end of the image data; trailing chunks are not
     * needed (and a file truncated after IDAT still opens in Pillow). */
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *r = rows[y];
        uint8_t *o = out->rgb + (size_t)y * w * 3;
        if (grey16_clamp) {
            const uint16_t *r16 = (const uint16_t *)(const void *)r;
            for (png_uint_32 x = 0; x < w; x++) {
                uint16_t v = r16[x];
                o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = (uint8_t)(v > 255 ? 255 : v);
            }
        } else if (white && ch == 2) {
            for (png_uint_32 x = 0; x < w; x++)
                o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = over_white(r[2 * x], r[2 * x + 1]);
        } else if (white && ch == 4) {
            for (png_uint_32 x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    o[3 * x + c] = over_white(r[4 * x + c], r[4 * x + 3]);
        } else if (ch == 1 || ch == 2) { /* grey, grey+alpha: alpha dropped */
            for (png_uint_32 x = 0; x < w; x++)
                o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = r[x * ch];
        } else if (ch == 3) {
            memcpy(o, r, (size_t)w * 3);
        } else { /* RGBA: alpha dropped, not composited */
            for (png_uint_32 x = 0; x < w; x++) {
                o[3 * x] = r[4 * x];
                o[3 * x + 1] = r[4 * x + 1];
                o[3 * x + 2] = r[4 * x + 2];
            }
        }
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(buf);
    return 0;
}

/* ---- WebP ---------------------------------------------------------------- */

static const char *webp_status(VP8StatusCode s) {
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY:
        return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
        return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
        return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
        return "suspended";
    case VP8_STATUS_USER_ABORT:
        return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
        return "truncated file (not enough data)";
    default:
        return "decoding failed";
    }
}

static int decode_webp(const unsigned char *data, size_t len, unsigned flags, sf_image *out) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, len, &f);
    if (st != VP8_STATUS_OK) return sf_error("webp: %s", webp_status(st));
    if (f.has_animation) return sf_error("webp: animated WebP is not supported");
    if (f.width <= 0 || f.height <= 0 || (int64_t)f.width * f.height > SF_IMAGE_MAX_PIXELS)
        return sf_error("webp: image size %dx%d out of range", f.width, f.height);
    if (sf_image_alloc(out, f.width, f.height)) return -1;
    if ((flags & SF_IMAGE_ALPHA_WHITE) && f.has_alpha) {
        size_t n = (size_t)f.width * (size_t)f.height;
        uint8_t *rgba = sf_malloc(n * 4);
        if (!WebPDecodeRGBAInto(data, len, rgba, n * 4, f.width * 4)) {
            free(rgba);
            sf_image_free(out);
            return sf_error("webp: decoding failed");
        }
        for (size_t i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                out->rgb[3 * i + c] = over_white(rgba[4 * i + c], rgba[4 * i + 3]);
        free(rgba);
        return 0;
    }
    /* Decoding straight to RGB gives the same colour values as Pillow's
     * RGBA decode followed by dropping alpha (no premultiplication). */
    size_t stride = (size_t)f.width * 3;
    if (!WebPDecodeRGBInto(data, len, out->rgb, stride * (size_t)f.height, (int)stride)) {
        sf_image_free(out);
        /* WebPDecodeRGBInto does not say why; ask the full decoder. */
        WebPDecoderConfig cfg;
        if (WebPInitDecoderConfig(&cfg)) {
            cfg.output.colorspace = MODE_RGB;
            st = WebPDecode(data, len, &cfg);
            WebPFreeDecBuffer(&cfg.output);
            if (st != VP8_STATUS_OK) return sf_error("webp: %s", webp_status(st));
        }
        return sf_error("webp: decoding failed");
    }
    return 0;
}

/* ---- PPM / PGM (binary) ------------------------------------------------------ */

/* The next header number: whitespace and '#' comments skipped, decimal digits. */
static int pnm_number(const unsigned char *p, size_t len, size_t *at, int *v) {
    size_t i = *at;
    for (;;) {
        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
            i++;
        if (i < len && p[i] == '#') {
            while (i < len && p[i] != '\n')
                i++;
            continue;
        }
        break;
    }
    if (i >= len || p[i] < '0' || p[i] > '9') return sf_error("ppm: bad header");
    long long x = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9') {
        x = x * 10 + (p[i++] - '0');
        if (x > INT_MAX) return sf_error("ppm: header number too large");
    }
    *v = (int)x;
    *at = i;
    return 0;
}

static int decode_pnm(const unsigned char *p, size_t len, sf_image *out) {
    const int ch = p[1] == '6' ? 3 : 1;
    size_t at = 2;
    int w, h, maxval;
    if (pnm_number(p, len, &at, &w) || pnm_number(p, len, &at, &h) ||
        pnm_number(p, len, &at, &maxval))
        return -1;
    if (maxval != 255) return sf_error("ppm: maxval %d (only 255 is supported)", maxval);
    if (at >= len) return sf_error("ppm: truncated header");
    at++; /* the single whitespace before the samples */
    if (sf_image_alloc(out, w, h)) return sf_error_prefix("ppm");
    const size_t npx = (size_t)w * (size_t)h;
    if (len - at < npx * (size_t)ch) {
        sf_image_free(out);
        return sf_error("ppm: truncated: %zu bytes of samples, expected %zu", len - at,
                        npx * (size_t)ch);
    }
    if (ch == 3)
        memcpy(out->rgb, p + at, npx * 3);
    else
        for (size_t i = 0; i < npx; i++)
            out->rgb[3 * i] = out->rgb[3 * i + 1] = out->rgb[3 * i + 2] = p[at + i];
    return 0;
}

int sf_image_decode(const void *data, size_t len, const char *name, sf_image *out) {
    return sf_image_decode_ex(data, len, name, 0, out);
}

int sf_image_decode_ex(const void *data, size_t len, const char *name, unsigned flags,
                       sf_image *out) {
    memset(out, 0, sizeof *out);
    int rc;
    switch (sf_image_sniff(data, len)) {
    case SF_IMAGE_JPEG:
        rc = decode_jpeg(data, len, out);
        break;
    case SF_IMAGE_PNG:
        rc = decode_png(data, len, flags, out);
        break;
    case SF_IMAGE_WEBP:
        rc = decode_webp(data, len, flags, out);
        break;
    case SF_IMAGE_PPM:
        rc = decode_pnm(data, len, out);
        break;
    default:
        rc = len == 0 ? sf_error("empty file")
                      : sf_error("not a JPEG, PNG, WebP or PPM image (unrecognised magic bytes)");
    }
    if (rc && name) sf_error_prefix("%s", name);
    return rc;
}

int sf_image_load(const char *path, sf_image *out) {
    return sf_image_load_ex(path, 0, out);
}

int sf_image_load_ex(const char *path, unsigned flags, sf_image *out) {
    memset(out, 0, sizeof *out);
    size_t len;
    char *data = sf_read_file(path, &len);
    if (!data) return -1;
    int rc = sf_image_decode_ex(data, len, path, flags, out);
    free(data);
    return rc;
}
