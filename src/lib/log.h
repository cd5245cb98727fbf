/* log - one line per event, key=value fields, never a password.
 *
 * Lines go to stderr (the default, for foreground runs and tests), to a file,
 * or to syslog. Each line is written with a single write(2), so lines from
 * different worker threads never interleave. */
#ifndef MR_LOG_H
#define MR_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* target: "" or "stderr", "syslog", or a file path. Returns -1 with errno set on failure. */
int log_open(const char *target);
void log_set_debug(bool on);
bool log_debug_enabled(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) \
    do { if (log_debug_enabled()) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* A broken invariant: log and abort (core dump). */
void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Copy s into out (size n) with control characters and non-printables replaced,
 * so that peer-supplied text cannot forge log lines. Returns out. */
char *log_sanitize(char *out, unsigned n, const char *s);

#endif
