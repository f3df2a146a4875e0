#!/usr/bin/env bash
# ctest test install_consumer: installs the build tree into a scratch prefix, then builds and runs
# tests/consumer against it twice, as users do: with CMake's find_package(hitch) (which also
# compiles every installed header on its own) and with pkg-config (hitch.pc). Also checks that
# the installed CMake files name no absolute library path of this machine.
set -euo pipefail
build_dir=$1
source_dir=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build_dir" --prefix "$scratch/prefix" >/dev/null
if grep -rn "libopenblas\|/usr/lib" "$scratch/prefix" --include='*.cmake'; then
  echo "install_consumer: the installed CMake package names an absolute library path (above)" >&2
  exit 1
fi
cmake -S "$source_dir" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$scratch/build" -j2 >/dev/null
"$scratch/build/consumer"
pc_dir=$(dirname "$(find "$scratch/prefix" -name hitch.pc)")
flags=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs hitch)
# shellcheck disable=SC2086  # word splitting of the flags is intended
g++ -std=c++20 "$source_dir/main.cpp" -o "$scratch/consumer_pc" $flags
"$scratch/consumer_pc" | sed 's/^consumer:/consumer (pkg-config):/'
