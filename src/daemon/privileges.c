/* privileges.c - give up root once the listeners are bound and the TLS
 * keys are read: nothing after that needs it, and a worker that parses
 * what the network sends must not run with it. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

bool drop_privileges(const char *user)
{
    if (user == NULL || user[0] == '\0') {
        if (geteuid() == 0)
            log_warn("running as root: set run_as_user to an unprivileged user");
        return true;
    }
    struct passwd pw_buf, *pw = NULL;
    char text[4096];
    int err = getpwnam_r(user, &pw_buf, text, sizeof(text), &pw);
    if (pw == NULL) {
        log_error("run_as_user: no user '%s'%s%s", user, err != 0 ? ": " : "",
                  err != 0 ? strerror(err) : "");
        return false;
    }
    if (geteuid() == pw->pw_uid)
        return true; /* started as that user already */
    if (geteuid() != 0) {
        log_error("run_as_user = %s, but mailrouted was not started as root", user);
        return false;
    }
    /* Groups first: after setuid() we could no longer change them. */
    if (initgroups(user, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_error("run_as_user: cannot become %s: %s", user, strerror(errno));
        return false;
    }
    if (setuid(0) == 0) {
        log_error("run_as_user: root could be regained after switching to %s", user);
        return false;
    }
#if defined(__SANITIZE_ADDRESS__)
    /* setuid() made us undumpable, and LeakSanitizer stops the world with
     * ptrace at exit, which then fails. Test builds only. */
    prctl(PR_SET_DUMPABLE, 1);
#endif
    log_info("running as %s (uid %u, gid %u)", user, (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid);
    return true;
}
