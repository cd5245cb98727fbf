/* parser - Dovecot 2.3-style configuration text to a tree of nodes.
 *
 * Reading is line-based: physical lines are joined at trailing backslashes
 * into logical lines, and each logical line holds one or more statements
 * ("key = value", "name [label] {", "}", "!include ..."). What a setting
 * means, and whether it exists at all, is settings.c's business. */
#include "parser.h"

#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "readfile.h"

/* One file, or text in memory, being read. */
struct source {
    const char *file;    /* name for errors, owned by the tree */
    const char *dir;     /* base of relative paths; NULL = the current directory */
    const char *data;
    size_t len, pos;
    unsigned line;       /* the physical line read last */
    unsigned base_depth; /* section depth when this source began: it may not close more */
};

struct parser {
    unsigned flags;
    struct config_tree *tree;
    struct config_node *stack[CONFIG_MAX_SECTION_DEPTH + 1]; /* [0] is the root */
    unsigned depth;
    struct file_id chain[CONFIG_MAX_INCLUDE_DEPTH]; /* files being read, to catch loops */
    unsigned n_chain;
    char *error; /* the first error only */
};

static int parse_source(struct parser *p, const char *name, const char *dir, const char *data,
                        size_t len);

static int fail(struct parser *p, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct parser *p, const char *file, unsigned line, const char *fmt, ...)
{
    if (p->error != NULL)
        return -1;
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s:%u: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    p->error = buf_steal(&b);
    return -1;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ws(const char *s)
{
    while (is_ws(*s))
        s++;
    return s;
}

/* Characters that end a key, a directive or an unquoted section label. */
static bool ends_word(char c)
{
    return c == '\0' || is_ws(c) || strchr("={}#\"'", c) != NULL;
}

/* A buffer's contents as a heap string, "" when nothing was ever added. */
static char *take_string(struct buf *b)
{
    return b->data == NULL ? xstrdup("") : buf_steal(b);
}

static char *join_path(const char *dir, const char *path)
{
    if (dir == NULL || path[0] == '/')
        return xstrdup(path);
    size_t n = strlen(dir);
    return xasprintf("%s%s%s", dir, n > 0 && dir[n - 1] == '/' ? "" : "/", path);
}

/* The directory part of a path, NULL when it has none. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return NULL;
    return slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
}

static const char *tree_add_file(struct config_tree *tree, const char *name)
{
    tree->files = xrealloc(tree->files, (tree->n_files + 1) * sizeof(*tree->files));
    tree->files[tree->n_files] = xstrdup(name);
    return tree->files[tree->n_files++];
}

/* Append a node to the innermost open section; takes key and value. */
static struct config_node *add_node(struct parser *p, const struct source *src, unsigned line,
                                    char *key, char *value, bool section)
{
    struct config_node *parent = p->stack[p->depth];
    struct config_node *node = xcalloc(1, sizeof(*node));
    node->key = key;
    node->value = value;
    node->file = src->file;
    node->line = line;
    node->section = section;
    if (parent->last_child != NULL)
        parent->last_child->next = node;
    else
        parent->children = node;
    parent->last_child = node;
    return node;
}

/* ---- lines ---- */

static bool next_physical_line(struct source *src, const char **line_r, size_t *len_r)
{
    if (src->pos >= src->len)
        return false;
    const char *start = src->data + src->pos;
    size_t rest = src->len - src->pos;
    const char *nl = memchr(start, '\n', rest);
    size_t n = nl != NULL ? (size_t)(nl - start) : rest;
    src->pos += nl != NULL ? n + 1 : n;
    src->line++;
    *line_r = start;
    *len_r = n;
    return true;
}

static bool is_comment_line(const char *s, size_t n)
{
    while (n > 0 && is_ws(*s)) {
        s++;
        n--;
    }
    return n > 0 && *s == '#';
}

/* Join a physical line and its continuations into out; *line_r is where it
 * began. A comment line never continues: a commented-out line that happens
 * to end in a backslash must not swallow the next one.
 * Returns 1 for a line, 0 at the end of the input, -1 on error. */
static int read_logical_line(struct parser *p, struct source *src, struct buf *out,
                             unsigned *line_r)
{
    const char *s;
    size_t n;
    bool first = true;
    buf_reset(out);
    while (next_physical_line(src, &s, &n)) {
        if (memchr(s, '\0', n) != NULL)
            return fail(p, src->file, src->line, "NUL character in line");
        if (first) {
            *line_r = src->line;
        } else {
            for (; n > 0 && is_ws(*s); n--)
                s++;
        }
        while (n > 0 && (is_ws(s[n - 1]) || s[n - 1] == '\r'))
            n--;
        bool more = n > 0 && s[n - 1] == '\\' && !(first && is_comment_line(s, n));
        if (more)
            n--;
        if (n > CONFIG_MAX_LINE || buf_used(out) + n > CONFIG_MAX_LINE)
            return fail(p, src->file, src->line, "line too long (more than %d bytes)",
                        CONFIG_MAX_LINE);
        buf_append(out, s, n);
        first = false;
        if (!more)
            return 1;
    }
    return first ? 0 : 1;
}

/* ---- values ---- */

static char unescape(char c)
{
    switch (c) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    default: return c;
    }
}

