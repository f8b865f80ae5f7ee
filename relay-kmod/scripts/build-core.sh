#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Builds relay-core (and its crates.io dependencies) for the kernel's own Rust
# target, with the exact codegen flags the kernel was built with, and packs
# the result for Kbuild:
#
#   OUT/relay_core.o        every object of every rlib, one relocatable object
#   OUT/core/*.rlib         the rlibs' metadata, for `--extern relay_core`
#
# usage: build-core.sh KDIR OUT [CARGO_TARGET_DIR]
#
# Environment: RELAY_CORE (relay-core source, default ../relay-core), RUSTC (default /usr/bin/rustc: the compiler the kernel was
# built with; it must be the same one), CARGO (default cargo).
set -eu

KDIR=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
CORE=${RELAY_CORE:-$HERE/../relay-core}
TARGET_DIR=${3:-$OUT/cargo-target}
RUSTC=${RUSTC:-/usr/bin/rustc}
CARGO=${CARGO:-cargo}

CMD="$KDIR/rust/.kernel.o.cmd"
if [ ! -f "$CMD" ] || [ ! -f "$KDIR/rust/libcore.rmeta" ]; then
	echo "build-core.sh: $KDIR has no built Rust support (run make in the kernel tree, with CONFIG_RUST=y)" >&2
	exit 1
fi

# The codegen flags of the kernel crate itself: -C and -Z options, minus the
# ones that only make sense for a crate Kbuild builds by itself.
FLAGS=$(sed -n 's/^savedcmd_[^ ]* := //p' "$CMD" | tr ' ' '\n' | grep -E '^-(C|Z)' |
	grep -vE '^-Z(crate-attr|allow-features|unstable-options|binary_dep_depinfo)' | tr '\n' ' ')
echo "build-core.sh: kernel codegen flags: $FLAGS"

# CARGO_ENCODED_RUSTFLAGS: flags separated by 0x1f.
SEP=$(printf '\037')
ENC=""
for f in $FLAGS --sysroot=/dev/null -L "$KDIR/rust"; do
	ENC="$ENC${ENC:+$SEP}$f"
done

rm -rf "$OUT/core"
mkdir -p "$OUT/core"
MSGS="$OUT/cargo-messages.json"
env RUSTC="$RUSTC" RUSTC_BOOTSTRAP=1 CARGO_ENCODED_RUSTFLAGS="$ENC" \
	CARGO_PROFILE_RELEASE_DEBUG=false \
	CARGO_PROFILE_RELEASE_LTO=false \
	CARGO_PROFILE_RELEASE_PANIC=abort \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_PROFILE_RELEASE_INCREMENTAL=false \
	"$CARGO" -Zjson-target-spec build --release --locked \
	--manifest-path "$CORE/Cargo.toml" -p relay-core --no-default-features \
	--target "$KDIR/scripts/target.json" --target-dir "$TARGET_DIR" \
	--message-format=json-render-diagnostics >"$MSGS"

# The rlibs this build produced (from cargo's artifact messages).
RLIBS=$(grep -o '"filenames":\["[^"]*\.rlib"' "$MSGS" | sed 's/.*\["//; s/"$//')
[ -n "$RLIBS" ] || { echo "build-core.sh: cargo produced no rlib" >&2; exit 1; }

OBJS=""
i=0
for r in $RLIBS; do
	i=$((i + 1))
	d="$OUT/core/objs$i"
	mkdir -p "$d"
	(cd "$d" && ar x "$r")
	rm -f "$d/lib.rmeta"
	for o in "$d"/*.o; do
		[ -f "$o" ] && OBJS="$OBJS $o"
	done
	cp "$r" "$OUT/core/"
	case "$(basename "$r")" in
	librelay_core.rlib) ;;
	librelay_core-*.rlib) cp "$r" "$OUT/core/librelay_core.rlib" ;;
	esac
done
[ -f "$OUT/core/librelay_core.rlib" ] || { echo "build-core.sh: no librelay_core rlib" >&2; exit 1; }
# shellcheck disable=SC2086
ld -m elf_x86_64 -r -o "$OUT/relay_core.o" $OBJS
rm -rf "$OUT"/core/objs*
echo "build-core.sh: $OUT/relay_core.o from$(for r in $RLIBS; do printf ' %s' "$(basename "$r")"; done)"
