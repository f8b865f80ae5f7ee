#!/bin/sh
# relay cat against cat(1) on the same file (issue 12), with hyperfine:
# a channel file of CPUS CPU buffers of 64-byte records, written one record
# per CPU in turn (every record switches CPU) and in runs of 100, read by
# `cat FILE`, `relay cat FILE` (text, seconds), `relay cat --time raw FILE`
# (text, integer timestamps) and `relay cat --json FILE`, all to
# /dev/null. Prints hyperfine's table and records/s.
#
#   relay-cli/benches/cat.sh [CPUS] [RECORDS_PER_CPU]     (default 256 12000)
#
# Needs hyperfine (apt install hyperfine). Files go to $TMPDIR (default
# /dev/shm, so the disk is not what is measured).
set -eu
cpus=${1:-256}
per_cpu=${2:-12000}
payload=${3:-binary}
dir=${TMPDIR:-/dev/shm}
command -v hyperfine >/dev/null || { echo "cat.sh: needs hyperfine (apt install hyperfine)" >&2; exit 2; }
# Two builds: with --example, cargo builds that example and nothing else.
cargo build --release -q -p relay-cli
cargo build --release -q -p relay-user --example interleaved
root=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
relay=$root/release/relay
records=$((cpus * per_cpu))
for run in 1 100; do
    file=$dir/relay-cat-bench-$cpus-$run.relay
    "$root/release/examples/interleaved" "$file" "$cpus" "$per_cpu" "$run" "$payload"
    hyperfine --warmup 1 --runs 5 -N --style basic \
        --export-markdown "$dir/relay-cat-bench-$run.md" \
        -n cat "cat $file" \
        -n "relay cat" "$relay cat $file" \
        -n "relay cat --time raw" "$relay cat --time raw $file" \
        -n "relay cat --json" "$relay cat --json $file" \
        --output=null
    echo "run of $run record(s) per CPU, $records records, $payload payloads:"
    cat "$dir/relay-cat-bench-$run.md"
    rm -f "$file"
done
echo "records/s = $records / mean seconds"
