/* parser - Dovecot 2.3-style configuration text to a tree of nodes.
 *
 * The parser knows the syntax only: "key = value", "name [label] {", "}",
 * "!include[_try] GLOB", "key = <file", comments, quotes and continuation
 * lines. It knows no setting names; settings.c walks the tree and decides
 * what is valid. Every node remembers the file and line it came from, so
 * that any later error can say "FILE:LINE: what is wrong".
 *
 * Beyond Dovecot 2.3, a "}" separated by whitespace also closes a section in
 * the middle of a line, so one-liners such as
 *   service lmtp { inet_listener lmtp { port = 24 } }
 * work. A value that needs a lone " }" must be quoted. */
#ifndef MR_CONFIG_PARSER_H
#define MR_CONFIG_PARSER_H

#include <stdbool.h>
#include <stddef.h>

#define CONFIG_MAX_LINE (64 * 1024)          /* one logical line, continuations included */
#define CONFIG_MAX_FILE (16 * 1024 * 1024)   /* one config file */
#define CONFIG_MAX_VALUE_FILE (1024 * 1024)  /* a "key = <file" value */
#define CONFIG_MAX_INCLUDE_DEPTH 16
#define CONFIG_MAX_SECTION_DEPTH 16

struct config_node {
    char *key;             /* setting or section name */
    char *value;           /* setting: its value (never NULL); section: label or NULL */
    const char *file;      /* owned by the tree */
    unsigned line;
    bool section;
    struct config_node *children, *last_child, *next;
};

struct config_tree {
    struct config_node root; /* an unnamed section holding the top level */
    char **files;            /* every file name a node points to */
    size_t n_files;
};

enum config_parse_flags {
    /* Refuse "!include" and "key = <file" (the fuzzer must not wander the disk). */
    CONFIG_PARSE_NO_FILES = 1 << 0,
};

/* Parse a file. NULL on error, with *error_r a heap string "FILE:LINE: ...". */
struct config_tree *config_parse_file(const char *path, unsigned flags, char **error_r);
/* Parse text held in memory; name is used in errors. Relative includes and
 * "<file" paths resolve against the current directory. */
struct config_tree *config_parse_string(const char *name, const char *text, size_t len,
                                        unsigned flags, char **error_r);
void config_tree_free(struct config_tree **tree);

/* A heap string "FILE:LINE: " followed by the formatted message. */
char *config_node_error(const struct config_node *node, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
