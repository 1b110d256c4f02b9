/* uflow.h - public API of the uflow library.
 *
 * uflow implements U-Flow (Tailanian, Pardo, Muse: "U-Flow: A U-shaped
 * Normalizing Flow for Anomaly Detection with Unsupervised Threshold") in C:
 * a frozen ImageNet backbone, a U-shaped normalizing flow trained by maximum
 * likelihood, an anomaly map, and an a-contrario (NFA) segmentation.
 *
 * Error handling: functions return UF_OK (0) / UF_ERR (-1) or NULL, and leave
 * a one-line message readable with uf_last_error().
 */
#ifndef UFLOW_H
#define UFLOW_H

#define UFLOW_VERSION "0.1.0"

const char *uf_version(void);
const char *uf_last_error(void);

#endif
