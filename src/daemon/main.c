/* main.c - command line: run the daemon, check or print the configuration,
 * or look a user up. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "config.h"
#include "daemon.h"

#define DEFAULT_CONFIG "/etc/mailroute/mailroute.conf"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mailrouted [-c FILE] [-t | -n | -a]\n"
            "       mailrouted [-c FILE] lookup USER [--protocol P] [--remote-ip IP] "
            "[--local-ip IP]\n"
            "  -c FILE  configuration file (default " DEFAULT_CONFIG ")\n"
            "  -t       check the configuration and exit\n"
            "  -n       print the settings that differ from their defaults\n"
            "  -a       print every setting\n"
            "  -V       print the version\n");
}

int main(int argc, char **argv)
{
    const char *config = DEFAULT_CONFIG;
    bool check = false, dump = false, dump_all = false;
    int c;
    while ((c = getopt(argc, argv, "+c:tnaVhF")) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 't': check = true; break;
        case 'n': dump = true; break;
        case 'a': dump_all = true; break;
        case 'F': break; /* always in the foreground */
        case 'V': printf("mailrouted %s\n", MR_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    char *error = NULL;
    struct settings *set = settings_load(config, &error);
    if (set == NULL) {
        fprintf(stderr, "%s\n", error);
        free(error);
        return EX_CONFIG;
    }
    int ret = 0;
    if (optind < argc && strcmp(argv[optind], "lookup") == 0) {
        ret = run_lookup(set, argc - optind, argv + optind);
    } else if (optind < argc) {
        usage(stderr);
        ret = EX_USAGE;
    } else if (check) {
        /* Certificates and keys are loaded too, so -t finds their errors. */
        struct generation *gen = generation_new(set, &error);
        if (gen == NULL) {
            fprintf(stderr, "%s: %s\n", config, error);
            free(error);
            return EX_CONFIG;
        }
        printf("%s: configuration OK\n", config);
        generation_unref(gen);
        return 0;
    } else if (dump || dump_all) {
        settings_dump(set, stdout, !dump_all);
    } else {
        return run_daemon(config, set); /* owns set from here */
    }
    settings_free(&set);
    return ret;
}
