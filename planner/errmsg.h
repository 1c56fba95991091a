/* One-line error messages for parsers: every planner function that can
 * refuse input takes (char *err, size_t errlen) and returns -errno. */
#ifndef CKPT_ERRMSG_H
#define CKPT_ERRMSG_H

#include <stddef.h>

/* Formats the message into err (if err and errlen) and returns rc, so a
 * parser can write `return ck_fail(err, errlen, -EINVAL, "...", ...)`. */
__attribute__((format(printf, 4, 5)))
int ck_fail(char *err, size_t errlen, int rc, const char *fmt, ...);

#endif
