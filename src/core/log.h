/* log.h - how the library tells its caller about progress and warnings.
 *
 * The library never writes to stdout or stderr itself. It hands each message, one
 * line without its newline, to the process-wide callback set here; with none set
 * (the default) messages are dropped. The uflow command sets one that prints to
 * stderr. Levels: UF_LOG_PROGRESS for lines that a terminal may overwrite in place
 * ("tested 40/582 images"), UF_LOG_INFO for lines of a run's account, UF_LOG_WARNING
 * for something the user should know (a skipped file, an unusable cache), UF_LOG_ERROR
 * for one item that failed while the run goes on (an unreadable image in a prediction).
 * The callback may be called from any thread that runs library code, one call at a
 * time (a mutex is held around it).
 */
#ifndef UF_CORE_LOG_H
#define UF_CORE_LOG_H

typedef enum uf_log_level { UF_LOG_PROGRESS = 0, UF_LOG_INFO = 1, UF_LOG_WARNING = 2, UF_LOG_ERROR = 3 } uf_log_level;

typedef void (*uf_log_fn)(int level, const char *message, void *user);

/* Sets the callback (NULL: silent) and its user pointer. */
void uf_set_log_callback(uf_log_fn fn, void *user);

/* Formats one message and passes it on; a no-op without a callback. */
void uf_log(uf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 when a callback is set (to skip building costly messages). */
int uf_log_enabled(void);

#endif
