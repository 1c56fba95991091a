/* Re-emitting values the restricted reader parsed (pickle.h) through the
 * writer (pickle_write.h): how a commit carries parts of a `.metadata` it
 * does not interpret -- TensorProperties, storage_meta, fields of a newer
 * torch -- over to the next one exactly as they were read, in the opcodes
 * Python's pickler would use for them.  Shared references (memo hits) are
 * written out again as copies, which unpickle to equal values. */
#ifndef CKPT_PICKLE_COPY_H
#define CKPT_PICKLE_COPY_H

#include <stddef.h>
#include <stdint.h>
#include "pickle.h"
#include "pickle_write.h"

/* Emit `with` in place of the value at `at` (compared by address). */
typedef struct {
    const pk_value *at;
    const pk_value *with;
} pkc_subst;

/* Emits v (and everything below it) into w, substituting as subs says.
 * Errors are w's (sticky, seen at pkw_finish). */
void pkc_emit(pkw *w, const pk_value *v, const pkc_subst *subs, size_t nsubs);

/* v as a standalone protocol-4 pickle (malloc'd): what pk_parse reads back
 * as an equal value.  Every value written costs one unit of *budget: a
 * hostile pickle whose memo makes a small DAG of a huge tree (a list of
 * the same list of the same list...) runs it out instead of the memory.
 * 0, -E2BIG (budget spent), -ENOMEM or -EINVAL. */
int pkc_encode(const pk_value *v, uint64_t *budget, uint8_t **out, size_t *len);

#endif
