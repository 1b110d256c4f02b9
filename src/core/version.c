#include "uflow.h"

const char *uf_version(void) { return UFLOW_VERSION; }
