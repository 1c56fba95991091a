/* The dialect of a read `.metadata` (see dcp_dialect.h). */
#include "dcp_dialect.h"
#include "hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "ckpt.h"
#include "name_search.h"
#include "pickle_copy.h"

#define MD_MODULE_2X "torch.distributed.checkpoint.metadata"
/* Values encoded or compared per document, all together: far above what a
 * real checkpoint needs (its distinct TensorProperties, storage_meta,
 * version), the same order as the parser's own PK_MAX_ELEMENTS. */
#define DIALECT_BUDGET (1ull << 26)

ck_dcp_dialect *ck_dialect_new(ck_checkpoint *ck)
{
    ck->dialect = ck_arena_calloc(ck->arena, 1, sizeof *ck->dialect);
    if (ck->dialect)
        ck->dialect->budget = DIALECT_BUDGET;
    return ck->dialect;
}

int ck_dialect_note_class(ck_checkpoint *ck, ck_md_class cls, const pk_value *obj)
{
    ck_dcp_dialect *d = ck->dialect;
    if (!d || d->module[cls] || !obj || obj->kind != PK_OBJECT || !obj->u.obj.callable ||
        obj->u.obj.callable->kind != PK_GLOBAL)
        return 0;
    d->module[cls] = ck_arena_strdup(ck->arena, obj->u.obj.callable->u.global.module);
    return d->module[cls] ? 0 : -ENOMEM;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    return ck_fnv1a(p, n);
}

static int keep(ck_checkpoint *ck, const pk_value *v, ck_pickled *out)
{
    uint8_t *buf;
    size_t len;
    int rc = pkc_encode(v, &ck->dialect->budget, &buf, &len);
    if (rc)
        return rc;
    out->pkl = ck_arena_alloc(ck->arena, len);
    if (out->pkl) {
        memcpy(out->pkl, buf, len);
        out->len = len;
    }
    free(buf);
    return out->pkl ? 0 : -ENOMEM;
}

/* Equal values, for the common case of a key whose properties are those of
 * an earlier key: the parser's memo makes most of them the very same
 * nodes, so this costs a few pointer compares instead of an encoding. */
static bool same_value(const pk_value *a, const pk_value *b, int depth, uint64_t *budget)
{
    if (a == b)
        return true;
    if (!a || !b || a->kind != b->kind || depth > 8 || *budget == 0)
        return false;
    (*budget)--;
    switch (a->kind) {
    case PK_NONE:
        return true;
    case PK_BOOL:
        return a->u.b == b->u.b;
    case PK_INT:
        return a->u.i == b->u.i;
    case PK_STR:
    case PK_BYTES:
        return a->u.str.len == b->u.str.len && !memcmp(a->u.str.data, b->u.str.data, a->u.str.len);
    case PK_TUPLE:
    case PK_LIST:
        if (a->u.seq.len != b->u.seq.len)
            return false;
        for (size_t i = 0; i < a->u.seq.len; i++)
            if (!same_value(a->u.seq.items[i], b->u.seq.items[i], depth + 1, budget))
                return false;
        return true;
    case PK_GLOBAL:
        return !strcmp(a->u.global.module, b->u.global.module) &&
               !strcmp(a->u.global.name, b->u.global.name);
    case PK_OBJECT:
        return a->u.obj.newobj == b->u.obj.newobj && !a->u.obj.items && !b->u.obj.items &&
               !a->u.obj.dictitems && !b->u.obj.dictitems &&
               same_value(a->u.obj.callable, b->u.obj.callable, depth + 1, budget) &&
               same_value(a->u.obj.args, b->u.obj.args, depth + 1, budget) &&
               same_value(a->u.obj.state, b->u.obj.state, depth + 1, budget);
    default:
        return false; /* floats, dicts...: the encoding decides */
    }
}

void ck_dialect_parse_done(ck_checkpoint *ck)
{
    if (ck->dialect)
        ck->dialect->props_seen = NULL;
}

void ck_dialect_forget_seen(ck_checkpoint *ck)
{
    ck_dcp_dialect *d = ck->dialect;
    if (d && d->props_seen)
        memset(d->props_seen, 0, d->nprops * sizeof *d->props_seen);
}

