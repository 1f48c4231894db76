/* One interface over the image-text datasets people hold (docs/data.md):
 *
 *   cc3m:PATTERN    parquet files in the LLaVA-ReCap-CC3M layout
 *                   (id, image{bytes,path}, conversations list<{from,value}>);
 *                   the caption is the LAST conversation's value.
 *   wds:PATTERN     webdataset .tar shards (also .tar.gz etc. via libarchive)
 *   folder:DIR      a folder of images + captions.tsv / captions.jsonl /
 *                   side-car <stem>.txt
 *
 * PATTERN may use brace expansion ({00000..00009}, {a,b}) and glob
 * characters (* ? [..]); a directory means all *.parquet / *.tar in it.
 * Without a prefix, a pattern ending in .parquet or .tar, or a directory,
 * picks the source by itself.
 *
 * Row indices are global and stable across runs: files are sorted
 * (byte-wise), rows numbered in file order then in-file order. Nothing is
 * skipped: a sample without an image or caption keeps its row, with the
 * missing field NULL.
 *
 * Thread-safety: one sf_dataset is used by one thread at a time; the
 * pointers in an sf_sample stay valid until the next call on that handle
 * (next/get/seek/close). To decode images in parallel, read samples on one
 * thread and copy the bytes (or take a batch of rows and copy) before handing
 * them out. Separate handles are independent.
 */
#ifndef SAEFLOW_DATASET_H
#define SAEFLOW_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which fields a caller needs: the reader skips the others (for parquet,
 * their columns are never read). */
enum { SF_DS_IMAGES = 1, SF_DS_CAPTIONS = 2, SF_DS_ALL = 3 };

typedef struct {
    int64_t row;          /* global row index */
    const char *id;       /* parquet `id`, tar sample key, folder file name; never NULL */
    const uint8_t *image; /* encoded image bytes as stored; NULL if absent/not requested */
    size_t image_len;
    const char *image_ext; /* "jpg", "png", "webp" or "bin" (by magic bytes); NULL without image */
    const char *caption;   /* UTF-8 as stored (NUL-terminated); NULL if absent/not requested */
    size_t caption_len;
} sf_sample;

typedef struct sf_dataset sf_dataset;

/* Opens a dataset from a spec string; NULL + sf_error on failure. Opening
 * lists the files and reads parquet footers; tar shards are not scanned yet. */
sf_dataset *sf_dataset_open(const char *spec, unsigned flags);
/* One in-memory file as a dataset (tests, fuzzing): kind "parquet" or "tar".
 * `buf` is not copied and must outlive the dataset. */
sf_dataset *sf_dataset_open_mem(const char *kind, const void *buf, size_t len, unsigned flags);
/* Samples the caller holds (a binding's images and captions): row i is
 * samples[i]; `row` is ignored, a NULL id reads "#i". Nothing is copied:
 * the samples and what they point to must outlive the dataset. Kind "memory". */
sf_dataset *sf_dataset_open_samples(const sf_sample *samples, int64_t n, unsigned flags);
void sf_dataset_close(sf_dataset *ds);

/* "cc3m", "wds", "folder" or "memory". */
const char *sf_dataset_kind(const sf_dataset *ds);
int sf_dataset_num_files(const sf_dataset *ds);
const char *sf_dataset_file(const sf_dataset *ds, int i);

/* Number of rows; -1 on error. Parquet: from the footers (free). Tar: scans
 * every shard once and keeps an index of member offsets (also used by get). */
int64_t sf_dataset_count(sf_dataset *ds);

/* The next sample in row order: 1 = got one, 0 = end, -1 = error. */
int sf_dataset_next(sf_dataset *ds, sf_sample *out);
/* Positions the iterator so that the next sf_dataset_next returns `row`. */
int sf_dataset_seek(sf_dataset *ds, int64_t row);
/* Random access: the sample at `row` (seek + next). 0 ok, -1 error (also for
 * a row out of range). Parquet reads the row's row group (cached, so rows
 * in the same group are cheap); tar uses the member index. */
int sf_dataset_get(sf_dataset *ds, int64_t row, sf_sample *out);

/* "jpg"/"png"/"webp"/"bin" from the first bytes of an encoded image. */
const char *sf_image_ext_from_magic(const uint8_t *p, size_t n);

/* Writes a human description (files, schema for parquet, counts) to `out`. */
int sf_dataset_describe(sf_dataset *ds, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
