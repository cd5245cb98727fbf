/* env.c - reference counting of a worker's configuration generation. */
#include "env.h"

#include <stdlib.h>

void proto_env_ref(struct proto_env *env)
{
    env->refs++;
}

void proto_env_unref(struct proto_env **envp)
{
    struct proto_env *env = *envp;
    if (env == NULL)
        return;
    *envp = NULL;
    if (--env->refs > 0)
        return;
    passdb_destroy(&env->passdb);
    if (env->release != NULL)
        env->release(env->release_ctx);
    free(env);
}
