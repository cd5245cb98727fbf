/* readfile - read a whole regular file into memory, with a size bound.
 *
 * Used for config files, included files and "key = <file" values. Only
 * regular files are read: a FIFO, a device or a directory named by mistake
 * (or by a fuzzer) must not block or flood the loader. */
#ifndef MR_CONFIG_READFILE_H
#define MR_CONFIG_READFILE_H

#include <stddef.h>
#include <sys/types.h>

/* Negative codes besides errno values. */
#define READFILE_NOT_REGULAR (-1)
#define READFILE_TOO_BIG (-2)

struct file_id {
    dev_t dev;
    ino_t ino;
};

/* 0 on success: *data_r is a heap copy with a NUL after *len_r bytes.
 * Otherwise an errno value or one of the READFILE_ codes. */
int config_read_file(const char *path, size_t max, char **data_r, size_t *len_r,
                     struct file_id *id_r);
/* Text for a config_read_file() error code. */
const char *config_read_error(int err);

#endif