int ck_dialect_add_properties(ck_checkpoint *ck, const pk_value *props, uint32_t *id)
{
    ck_dcp_dialect *d = ck->dialect;
    *id = 0;
    if (!d || !props)
        return 0;
    for (uint32_t i = 0; d->props_seen && i < d->nprops; i++)
        if (same_value(d->props_seen[i], props, 0, &d->budget)) {
            *id = i + 1;
            return 0;
        }
    uint8_t *buf;
    size_t len;
    int rc = pkc_encode(props, &d->budget, &buf, &len);
    if (rc)
        return rc;
    uint64_t h = fnv1a(buf, len);
    /* a handful of distinct values: a linear scan on the hash is enough */
    for (uint32_t i = 0; i < d->nprops; i++)
        if (d->props_hash[i] == h && d->props[i].len == len && !memcmp(d->props[i].pkl, buf, len)) {
            /* equal but not found above (e.g. a float): not worth a second
             * seen entry, but one forgotten by a streamed batch is taken back */
            free(buf);
            if (d->props_seen && !d->props_seen[i])
                d->props_seen[i] = props;
            *id = i + 1;
            return 0;
        }
    if (d->nprops == UINT32_MAX - 1) {
        free(buf);
        return -E2BIG;
    }
    if (d->nprops == d->props_cap) {
        /* the arena cannot grow a block: double into a new one */
        uint32_t ncap = d->props_cap ? d->props_cap * 2 : 8;
        ck_pickled *np = ck_arena_calloc(ck->arena, ncap, sizeof *np);
        uint64_t *nh = ck_arena_calloc(ck->arena, ncap, sizeof *nh);
        const pk_value **ns = ck_arena_calloc(ck->arena, ncap, sizeof *ns);
        if (!np || !nh || !ns) {
            free(buf);
            return -ENOMEM;
        }
        if (d->nprops) {
            memcpy(np, d->props, d->nprops * sizeof *np);
            memcpy(nh, d->props_hash, d->nprops * sizeof *nh);
            if (d->props_seen)
                memcpy(ns, d->props_seen, d->nprops * sizeof *ns);
        }
        d->props = np;
        d->props_hash = nh;
        d->props_seen = d->props_seen || !d->nprops ? ns : NULL;
        d->props_cap = ncap;
    }
    ck_pickled *p = &d->props[d->nprops];
    p->pkl = ck_arena_alloc(ck->arena, len);
    if (!p->pkl) {
        free(buf);
        return -ENOMEM;
    }
    memcpy(p->pkl, buf, len);
    p->len = len;
    free(buf);
    d->props_hash[d->nprops] = h;
    if (d->props_seen)
        d->props_seen[d->nprops] = props;
    *id = ++d->nprops;
    return 0;
}

static ck_md_field_kind field_kind(const ck_dcp_dialect *d, const char *name)
{
    if (strcmp(name, "state_dict_metadata") == 0)
        return CK_MDF_STATE_DICT;
    if (strcmp(name, "storage_data") == 0)
        return CK_MDF_STORAGE_DATA;
    if (strcmp(name, "planner_data") == 0)
        return d->planner_is_dict ? CK_MDF_PLANNER : CK_MDF_KEPT;
    if (strcmp(name, "storage_meta") == 0)
        return CK_MDF_STORAGE_META;
    return CK_MDF_KEPT;
}

int ck_dialect_note_fields(ck_checkpoint *ck, const pk_value *fields)
{
    ck_dcp_dialect *d = ck->dialect;
    if (!d || !fields || fields->kind != PK_DICT)
        return 0;
    size_t n = fields->u.dict.len;
    d->fields = ck_arena_calloc(ck->arena, n ? n : 1, sizeof *d->fields);
    if (!d->fields)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name = pk_as_str(fields->u.dict.keys[i]);
        if (!name)
            return -EINVAL;
        /* a field set twice: Python keeps the last value, in the first place */
        uint32_t j = 0;
        while (j < d->nfields && strcmp(d->fields[j].name, name) != 0)
            j++;
        ck_md_field *f = &d->fields[j];
        if (j == d->nfields) {
            f->name = ck_arena_strdup(ck->arena, name);
            if (!f->name)
                return -ENOMEM;
            d->nfields++;
        }
        f->kind = field_kind(d, name);
        if (f->kind == CK_MDF_KEPT || f->kind == CK_MDF_STORAGE_META) {
            int rc = keep(ck, fields->u.dict.vals[i], &f->value);
            if (rc)
                return rc;
        }
    }
    return 0;
}

