/* settings-private - what settings.c, sections.c and the tests share inside
 * the config module. Not part of the contract (config.h). */
#ifndef MR_CONFIG_SETTINGS_PRIVATE_H
#define MR_CONFIG_SETTINGS_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "parser.h"

/* An excerpt of a value fit for an error message: control characters
 * replaced, long values cut with "...". */
#define SETTINGS_EXCERPT_SIZE 208
const char *settings_excerpt(const char *value, char out[SETTINGS_EXCERPT_SIZE]);

/* Next item of a list separated by blanks or commas; false at the end. */
bool settings_next_item(const char **sp, const char **item_r, size_t *len_r);

/* Write a value as the parser reads it back: quoted when it has to be. */
void settings_write_value(FILE *out, const char *value);
/* The same for a section label, which also ends at blanks and '='. */
void settings_write_label(FILE *out, const char *label);

/* sections.c: one "passdb" or "service" node of the tree. */
int settings_apply_passdb(struct settings *set, const struct config_node *node, char **error_r);
int settings_apply_service(struct settings *set, const struct config_node *node, char **error_r);
/* sections.c: "local_name NAMES { ssl_cert ssl_key }" (TLS, SNI). */
int settings_apply_local_name(struct settings *set, const struct config_node *node,
                              char **error_r);
/* Resolve unix_listener paths that are relative to base_dir. */
void settings_finish_listeners(struct settings *set);
void settings_dump_sections(const struct settings *set, FILE *out, bool nondefault_only);
void settings_free_sections(struct settings *set);

/* settings_load_string() with parser flags (CONFIG_PARSE_NO_FILES for the fuzzer). */
struct settings *settings_load_buffer(const char *name, const char *text, size_t len,
                                      unsigned parse_flags, char **error_r);

#endif
