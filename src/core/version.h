/* version.h - the library version. */
#ifndef UF_CORE_VERSION_H
#define UF_CORE_VERSION_H

#define UFLOW_VERSION "0.2.0"

const char *uf_version(void);

#endif
