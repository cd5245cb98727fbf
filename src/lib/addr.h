/* addr - IP addresses, ports and CIDR sets, without any I/O.
 *
 * struct addr holds an IPv4 or IPv6 address (IPv4-mapped IPv6 addresses are
 * folded to IPv4 so that "127.0.0.1" and "::ffff:127.0.0.1" compare equal)
 * and an optional port. */
#ifndef MR_ADDR_H
#define MR_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct addr {
    int family; /* AF_INET, AF_INET6, or 0 when unset (e.g. a UNIX socket peer) */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } u;
    uint16_t port; /* host order; 0 = none */
};

#define ADDR_STRLEN 64 /* enough for "[v6]:port" */

/* Parse an IP literal (no port; IPv6 may be bracketed). */
bool addr_parse_ip(const char *s, struct addr *out);
/* Parse "ip", "ip:port", "[v6]" or "[v6]:port". */
bool addr_parse_ip_port(const char *s, struct addr *out);
void addr_from_sockaddr(struct addr *out, const struct sockaddr *sa);
/* Fill a sockaddr_storage; returns its length. */
socklen_t addr_to_sockaddr(const struct addr *a, struct sockaddr_storage *ss);
/* "1.2.3.4" / "2001:db8::1" (no brackets, no port). Empty for family 0. */
const char *addr_ip_str(const struct addr *a, char *out, size_t n);
/* "1.2.3.4:25" / "[2001:db8::1]:25". */
const char *addr_str(const struct addr *a, char *out, size_t n);
bool addr_ip_eq(const struct addr *a, const struct addr *b);
bool addr_is_loopback(const struct addr *a);
bool addr_is_any(const struct addr *a);

struct cidr {
    struct addr net;
    unsigned bits;
};

struct cidr_set {
    struct cidr *v;
    size_t n;
};

/* Parse a list of "ip", "ip/bits" entries separated by spaces or commas.
 * On error returns false and points *bad at a copy-free description. */
bool cidr_set_parse(struct cidr_set *set, const char *list, const char **error_r);
bool cidr_set_contains(const struct cidr_set *set, const struct addr *a);
void cidr_set_add(struct cidr_set *set, const struct addr *a, unsigned bits);
void cidr_set_free(struct cidr_set *set);

#endif
