/* Unicode properties and NFC as Hugging Face tokenizers has them (internal to
 * sf_text). The tables are generated from the installed tokenizers package by
 * tools/make_unicode_tables.py (clip_unicode_tables.h, clip_unicode_nfc.h),
 * so they do not depend on the Unicode version of any system library. */
#ifndef SF_TEXT_CLIP_UNICODE_H
#define SF_TEXT_CLIP_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Class of a code point for the CLIP split regex and the whitespace
 * normalizer: \p{L}, \p{N}, \s (Oniguruma's, = White_Space) or none. */
enum { SF_UNI_OTHER = 0, SF_UNI_L = 1, SF_UNI_N = 2, SF_UNI_WS = 3 };
int sf_uni_class(uint32_t c);

/* Rust's char::to_lowercase (tokenizers' Lowercase): 1 or 2 code points
 * into out, returns the count. */
int sf_uni_lower(uint32_t c, uint32_t out[2]);

/* Canonical combining class (0 for starters and unknown code points). */
int sf_uni_ccc(uint32_t c);

/* NFC of cp[0..n) (tokenizers' normalizers.NFC): a malloc'd array, its
 * length in *on. */
uint32_t *sf_uni_nfc(const uint32_t *cp, size_t n, size_t *on);

#endif
