/* The saeflow command line: one binary, one file per subcommand
 * (src/cli/cmd_<name>.c defining `int cmd_<name>(int argc, char **argv)`),
 * registered in the table in main.c. Subcommands parse their flags with
 * getopt_long, print usage on --help, and return the process exit code:
 * 0 ok, 1 runtime error (message already printed), 2 usage error. */
#ifndef SAEFLOW_CLI_H
#define SAEFLOW_CLI_H

#include <getopt.h>

#include "saeflow/common.h"
#include "saeflow/flux_steer.h"
#include "saeflow/kernels.h"
#include "saeflow/sae.h"
#include "saeflow/sae_train.h"

/* Prints "saeflow <cmd>: <sf_errmsg()>" to stderr and returns 1. */
int cli_fail(const char *cmd);
/* The library names a parameter as it is spelt ("ghost_grads applies to arch
 * standard", "groups: sizes sum to ..."); this is msg with "--" before the
 * words that are long options in opts: every such word (all = 1), or only the
 * leading word (all = 0). Returns a static buffer. */
const char *cli_flag_words(const char *msg, const struct option *opts, int all);
/* cli_fail with the message through cli_flag_words. */
int cli_fail_flags(const char *cmd, const struct option *opts, int all);
/* Prints "saeflow <cmd>: <message>" plus a hint to use --help; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) SF_PRINTF(2, 3);
/* Strict number parsing for flag values; on error prints and returns -1. */
int cli_parse_int(const char *cmd, const char *flag, const char *s, long long *out);
int cli_parse_double(const char *cmd, const char *flag, const char *s, double *out);
/* Training flags that train and sweep share: the values (each command sets
 * its own defaults first), their getopt entries (CLI_TRAIN_OPTIONS, codes
 * from CLI_TF_FIRST up) and one parser. */
typedef struct {
    double lr, auxk, bandwidth, jumpthreshold;
    long long lr_warmup_steps, lmbda_warmup_steps, batch_size, num_epochs, aux_k, bodycount, seed,
        threads;
    int normalise;
    int jumpthreshold_set; /* --jumpthreshold was given */
} cli_train_flags;
enum {
    CLI_TF_FIRST = 3000,
    CLI_TF_LR = CLI_TF_FIRST,
    CLI_TF_WARM,
    CLI_TF_LWARM,
    CLI_TF_BS,
    CLI_TF_EP,
    CLI_TF_AUXK,
    CLI_TF_AUX_K,
    CLI_TF_BODY,
    CLI_TF_BW,
    CLI_TF_JT,
    CLI_TF_NORM,
    CLI_TF_SEED,
    CLI_TF_THREADS,
    CLI_TF_END
};
#define CLI_TRAIN_OPTIONS                                                                          \
    {"lr", required_argument, 0, CLI_TF_LR},                                                       \
        {"lr_warmup_steps", required_argument, 0, CLI_TF_WARM},                                    \
        {"lmbda_warmup_steps", required_argument, 0, CLI_TF_LWARM},                                \
        {"batch_size", required_argument, 0, CLI_TF_BS},                                           \
        {"num_epochs", required_argument, 0, CLI_TF_EP},                                           \
        {"auxk", required_argument, 0, CLI_TF_AUXK},                                               \
        {"aux_k", required_argument, 0, CLI_TF_AUX_K},                                             \
        {"bodycount", required_argument, 0, CLI_TF_BODY},                                          \
        {"bandwidth", required_argument, 0, CLI_TF_BW},                                            \
        {"jumpthreshold", required_argument, 0, CLI_TF_JT},                                        \
        {"normalise", no_argument, 0, CLI_TF_NORM}, {"seed", required_argument, 0, CLI_TF_SEED}, { \
        "threads", required_argument, 0, CLI_TF_THREADS                                            \
    }
/* opt is one of them: parses arg into f and returns 1 (-1 after printing a
 * usage error); otherwise 0. */
int cli_train_flag(const char *cmd, int opt, const char *arg, cli_train_flags *f);
/* Their ranges; 0, or prints a usage error and returns 2. */
int cli_train_flags_check(const char *cmd, const cli_train_flags *f);

