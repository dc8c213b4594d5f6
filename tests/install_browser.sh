#!/usr/bin/env bash
# Debian's chromium for the live page's browser test (tests/crewstream/test_watch.py), installed by
# `make test` / `make test-all` when it is missing and this is root with apt-get; otherwise the
# test skips and says why. Never fails the test run.
if command -v chromium >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "chromium not installed (apt-get failed): the browser test will skip"
else
  echo "chromium not installed (needs root and apt-get): the browser test will skip"
fi
exit 0
