//! blktrace: the block layer's tracer, relay's most used client, decoded.
//!
//! `blktrace` has the kernel write `struct blk_io_trace` records into one
//! relay buffer per CPU (`/sys/kernel/debug/block/<dev>/trace0..N`); the
//! `blktrace` tool saves them as `<dev>.blktrace.0..N`, and `blkparse`
//! merges the per-CPU files by time and prints one line per event. This
//! module does the same so that `relay cat --format blktrace DIR` reads
//! either kind of directory as one source, and its text output is
//! byte-identical to the event lines of Debian's `blkparse` (1.2.0, the
//! bookworm package) run as `blkparse -i <dev> -D <dir>`: an existing tool's
//! output is the contract that scripts and people already read.
//!
//! What "identical" takes, all from blkparse's file mode (`do_file`):
//!
//! - **Records**: 48-byte headers (magic `0x65617400 | 7`, sequence, time in
//!   ns, sector, bytes, action = category bits << 16 | action code, pid,
//!   device = major << 20 | minor, cpu, error, pdu_len) followed by pdu_len
//!   payload bytes, in the writer's byte order (detected per file from the
//!   magic; blkparse detects it once, from the first record it reads). The
//!   payloads blkparse decodes (unplug counts, split sectors, remaps) are
//!   big-endian, as the kernel writes them.
//! - **Merge order**: each CPU's file is read in file order, in batches of
//!   512 records; the CPUs (of every directory, in argument order, then CPU
//!   order) are kept in a list sorted by the time of their next record, and
//!   the first is printed. Equal times are broken exactly as blkparse's
//!   `ms_sort`/`ms_resort` do: the CPU just printed keeps its place while
//!   its next record is not later than the next CPU's; a CPU re-inserted
//!   goes before CPUs of equal time, except the first. Records are not
//!   sorted within a file, and sequence numbers do not order anything.
//! - **Times** are printed relative to the earliest first record of all the
//!   files (blkparse's genesis time: one for all devices, not one per
//!   device; notifies other than messages do not count), wrapping as
//!   blkparse's unsigned arithmetic does for a record older than that.
//! - **Process names** come from the process notify records
//!   (`BLK_TN_PROCESS`), which print nothing. blkparse takes them in when it
//!   *reads* a batch, not in time order, and keeps the first name a pid gets;
//!   a pid with no name yet prints as `[(null)]` (glibc's `%s` of NULL).
//!   The batching above is reproduced for this reason.
//! - **Messages** (`BLK_TN_MESSAGE`) print as `m   N text`, with sequence
//!   and pid 0; timestamp notifies (`BLK_TN_TIMESTAMP`) and other notifies
//!   print nothing.
//! - **Skipped as blkparse skips them**: records without category bits
//!   (blkparse's default action mask), driver-data records, records whose
//!   cpu field is not their file's CPU, and action codes blkparse does not
//!   know (reported as warnings, as blkparse reports "Bad fs action").
//!
//! Known differences, intentional:
//!
//! - **cgroup-tagged records.** Newer kernels can prefix the payload with an
//!   8-byte cgroup id and set `__BLK_TA_CGROUP` (0x100) in the action; Linux
//!   6.12 with `CONFIG_BLK_CGROUP` does so on every message (cgroup id 1
//!   unless the ftrace `blk_cgroup` option is set), and on I/O events when
//!   that option is set. blkparse 1.2.0 predates this: it drops such
//!   messages silently and calls such I/O events "Bad fs action". The
//!   text output does the same, to stay identical, but says so on stderr
//!   (once per CPU for messages); [`Options::cgroup`] (set by `--json`)
//!   decodes them instead, as later blkparse versions do.
//! - **Malformed input is an error here** (exit 4 in the CLI), naming the
//!   file, CPU, offset and field, where blkparse prints "Bad magic" or
//!   nothing and stops reading that CPU. The events before it are printed
//!   exactly as blkparse prints them. A trailing partial record at the end
//!   of a file is also an error, unless following a live file, where it is
//!   the part the kernel has not finished and the reader waits for the rest.
//! - **Payloads too short** for what blkparse reads from them (an unplug or
//!   split shorter than 8 bytes, a remap shorter than 16): blkparse prints
//!   whatever memory follows; this reports the record as malformed. A
//!   process name without a NUL in a payload shorter than 16 bytes ends at
//!   the payload here (blkparse reads on), and a packet command's payload
//!   is dumped whole (blkparse's 4096-byte buffer overflows past ~1365).
//! - **Missing CPU files**: blkparse stops at the first missing CPU number
//!   (`trace0, trace2` reads only CPU 0); this reads every CPU file found.
//! - **Follow mode** (`--follow`) cannot know the future: it prints the
//!   earliest record once every CPU has one pending or has been idle for the
//!   latency, so its order is blkparse's only when nothing arrives late.
//!
//! - **Stray stdout lines**: blkparse prints "Input file ... added" and its
//!   note about discarded driver data with `printf`, apart from its output
//!   file; what is printed here is what `blkparse -o FILE` writes to FILE
//!   (events, then the summary), and the CLI says the driver-data note on
//!   stderr.
//!
//! After the events, blkparse's summary ([`Summary`], byte-identical,
//! `summary.rs` lists its quirks), and optionally its `-d` binary dump
//! ([`Decoder::dump_to`]), byte-identical to `blkparse -d`'s, which `btt`
//! reads.
//!
//! Not done: its `-f`/`-F` custom formats, `-s` per-process statistics,
//! `-t` request timing, `-w` stopwatch, `-a` action masks, and its pipe
//! mode (`-i -`).

mod decode;
mod event;
mod record;
pub(crate) mod session;
mod summary;

pub use decode::{CpuInput, Decoder, Device, Item, Options, Problem, Severity};
pub use event::{Action, Event, What};
pub use record::*;
pub use session::{Session, SessionError, SetupOptions, DEFAULT_BUFFERS, DEFAULT_BUFFER_SIZE};
pub use summary::Summary;

#[cfg(test)]
mod tests;