/* A "..." (backslash escapes) or '...' (literal) string starting at *sp;
 * *sp is left after the closing quote. */
static int parse_quoted(struct parser *p, const struct source *src, unsigned line,
                        const char **sp, char **value_r)
{
    const char *s = *sp;
    char quote = *s++;
    struct buf b = BUF_INIT;
    for (; *s != quote; s++) {
        if (*s == '\0') {
            buf_free(&b);
            return fail(p, src->file, line, "missing closing quote (%c)", quote);
        }
        char c = *s;
        if (c == '\\' && quote == '"' && s[1] != '\0')
            c = unescape(*++s);
        buf_append(&b, &c, 1);
    }
    *sp = s + 1;
    *value_r = take_string(&b);
    return 0;
}

/* Does a lone "}" follow the blanks at c? It closes a section mid-line. */
static bool closes_section(const char *c)
{
    c = skip_ws(c);
    return *c == '}' && (c[1] == '\0' || c[1] == '#' || c[1] == '}' || is_ws(c[1]));
}

/* An unquoted value runs to a comment, to a lone "}" after blanks, or to the
 * end of the line, without trailing blanks. Quotes inside it are kept as
 * they are, and protect a '#' or " }" between them (SQL queries have both). */
static size_t unquoted_len(const char *s, const char **next_r)
{
    const char *c = s, *end = s;
    for (; *c != '\0' && *c != '#'; c++) {
        if (is_ws(*c)) {
            if (closes_section(c))
                break;
            continue;
        }
        if (*c == '"' || *c == '\'') {
            const char *close = strchr(c + 1, *c);
            if (close != NULL)
                c = close;
        }
        end = c + 1;
    }
    *next_r = c;
    return (size_t)(end - s);
}

/* A value, quoted or not; *sp is left where the next statement may begin. */
static int parse_value(struct parser *p, const struct source *src, unsigned line,
                       const char **sp, char **value_r)
{
    const char *s = *sp;
    if (*s != '"' && *s != '\'') {
        size_t len = unquoted_len(s, sp);
        *value_r = xstrndup(s, len);
        return 0;
    }
    if (parse_quoted(p, src, line, &s, value_r) < 0)
        return -1;
    s = skip_ws(s);
    if (*s != '\0' && *s != '#' && *s != '}') {
        free(*value_r);
        return fail(p, src->file, line, "unexpected text after a quoted value");
    }
    *sp = s;
    return 0;
}

/* "key = <path": replace *value (the path) with the file's contents, one
 * trailing newline removed (files written by editors end in one). */
static int value_from_file(struct parser *p, const struct source *src, unsigned line,
                           char **value)
{
    if ((p->flags & CONFIG_PARSE_NO_FILES) != 0)
        return fail(p, src->file, line, "reading a value from a file is not allowed here");
    if (**value == '\0')
        return fail(p, src->file, line, "missing file name after '<'");
    char *path = join_path(src->dir, *value);
    char *data;
    size_t len;
    int r = 0, err = config_read_file(path, CONFIG_MAX_VALUE_FILE, &data, &len, NULL);
    if (err != 0) {
        r = fail(p, src->file, line, "cannot read %s: %s", path, config_read_error(err));
    } else if (memchr(data, '\0', len) != NULL) {
        r = fail(p, src->file, line, "cannot use %s: it contains a NUL character", path);
        free(data);
    } else {
        if (len > 0 && data[len - 1] == '\n')
            data[--len] = '\0';
        if (len > 0 && data[len - 1] == '\r')
            data[--len] = '\0';
        free(*value);
        *value = data;
    }
    free(path);
    return r;
}

/* ---- statements ---- */

