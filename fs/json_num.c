/* Exact unsigned integers in cJSON documents (see json_num.h). */
#include "json_num.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

cJSON *fs_json_u64(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

cJSON *fs_json_u64_array(const uint64_t *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *e = fs_json_u64(v[i]);
        if (!e || !cJSON_AddItemToArray(a, e)) {
            cJSON_Delete(e);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

int fs_json_add_u64(cJSON *obj, const char *name, uint64_t v)
{
    cJSON *e = fs_json_u64(v);
    if (!e || !cJSON_AddItemToObject(obj, name, e)) {
        cJSON_Delete(e);
        return -ENOMEM;
    }
    return 0;
}
