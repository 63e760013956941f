#!/usr/bin/env bash
# Reproduce one experiment block: bash experiments/run.sh NAME [extra croma flags]
# NAME: yummly | cifar-esc50 | wilderness | objectives | noise | demo
# Data sets are read from $CROMA_DATA (or pass --data-root DIR); see experiments/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
croma="${CROMA:-croma}"
name="${1:?usage: experiments/run.sh NAME [flags]}"; shift
out="runs/experiments/$name"
case "$name" in
  yummly)      exec "$croma" benchmark yummly      --preset paper --shots 1 5 10 --repeats 5 --out "$out" "$@" ;;
  cifar-esc50) exec "$croma" benchmark cifar-esc50 --preset paper --shots 1 5 10 --repeats 5 --out "$out" "$@" ;;
  wilderness)  exec "$croma" benchmark wilderness  --preset paper --shots 1 5 10 --repeats 5 --out "$out" "$@" ;;
  objectives)
    # All six alignment objectives on the embedded benchmark, CROMA only, same budget each.
    bench="${BENCH:-udhr-speech}"
    for loss in nce clip cwcl pcmc pcmr cmcr; do
      "$croma" benchmark "$bench" --methods croma --loss "$loss" --out "$out/$loss" "$@"
    done
    python3 "$here/tools/collect.py" "$out" ;;
  noise)
    # Robustness to symmetric label noise on target labels (paper Fig. 7).
    bench="${BENCH:-udhr-speech}"
    exec "$croma" benchmark "$bench" --methods croma,oracle,align-classify --noise-sweep 0,0.2,0.4,0.6 --out "$out" "$@" ;;
  demo)        exec "$croma" benchmark udhr-speech --preset quick --out "$out" "$@" ;;
  *) echo "error: unknown experiment '$name' (yummly, cifar-esc50, wilderness, objectives, noise, demo)" >&2; exit 2 ;;
esac
