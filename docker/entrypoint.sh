#!/bin/sh
# Entrypoint of the gpp-cubes images, run by tini (PID 1: forwards signals, reaps the
# processes Dask leaves behind). Arguments are a `gpp` command unless they name one of the
# programs cloud specs start (dask-kubernetes, dask-gateway, the Dask Helm chart, batch jobs):
#
#   docker run IMAGE build --sites all ...    -> gpp build --sites all ...
#   docker run IMAGE gpp build ...            -> gpp build ...
#   docker run IMAGE dask worker tcp://...    -> dask worker tcp://...
#   docker run IMAGE dask-worker tcp://...    -> dask worker tcp://...  (the legacy script
#   docker run IMAGE dask-scheduler ...       -> dask scheduler ...      names; distributed
#                                                                         no longer ships them)
#   docker run IMAGE python -c ...            -> python -c ...   (also python3, bash, sh and
#                                                                 any absolute path)
#
# `exec` replaces this shell with the command, so tini's signals (docker stop, Kubernetes
# pod termination) reach it directly.
set -eu

case "${1:-}" in
    gpp | dask | python | python3 | bash | sh | /*)
        exec "$@"
        ;;
    dask-scheduler | dask-worker)
        command=${1#dask-}
        shift
        exec dask "$command" "$@"
        ;;
    *)
        exec gpp "$@"
        ;;
esac
