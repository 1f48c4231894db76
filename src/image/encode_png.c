/* PNG output (libpng): 8-bit RGB, written atomically (temp file + rename). */
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>

#include "saeflow/image.h"

int sf_png_write(const char *path, const uint8_t *rgb, int width, int height) {
    if (width <= 0 || height <= 0 || width > 1000000 || height > 1000000)
        return sf_error("%s: bad PNG size %dx%d", path, width, height);
    sf_atomic_file f;
    if (sf_atomic_open(&f, path)) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rows = malloc((size_t)height * sizeof(png_bytep));
    if (!png || !info || !rows) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        sf_atomic_abort(&f);
        return sf_error("%s: out of memory", path);
    }
    /* libpng reports errors by longjmp: land here, clean up, fail */
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        sf_atomic_abort(&f);
        return sf_error("%s: libpng failed to write the image", path);
    }
    png_init_io(png, f.fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        rows[y] = (png_bytep)(rgb + (size_t)y * (size_t)width * 3);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return sf_atomic_commit(&f);
}