/* The flags of the commands that run a checkpoint over one tensor (encode,
 * decode, surgery): --checkpoint, --input, --key, --out, --outkey,
 * --threads. Each command sets its defaults (key, outkey) first, lists
 * CLI_SAE_IO_OPTIONS (plus {"outkey", ..., CLI_IO_OUTKEY} if it has one) and
 * passes every option code to cli_sae_io_flag. */
typedef struct {
    const char *ckpt, *input, *key, *out, *outkey;
    long long threads;
} cli_sae_io;
enum { CLI_IO_CKPT = 3100, CLI_IO_INPUT, CLI_IO_KEY, CLI_IO_OUT, CLI_IO_OUTKEY, CLI_IO_THREADS };
#define CLI_SAE_IO_OPTIONS                                                                         \
    {"checkpoint", required_argument, 0, CLI_IO_CKPT},                                             \
        {"input", required_argument, 0, CLI_IO_INPUT}, {"key", required_argument, 0, CLI_IO_KEY},  \
        {"out", required_argument, 0, CLI_IO_OUT}, {                                               \
        "threads", required_argument, 0, CLI_IO_THREADS                                            \
    }
/* opt is one of them: stores arg in io and returns 1 (-1 after printing a
 * usage error); otherwise 0. */
int cli_sae_io_flag(const char *cmd, int opt, const char *arg, cli_sae_io *io);
/* After getopt: no stray arguments, --checkpoint, --input and --out given,
 * --threads in range; sets the thread count and loads the checkpoint into s.
 * Returns 0, or the exit code after printing the error (2 usage, 1 failure). */
int cli_sae_io_load(const char *cmd, const cli_sae_io *io, int argc, char **argv, sf_sae *s);
/* Opens io->key of io->input as activation rows whose width must match s.
 * Returns 0, or 1 after printing the error. */
int cli_sae_io_data(const char *cmd, const cli_sae_io *io, const sf_sae *s, sf_sae_data *D);

/* --pillow 13|12 -> 0, 1 (sf_clip_preproc.pillow_legacy_order: Pillow <= 12
 * runs the resize passes in another order); -1 after an error. */
int cli_parse_pillow(const char *cmd, const char *s, int *legacy);
/* --alpha drop|white -> 0, 1 (sf_clip_source_opts.alpha_white); -1 after an
 * error. */
int cli_parse_alpha(const char *cmd, const char *s, int *white);
/* --save_dtype f32|bf16|f16 -> 0, 1, 2 (sf_sae.save_half); -1 after an error. */
int cli_parse_save_dtype(const char *cmd, const char *s, int *out);

/* Files named by repeatable, comma-separated flags (--tensorpath a,b --tensorpath c):
 * shells make repeating a flag awkward, so both forms work. */
typedef struct {
    const char **v; /* the file names, in order */
    int n;
    char **bufs; /* copies of the flag values that v points into */
    int nbufs;
} cli_paths;
/* Adds the files of one flag value; empty items are skipped. */
void cli_paths_add(cli_paths *p, const char *arg);
void cli_paths_free(cli_paths *p);

#define SF_COMMANDS(X)                                                                             \
    X(help, "show commands, or `saeflow help <cmd>` for one")                                      \
    X(data, "datasets: info, write images, captions (parquet, tar shards, folders)")               \
    X(extract, "CLIP image/text activations of a dataset -> safetensors (resumable)")              \
    X(flux, "run the FLUX.1 transformer on given inputs -> activations at any block")              \
    X(train, "train a sparse autoencoder (topk, standard, gated, jumprelu, ...)")                  \
    X(encode, "activations -> sparse SAE codes (CSR safetensors)")                                 \
    X(decode, "SAE codes -> reconstructed activations")                                            \
    X(surgery, "activations -> reconstructions with one SAE feature steered")                      \
    X(synth, "synthetic activations from a known sparse dictionary")                               \
    X(eval, "FVU, L0 and dictionary recovery (MMCS) of a checkpoint")                              \
    X(convert, "SAE checkpoints between seed, SAELens and sparsify layouts")                       \
    X(sweep, "train a grid of SAEs on the same data: table + L0/FVU frontier plot")                \
    X(demo, "synth + train + eval on embedded synthetic ground truth (the main job)")              \
    X(topk, "top-N activating rows and statistics of every SAE feature")                           \
    X(explore, "build the static feature explorer site from a top-k file")                         \
    X(serve, "serve an explorer site read-only on localhost")

