#include "codec.h"

#include <string.h>

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(struct buf *out, const void *data, size_t n)
{
    const unsigned char *p = data;
    char *o = buf_reserve(out, (n + 2) / 3 * 4);
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        o[k++] = b64chars[(v >> 18) & 63];
        o[k++] = b64chars[(v >> 12) & 63];
        o[k++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
        o[k++] = i + 2 < n ? b64chars[v & 63] : '=';
    }
    buf_commit(out, k);
}

static int b64val(char c)
{
    const char *p = c != '\0' ? strchr(b64chars, c) : NULL;
    return p != NULL ? (int)(p - b64chars) : -1;
}

bool base64_decode(struct buf *out, const char *s, size_t n)
{
    unsigned acc = 0;
    int bits = 0;
    size_t i = 0;
    for (; i < n && s[i] != '='; i++) {
        int v = b64val(s[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            buf_append(out, &c, 1);
        }
    }
    size_t pad = 0;
    for (; i < n; i++, pad++) {
        if (s[i] != '=' || pad >= 2)
            return false;
    }
    /* Leftover bits must be zero and the length consistent. */
    if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
        return false;
    return true;
}

void xtext_encode(struct buf *out, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 33 || c > 126 || c == '+' || c == '=')
            buf_printf(out, "+%02X", c);
        else
            buf_append(out, s, 1);
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool xtext_decode(struct buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            if (i + 2 >= n)
                return false;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            char c = (char)(hi * 16 + lo);
            buf_append(out, &c, 1);
            i += 2;
        } else {
            buf_append(out, &s[i], 1);
        }
    }
    return true;
}