const char *ck_dialect_module(const ck_dcp_dialect *d, ck_md_class cls)
{
    if (d && d->module[cls])
        return d->module[cls];
    const char *md = d && d->module[CK_MDC_METADATA] ? d->module[CK_MDC_METADATA] : MD_MODULE_2X;
    if (cls != CK_MDC_STORAGE)
        return md;
    /* _StorageInfo sits beside the metadata classes, in .filesystem */
    if (strcmp(md, "torch.distributed._shard.checkpoint.metadata") == 0)
        return "torch.distributed._shard.checkpoint.filesystem";
    return "torch.distributed.checkpoint.filesystem";
}

/* ---- planner paths of new keys ---- */

/* Keys near a new name in sorted order that are looked at: the siblings
 * sharing most of its leading components sit right around it. */
#define NEIGHBOURS 256

static bool has_path(const ck_key *k)
{
    return k->planner_kind == CK_PD_TUPLE || k->planner_kind == CK_PD_LIST;
}

/* Whether k's path, joined by '.', is its FQN: only then do its elements
 * tell how the FQN's components were grouped. */
static bool path_spells_fqn(const ck_key *k)
{
    if (!has_path(k))
        return false;
    const char *p = k->fqn;
    for (uint32_t j = 0; j < k->planner_path_len; j++) {
        const char *e = k->planner_path[j];
        size_t n = strlen(e);
        if (strncmp(p, e, n) != 0)
            return false;
        p += n;
        if (j + 1 < k->planner_path_len) {
            if (*p != '.')
                return false;
            p++;
        }
    }
    return *p == '\0';
}

static size_t components(const char *s)
{
    size_t n = 1;
    for (; *s; s++)
        n += *s == '.';
    return n;
}

/* How many leading '.'-separated components a and b share. */
static size_t common_components(const char *a, const char *b)
{
    size_t n = 0;
    for (size_t i = 0;; i++) {
        bool ea = a[i] == '.' || !a[i], eb = b[i] == '.' || !b[i];
        if (ea && eb) {
            n++;
            if (!a[i] || !b[i])
                return n;
        } else if (a[i] != b[i]) {
            return n;
        }
    }
}

void ck_planner_pattern_of(const ck_checkpoint *ck, ck_planner_pattern *pat)
{
    bool any = false, all_split = true, nested = false;
    for (size_t i = 0; i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        if (!has_path(k))
            continue;
        any = true;
        bool split = path_spells_fqn(k);
        for (uint32_t j = 0; split && j < k->planner_path_len; j++)
            split = !strchr(k->planner_path[j], '.');
        all_split &= split;
        nested |= k->planner_path_len > 1;
    }
    pat->split = any && all_split && nested;
}

/* How many leading elements of k's path, joined by '.', prefix fqn and
 * end at a '.' of it (never the whole path: that is k's own name). */
static uint32_t shared_prefix(const ck_key *k, const char *fqn)
{
    uint32_t best = 0;
    size_t at = 0;
    for (uint32_t j = 0; j + 1 < k->planner_path_len; j++) {
        const char *e = k->planner_path[j];
        size_t n = strlen(e);
        if (strncmp(fqn + at, e, n) != 0 || fqn[at + n] != '.')
            break;
        at += n + 1;
        best = j + 1;
    }
    return best;
}

void ck_planner_path_free(char **path, uint8_t *is_int, uint32_t len)
{
    if (path)
        for (uint32_t i = 0; i < len; i++)
            free(path[i]);
    free(path);
    free(is_int);
}

