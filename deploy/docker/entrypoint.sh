#!/bin/sh
# Entrypoint of the ddrp image: `ddrp` by default, any program of the image on request.
#
#   docker run IMAGE run --x ... --w ... -k 64 --out ...   ->  ddrp run --x ...
#   docker run IMAGE --help                               ->  ddrp --help
#   docker run IMAGE ddrp run ...                         ->  ddrp run ...
#   docker run IMAGE dask scheduler                       ->  dask scheduler       (same image as
#   docker run IMAGE dask worker tcp://scheduler:8786     ->  dask worker ...       the client)
#   docker run IMAGE python -c ...                        ->  python -c ...
#
# The Dask Helm chart (dask/dask) only sets a container's `args`, with the legacy commands
# `dask-scheduler` and `dask-worker`, which distributed no longer installs: they are mapped to
# `dask scheduler` and `dask worker` here, so the same image serves the chart as well.
set -e

case "${1:-}" in
    dask-scheduler | dask-worker)
        sub="${1#dask-}"
        shift
        exec dask "$sub" "$@"
        ;;
    "" | -*)
        exec ddrp "$@"
        ;;
esac

# A program on PATH (ddrp, dask, python, sh, ...) runs as given; anything else is a ddrp
# subcommand (run, fit, project, ...), and ddrp reports an unknown one.
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec ddrp "$@"
