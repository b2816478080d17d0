#!/usr/bin/env bash
# Installs Debian's Slurm (slurmctld, slurmd, the client commands) and munge when missing: the
# tests of the `slurm` executor (tests/test_cluster.py) start them as a one-node cluster on this
# machine. Nothing is configured or started here: the tests write their own slurm.conf and munge
# key in a temporary folder and stop the daemons they started. Like install_chromium.sh, it needs
# root or sudo; without them it says what to run and the tests skip with that reason.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which a PATH may leave out
missing=()
for tool in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} = 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else
  echo "Slurm is missing and cannot be installed without root: run" \
       "'apt-get install -y ${missing[*]}' (the Slurm tests skip until then)" >&2
  exit 0  # not an error: the tests say why they skip
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packages' own services are not started: a container has no init to run them, and the
# tests start their daemons with their own configuration.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
slurmctld -V
