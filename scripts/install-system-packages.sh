#!/usr/bin/env bash
# Installs the Debian packages convlens can use: the full Fashion-MNIST data set, and
# Chromium for the explorer's browser tests (Playwright drives it; it never downloads a browser).
# Skips with a message (never fails the build) where apt is missing or we are not root.
set -u
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "convlens setup: apt-get not found; skipping ${need[*]} (without them: no fashion-mnist built-in, browser tests skipped)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "convlens setup: not root; skipping ${need[*]} (install it with: sudo apt-get install ${need[*]})"
    exit 0
  fi
fi
echo "convlens setup: installing ${need[*]} with apt-get"
if ! $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null 2>&1
  $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || echo "convlens setup: could not install ${need[*]}; continuing without it"
fi
exit 0
