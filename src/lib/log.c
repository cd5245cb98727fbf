#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static bool log_syslog;
static bool debug_on;

int log_open(const char *target)
{
    if (target == NULL || target[0] == '\0' || strcmp(target, "stderr") == 0) {
        log_fd = 2;
        log_syslog = false;
        return 0;
    }
    if (strcmp(target, "syslog") == 0) {
        openlog("mailroute", LOG_PID | LOG_NDELAY, LOG_MAIL);
        log_syslog = true;
        return 0;
    }
    int fd = open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    if (log_fd > 2)
        close(log_fd);
    log_fd = fd;
    log_syslog = false;
    return 0;
}

void log_set_debug(bool on)
{
    debug_on = on;
}

bool log_debug_enabled(void)
{
    return debug_on;
}

static const char *level_name(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_DEBUG: return "debug";
    case LOG_LEVEL_INFO: return "info";
    case LOG_LEVEL_WARN: return "warning";
    case LOG_LEVEL_ERROR: return "error";
    }
    return "?";
}

/* "YYYY-MM-DD HH:MM:SS" of the current second, formatted once per second
 * and thread (localtime_r and strftime cost more than the rest of a line). */
struct log_clock {
    time_t sec;
    size_t len;
    char text[32];
};

static size_t format_timestamp(char *out, size_t n)
{
    static __thread struct log_clock cached;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (cached.len == 0 || tv.tv_sec != cached.sec) {
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        cached.len = strftime(cached.text, sizeof(cached.text), "%Y-%m-%d %H:%M:%S", &tm);
        cached.sec = tv.tv_sec;
    }
    unsigned ms = (unsigned)(tv.tv_usec / 1000);
    if (n < cached.len + 5)
        return 0;
    memcpy(out, cached.text, cached.len);
    out[cached.len] = '.';
    out[cached.len + 1] = (char)('0' + ms / 100);
    out[cached.len + 2] = (char)('0' + ms / 10 % 10);
    out[cached.len + 3] = (char)('0' + ms % 10);
    return cached.len + 4;
}

static void log_vmsg(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    char line[4096];
    int saved_errno = errno;
    if (log_syslog) {
        static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
        vsnprintf(line, sizeof(line), fmt, ap);
        syslog(prio[level], "%s", line);
        errno = saved_errno;
        return;
    }
    size_t n = format_timestamp(line, sizeof(line));
    const char *name = level_name(level);
    size_t name_len = strlen(name);
    line[n++] = ' ';
    memcpy(line + n, name, name_len);
    n += name_len;
    line[n++] = ':';
    line[n++] = ' ';
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(log_fd, line, n);
    (void)w;
    errno = saved_errno;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

void log_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_LEVEL_ERROR, fmt, ap);
    va_end(ap);
    abort();
}

char *log_sanitize(char *out, unsigned n, const char *s)
{
    unsigned i = 0;
    if (n == 0)
        return out;
    for (; s != NULL && *s != '\0' && i + 1 < n; s++) {
        unsigned char c = (unsigned char)*s;
        out[i++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[i] = '\0';
    return out;
}