static int parse_assignment(struct parser *p, const struct source *src, unsigned line,
                            char *key, const char **sp)
{
    const char *s = skip_ws(*sp + 1);
    bool from_file = *s == '<';
    if (from_file)
        s = skip_ws(s + 1);
    char *value;
    if (parse_value(p, src, line, &s, &value) < 0) {
        free(key);
        return -1;
    }
    if (from_file && value_from_file(p, src, line, &value) < 0) {
        free(key);
        free(value);
        return -1;
    }
    add_node(p, src, line, key, value, false);
    *sp = s;
    return 0;
}

/* "name {" or "name label {", the label quoted or not. */
static int parse_section_start(struct parser *p, const struct source *src, unsigned line,
                               char *key, const char **sp)
{
    const char *s = *sp;
    char *label = NULL;
    if (*s == '"' || *s == '\'') {
        if (parse_quoted(p, src, line, &s, &label) < 0) {
            free(key);
            return -1;
        }
    } else if (!ends_word(*s)) {
        const char *start = s;
        while (!ends_word(*s))
            s++;
        label = xstrndup(start, (size_t)(s - start));
    }
    s = skip_ws(s);
    int r = 0;
    if (*s != '{')
        r = fail(p, src->file, line, "expected '=' or '{' after '%s'", key);
    else if (p->depth >= CONFIG_MAX_SECTION_DEPTH)
        r = fail(p, src->file, line, "sections nested too deeply");
    if (r < 0) {
        free(key);
        free(label);
        return -1;
    }
    struct config_node *node = add_node(p, src, line, key, label, true);
    p->stack[++p->depth] = node;
    *sp = s + 1;
    return 0;
}

static int parse_key_statement(struct parser *p, const struct source *src, unsigned line,
                               const char **sp)
{
    const char *start = *sp, *s = *sp;
    while (!ends_word(*s))
        s++;
    if (s == start)
        return fail(p, src->file, line, "unexpected '%c'", *s);
    char *key = xstrndup(start, (size_t)(s - start));
    *sp = skip_ws(s);
    if (**sp == '=')
        return parse_assignment(p, src, line, key, sp);
    return parse_section_start(p, src, line, key, sp);
}

static int close_section(struct parser *p, const struct source *src, unsigned line,
                         const char **sp)
{
    /* A file closes only the sections it opened. */
    if (p->depth <= src->base_depth)
        return fail(p, src->file, line, "unexpected '}'");
    p->depth--;
    (*sp)++;
    return 0;
}

/* ---- includes ---- */

static bool chain_contains(const struct parser *p, const struct file_id *id)
{
    for (unsigned i = 0; i < p->n_chain; i++) {
        if (p->chain[i].dev == id->dev && p->chain[i].ino == id->ino)
            return true;
    }
    return false;
}

static int include_file(struct parser *p, const struct source *src, unsigned line,
                        const char *path, const char *what)
{
    bool try_only = strcmp(what, "!include_try") == 0;
    if (p->n_chain >= CONFIG_MAX_INCLUDE_DEPTH)
        return fail(p, src->file, line, "%s %s: includes nested too deeply (more than %d)",
                    what, path, CONFIG_MAX_INCLUDE_DEPTH);
    char *data;
    size_t len;
    struct file_id id;
    int err = config_read_file(path, CONFIG_MAX_FILE, &data, &len, &id);
    if (err != 0) {
        /* "try" is for files that may be absent, or readable only by root. */
        if (try_only && (err == ENOENT || err == EACCES))
            return 0;
        return fail(p, src->file, line, "%s %s: %s", what, path, config_read_error(err));
    }
    if (chain_contains(p, &id)) {
        free(data);
        return fail(p, src->file, line, "%s %s: include loop (the file is already being read)",
                    what, path);
    }
    p->chain[p->n_chain++] = id;
    char *dir = dir_of(path);
    int r = parse_source(p, path, dir, data, len);
    p->n_chain--;
    free(dir);
    free(data);
    return r;
}

/* Include every file the glob matches, in sorted order. */
static int include_glob(struct parser *p, const struct source *src, unsigned line,
                        const char *pattern, const char *what)
{
    if ((p->flags & CONFIG_PARSE_NO_FILES) != 0)
        return fail(p, src->file, line, "%s is not allowed here", what);
    if (*pattern == '\0')
        return fail(p, src->file, line, "%s needs a file name", what);
    char *full = join_path(src->dir, pattern);
    glob_t g;
    int r = 0, gr = glob(full, GLOB_BRACE, NULL, &g);
    if (gr == GLOB_NOMATCH) {
        if (strcmp(what, "!include") == 0)
            r = fail(p, src->file, line, "%s %s: not found", what, full);
    } else if (gr != 0) {
        r = fail(p, src->file, line, "%s %s: %s", what, full,
                 gr == GLOB_NOSPACE ? "out of memory" : "cannot read the directory");
    } else {
        for (size_t i = 0; i < g.gl_pathc && r == 0; i++)
            r = include_file(p, src, line, g.gl_pathv[i], what);
    }
    globfree(&g);
    free(full);
    return r;
}

