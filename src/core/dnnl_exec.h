/* dnnl_exec.h - how uflow runs oneDNN primitives from several threads.
 *
 * Debian's oneDNN (2.7) is built without concurrent execution: a primitive with the
 * default (library) scratchpad uses a buffer that is thread-local to the thread that
 * created it. Measured here: a model whose convolutions were built in the main thread
 * crashed (inside the AVX-512 Winograd kernels) when it predicted in another thread.
 * So every uflow primitive has a user scratchpad: each ResNet plan its own (plans of
 * two models run at once), the cached convolutions of core/conv_dnnl.c one shared
 * buffer, as they run one at a time under its lock.
 */
#ifndef UF_CORE_DNNL_EXEC_H
#define UF_CORE_DNNL_EXEC_H

#include <oneapi/dnnl/dnnl.h>

/* Executes p on stream s and waits for it, under conv_dnnl.c's lock (recursive). */
dnnl_status_t uf_dnnl_execute(dnnl_primitive_t p, dnnl_stream_t s, int n_args, const dnnl_exec_arg_t *args);

#endif
