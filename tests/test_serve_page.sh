#!/bin/sh
# The page of `uflow serve` in headless Chromium (tools/check_serve_page.sh: an image uploaded
# through the page shows its overlay, checked on the screenshot), as one test of make test.
# Skipped, with the reason printed, only where Chromium or ChromeDriver is missing (make test
# installs them: tools/install_deps.sh test).
cd "$(dirname "$0")/.." || exit 1
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "SKIP: no chromium / chromedriver (sh tools/install_deps.sh test installs them)"; echo "RESULT 0 0"; exit 0
fi
out=$(UFLOW_PAGE_NO_DEPS=1 sh tools/check_serve_page.sh 2>&1)
rc=$?
printf '%s\n' "$out" | grep '^check_serve_page' | grep -v ': ok$'
if [ $rc -eq 0 ]; then echo "PASS the page shows an uploaded image's overlay"; echo "RESULT 1 0"
else printf '%s\n' "$out" | tail -5; echo "FAIL the page"; echo "RESULT 0 1"; fi
