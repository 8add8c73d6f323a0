/*
 * test_llhttp.c -- the llhttp request corpus (tests/data/llhttp-requests.json,
 * turned into llhttp_cases.h by gen_llhttp.py).
 *
 * Every case written for llhttp's strict mode must come out as llhttp says:
 * accept (the same messages: method, target, version, header and trailer
 * fields, body, and their number), reject (an error), or upgrade (the
 * CONNECT/Upgrade hand-off, with the same messages before it). Each runs
 * whole, split in two at every byte boundary and a byte at a time.
 *
 * The corpus does not require a Host field (RFC 9112 3.2 is a server rule,
 * covered by test_request.c), so these runs do not either.
 *
 * Cases written for one of llhttp's leniencies are run too and their outcome
 * reported, as information: oneloop has no lenient mode.
 */
#include <stdlib.h>
#include <string.h>

#include "stream.h"

typedef struct llhttp_case {
    const char *id;
    const char *title;
    const char *mode;
    int strict;
    const char *input;
    size_t len;
    const char *messages;
    size_t messages_len;
    int expect; /* EXPECT_* | SKIP_BODY */
} llhttp_case;

enum { EXPECT_ACCEPT = 0, EXPECT_REJECT = 1, EXPECT_UPGRADE = 2, SKIP_BODY = 4 };

#include "llhttp_cases.h"

static int outcome(const stream *s)
{
    if (s->phase == ST_ERROR)
        return EXPECT_REJECT;
    return s->phase == ST_UPGRADED ? EXPECT_UPGRADE : EXPECT_ACCEPT;
}

static void run(stream *s, const llhttp_case *c, const size_t *splits, size_t nsplits)
{
    ol_limits limits;
    ol_limits_default(&limits);
    limits.flags &= ~OL_REQUIRE_HOST;
    stream_init(s, &limits);
    s->skip_body = (c->expect & SKIP_BODY) != 0;
    stream_run(s, c->input, c->len, splits, nsplits);
}

/* 1 if this run gives what the case expects. */
static int matches(const llhttp_case *c, const stream *s, const char *how, int report)
{
    int want = c->expect & 3;
    int got = outcome(s);
    int ok = got == want;
    if (ok && want != EXPECT_REJECT)
        ok = bytes_eq(&s->out, c->messages, c->messages_len);
    if (!ok && report) {
        fprintf(stderr, "llhttp %s \"%s\" (%s): outcome %d want %d%s%s\n  got: ", c->id, c->title,
                how, got, want, got == EXPECT_REJECT ? ", error: " : "",
                got == EXPECT_REJECT ? ol_strerror(s->error) : "");
        t_print_escaped(stderr, s->out.p ? s->out.p : "", s->out.len);
        fputs("\n  want: ", stderr);
        t_print_escaped(stderr, c->messages, c->messages_len);
        fputc('\n', stderr);
    }
    return ok;
}

/* Whole, every split, byte by byte: 1 if all give the expected result. */
static int check_case(const llhttp_case *c, int report)
{
    stream s;
    run(&s, c, NULL, 0);
    int ok = matches(c, &s, "whole", report);
    stream_free(&s);
    size_t *splits = malloc((c->len + 1) * sizeof(size_t));
    for (size_t at = 1; ok && at < c->len; at++) {
        run(&s, c, &at, 1);
        ok = matches(c, &s, "split", report);
        stream_free(&s);
        splits[at - 1] = at;
    }
    if (ok && c->len > 1) {
        run(&s, c, splits, c->len - 1);
        ok = matches(c, &s, "byte by byte", report);
        stream_free(&s);
    }
    free(splits);
    return ok;
}

void suite_llhttp(void)
{
    size_t n = sizeof(llhttp_cases) / sizeof(llhttp_cases[0]);
    int strict = 0, strict_pass = 0, lenient = 0, lenient_refused = 0;
    for (size_t i = 0; i < n; i++) {
        const llhttp_case *c = &llhttp_cases[i];
        if (c->strict) {
            strict++;
            int ok = check_case(c, 1);
            strict_pass += ok;
            CHECK(ok, "llhttp strict case %s", c->id);
        } else {
            stream s;
            run(&s, c, NULL, 0);
            lenient++;
            lenient_refused += outcome(&s) == EXPECT_REJECT;
            stream_free(&s);
        }
    }
    printf("llhttp corpus: %d/%d strict cases pass (whole, every split, byte by byte)\n",
           strict_pass, strict);
    printf("llhttp corpus: %d lenient-mode cases run for information, %d of them refused\n",
           lenient, lenient_refused);
}

void seeds_llhttp(const char *dir)
{
    for (size_t i = 0; i < sizeof(llhttp_cases) / sizeof(llhttp_cases[0]); i++) {
        const llhttp_case *c = &llhttp_cases[i];
        char name[64];
        snprintf(name, sizeof(name), "llhttp-%03zu", i);
        write_seed(dir, "request", name, 0x40, c->input, c->len);
        write_seed(dir, "stream", name, 0x80, c->input, c->len);
    }
}