static bool is_decimal(const char *s)
{
    if (*s == '-')
        s++;
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* fqn cut as like's FQN is cut into like's path (same component count). */
static int path_like(const ck_key *like, const char *fqn, char **path, uint8_t *is_int)
{
    const char *p = fqn;
    for (uint32_t j = 0; j < like->planner_path_len; j++) {
        size_t parts = components(like->planner_path[j]);
        const char *e = p;
        for (size_t c = 0; c < parts; c++) {
            const char *dot = strchr(e, '.');
            e = c + 1 < parts ? dot + 1 : (dot ? dot : e + strlen(e));
        }
        path[j] = strndup(p, (size_t)(e - p));
        if (!path[j])
            return -ENOMEM;
        is_int[j] = like->planner_path_is_int && like->planner_path_is_int[j] && is_decimal(path[j]);
        p = *e ? e + 1 : e;
    }
    return 0;
}

int ck_planner_path_for(const ck_checkpoint *ck, const ck_planner_pattern *pat, const char *fqn,
                        char ***path_out, uint8_t **is_int_out, uint32_t *len_out)
{
    /* where fqn would sit among the sorted keys */
    size_t lo = ck_name_lower_bound(ck->keys, ck->nkeys, sizeof *ck->keys, offsetof(ck_key, fqn),
                                    fqn);
    size_t want = components(fqn);
    const ck_key *like = NULL, *from = NULL;
    size_t like_score = 0;
    uint32_t from_len = 0;
    size_t first = lo > NEIGHBOURS ? lo - NEIGHBOURS : 0;
    size_t last = ck->nkeys - lo > NEIGHBOURS ? lo + NEIGHBOURS : ck->nkeys;
    for (size_t i = first; i < last; i++) {
        const ck_key *k = &ck->keys[i];
        if (!has_path(k))
            continue;
        /* a sibling of the same depth sharing the most leading components:
         * its grouping (('model', 'layers', '0', 'attn.wq.weight')) is
         * what torch's flattening would have made of the new name */
        size_t cc = path_spells_fqn(k) && components(k->fqn) == want ? common_components(fqn, k->fqn) : 0;
        if (cc > like_score) {
            like = k;
            like_score = cc;
        }
        uint32_t p = shared_prefix(k, fqn);
        if (p > from_len) {
            from = k;
            from_len = p;
        }
    }
    if (like) {
        char **path = calloc(like->planner_path_len, sizeof *path);
        uint8_t *is_int = calloc(like->planner_path_len, 1);
        int rc = path && is_int ? path_like(like, fqn, path, is_int) : -ENOMEM;
        if (rc) {
            ck_planner_path_free(path, is_int, like->planner_path_len);
            return rc;
        }
        *path_out = path;
        *is_int_out = is_int;
        *len_out = like->planner_path_len;
        return 0;
    }
    /* else the longest prefix a sibling's path gives, then the rest */
    size_t at = 0;
    for (uint32_t j = 0; j < from_len; j++)
        at += strlen(from->planner_path[j]) + 1;
    const char *rest = fqn + at;
    size_t nrest = pat->split ? components(rest) : 1;
    uint32_t len = from_len + (uint32_t)nrest;
    char **path = calloc(len, sizeof *path);
    uint8_t *is_int = calloc(len, 1);
    if (!path || !is_int) {
        free(path);
        free(is_int);
        return -ENOMEM;
    }
    int rc = 0;
    for (uint32_t j = 0; j < from_len && !rc; j++) {
        path[j] = strdup(from->planner_path[j]);
        is_int[j] = from->planner_path_is_int ? from->planner_path_is_int[j] : 0;
        rc = path[j] ? 0 : -ENOMEM;
    }
    const char *p = rest;
    for (uint32_t j = from_len; j < len && !rc; j++) {
        const char *dot = pat->split ? strchr(p, '.') : NULL;
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        path[j] = strndup(p, n);
        rc = path[j] ? 0 : -ENOMEM;
        p += n + (dot ? 1 : 0);
    }
    if (rc) {
        ck_planner_path_free(path, is_int, len);
        return rc;
    }
    *path_out = path;
    *is_int_out = is_int;
    *len_out = len;
    return 0;
}
