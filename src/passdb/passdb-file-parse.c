/* passdb-file-parse - the passwd-file format from memory (see passdb-file.h).
 *
 * Pure: no file access and no logging, so the fuzz target can run it on
 * anything. The text is copied once and cut into strings in place; entries
 * point into it, and a hash map finds a user without scanning 100k lines. */
#include "passdb-file.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "strmap.h"

/* user:password:uid:gid:gecos:home:shell:extra */
#define PASSWD_FIXED_COLUMNS 7

struct passwd_file {
    char *text;
    struct passwd_entry *entries;
    size_t n_entries;
    size_t cap_entries;
    struct strmap users;      /* user -> index + 1 into entries */
    size_t n_duplicates;
    unsigned first_duplicate_line;
};

static void add_entry(struct passwd_file *pf, const struct passwd_entry *e)
{
    if (pf->n_entries == pf->cap_entries) {
        pf->cap_entries = pf->cap_entries ? pf->cap_entries * 2 : 64;
        pf->entries = xrealloc(pf->entries, pf->cap_entries * sizeof(*pf->entries));
    }
    pf->entries[pf->n_entries++] = *e;
}

/* Cut the next ':'-terminated column off *rest; *rest becomes NULL after
 * the last column. */
static const char *next_column(char **rest)
{
    char *start = *rest;
    if (start == NULL)
        return NULL;
    char *colon = strchr(start, ':');
    if (colon != NULL) {
        *colon = '\0';
        *rest = colon + 1;
    } else {
        *rest = NULL;
    }
    return start;
}

static bool line_is_ignored(const char *line)
{
    const char *s = line + strspn(line, " \t");
    return *s == '\0' || *s == '#';
}

static bool parse_line(struct passwd_file *pf, char *line, unsigned lineno, const char *name,
                       char **error_r)
{
    size_t len = strlen(line);
    if (len > 0 && line[len - 1] == '\r')
        line[len - 1] = '\0';
    if (line_is_ignored(line))
        return true;
    if (strchr(line, ':') == NULL) {
        *error_r = xasprintf("%s:%u: missing ':' after the user name", name, lineno);
        return false;
    }
    struct passwd_entry e = {.line = lineno};
    const char **columns[PASSWD_FIXED_COLUMNS] = {
        &e.user, &e.password, &e.uid, &e.gid, &e.gecos, &e.home, &e.shell,
    };
    char *rest = line;
    for (size_t i = 0; i < PASSWD_FIXED_COLUMNS; i++)
        *columns[i] = next_column(&rest);
    e.extra = rest;
    if (*e.user == '\0') {
        *error_r = xasprintf("%s:%u: empty user name", name, lineno);
        return false;
    }
    add_entry(pf, &e);
    return true;
}

static unsigned line_of_offset(const char *data, size_t offset)
{
    unsigned line = 1;
    for (size_t i = 0; i < offset; i++)
        line += data[i] == '\n';
    return line;
}

static bool parse_lines(struct passwd_file *pf, const char *name, char **error_r)
{
    char *line = pf->text;
    unsigned lineno = 0;
    while (line != NULL) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        if (!parse_line(pf, line, ++lineno, name, error_r))
            return false;
        line = nl != NULL ? nl + 1 : NULL;
    }
    return true;
}

/* Built after parsing, because entries move while the array grows. */
static void index_users(struct passwd_file *pf)
{
    for (size_t i = 0; i < pf->n_entries; i++) {
        const struct passwd_entry *e = &pf->entries[i];
        if (strmap_add(&pf->users, e->user, (void *)(uintptr_t)(i + 1)))
            continue;
        if (pf->n_duplicates++ == 0)
            pf->first_duplicate_line = e->line;
    }
}

struct passwd_file *passwd_file_parse(const char *data, size_t len, const char *name,
                                      char **error_r)
{
    const char *nul = memchr(data, '\0', len);
    if (nul != NULL) {
        *error_r = xasprintf("%s:%u: NUL byte in file", name,
                             line_of_offset(data, (size_t)(nul - data)));
        return NULL;
    }
    struct passwd_file *pf = xcalloc(1, sizeof(*pf));
    pf->text = xstrndup(data, len);
    if (!parse_lines(pf, name, error_r)) {
        passwd_file_free(&pf);
        return NULL;
    }
    index_users(pf);
    return pf;
}

void passwd_file_free(struct passwd_file **pfp)
{
    struct passwd_file *pf = *pfp;
    if (pf == NULL)
        return;
    *pfp = NULL;
    strmap_free(&pf->users);
    free(pf->entries);
    /* The text holds password hashes (or worse, PLAIN passwords). */
    mem_wipe(pf->text, strlen(pf->text));
    free(pf->text);
    free(pf);
}

const struct passwd_entry *passwd_file_find(const struct passwd_file *pf, const char *user)
{
    uintptr_t idx = (uintptr_t)strmap_get(&pf->users, user);
    return idx != 0 ? &pf->entries[idx - 1] : NULL;
}

size_t passwd_file_count(const struct passwd_file *pf)
{
    return pf->users.n;
}

size_t passwd_file_duplicates(const struct passwd_file *pf, unsigned *first_line_r)
{
    *first_line_r = pf->first_duplicate_line;
    return pf->n_duplicates;
}

static void add_extra_field(struct fields *out, const char *token, size_t len)
{
    const char *eq = memchr(token, '=', len);
    if (eq == token)
        return; /* "=value" has no key: nothing sensible to set */
    if (eq == NULL)
        fields_setn(out, token, len, NULL, 0);
    else
        fields_setn(out, token, (size_t)(eq - token), eq + 1, len - (size_t)(eq - token) - 1);
}

void passwd_entry_fields(const struct passwd_entry *e, struct fields *out)
{
    const char *p = e->extra;
    while (p != NULL && *p != '\0') {
        p += strspn(p, " \t");
        size_t len = strcspn(p, " \t");
        if (len > 0)
            add_extra_field(out, p, len);
        p += len;
    }
    if (e->password != NULL && *e->password != '\0')
        fields_set(out, "password", e->password);
}
