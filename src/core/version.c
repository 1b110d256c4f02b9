#include "core/version.h"

const char *uf_version(void) { return UFLOW_VERSION; }
