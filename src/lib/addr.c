#include "addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static void fold_mapped(struct addr *a)
{
    if (a->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->u.v6)) {
        struct in_addr v4;
        memcpy(&v4, &a->u.v6.s6_addr[12], 4);
        a->family = AF_INET;
        a->u.v4 = v4;
    }
}

bool addr_parse_ip(const char *s, struct addr *out)
{
    char tmp[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(s);
    memset(out, 0, sizeof(*out));
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        if (n - 2 >= sizeof(tmp))
            return false;
        memcpy(tmp, s + 1, n - 2);
        tmp[n - 2] = '\0';
        s = tmp;
    }
    if (inet_pton(AF_INET, s, &out->u.v4) == 1) {
        out->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, &out->u.v6) == 1) {
        out->family = AF_INET6;
        fold_mapped(out);
        return true;
    }
    return false;
}

bool addr_parse_ip_port(const char *s, struct addr *out)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *port = NULL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || (size_t)(end - s) >= sizeof(host))
            return false;
        memcpy(host, s, (size_t)(end - s) + 1);
        host[end - s + 1] = '\0';
        if (end[1] == ':')
            port = end + 2;
        else if (end[1] != '\0')
            return false;
    } else {
        const char *colon = strchr(s, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            if ((size_t)(colon - s) >= sizeof(host))
                return false;
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = '\0';
            port = colon + 1;
        } else {
            if (strlen(s) >= sizeof(host))
                return false;
            strcpy(host, s);
        }
    }
    if (!addr_parse_ip(host, out))
        return false;
    if (port != NULL) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p <= 0 || p > 65535)
            return false;
        out->port = (uint16_t)p;
    }
    return true;
}

void addr_from_sockaddr(struct addr *out, const struct sockaddr *sa)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out->family = AF_INET;
        out->u.v4 = in->sin_addr;
        out->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        out->family = AF_INET6;
        out->u.v6 = in6->sin6_addr;
        out->port = ntohs(in6->sin6_port);
        fold_mapped(out);
    }
}

socklen_t addr_to_sockaddr(const struct addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_addr = a->u.v4;
        in->sin_port = htons(a->port);
        return sizeof(*in);
    }
    if (a->family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = a->u.v6;
        in6->sin6_port = htons(a->port);
        return sizeof(*in6);
    }
    return 0;
}

const char *addr_ip_str(const struct addr *a, char *out, size_t n)
{
    if (n == 0)
        return out;
    out[0] = '\0';
    if (a->family == AF_INET || a->family == AF_INET6)
        inet_ntop(a->family, &a->u, out, (socklen_t)n);
    return out;
}

const char *addr_str(const struct addr *a, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    addr_ip_str(a, ip, sizeof(ip));
    if (a->family == AF_INET6)
        snprintf(out, n, "[%s]:%u", ip, a->port);
    else if (a->family == AF_INET)
        snprintf(out, n, "%s:%u", ip, a->port);
    else
        snprintf(out, n, "unix");
    return out;
}

bool addr_ip_eq(const struct addr *a, const struct addr *b)
{
    if (a->family != b->family)
        return false;
    if (a->family == AF_INET)
        return a->u.v4.s_addr == b->u.v4.s_addr;
    if (a->family == AF_INET6)
        return memcmp(&a->u.v6, &b->u.v6, sizeof(a->u.v6)) == 0;
    return false;
}

bool addr_is_loopback(const struct addr *a)
{
    if (a->family == AF_INET)
        return (ntohl(a->u.v4.s_addr) >> 24) == 127;
    if (a->family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&a->u.v6);
    return false;
}

bool addr_is_any(const struct addr *a)
{
    if (a->family == AF_INET)
        return a->u.v4.s_addr == htonl(INADDR_ANY);
    if (a->family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&a->u.v6);
    return false;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

bool cidr_set_contains(const struct cidr_set *set, const struct addr *a)
{
    for (size_t i = 0; i < set->n; i++) {
        const struct cidr *c = &set->v[i];
        if (c->net.family != a->family)
            continue;
        if (prefix_match((const uint8_t *)&c->net.u, (const uint8_t *)&a->u, c->bits))
            return true;
    }
    return false;
}

void cidr_set_add(struct cidr_set *set, const struct addr *a, unsigned bits)
{
    set->v = xrealloc(set->v, (set->n + 1) * sizeof(*set->v));
    set->v[set->n].net = *a;
    set->v[set->n].net.port = 0;
    set->v[set->n].bits = bits;
    set->n++;
}

bool cidr_set_parse(struct cidr_set *set, const char *list, const char **error_r)
{
    char *copy = xstrdup(list), *save = NULL;
    bool ok = true;
    for (char *tok = strtok_r(copy, " ,\t", &save); tok != NULL; tok = strtok_r(NULL, " ,\t", &save)) {
        char *slash = strchr(tok, '/');
        struct addr a;
        unsigned long bits;
        if (slash != NULL)
            *slash = '\0';
        if (!addr_parse_ip(tok, &a)) {
            *error_r = "invalid IP address in network list";
            ok = false;
            break;
        }
        unsigned maxbits = a.family == AF_INET ? 32 : 128;
        if (slash != NULL) {
            char *end;
            bits = strtoul(slash + 1, &end, 10);
            if (slash[1] == '\0' || *end != '\0' || bits > maxbits) {
                *error_r = "invalid network prefix length";
                ok = false;
                break;
            }
        } else {
            bits = maxbits;
        }
        cidr_set_add(set, &a, (unsigned)bits);
    }
    free(copy);
    return ok;
}

void cidr_set_free(struct cidr_set *set)
{
    free(set->v);
    set->v = NULL;
    set->n = 0;
}
