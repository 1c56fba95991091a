#!/usr/bin/env bash
# The quick start on a machine that may have nothing but bash and apt (a bare Debian 12, as
# root): installs make, the compiler and the Debian packages the make goals need, then runs
# make with the same arguments.  MAKEFLAGS (e.g. -j2) is passed on as make reads it.
#
# usage: scripts/quickstart.sh [GOAL|VAR=value|make option]...
#   scripts/quickstart.sh demo    builds, mounts a real checkpoint at ./mnt and shows it
#   scripts/quickstart.sh test    builds and runs every test
set -euo pipefail
cd "$(dirname "$0")/.."

# Only the goals choose packages; variables and options are make's business.
goals=()
for a in "$@"; do
    case "$a" in
        -*|*=*) ;;
        *) goals+=("$a") ;;
    esac
done
[ "${#goals[@]}" -gt 0 ] || goals=(all)

scripts/install-deps.sh "${goals[@]}"
exec make "$@"
