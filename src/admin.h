/* Operator commands (README.md, "Operator commands"): migrate, config, account/user/agent/token
 * create, demo. Each returns the process exit status: 0 ok, 1 failure, 2 bad usage. */
#ifndef CK_ADMIN_H
#define CK_ADMIN_H
#include "util/config.h"

/* argv[0] is the command name ("account", "demo", …). */
int admin_main(const config *cfg, int argc, char **argv, int json);
/* Creates the data directory when the database lives there. Returns 0 or -errno. */
int admin_prepare_data_dir(const config *cfg, char *err, size_t errlen);

#endif
