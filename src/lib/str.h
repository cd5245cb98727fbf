/* str - small string helpers that work on explicit lengths. */
#ifndef MR_STR_H
#define MR_STR_H

#include <stdbool.h>
#include <stddef.h>

/* ASCII character classes, independent of the locale (protocol grammars
 * are ASCII; <ctype.h> would follow LC_CTYPE). */
static inline bool char_is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline bool char_is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
static inline bool char_is_alnum(unsigned char c) { return char_is_digit(c) || char_is_alpha(c); }
static inline bool char_is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

bool str_eq(const char *a, const char *b);
bool str_case_eq(const char *a, const char *b);
/* Case-insensitive prefix test; returns the rest after the prefix or NULL. */
const char *str_case_prefix(const char *s, const char *prefix);
/* Does [s, s+n) start with the NUL-terminated prefix, ignoring case? */
bool mem_case_prefix(const char *s, size_t n, const char *prefix);
void str_lower(char *s);
/* Strip leading and trailing spaces/tabs in place; returns s moved past leading space. */
char *str_trim(char *s);
/* Parse a non-negative decimal; false on garbage or overflow past max. */
bool str_to_uint(const char *s, unsigned long long max, unsigned long long *out);
/* Parse a duration: "30", "30s", "500ms", "2m", "1h", "2 secs"; result in milliseconds. */
bool str_to_msecs(const char *s, unsigned long long *out);
/* Parse a size: "1024", "10k", "10M", "1G" (binary multiples); result in bytes. */
bool str_to_size(const char *s, unsigned long long *out);
/* Parse yes/no (also true/false, 1/0, on/off). */
bool str_to_bool(const char *s, bool *out);

#endif
