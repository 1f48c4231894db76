/* safetensors reader and writer.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data buffer; offsets are relative to
 * the start of the data buffer.
 *
 * The reader mmaps the file and validates the whole header before returning:
 * well-formed JSON, known dtypes, shape product x dtype size == byte range,
 * ranges inside the file, non-overlapping and covering the buffer. Tensors
 * of any dtype safetensors defines with a whole-byte size are accepted (I8,
 * U8, F8_E4M3, F8_E8M0, C64, ...); asking for one as float fails only then,
 * naming the file, tensor and dtype. F32 tensors are handed out zero-copy;
 * BF16/F16/F64/F8_E4M3/F8_E5M2 are converted on load.
 */
#ifndef SAEFLOW_SAFETENSORS_H
#define SAEFLOW_SAFETENSORS_H

#include "saeflow/common.h"
#include "saeflow/dtype.h" /* sf_dtype and the conversions */

#ifdef __cplusplus
extern "C" {
#endif

#define SF_MAX_DIMS 8

/* Converts n elements of a float dtype to F32: sf_convert_to_f32 (dtype.h). */

typedef struct {
    char *name;
    sf_dtype dtype;
    int ndim;
    int64_t shape[SF_MAX_DIMS];
    uint64_t nbytes;
    const void *data; /* points into the mapping; may be unaligned for non-F32 */
} sf_tensor_info;

typedef struct {
    char *path;
    void *map;
    size_t map_len;
    const uint8_t *buf; /* start of the data buffer */
    uint64_t buf_len;
    sf_tensor_info *tensors; /* in file order */
    int n_tensors;
    char **meta_keys, **meta_vals; /* __metadata__ (string values) */
    int n_meta;
} sf_st;

/* Opens and validates. On error returns -1 with a message naming the file. */
int sf_st_open(sf_st *f, const char *path);
void sf_st_close(sf_st *f);
const sf_tensor_info *sf_st_find(const sf_st *f, const char *name);
const char *sf_st_meta(const sf_st *f, const char *key); /* NULL if absent */
int64_t sf_tensor_numel(const sf_tensor_info *t);

/* Looks up `name`, checks it is a float tensor with the expected rank and
 * shape (entries < 0 in `shape` are wildcards; pass ndim < 0 to skip the
 * check), and returns it as F32. For F32 tensors the result points into the
 * mapping (zero-copy) and *owned is NULL; otherwise it is converted into a
 * new buffer that is also stored in *owned for the caller to free().
 * Errors name the file, the tensor and the problem. */
const float *sf_st_get_f32(const sf_st *f, const char *name, int ndim, const int64_t *shape,
                           float **owned);
/* Copies `name` as F32 into dst (which holds numel floats), same checks. */
int sf_st_read_f32(const sf_st *f, const char *name, int ndim, const int64_t *shape, float *dst);
/* Rows [row0, row0 + nrows) of a 2-D float tensor, converted to F32 into dst.
 * Works without copying the whole tensor, so files larger than RAM work. */
int sf_tensor_rows_f32(const sf_tensor_info *t, int64_t row0, int64_t nrows, float *dst);

/* A model split across files (model.safetensors.index.json with a
 * "weight_map"), or a single file, behind one lookup. */
typedef struct {
    sf_st *files;
    int n_files;
} sf_st_set;
/* Opens `dir`/`base`.safetensors, or `dir`/`base`.safetensors.index.json and
 * its shards. base is e.g. "model". */
int sf_st_set_open_dir(sf_st_set *s, const char *dir, const char *base);
/* Opens an index json (its "weight_map" names shards in the same folder) and
 * every shard; checks each tensor the index lists is in the shard it names.
 * Errors name the index, the shard and a tensor it should hold. */
int sf_st_set_open_index(sf_st_set *s, const char *index_path);
void sf_st_set_close(sf_st_set *s);
/* Finds a tensor across the set; sets *file to the file holding it. */
const sf_tensor_info *sf_st_set_find(const sf_st_set *s, const char *name, const sf_st **file);

/* Writer. Tensors are referenced, not copied, until sf_stw_write(); the file
 * is written to a temp name, fsynced and renamed. */
typedef struct sf_st_writer sf_st_writer;
sf_st_writer *sf_stw_new(void);
/* data holds numel x dtype size bytes; name is copied. -1 on duplicate name. */
int sf_stw_add(sf_st_writer *w, const char *name, sf_dtype dt, int ndim, const int64_t *shape,
               const void *data);
/* F32 data stored as dt (F32: referenced as sf_stw_add; BF16/F16: converted
 * now, round to nearest even, into a buffer the writer owns). */
int sf_stw_add_f32(sf_st_writer *w, const char *name, sf_dtype dt, int ndim, const int64_t *shape,
                   const float *data);
/* A tensor whose bytes are n_pieces referenced buffers, written in order
 * (their sizes must add up to the shape's); e.g. rows spread over several
 * mapped files, written without gathering them in memory. */
int sf_stw_add_pieces(sf_st_writer *w, const char *name, sf_dtype dt, int ndim,
                      const int64_t *shape, int n_pieces, const void *const *data,
                      const uint64_t *nbytes);
void sf_stw_meta(sf_st_writer *w, const char *key, const char *value);
int sf_stw_write(sf_st_writer *w, const char *path);
void sf_stw_free(sf_st_writer *w);

/* Concatenates n opened files along dim 0 into `out` (atomically, through
 * the writer): the tensors of files[0], in its order, each followed by the
 * same tensor of the other files, which must have the same dtype, rank and
 * trailing dims. Data goes straight from the mappings to the output, so
 * memory does not grow with the files. meta: NULL-terminated key, value
 * pairs (NULL: none). */
int sf_st_concat(const sf_st *files, int n, const char *out, const char *const *meta);

#ifdef __cplusplus
}
#endif
#endif
