/*
 * testlib.h -- the little the C tests need: checks that count, buffers that
 * end at a guard page, and a growable byte string.
 */
#ifndef OL_TESTLIB_H
#define OL_TESTLIB_H

#include <stddef.h>
#include <stdio.h>

extern int t_checks;
extern int t_failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        t_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            t_failures++;                                                                          \
            fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Print bytes with C escapes, for failure messages. */
void t_print_escaped(FILE *f, const char *s, size_t len);

/*
 * A buffer whose usable part ends exactly at an inaccessible page, so that
 * reading one byte past the data handed to the code under test faults.
 */
typedef struct guard_buf {
    char *map;
    char *end;
    size_t size;
} guard_buf;

void guard_init(guard_buf *g, size_t size);
void guard_free(guard_buf *g);
/* Copy data so that it ends at the guard page; returns the copy. */
const char *guard_place(guard_buf *g, const char *data, size_t len);

/* A growable byte string. */
typedef struct bytes {
    char *p;
    size_t len, cap;
} bytes;

void bytes_put(bytes *b, const char *s, size_t n);
void bytes_puts(bytes *b, const char *s);
void bytes_printf(bytes *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bytes_clear(bytes *b);
void bytes_free(bytes *b);
int bytes_eq(const bytes *b, const char *s, size_t n);

/* Write one fuzzing seed, dir/kind/name, as a control byte then data. */
void write_seed(const char *dir, const char *kind, const char *name, unsigned char control,
                const char *data, size_t len);

/* Test suites, one per feature, and the seeds each contributes. */
void suite_request(void);
void suite_chunked(void);
void suite_response(void);
void suite_stream(void);
void suite_llhttp(void);
void suite_reactor(void);
void suite_ws(void);
void seeds_request(const char *dir);
void seeds_stream(const char *dir);
void seeds_llhttp(const char *dir);
void seeds_ws(const char *dir);

#endif /* OL_TESTLIB_H */
