#!/bin/sh
# relay against Debian's blkparse on the same saved blktrace trace (issue
# 15), with hyperfine: a synthetic trace of REQUESTS requests (Q, G, D, C:
# four events each) over CPUS per-CPU files, parsed by `blkparse -i sdb -D
# DIR -o /dev/null` and `relay cat --format blktrace DIR` (the same text,
# events and summary, checked byte for byte first), both with the binary
# dump for btt (-d), and `relay cat --format blktrace --json`.
#
#   relay-cli/benches/blkparse.sh [CPUS] [REQUESTS]     (default 4 250000)
#
# Needs hyperfine and blktrace (apt install hyperfine blktrace). Files go
# to $TMPDIR (default /dev/shm).
set -eu
cpus=${1:-4}
requests=${2:-250000}
dir=${TMPDIR:-/dev/shm}/relay-blkparse-bench
for tool in hyperfine blkparse; do
    command -v $tool >/dev/null || { echo "blkparse.sh: needs $tool (apt install hyperfine blktrace)" >&2; exit 2; }
done
cargo build --release -q -p relay-cli -p relay-user --example blktrace_trace
root=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
relay=$root/release/relay
rm -rf "$dir"
"$root/release/examples/blktrace_trace" "$dir/sdb" "$cpus" "$requests"
blkparse -i sdb -D "$dir/sdb" -o "$dir/blkparse.txt" >/dev/null
"$relay" cat --format blktrace "$dir/sdb" >"$dir/relay.txt"
cmp "$dir/blkparse.txt" "$dir/relay.txt" || { echo "blkparse.sh: the outputs differ" >&2; exit 1; }
hyperfine --warmup 1 --runs 5 -N --style basic --export-markdown "$dir/table.md" \
    -n blkparse "blkparse -i sdb -D $dir/sdb -o /dev/null" \
    -n "relay cat --format blktrace" "$relay cat --format blktrace $dir/sdb" \
    -n "blkparse -d" "blkparse -i sdb -D $dir/sdb -o /dev/null -d $dir/bp.bin" \
    -n "relay cat --format blktrace -d" "$relay cat --format blktrace -d $dir/r.bin $dir/sdb" \
    -n "relay cat --format blktrace --json" "$relay cat --format blktrace --json $dir/sdb" \
    --output=null
echo "$((requests * 4)) events, $cpus CPUs:"
cat "$dir/table.md"
rm -rf "$dir"
