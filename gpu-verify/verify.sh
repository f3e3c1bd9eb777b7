#!/bin/sh
# Real-GPU verification of the probe and its verdicts; see verify.py. Usage: gpu-verify/verify.sh OUTDIR
exec python3 "$(dirname "$0")/verify.py" "$@"
