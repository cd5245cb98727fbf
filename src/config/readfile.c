/* readfile - read a whole regular file into memory, with a size bound. */
#include "readfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

/* Read until EOF; READFILE_TOO_BIG when the file holds more than max bytes
 * (it may have grown since fstat). */
static int read_all(int fd, size_t max, struct buf *out)
{
    enum { CHUNK = 64 * 1024 };
    for (;;) {
        char *p = buf_reserve(out, CHUNK);
        ssize_t n = read(fd, p, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return 0;
        buf_commit(out, (size_t)n);
        if (buf_used(out) > max)
            return READFILE_TOO_BIG;
    }
}

int config_read_file(const char *path, size_t max, char **data_r, size_t *len_r,
                     struct file_id *id_r)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct stat st;
    struct buf data = BUF_INIT;
    int err = 0;
    if (fstat(fd, &st) < 0)
        err = errno;
    else if (!S_ISREG(st.st_mode))
        err = READFILE_NOT_REGULAR;
    else if ((unsigned long long)st.st_size > max)
        err = READFILE_TOO_BIG;
    else
        err = read_all(fd, max, &data);
    close(fd);
    if (err == 0)
        buf_commit(&data, 0); /* the NUL after the data, also for an empty file */
    if (err != 0) {
        buf_free(&data);
        return err;
    }
    /* Not buf_steal(): that copies up to the first NUL, and a NUL in a
     * config file must reach the parser to be reported. read_all() has
     * reserved at least once, so data.data is never NULL here. */
    *len_r = buf_used(&data);
    *data_r = data.data;
    if (id_r != NULL) {
        id_r->dev = st.st_dev;
        id_r->ino = st.st_ino;
    }
    return 0;
}

const char *config_read_error(int err)
{
    if (err == READFILE_NOT_REGULAR)
        return "not a regular file";
    if (err == READFILE_TOO_BIG)
        return "file too large";
    return strerror(err);
}
