#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist (the four IDX files under /usr/share/datasets/
# fashion-mnist) when it is missing: the book's experiments read it, nothing is downloaded
# at run time. Like install_chromium.sh, it needs root or sudo.
set -euo pipefail
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "Fashion-MNIST is missing and cannot be installed without root: run" \
       "'apt-get install -y dataset-fashion-mnist'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
