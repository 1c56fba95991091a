/* Exact unsigned integers in cJSON documents.  cJSON keeps numbers as
 * doubles and prints large ones in exponent form ("1e+15"), which loses
 * digits past 2^53 and which safetensors readers (u64 fields) refuse; these
 * are printed from the integer instead. */
#ifndef CKPTFS_JSON_NUM_H
#define CKPTFS_JSON_NUM_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

cJSON *fs_json_u64(uint64_t v);
cJSON *fs_json_u64_array(const uint64_t *v, size_t n);
/* Adds name: v to obj; 0 or -ENOMEM. */
int fs_json_add_u64(cJSON *obj, const char *name, uint64_t v);

#endif
