/* maildir.c - built-in local delivery into Maildir (lmtp_local = maildir:PATH).
 *
 * One file per recipient, written to tmp/ while the body streams in (line
 * ends turned into LF), then fsync'd, linked into new/ and the directory
 * fsync'd off the event loop: 250 is given only once the message is on
 * disk. PATH is a template with %d (domain), %n (user part), %u (user). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "lmtp-private.h"
#include "log.h"
#include "mem.h"
#include "var.h"

struct md_file {
    char *dir;
    char *tmp_path;
    char *new_path;
    int fd;
    bool pending_cr;
};

struct maildir_sink {
    struct md_file *files;
    size_t n;
    bool failed;
    bool ok;   /* result of the off-loop commit */
    void (*done)(void *ctx, bool ok);
    void *ctx;
};

static bool mkdir_p(const char *path)
{
    char *p = xstrdup(path);
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            free(p);
            return false;
        }
        *s = '/';
    }
    bool ok = mkdir(p, 0700) == 0 || errno == EEXIST;
    free(p);
    return ok;
}

static bool open_file(struct md_file *f, const char *dir, const char *host)
{
    static unsigned counter;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    f->dir = xstrdup(dir);
    for (const char *sub = "tmp"; sub != NULL; sub = strcmp(sub, "tmp") == 0 ? "new" :
                                                    strcmp(sub, "new") == 0 ? "cur" : NULL) {
        char *d = xasprintf("%s/%s", dir, sub);
        bool ok = mkdir_p(d);
        free(d);
        if (!ok)
            return false;
    }
    char *base = xasprintf("%ld.M%ldP%dQ%u.%s", (long)tv.tv_sec, (long)tv.tv_usec,
                           (int)getpid(), __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED),
                           host);
    f->tmp_path = xasprintf("%s/tmp/%s", dir, base);
    f->new_path = xasprintf("%s/new/%s", dir, base);
    free(base);
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    return f->fd >= 0;
}

struct maildir_sink *maildir_open(struct group *g, const struct settings *set, const char **error_r)
{
    struct maildir_sink *md = xcalloc(1, sizeof(*md));
    const char *tmpl = set->lmtp_local + strlen("maildir:");
    md->files = xcalloc(g->n_sent, sizeof(*md->files));
    for (size_t i = 0; i < g->n_sent; i++)
        md->files[i].fd = -1;
    md->n = g->n_sent;
    for (size_t i = 0; i < g->n_sent; i++) {
        struct rcpt *r = g->sent[i];
        struct passdb_request req = {.user = r->user, .service = "lmtp"};
        struct var_ctx vctx = {.req = &req, .user = r->user};
        struct buf dir = BUF_INIT;
        if (!var_expand(&dir, tmpl, &vctx, NULL, NULL, error_r) ||
            strstr(buf_ptr(&dir), "/../") != NULL ||
            !open_file(&md->files[i], buf_ptr(&dir), set->hostname)) {
            log_error("maildir: cannot deliver <%s> to %s: %s", r->address,
                      buf_used(&dir) ? buf_ptr(&dir) : tmpl, strerror(errno));
            buf_free(&dir);
            *error_r = "cannot create the mail file";
            maildir_abort(&md);
            return NULL;
        }
        buf_free(&dir);
    }
    return md;
}

static void write_file(struct maildir_sink *md, struct md_file *f, const char *data, size_t n)
{
    /* Maildir files use LF line ends: drop a CR that comes right before LF. */
    char out[8192];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (f->pending_cr) {
            f->pending_cr = false;
            if (c != '\n')
                out[k++] = '\r';
        }
        if (c == '\r') {
            f->pending_cr = true;
            continue;
        }
        out[k++] = c;
        if (k >= sizeof(out) - 1) {
            if (write(f->fd, out, k) != (ssize_t)k)
                md->failed = true;
            k = 0;
        }
    }
    if (k > 0 && write(f->fd, out, k) != (ssize_t)k)
        md->failed = true;
}

void maildir_write(struct maildir_sink *md, const char *data, size_t n)
{
    for (size_t i = 0; i < md->n && !md->failed; i++)
        write_file(md, &md->files[i], data, n);
}

/* Off the loop: fsync each file, link it into new/, fsync new/. */
static void commit_work(void *ctx)
{
    struct maildir_sink *md = ctx;
    md->ok = !md->failed;
    for (size_t i = 0; i < md->n && md->ok; i++) {
        struct md_file *f = &md->files[i];
        if (f->pending_cr && write(f->fd, "\r", 1) != 1)
            md->ok = false;
        if (!md->ok || fsync(f->fd) < 0 || close(f->fd) < 0) {
            md->ok = false;
            f->fd = -1;
            break;
        }
        f->fd = -1;
        if (rename(f->tmp_path, f->new_path) < 0) {
            md->ok = false;
            break;
        }
        char *newdir = xasprintf("%s/new", f->dir);
        int dfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        free(newdir);
        if (dfd < 0 || fsync(dfd) < 0)
            md->ok = false;
        if (dfd >= 0)
            close(dfd);
    }
}

static void commit_done(void *ctx)
{
    struct maildir_sink *md = ctx;
    void (*done)(void *, bool) = md->done;
    void *dctx = md->ctx;
    bool ok = md->ok;
    if (!ok)
        log_error("maildir: delivery failed: %s", strerror(errno));
    maildir_abort(&md);
    if (done != NULL)
        done(dctx, ok);
}

void maildir_commit(struct maildir_sink *md, struct loop *loop, void (*done)(void *ctx, bool ok),
                    void *ctx)
{
    md->done = done;
    md->ctx = ctx;
    loop_run_blocking(loop, commit_work, commit_done, md);
}

/* Free; files not committed are removed. */
void maildir_abort(struct maildir_sink **mdp)
{
    struct maildir_sink *md = *mdp;
    if (md == NULL)
        return;
    *mdp = NULL;
    for (size_t i = 0; i < md->n; i++) {
        struct md_file *f = &md->files[i];
        if (f->fd >= 0) {
            close(f->fd);
            unlink(f->tmp_path);
        }
        free(f->dir);
        free(f->tmp_path);
        free(f->new_path);
    }
    free(md->files);
    free(md);
}
