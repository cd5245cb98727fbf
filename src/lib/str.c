#include "str.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

bool str_eq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

bool str_case_eq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

const char *str_case_prefix(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncasecmp(s, prefix, n) == 0 ? s + n : NULL;
}

bool mem_case_prefix(const char *s, size_t n, const char *prefix)
{
    size_t pn = strlen(prefix);
    return n >= pn && strncasecmp(s, prefix, pn) == 0;
}

void str_lower(char *s)
{
    for (; *s != '\0'; s++)
        *s = (char)tolower((unsigned char)*s);
}

char *str_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static const char *parse_digits(const char *s, unsigned long long *out)
{
    unsigned long long v = 0;
    if (!isdigit((unsigned char)*s))
        return NULL;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (~0ULL - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    *out = v;
    return s;
}

bool str_to_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    unsigned long long v;
    const char *end = parse_digits(s, &v);
    if (end == NULL || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

static bool scale(unsigned long long v, unsigned long long mul, unsigned long long *out)
{
    if (mul != 0 && v > ~0ULL / mul)
        return false;
    *out = v * mul;
    return true;
}

bool str_to_msecs(const char *s, unsigned long long *out)
{
    static const struct { const char *unit; unsigned long long ms; } units[] = {
        {"", 1000}, {"ms", 1}, {"msec", 1}, {"msecs", 1}, {"s", 1000}, {"sec", 1000},
        {"secs", 1000}, {"second", 1000}, {"seconds", 1000}, {"m", 60000}, {"min", 60000},
        {"mins", 60000}, {"minute", 60000}, {"minutes", 60000}, {"h", 3600000},
        {"hour", 3600000}, {"hours", 3600000}, {"d", 86400000}, {"day", 86400000},
        {"days", 86400000},
    };
    unsigned long long v;
    const char *end = parse_digits(s, &v);
    if (end == NULL)
        return false;
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].unit) == 0)
            return scale(v, units[i].ms, out);
    }
    return false;
}

bool str_to_size(const char *s, unsigned long long *out)
{
    unsigned long long v;
    const char *end = parse_digits(s, &v);
    if (end == NULL)
        return false;
    while (*end == ' ')
        end++;
    unsigned long long mul = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0': return scale(v, 1, out);
    case 'b': mul = 1; break;
    case 'k': mul = 1ULL << 10; break;
    case 'm': mul = 1ULL << 20; break;
    case 'g': mul = 1ULL << 30; break;
    case 't': mul = 1ULL << 40; break;
    default: return false;
    }
    end++;
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0')
        return false;
    return scale(v, mul, out);
}

bool str_to_bool(const char *s, bool *out)
{
    static const char *yes[] = {"yes", "true", "1", "on", "y"};
    static const char *no[] = {"no", "false", "0", "off", "n"};
    for (size_t i = 0; i < 5; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}
