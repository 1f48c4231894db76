/* Internal to the dataset layer: each source (parquet, tar, folder) fills a
 * small table of operations; dataset.c handles specs and dispatch. */
#ifndef SF_DS_INTERNAL_H
#define SF_DS_INTERNAL_H

#include "saeflow/dataset.h"

typedef struct {
    int64_t (*count)(sf_dataset *ds);
    int (*next)(sf_dataset *ds, sf_sample *out);
    int (*seek)(sf_dataset *ds, int64_t row);
    int (*describe)(sf_dataset *ds, FILE *out);
    void (*close)(sf_dataset *ds);
} ds_ops;

struct sf_dataset {
    const char *kind;
    const ds_ops *ops;
    unsigned flags;
    char **files; /* sorted; for folder: the one directory */
    int n_files;
    int random_access; /* set during sf_dataset_get: read as little as possible */
    const void *mem;   /* in-memory single file (sf_dataset_open_mem), else NULL */
    size_t mem_len;
    void *impl;
};

int ds_parquet_init(sf_dataset *ds);
int ds_tar_init(sf_dataset *ds);
int ds_folder_init(sf_dataset *ds);

/* Strips trailing CR/LF/space/tab in place; returns the new length. */
size_t ds_rstrip(char *s, size_t n);
/* Picks the caption from a JSON object: "caption", else "txt", else "text".
 * Returns a new string or NULL if none is a string. */
char *ds_json_caption(const char *json, size_t len);

#endif
