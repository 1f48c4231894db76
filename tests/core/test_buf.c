/* Core buffers (saeflow/buf.h): string builder, growable arrays, UTF-8; the
 * scratch arena (saeflow/common.h). */
#include "saeflow/buf.h"
#include "test.h"

TEST(string_builder) {
    sf_sbuf b = {0};
    char *e = sf_sb_release(&b); /* nothing appended: "" */
    CHECK(e && e[0] == 0 && b.s == NULL);
    free(e);
    sf_sb_puts(&b, "ab");
    sf_sb_put(&b, "cdef", 2);
    sf_sb_printf(&b, "-%d-%s", 42, "x");
    CHECK_STR(b.s, "abcd-42-x");
    CHECK(b.len == 9);
    for (int i = 0; i < 1000; i++) /* growth past several doublings */
        sf_sb_printf(&b, "%04d", i);
    CHECK(b.len == 9 + 4000 && strlen(b.s) == b.len);
    CHECK(!memcmp(b.s + 9 + 4 * 999, "0999", 4));
    b.len = 0; /* reuse */
    sf_sb_puts(&b, "z");
    char *s = sf_sb_release(&b);
    CHECK_STR(s, "z");
    CHECK(b.s == NULL && b.len == 0 && b.cap == 0);
    free(s);
    sf_sb_free(&b);
}

TEST(vectors) {
    SF_VEC(int64_t) v = {0};
    for (int64_t i = 0; i < 100; i++)
        sf_vec_push(&v, i * i);
    CHECK(v.n == 100 && v.cap >= 100);
    CHECK(v.v[99] == 99 * 99);
    const int64_t more[3] = {-1, -2, -3};
    sf_vec_append(&v, more, 3);
    sf_vec_append(&v, NULL, 0);
    CHECK(v.n == 103 && v.v[100] == -1 && v.v[102] == -3 && v.v[50] == 2500);
    sf_vec_free(&v);
    CHECK(v.v == NULL && v.n == 0 && v.cap == 0);
    size_t cap = 0;
    char *p = sf_grow(NULL, &cap, 17, 1);
    CHECK(p && cap == 32);
    p = sf_grow(p, &cap, 20, 1); /* already big enough: unchanged */
    CHECK(cap == 32);
    free(p);
}

TEST(utf8) {
    const unsigned char *u = (const unsigned char *)"a\xc3\xa9\xe6\x9d\xb1\xf0\x9f\x99\x82";
    CHECK(sf_utf8_len(u, 10) == 1 && sf_utf8_len(u + 1, 9) == 2 && sf_utf8_len(u + 3, 7) == 3 &&
          sf_utf8_len(u + 6, 4) == 4);
    CHECK(sf_utf8_len(u + 6, 3) == 0);                                     /* cut short */
    CHECK(sf_utf8_len((const unsigned char *)"\xc0\xaf", 2) == 0);         /* overlong */
    CHECK(sf_utf8_len((const unsigned char *)"\xed\xa0\x80", 3) == 0);     /* surrogate */
    CHECK(sf_utf8_len((const unsigned char *)"\xf4\x90\x80\x80", 4) == 0); /* > U+10FFFF */
    CHECK(sf_utf8_len((const unsigned char *)"\x80", 1) == 0);             /* continuation */
    CHECK(sf_utf8_len(u, 0) == 0);
    CHECK(sf_utf8_count((const char *)u, 10) == 4);
    CHECK(sf_utf8_count("", 0) == 0);
    char *s = sf_utf8_sanitize("ok \xff caf\xc3\xa9 \xed\xa0\x80");
    CHECK_STR(s, "ok \xEF\xBF\xBD caf\xc3\xa9 \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    free(s);
    s = sf_utf8_sanitize("");
    CHECK(s && s[0] == 0);
    free(s);
    CHECK(sf_utf8_sanitize(NULL) == NULL);
}

/* The kept block is reused while big enough, grown when not, and a take
 * while it is held gets a private block that give frees (ASan checks). */
TEST(arena) {
    sf_arena *a = sf_arena_new();
    char *p = sf_arena_take(a, 1000);
    CHECK(p && (uintptr_t)p % 64 == 0);
    memset(p, 1, 1000);
    char *q = sf_arena_take(a, 10); /* held: a block of its own */
    CHECK(q && q != p);
    memset(q, 2, 10);
    sf_arena_give(a, q);
    sf_arena_give(a, p);
    CHECK(sf_arena_take(a, 500) == p); /* reused */
    sf_arena_give(a, p);
    char *r = sf_arena_take(a, 1 << 20); /* grown */
    memset(r, 3, 1 << 20);
    sf_arena_give(a, r);
    sf_arena_free(a);
    sf_arena_free(NULL);
    sf_arena_give(NULL, sf_arena_take(NULL, 8)); /* no arena: plain allocation */
}

/* Parts of one block: 64-byte aligned, in order, not overlapping, NULL for
 * an empty part. */
TEST(arena_floats) {
    sf_arena *a = sf_arena_new();
    float *p0, *p1, *p2;
    float **const buf[] = {&p0, &p1, &p2};
    const size_t len[] = {5, 0, 33};
    void *block = sf_arena_take_floats(a, 3, len, buf);
    CHECK(p0 == block && p1 == NULL && p2 == p0 + 16);
    CHECK((uintptr_t)p2 % 64 == 0);
    for (int i = 0; i < 33; i++)
        p2[i] = 1.0f; /* the last part is all there (ASan) */
    sf_arena_give(a, block);
    sf_arena_free(a);
}

int main(void) {
    RUN(string_builder);
    RUN(arena);
    RUN(arena_floats);
    RUN(vectors);
    RUN(utf8);
    return test_summary();
}