static int parse_directive(struct parser *p, const struct source *src, unsigned line,
                           const char **sp)
{
    const char *start = *sp, *s = *sp + 1;
    while (!ends_word(*s))
        s++;
    size_t n = (size_t)(s - start);
    const char *what;
    if (n == 8 && memcmp(start, "!include", n) == 0)
        what = "!include";
    else if (n == 12 && memcmp(start, "!include_try", n) == 0)
        what = "!include_try";
    else
        return fail(p, src->file, line, "unknown directive '%.*s'", (int)n, start);
    s = skip_ws(s);
    char *pattern;
    if (parse_value(p, src, line, &s, &pattern) < 0)
        return -1;
    int r = include_glob(p, src, line, pattern, what);
    free(pattern);
    *sp = s;
    return r;
}

/* All statements of one logical line. */
static int parse_line(struct parser *p, const struct source *src, const char *s, unsigned line)
{
    for (;;) {
        s = skip_ws(s);
        if (*s == '\0' || *s == '#')
            return 0;
        int r;
        if (*s == '}')
            r = close_section(p, src, line, &s);
        else if (*s == '!')
            r = parse_directive(p, src, line, &s);
        else
            r = parse_key_statement(p, src, line, &s);
        if (r < 0)
            return -1;
    }
}

static int parse_source(struct parser *p, const char *name, const char *dir, const char *data,
                        size_t len)
{
    struct source src = {
        .file = tree_add_file(p->tree, name),
        .dir = dir,
        .data = data,
        .len = len,
        .base_depth = p->depth,
    };
    struct buf line = BUF_INIT;
    unsigned lineno = 0;
    int r;
    while ((r = read_logical_line(p, &src, &line, &lineno)) > 0) {
        if (parse_line(p, &src, buf_ptr(&line), lineno) < 0) {
            r = -1;
            break;
        }
    }
    buf_free(&line);
    if (r == 0 && p->depth > src.base_depth)
        r = fail(p, src.file, p->stack[p->depth]->line, "missing '}'");
    return r;
}

/* ---- entry points ---- */

static void parser_init(struct parser *p, unsigned flags)
{
    memset(p, 0, sizeof(*p));
    p->flags = flags;
    p->tree = xcalloc(1, sizeof(*p->tree));
    p->tree->root.section = true;
    p->stack[0] = &p->tree->root;
}

static struct config_tree *parser_finish(struct parser *p, int r, char **error_r)
{
    if (r == 0)
        return p->tree;
    config_tree_free(&p->tree);
    *error_r = p->error != NULL ? p->error : xstrdup("config: parse error");
    return NULL;
}

struct config_tree *config_parse_file(const char *path, unsigned flags, char **error_r)
{
    char *data;
    size_t len;
    struct file_id id;
    int err = config_read_file(path, CONFIG_MAX_FILE, &data, &len, &id);
    if (err != 0) {
        *error_r = xasprintf("%s: %s", path, config_read_error(err));
        return NULL;
    }
    struct parser p;
    parser_init(&p, flags);
    p.chain[p.n_chain++] = id;
    char *dir = dir_of(path);
    int r = parse_source(&p, path, dir, data, len);
    free(dir);
    free(data);
    return parser_finish(&p, r, error_r);
}

struct config_tree *config_parse_string(const char *name, const char *text, size_t len,
                                        unsigned flags, char **error_r)
{
    struct parser p;
    parser_init(&p, flags);
    int r = parse_source(&p, name, NULL, text, len);
    return parser_finish(&p, r, error_r);
}

static void free_nodes(struct config_node *node)
{
    while (node != NULL) {
        struct config_node *next = node->next;
        free_nodes(node->children);
        free(node->key);
        free(node->value);
        free(node);
        node = next;
    }
}

void config_tree_free(struct config_tree **treep)
{
    struct config_tree *tree = *treep;
    if (tree == NULL)
        return;
    free_nodes(tree->root.children);
    for (size_t i = 0; i < tree->n_files; i++)
        free(tree->files[i]);
    free(tree->files);
    free(tree);
    *treep = NULL;
}

char *config_node_error(const struct config_node *node, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s:%u: ", node->file, node->line);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return buf_steal(&b);
}
