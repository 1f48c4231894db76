/* The pipeline layer: where activations come from, and how a long extraction
 * is cut into resumable shards. Sits between the models and the commands:
 *
 *   sf_act_source   a producer of batches of activation rows. Each batch holds
 *                   one or more named streams (CLIP: "vision" and/or "text";
 *                   a file: the tensor key; FLUX sampling, later: one stream
 *                   per hooked block from one forward), each (n, d) F32 rows
 *                   with the dataset row (and token position) of every row,
 *                   plus the examples (dataset rows, source ids) the batch
 *                   covers and the ones it skipped, with the reason.
 *   sources         sf_clip_source_open (a dataset through CLIP's towers: any
 *                   hooked layer, pooled or projected, CLS/EOS or every
 *                   token) and sf_file_source_open (rows of a tensor key
 *                   across safetensors files, with their row map).
 *   sf_extract_run  pulls a source through shards of dataset rows, writes each
 *                   finished shard atomically with a fingerprint of the
 *                   settings (OUT.partNNNNN.safetensors), skips the shards
 *                   an earlier run with the same fingerprint finished, and
 *                   concatenates the parts into OUT (sf_st_concat).
 *
 * Usage:
 *   sf_act_source *src = sf_clip_source_open(&opts);  // NULL + sf_errmsg()
 *   sf_act_batch b;
 *   while ((r = sf_act_source_next(src, &b)) == 1)
 *       use(b.stream[0].x, b.stream[0].n, b.stream[0].d, b.stream[0].rows);
 *   sf_act_source_close(src);
 * A batch's pointers stay valid until the next call on the source.
 */
#ifndef SAEFLOW_PIPELINE_H
#define SAEFLOW_PIPELINE_H

#include "saeflow/common.h"
#include "saeflow/dataset.h"
#include "saeflow/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SF_ACT_MAX_STREAMS 16

typedef struct {
    const char *name;    /* "vision", "text", a file's tensor key, a hook name */
    int64_t d;           /* floats per row */
    int64_t n;           /* rows in this batch */
    const float *x;      /* (n, d) */
    const int64_t *rows; /* (n) dataset row of each activation row */
    const int32_t *pos;  /* (n) token position of each row; NULL: one row per example */
} sf_act_stream;

typedef struct {
    int64_t row;     /* dataset row */
    const char *id;  /* its source id */
    const char *why; /* "no image", "no caption", or the decode/tokenizer error */
} sf_act_skip;

typedef struct {
    int n_streams;
    sf_act_stream stream[SF_ACT_MAX_STREAMS];
    int64_t n_examples;         /* examples (dataset rows) with rows in this batch */
    const int64_t *ex_rows;     /* (n_examples) their dataset rows, ascending */
    const char *const *ex_ids;  /* (n_examples) their source ids (no newlines); NULL if unknown */
    int64_t n_skipped;          /* examples dropped while making this batch */
    const sf_act_skip *skipped; /* (n_skipped) */
    int64_t next_row;           /* dataset (or file) row the source reads next: progress */
} sf_act_batch;

typedef struct sf_act_source sf_act_source;
typedef struct {
    /* 1 = a batch (it may hold no rows when every example was skipped),
     * 0 = end of the range, -1 = error. */
    int (*next)(sf_act_source *s, sf_act_batch *b);
    /* Restricts reading to rows [row0, row1) and positions at row0. */
    int (*seek)(sf_act_source *s, int64_t row0, int64_t row1);
    void (*close)(sf_act_source *s);
} sf_act_source_ops;

/* The common head of every source (implementations embed it first). */
struct sf_act_source {
    const sf_act_source_ops *ops;
    int n_streams;
    const char *names[SF_ACT_MAX_STREAMS];
    int64_t d[SF_ACT_MAX_STREAMS];     /* row width per stream */
    int per_token[SF_ACT_MAX_STREAMS]; /* stream rows are tokens (pos is set) */
    int64_t n_rows;                    /* dataset (or file) rows the source covers */
};

int sf_act_source_next(sf_act_source *s, sf_act_batch *b);
int sf_act_source_seek(sf_act_source *s, int64_t row0, int64_t row1);
void sf_act_source_close(sf_act_source *s);

/* ---- a dataset through CLIP ----------------------------------------------- */

