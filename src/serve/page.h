/* page.h - the self-contained HTML page of `uflow serve` (GET /). */
#ifndef UF_SERVE_PAGE_H
#define UF_SERVE_PAGE_H

extern const char uf_service_page[];

#endif
