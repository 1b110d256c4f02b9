/* shipped.h - where the ResNet-18 weights shipped with uflow are, so that every
 * program using the library (the uflow command, bench, an embedding program, the
 * Python package) finds them the same way. */
#ifndef UF_BACKBONE_SHIPPED_H
#define UF_BACKBONE_SHIPPED_H

#define UF_SHIPPED_WEIGHTS "resnet18-in1k-l3-bnfolded.safetensors"

/* Path of the shipped weights: the first readable of
 *   $UFLOW_DATA_DIR/<file>                       (when the variable is set)
 *   models/<file>                                (the current folder: a checkout)
 *   <folder of the code>/../models/<file>        (build/uflow or build/libuflow.so of a checkout)
 *   <folder of the code>/../share/uflow/<file>   (PREFIX/lib/libuflow.so after make install)
 *   <folder of the program>/../models/<file>
 * where "the code" is the executable or shared library this function is in. When none
 * is readable: "models/<file>", which the loader then reports as missing. Computed once
 * (thread-safe); the string is static. */
const char *uf_shipped_weights(void);

#endif
