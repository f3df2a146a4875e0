#!/usr/bin/env bash
# Installs the Debian 12 packages hitch builds with (as root, or through sudo when not root).
# Does nothing when they are all present already, so the other scripts can call it every time.
set -euo pipefail
packages=(g++ cmake make libopenblas-dev doctest-dev libfmt-dev libcli11-dev nlohmann-json3-dev python3-numpy wordnet-base graphviz pkgconf openmpi-bin libopenmpi-dev)
# graphviz: only the `docs` target uses its `dot` (docs/images/tutorial_graph.svg); the library does not.
# openmpi-bin, libopenmpi-dev: Open MPI (mpirun, mpi.h) for hitch::dist (dist/) and its MPI tests;
# the core library hitch::hitch does not use it.
# pkgconf: the install test builds a consumer through hitch.pc as well as find_package.
# `install-deps.sh fuzz` adds the clang-14 toolchain with libFuzzer (scripts/fuzz.sh only; CI
# replays the fuzz corpus with g++).
if [ "${1:-}" = "fuzz" ]; then packages+=(clang-14 libclang-rt-14-dev); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