typedef struct {
    const char *model;         /* Hugging Face CLIP directory */
    const char *dataset;       /* dataset spec (see saeflow/dataset.h) */
    const char *captions_path; /* one caption per line, line i for row i; NULL: the dataset's */
    const char *tokenizer_dir; /* NULL: the model directory */
    /* "layer:N" / "hidden:N", "pooled", "embeds", or "none" / NULL (tower off) */
    const char *vision, *text;
    /* error when the checkpoint lacks a requested tower (otherwise the tower
     * is silently dropped, so a default request works on single towers) */
    int vision_required, text_required;
    int tokens_all;    /* layer outputs: every token (vision) / non-padding token (text) */
    sf_dtype dtype;    /* weights in memory: F32 (0) or BF16 */
    int batch;         /* examples per forward */
    int fixed_groups;  /* see below */
    int pillow_legacy; /* resize pass order of Pillow <= 12 */
    /* transparency: 0 = alpha dropped (Pillow convert("RGB"), transformers 4,
     * the reference), 1 = composited onto white (transformers >= 5
     * convert_to_rgb): SF_IMAGE_ALPHA_WHITE */
    int alpha_white;
    int64_t limit; /* only the first `limit` dataset rows; < 0: all (0: none!) */
    /* instead of `dataset`: samples in memory (sf_dataset_open_samples; a
     * binding's images and captions), borrowed until the source is closed */
    const sf_sample *samples;
    int64_t n_samples;
    /* a model loaded from `model` (sf_clip_load) to use instead of loading it
     * again, borrowed until the source is closed; `dtype` should say how it
     * was loaded (the fingerprint records it). NULL: the source loads it. */
    const struct sf_clip *clip;
} sf_clip_source_opts;

/* Batching. Each call reads up to `batch` examples that have the inputs the
 * towers need (others are skipped: "no image" / "no caption"), decodes,
 * preprocesses and tokenizes them in parallel (failures skipped with their
 * error), and runs the towers:
 *   fixed_groups = 0: on the examples of that read (<= batch; what extract
 *     does, so the forward groups follow the shards and reads);
 *   fixed_groups = 1: on exactly `batch` prepared examples, counted from the
 *     first one (the last group may be shorter), queueing the rest; the GEMM
 *     shapes, and so every bit, then depend on neither the caller's batch
 *     sizes nor the thread count.
 * With no skipped examples and a single range both give the same groups.
 * Streams: "vision" then "text", whichever are on. */
sf_act_source *sf_clip_source_open(const sf_clip_source_opts *o);
/* The fingerprint of everything that changes the numbers or the row layout:
 * "saeflow-extract-v1 model=... shard_rows=N limit=N". New string. */
char *sf_clip_source_fingerprint(const sf_act_source *s, int64_t shard_rows);

/* ---- rows of a tensor across safetensors files ---------------------------- */

typedef struct {
    const char *const *paths; /* files, in row order (rows continue across them) */
    int n_paths;
    const char *key; /* tensor [N, d], a float dtype */
    /* I64 [N] tensor with each row's dataset row: NULL = "<key>_rows", else
     * "rows", when the first file has it; "none" = no map */
    const char *rows_key;
    int64_t row_offset; /* without a map: row i is dataset row row_offset + i */
    int64_t limit;      /* only the first `limit` rows; < 0: all */
    int64_t batch;      /* rows per batch */
} sf_file_source_opts;

/* One stream named `key`; rows are checked to be finite. With a row map and
 * an I32 '<key>_pos' tensor (extract's per-token output) the rows are tokens:
 * per_token[0] is set and the stream carries their positions. */
sf_act_source *sf_file_source_open(const sf_file_source_opts *o);
/* The row map tensor's name, NULL when rows are numbered by position. */
const char *sf_file_source_rows_key(const sf_act_source *s);
/* Metadata of the first file, NULL if absent. */
const char *sf_file_source_meta(const sf_act_source *s, const char *key);

/* ---- FLUX.1 sampling (the reference's FluxActivationSampler) -------------- */

typedef struct {
    const char *model;   /* FLUX transformer: pipeline folder, transformer folder, BFL file */
    const char *prompts; /* `saeflow flux encode-prompts` output: prompt_embeds (N, L, joint),
                          * pooled_prompt_embeds (N, pooled); dataset row i = prompt i */
    /* or prompts encoded on the fly, a group at a time (T5 and the transformer
     * then share memory: 33 GB in BF16 for FLUX.1; encode first where that
     * does not fit): one prompt per line of `captions`, or the captions of
     * `dataset` (a row without one: the empty prompt), through the text
     * encoders of `text_model` (a FLUX pipeline folder; NULL: model) or of
     * text_paths, padded to max_sequence_length T5 tokens (0: 256) */
    const char *captions, *dataset, *text_model;
    const struct sf_flux_text_paths_s *text_paths;
    int max_sequence_length;
    sf_dtype t5_dtype;        /* 0: as stored */
    const char *const *hooks; /* sf_flux_parse_request strings, one stream each */
    int n_hooks;
    int height, width;        /* pixels (0: 256) */
    int batch;                /* prompts per forward, a "group" (0: 32) */
    uint64_t seed;            /* group g: torch.Generator("cpu").manual_seed(seed + g) */
    int rng_kind;             /* sf_torch_rng_kind of that randn (0: AVX2) */
    int64_t tokens_per_image; /* <= 0: every row; N: N random rows per prompt and hook */
    int64_t rows_per_batch;   /* > 0 (instead): N random rows of a group's rows per hook, the
                               * reference's nsamples (randperm over the batch, first N) */
    int shuffle;              /* 0: rows in (prompt, token) order; W >= 1: the rows of W
                               * consecutive groups in a seeded random order */
    sf_dtype dtype;           /* transformer weights in memory (0: as stored) */
    int64_t limit;            /* only the first `limit` prompts; < 0: all */
} sf_flux_source_opts;