#define X(name, desc) int cmd_##name(int argc, char **argv);
SF_COMMANDS(X)
#undef X

/* `saeflow flux encode-prompts` (cmd_flux_prompts.c), dispatched by main.c
 * before the command table so it works with or without a `flux` command. */
int cli_flux_encode_prompts(int argc, char **argv);
/* A weight-storage flag value: "stored" (-> `stored`), "f32", "bf16" or "f16".
 * Returns -1 for anything else (the caller names its flag in the message). */
int cli_parse_weight_dtype(const char *s, sf_dtype stored, sf_dtype *out);
/* `saeflow flux generate` (cmd_flux_generate.c), dispatched the same way. */
int cli_flux_generate(int argc, char **argv);

/* The --steer flags of `flux generate` (cmd_flux_steer.c): the raw flag
 * values, then what cli_steer_prepare makes of them. */
#define CLI_STEER_MAX 16
#define CLI_STEER_MAX_GRID 64
#define CLI_STEER_GAP 2 /* white pixels between grid cells */
typedef struct {
    const char *spec[CLI_STEER_MAX];
    int n;
    const char *hook, *mode, *steps, *tokens, *grid;
    /* prepared */
    char *ckpt[CLI_STEER_MAX];
    sf_sae sae[CLI_STEER_MAX];
    int have_sae[CLI_STEER_MAX];
    sf_flux_steer st[CLI_STEER_MAX];
    double grid_s[CLI_STEER_MAX_GRID];
    int n_grid;       /* 0: no grid */
    float *strengths; /* (batch) grid: each example's strength */
    uint8_t *mask;    /* (n_steps) steps steered */
    int n_steps;
    sf_flux_steer_ctx ctx; /* sf_flux_gen_opts.edit_ctx */
} cli_steer;
/* Parses the flags and loads and checks the checkpoints (hook, feature):
 * 0, or the exit code (2 usage, 1 otherwise; message printed). No --steer
 * and no other steer flag: 0, nothing to do. */
int cli_steer_prepare(const char *cmd, cli_steer *s, int steps, int latents_only, int batch);
/* The checks that need the transformer (block exists, widths); -1 + error. */
int cli_steer_check_model(cli_steer *s, const sf_flux *m);
void cli_steer_free(cli_steer *s);
/* "_fF_sS" per steer (grid: the strength of row `cell`), "" without steers. */
void cli_steer_suffix(const cli_steer *s, int cell, char *buf, size_t n);
/* OUT/rowRRRRRR_fF_grid.png (rows = strengths, columns = seeds) and its
 * .json sidecar (settings and the cell file names `names` [strength][seed]),
 * atomically, the sidecar last. cells (n_grid * nseed, height, width, 3). */
int cli_steer_write_grid(const cli_steer *s, const char *outd, int64_t row, const char *prompt,
                         const uint64_t *seeds, int nseed, const uint8_t *cells, int width,
                         int height, char *const *names);

/* Prompts with their line number / dataset row (cmd_flux_prompts.c). */
typedef struct {
    char **s;
    int64_t *row;
    int64_t n, cap;
} cli_prompt_list;
/* Lines [offset, offset + limit) of a UTF-8 text file (limit -1: all);
 * errors name the line that is not UTF-8 or holds a NUL. */
int cli_read_prompts(const char *path, int64_t offset, int64_t limit, cli_prompt_list *p);
/* Captions of a dataset spec (cc3m:, wds:, folder:); no caption = "". */
int cli_read_prompt_dataset(const char *spec, int64_t offset, int64_t limit, cli_prompt_list *p);
void cli_prompt_list_free(cli_prompt_list *p);
/* `saeflow train --source flux|file` (cmd_train_source.c) and `saeflow
 * extract --source flux` (cmd_extract_flux.c), which train and extract hand
 * over to when --source is among their arguments. */
