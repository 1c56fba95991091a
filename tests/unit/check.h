/* Minimal TAP unit-test helpers: each CHECK prints "ok N - expr" or
 * "not ok N - expr (file:line)"; check_done() prints the plan and returns
 * the exit status.  Run by scripts/run-tests.sh, which counts the lines. */
#ifndef CKPT_CHECK_H
#define CKPT_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_n, check_failed;

#define CHECK(cond) check_report(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (!check_report(_a == _b, #a " == " #b, __FILE__, __LINE__)) \
        fprintf(stdout, "#   got %lld, want %lld\n", _a, _b); } while (0)
#define CHECK_EQ_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (!check_report(_a && _b && strcmp(_a, _b) == 0, #a " == " #b, __FILE__, __LINE__)) \
        fprintf(stdout, "#   got \"%s\", want \"%s\"\n", _a ? _a : "(null)", _b ? _b : "(null)"); } while (0)

static inline int check_report(int ok, const char *what, const char *file, int line)
{
    check_n++;
    if (ok) {
        printf("ok %d - %s\n", check_n, what);
    } else {
        check_failed++;
        printf("not ok %d - %s (%s:%d)\n", check_n, what, file, line);
    }
    fflush(stdout);
    return ok;
}

static inline int check_done(void)
{
    printf("1..%d\n", check_n);
    return check_failed ? 1 : 0;
}

#endif