/* One step of FluxPipeline as the reference ran it (1 step: sigma 1, the
 * transformer sees pure noise; guidance 0 where the model embeds it; text
 * ids zero), stopped after the last hooked block. Prompts are cut into
 * groups of `batch` by their index (group g = prompts [g B, g B + B)), so
 * a group's noise, and every row, depend on neither the range read nor the
 * thread count (up to GEMM summation order). Each next() returns one window
 * of `shuffle` groups (1 without shuffle), restricted to the range; streams
 * are the hooks in the order given, named by sf_flux_request_name, rows
 * with their prompt (rows) and token position (pos: text tokens 0..T-1,
 * image tokens from 0 for image-only streams; T + i for image token i in a
 * single-block text+image stream). Token selection draws, per prompt and
 * hook, from a generator seeded by (seed, prompt, hook); the shuffle
 * permutes a window's rows with one seeded by (seed, window, hook). A range
 * that starts or ends inside a window gives that window's rows in another
 * order: keep ranges (extract shards) multiples of batch x shuffle. */
sf_act_source *sf_flux_source_open(const sf_flux_source_opts *o);
/* "saeflow-flux-extract-v1 model=... hooks=... seed=..." (new string). */
char *sf_flux_source_fingerprint(const sf_act_source *s, int64_t shard_rows);
/* Prompts per window (batch x max(shuffle, 1)). */
int64_t sf_flux_source_window(const sf_act_source *s);
/* The noise of group g of n prompts in groups of `batch`: one randn
 * (gn, C, h, w) from torch.Generator("cpu").manual_seed(seed + g), packed
 * into noise (gn, (h/2)(w/2), 4C); gn = batch, shorter for the last group.
 * What the source feeds the transformer. */
int sf_flux_source_group_noise(uint64_t seed, int batch, int64_t n, int64_t g, int64_t C, int64_t h,
                               int64_t w, int rng_kind, float *noise);
/* Prompt i's slice of its group's noise, out ((h/2)(w/2), 4C): the initial
 * latents to generate exactly the image whose activations the source
 * recorded (explore's FLUX images). group: scratch of batch x that size, or
 * NULL. */
int sf_flux_source_prompt_noise(uint64_t seed, int batch, int64_t n, int64_t i, int64_t C,
                                int64_t h, int64_t w, int rng_kind, float *group, float *out);

/* ---- resumable sharded extraction ----------------------------------------- */

typedef struct {
    const char *out;         /* final safetensors file */
    const char *fingerprint; /* stored in every part and in out */
    const char *meta_key;    /* metadata key of the fingerprint (NULL: "saeflow_extract") */
    int64_t shard_rows;      /* dataset rows per part */
    const char *label;       /* progress bar label */
    /* called for each skipped example; bar: a progress bar is on screen */
    void (*on_skip)(void *ctx, const sf_act_skip *s, int bar);
    void *ctx;
} sf_extract_opts;

typedef struct {
    int already_complete; /* out existed with this fingerprint: nothing done */
    int64_t rows;         /* examples written */
    int64_t skipped;      /* examples skipped, over all parts */
    int64_t n_shards, fresh_shards;
    int worker; /* under MPI, a rank other than 0: it computed its parts, rank 0 merged */
} sf_extract_result;

/* Runs src over its n_rows dataset rows. Part k holds rows [k S, (k+1) S):
 * "rows" I64 [n] (dataset row per example), per stream "<name>" F32 [m, d]
 * (+ "<name>_rows" I64 [m] and "<name>_pos" I32 [m] for per-token streams),
 * "ids" U8 (newline-terminated source ids); metadata meta_key = fingerprint
 * and "skipped". A part with another fingerprint is an error (nothing is
 * touched); finished parts are reused. Once all exist they are concatenated
 * into out (metadata + "rows" = count) and removed. Returns 0; 1 when no
 * example had its inputs (nothing written, parts removed, error set); -1 on
 * error (finished parts kept for a rerun).
 * Under MPI (R ranks) part k is computed by rank k % R, and rank 0 merges
 * once every rank is done (the parts must be on a file system all ranks
 * share); the output is the same file for any R. */
int sf_extract_run(sf_act_source *src, const sf_extract_opts *o, sf_extract_result *res);
/* "OUT.partNNNNN.safetensors" (new string). */
char *sf_extract_part_path(const char *out, int64_t k);

#ifdef __cplusplus
}
#endif
#endif
