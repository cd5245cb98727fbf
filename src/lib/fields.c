#include "fields.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

static struct field *find(const struct fields *f, const char *key, size_t keylen)
{
    for (size_t i = 0; i < f->n; i++) {
        if (strlen(f->v[i].key) == keylen && memcmp(f->v[i].key, key, keylen) == 0)
            return &f->v[i];
    }
    return NULL;
}

static void free_value(struct field *fl)
{
    if (fl->value != NULL) {
        mem_wipe(fl->value, strlen(fl->value));
        free(fl->value);
        fl->value = NULL;
    }
}

void fields_setn(struct fields *f, const char *key, size_t keylen, const char *value,
                 size_t valuelen)
{
    struct field *fl = find(f, key, keylen);
    if (fl == NULL) {
        if (f->n == f->cap) {
            f->cap = f->cap ? f->cap * 2 : 8;
            f->v = xrealloc(f->v, f->cap * sizeof(*f->v));
        }
        fl = &f->v[f->n++];
        fl->key = xstrndup(key, keylen);
        fl->value = NULL;
    } else {
        free_value(fl);
    }
    fl->value = value != NULL ? xstrndup(value, valuelen) : NULL;
}

void fields_set(struct fields *f, const char *key, const char *value)
{
    fields_setn(f, key, strlen(key), value, value != NULL ? strlen(value) : 0);
}

void fields_add_pair(struct fields *f, const char *pair)
{
    const char *eq = strchr(pair, '=');
    if (eq == NULL)
        fields_setn(f, pair, strlen(pair), NULL, 0);
    else
        fields_setn(f, pair, (size_t)(eq - pair), eq + 1, strlen(eq + 1));
}

void fields_remove(struct fields *f, const char *key)
{
    struct field *fl = find(f, key, strlen(key));
    if (fl == NULL)
        return;
    free_value(fl);
    free(fl->key);
    size_t i = (size_t)(fl - f->v);
    memmove(&f->v[i], &f->v[i + 1], (f->n - i - 1) * sizeof(*f->v));
    f->n--;
}

bool fields_has(const struct fields *f, const char *key)
{
    return find(f, key, strlen(key)) != NULL;
}

const char *fields_get(const struct fields *f, const char *key)
{
    const struct field *fl = find(f, key, strlen(key));
    return fl != NULL ? fl->value : NULL;
}

const char *fields_get_str(const struct fields *f, const char *key)
{
    const struct field *fl = find(f, key, strlen(key));
    if (fl == NULL)
        return NULL;
    return fl->value != NULL ? fl->value : "";
}

void fields_copy(struct fields *dst, const struct fields *src)
{
    for (size_t i = 0; i < src->n; i++)
        fields_set(dst, src->v[i].key, src->v[i].value);
}

void fields_clear(struct fields *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free_value(&f->v[i]);
        free(f->v[i].key);
    }
    f->n = 0;
}

void fields_free(struct fields *f)
{
    fields_clear(f);
    free(f->v);
    f->v = NULL;
    f->cap = 0;
}
