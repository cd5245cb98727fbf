/* fuzz-sql-conf - the SQL passdb's args file parser (dovecot-sql.conf.ext)
 * and its connect string parser on arbitrary bytes.
 *
 * The input is parsed as a whole file; when it loads, what the driver relies
 * on must hold (a driver, at least one non-empty host, a non-empty query, a
 * connection limit). The input is also parsed as a connect string on its
 * own, up to its first NUL. A failure must always say why. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "sql-conf.h"

static void check_connect(const struct sql_connect *c)
{
    if (c->n_hosts == 0 || c->max_connections == 0 || c->connect_timeout_ms == 0 ||
        c->query_timeout_ms == 0)
        abort();
    for (size_t i = 0; i < c->n_hosts; i++) {
        if (c->hosts[i] == NULL || c->hosts[i][0] == '\0')
            abort();
    }
}

static void fuzz_file(const uint8_t *data, size_t size)
{
    char *error = NULL;
    struct sql_conf *conf = sql_conf_parse((const char *)data, size, "fuzz", &error);
    if (conf == NULL) {
        if (error == NULL)
            abort();
        free(error);
        return;
    }
    if (conf->driver == NULL || conf->password_query == NULL || conf->password_query[0] == '\0')
        abort();
    check_connect(&conf->connect);
    sql_conf_free(&conf);
}

static void fuzz_connect(const uint8_t *data, size_t size)
{
    char *text = xstrndup((const char *)data, size);
    char *error = NULL;
    struct sql_connect c;
    if (sql_connect_parse(&c, text, &error)) {
        check_connect(&c);
        sql_connect_clear(&c);
    } else if (error == NULL) {
        abort();
    }
    free(error);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file(data, size);
    fuzz_connect(data, size);
    return 0;
}
