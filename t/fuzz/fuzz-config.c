/* fuzz-config - libFuzzer target for the configuration parser and the
 * settings table.
 *
 * The input is loaded as a config file held in memory, with "!include" and
 * "key = <file" refused (a fuzzer must not wander the disk or block on a
 * FIFO). When it loads, the full dump must load back and dump to the same
 * text: a property that covers quoting, units and sections at once. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "parser.h"
#include "settings-private.h"

static char *dump(const struct settings *set, bool nondefault_only)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        abort();
    settings_dump(set, f, nondefault_only);
    fclose(f);
    return text;
}

/* The dump of set loads back to the same dump. */
static void check_round_trip(const struct settings *set)
{
    char *text = dump(set, false), *error = NULL;
    struct settings *again =
        settings_load_buffer("dump", text, strlen(text), CONFIG_PARSE_NO_FILES, &error);
    if (again == NULL) {
        fprintf(stderr, "the dump does not load back: %s\n%s", error, text);
        abort();
    }
    char *text2 = dump(again, false);
    if (strcmp(text, text2) != 0) {
        fprintf(stderr, "the dump changed after a reload:\n%s\n----\n%s", text, text2);
        abort();
    }
    free(text2);
    settings_free(&again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *error = NULL;
    struct settings *set = settings_load_buffer("fuzz.conf", (const char *)data, size,
                                                CONFIG_PARSE_NO_FILES, &error);
    if (set == NULL) {
        if (error == NULL)
            abort(); /* every failure must say why */
        free(error);
        return 0;
    }
    (void)settings_has_protocol(set, "lmtp");
    free(dump(set, true));
    /* Quoting may double a value's length; past that a line limit applies. */
    if (size <= CONFIG_MAX_LINE / 4)
        check_round_trip(set);
    settings_free(&set);
    return 0;
}
