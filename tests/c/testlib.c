#define _GNU_SOURCE
#include "testlib.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int t_checks;
int t_failures;

void t_print_escaped(FILE *f, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r')
            fputs("\\r", f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\\')
            fputs("\\\\", f);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

void guard_init(guard_buf *g, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size = (size + page - 1) / page * page;
    g->map = mmap(NULL, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED)
        die("mmap");
    if (mprotect(g->map + size, page, PROT_NONE) != 0)
        die("mprotect");
    g->end = g->map + size;
    g->size = size;
}

void guard_free(guard_buf *g)
{
    munmap(g->map, g->size + (size_t)sysconf(_SC_PAGESIZE));
}

const char *guard_place(guard_buf *g, const char *data, size_t len)
{
    if (len > g->size) {
        fprintf(stderr, "guard_place: %zu bytes do not fit in %zu\n", len, g->size);
        exit(2);
    }
    char *p = g->end - len;
    if (len)
        memmove(p, data, len);
    return p;
}

void bytes_put(bytes *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            die("realloc");
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void bytes_puts(bytes *b, const char *s)
{
    bytes_put(b, s, strlen(s));
}

void bytes_printf(bytes *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        fprintf(stderr, "bytes_printf: output too long\n");
        exit(2);
    }
    bytes_put(b, tmp, (size_t)n);
}

void bytes_clear(bytes *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

void bytes_free(bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int bytes_eq(const bytes *b, const char *s, size_t n)
{
    return b->len == n && (n == 0 || memcmp(b->p, s, n) == 0);
}

void write_seed(const char *dir, const char *kind, const char *name, unsigned char control,
                const char *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, kind);
    mkdir(dir, 0777);
    mkdir(path, 0777);
    snprintf(path, sizeof(path), "%s/%s/%s", dir, kind, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        die(path);
    if (fwrite(&control, 1, 1, f) != 1 || (len && fwrite(data, 1, len, f) != len))
        die(path);
    fclose(f);
}
