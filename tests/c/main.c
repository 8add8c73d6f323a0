/*
 * main.c -- runs every C test suite (the wire layer, and the reactor of the
 * connection core, which is plain C too); exits non-zero on any
 * failed check. With --seeds DIR it writes every test input as a fuzzing seed.
 */
#include <string.h>

#include "testlib.h"

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--seeds") == 0) {
        seeds_request(argv[2]);
        seeds_stream(argv[2]);
        seeds_llhttp(argv[2]);
        seeds_ws(argv[2]);
        return 0;
    }
    suite_request();
    suite_chunked();
    suite_stream();
    suite_response();
    suite_llhttp();
    suite_reactor();
    suite_ws();
    printf("%d checks, %d failed\n", t_checks, t_failures);
    return t_failures == 0 ? 0 : 1;
}