int cmd_train_source(int argc, char **argv);
int cmd_extract_flux(int argc, char **argv);
/* 1 when argv holds --source (or --source=...). */
int cli_has_source_flag(int argc, char **argv);

/* ---- rows across MPI ranks (cli_dist.c, docs/mpi.md) ----------------------
 * encode and topk cut their rows into chunks that a single process would
 * also make (same boundaries, so every row's code is the same bits); chunk c
 * runs on rank c % R and rank 0 consumes the chunks in order. A chunk of
 * encoded rows as it travels to rank 0: */
typedef struct {
    int64_t m;          /* rows */
    int64_t next_row;   /* source position after the chunk (progress) */
    int64_t skipped;    /* examples the source dropped in it */
    sf_sae_codes codes; /* (capacity, k); rows [0, m) used */
    int64_t *rows;      /* (m) dataset row ids, or NULL */
    int32_t *pos;       /* (m) token positions, or NULL */
} cli_chunk;
int cli_chunk_send(const cli_chunk *c);
/* Into c's buffers, which must hold the sender's m rows (same capacity).
 * A rank that fails returns from its command as usual; main() then ends
 * every rank (MPI_Abort), so none waits for its chunks. */
int cli_chunk_recv(cli_chunk *c, int src);

/* ---- FLUX feature analysis (cli_flux_topk.c), shared by topk and explore ---- */
/* The sampling settings of a FLUX activation stream, parsed from the
 * fingerprint `extract --source flux` stores (sf_flux_source_fingerprint):
 * exactly one of prompts (an encode-prompts file), captions (a text file)
 * and dataset (a spec) is set. */
typedef struct {
    char *fingerprint, *model, *prompts, *captions, *dataset;
    int T, height, width, batch, rng_kind, dtype, shuffle;
    uint64_t seed;
    int64_t n, tokens_per_image, rows_per_batch; /* n: prompts the source covered */
} cli_flux_meta;
int cli_flux_meta_parse(const char *fingerprint, cli_flux_meta *m);
void cli_flux_meta_free(cli_flux_meta *m);
/* Token layout of a hook's rows (sf_topk_set_tokens): text hooks T text
 * tokens and no grid; image hooks the (H/16) x (W/16) grid from 0; single
 * blocks text then the grid from T. */
int cli_flux_layout(const cli_flux_meta *m, const char *hook, int *T, int *gh, int *gw, int *first);
/* -1 + error when the rows were shuffled or drawn per batch (topk needs an
 * image's tokens together). */
int cli_flux_check_tokens(const cli_flux_meta *m);
/* The captions of the prompt rows (captions file or dataset; none for a
 * prompts file: p->n = 0). */
int cli_flux_captions(const cli_flux_meta *m, cli_prompt_list *p);
/* Image cache folder CACHE/flux-HASH, HASH of (generation model, prompts,
 * seed, group size, rng, prompt count, size, steps, ...); image of prompt row
 * R: DIR/rowRRRRRRRR.png. New strings. */
char *cli_flux_image_dir(const cli_flux_meta *m, const char *cache, const char *gen_model,
                         int steps);
char *cli_flux_image_path(const char *dir, int64_t row);
typedef struct {
    const cli_flux_meta *meta;
    const char *dir;        /* cli_flux_image_dir */
    const char *gen_model;  /* FLUX pipeline folder (transformer/, vae/, scheduler/) */
    const char *text_model; /* text encoders, for captions / dataset prompts */
    const cli_prompt_list *captions;
    int steps, batch, quiet;
} cli_flux_images_opts;
/* Makes the images of rows[n] (-1 entries ignored) that the cache lacks: the
 * prompt's embeddings and its slice of its group's noise, `steps` steps. */
int cli_flux_make_images(const cli_flux_images_opts *o, const int64_t *rows, int64_t n,
                         int64_t *made);
/* The T5 token strings of a caption as the sampler padded it to T tokens:
 * the unpadded ones (ending with </s>); *n of them (new array of new strings). */
struct sf_t5_tokenizer;
char **cli_flux_token_strings(struct sf_t5_tokenizer *tok, const char *caption, int T, int *n);

#endif
