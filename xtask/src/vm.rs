//! `cargo xtask vm-test`: the kernel half's test harness (relay-kmod).
//!
//! From a fresh Debian bookworm machine:
//!
//! 1. installs what is missing (apt: the 6.12 kernel source, Debian's rustc
//!    with its library source, the kernel's build dependencies, qemu,
//!    busybox-static, blktrace, dwarves for BTF, libbpf, lld; crates.io:
//!    bindgen-cli);
//! 2. unpacks the kernel into `target/vm/` and `target/vm/debug/`,
//!    configures each (tinyconfig plus `relay-kmod/kernel.config`, the -O2
//!    kernel the benchmarks run on; plus `relay-kmod/kernel-debug.config`
//!    for the checking kernel, built with clang: PREEMPT_RT, lockdep, KASAN,
//!    KFENCE, UBSAN, kmemleak, debug objects) and builds `bzImage` and
//!    `modules`; skipped when a tree's `.config` already matches its
//!    fragments and the images exist;
//! 3. builds relay-core for each kernel's target and relay_kmod.ko out of
//!    tree against each (`relay-kmod/Makefile`, in a copy under
//!    `target/vm/[debug/]kmod/`);
//! 4. builds the static guest binaries (the `relay` CLI, the bad-input test,
//!    the BPF loader) and the BPF programs, packs an initramfs (busybox,
//!    blktrace, `relay-kmod/guest/init`, the module) per kernel and boots
//!    each in qemu (TCG, 4 vCPUs), the serial console going to
//!    `target/vm/[debug/]console.log`; the checking kernel's guest runs the
//!    scenarios without the benchmarks, plus the soak and a kmemleak scan;
//! 5. fails unless each log shows every scenario's `ok` line (`REQUIRED`,
//!    and `REQUIRED_DEBUG` or `REQUIRED_RELEASE`), and on any FAILED line,
//!    or any report of a kernel checker (`FORBIDDEN`).
//!
//! Every step prints what it runs and how long it took.

use std::env;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{exit, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's packaged kernel source (package `linux-source-6.12`).
const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// The directory the tarball unpacks to.
const KERNEL_DIR: &str = "linux-source-6.12";
/// Debian's rustc (`rustc-web`): the kernel's Rust needs its `rust-web-src`.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";
/// busybox-static's binary.
const BUSYBOX: &str = "/bin/busybox";
/// Parallel jobs for the kernel build.
const JOBS: &str = "-j2";
/// How long the guest may run.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);

const PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "rustc-web",
    "rust-web-src",
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "xz-utils",
    "gzip",
    "python3",
    "libclang-dev",
    "clang",
    "qemu-system-x86",
    "busybox-static",
    // BTF for the kernel and modules, and the BPF programs' loader.
    "dwarves",
    "libbpf-dev",
    "libzstd-dev",
    // The checking kernel is built with clang (LLVM=1): lld, llvm's tools.
    "lld",
    "llvm",
    // blkparse, which `relay cat --format blktrace` is compared with.
    "blktrace",
];

/// What the host tests need (`cargo xtask test` installs these before
/// `cargo test`): blkparse and btt, which relay-cli's blktrace tests
/// compare with, and babeltrace2, which reads what `relay export --ctf`
/// writes.
pub const HOST_PACKAGES: &[&str] = &["blktrace", "babeltrace2"];

/// Lines the console log must contain (substring match), with what each means.
const REQUIRED: &[(&str, &str)] = &[
    ("relay-guest: booted", "the guest's /init ran"),
    (
        "relay_kmod: selftest ok",
        "the load-time self-test passed (nothing lost)",
    ),
    (
        "relay_kmod: overflow test ok",
        "exact loss accounting when full",
    ),
    (
        "relay_kmod: overwrite test ok",
        "overwrite mode kept the newest records and counted the rest",
    ),
    (
        "relay_kmod: nested test ok",
        "hard-IRQ writers nested in task writers lost or broke nothing",
    ),
    ("relay-guest: insmod ok", "insmod succeeded"),
    (
        "relay_kmod: /dev/relay/control registered",
        "the control device is up",
    ),
    (
        "relay-guest: mmap-live ok mode=no-overwrite",
        "kthreads on every CPU, relay verify through the one mmap file",
    ),
    (
        "relay-guest: mmap-live ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: read ok mode=no-overwrite",
        "cat /dev/relay/NAME | relay verify -: every record, merged",
    ),
    (
        "relay-guest: read ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: percpu ok mode=no-overwrite",
        "each per-CPU file delivers its CPU's records",
    ),
    (
        "relay-guest: percpu ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: nested ok mode=no-overwrite clock=monotonic",
        "hard-IRQ and NMI writers nested in kthread writes, verified",
    ),
    (
        "relay-guest: nested ok mode=overwrite clock=monotonic",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: wall-clock ok",
        "a kernel channel's realtime anchor dates its records",
    ),
    (
        "relay-guest: nested ok mode=overwrite clock=local",
        "the same with local_clock() stamps (relay stat names the clock)",
    ),
    (
        "relay-guest: nested ok mode=no-overwrite clock=tsc",
        "the same with raw TSC stamps",
    ),
    (
        "relay-guest: restart ok mode=no-overwrite",
        "a reader killed and restarted lost nothing",
    ),
    (
        "relay-guest: restart ok mode=overwrite",
        "the same in overwrite mode (losses exact)",
    ),
    (
        "relay-guest: snapshot ok mode=no-overwrite",
        "O_RDONLY snapshots of a kernel channel beside a consumer and writers; a second consumer refused",
    ),
    (
        "relay-guest: snapshot ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: readers ok mode=no-overwrite",
        "read() commits whole frames; a second consumer gets EBUSY",
    ),
    (
        "relay-guest: readers ok mode=overwrite",
        "read() commits whole frames; a second consumer gets EBUSY",
    ),
    (
        "relay-guest: late-reader ok mode=no-overwrite",
        "no reader, then a late one: oldest kept, rest counted",
    ),
    (
        "relay-guest: late-reader ok mode=overwrite",
        "no reader, then a late one: newest kept, rest counted",
    ),
    (
        "relay-guest: stat ok mode=no-overwrite",
        "relay stat on a kernel channel: per-CPU counters and memory (ioctl)",
    ),
    (
        "relay-guest: stat ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: bpf ok mode=no-overwrite",
        "BPF programs wrote through the kfuncs (copy, and reserve/commit in place) from a syscall tracepoint and from NMI, verified",
    ),
    (
        "relay-guest: bpf ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: hotplug ok mode=no-overwrite",
        "CPUs offline and back under kthread, IRQ, NMI and BPF writers and a merged consumer; each cycle verified",
    ),
    (
        "relay-guest: hotplug ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest: relay-bpf reject ok",
        "the verifier refuses programs that leak a grant, use it after commit, write past it, or sleep",
    ),
    (
        "relay-guest-test: poll wakeup ok",
        "poll() slept until a writer sealed a sub-buffer (irq_work wakeup)",
    ),
    (
        "relay-guest-test: bad creates ok",
        "every bad create field got its errno",
    ),
    (
        "relay-guest-test: bad mappings and ioctls ok mode=no-overwrite",
        "bad mappings and ioctl fields refused",
    ),
    (
        "relay-guest-test: bad mappings and ioctls ok mode=overwrite",
        "the same in overwrite mode",
    ),
    (
        "relay-guest-test: hostile consumer ok mode=no-overwrite",
        "garbage consumer pages did not hurt the kernel",
    ),
    (
        "relay-guest-test: hostile consumer ok mode=overwrite",
        "the same with overwriting writers",
    ),
    (
        "relay-guest-test: destroy while mapped ok mode=no-overwrite",
        "destroy while open and mapped is safe",
    ),
    (
        "relay-guest-test: destroy while mapped ok mode=overwrite",
        "the same in overwrite mode",
    ),
    ("relay-guest: relay-test ok", "the bad-input test exited 0"),
    (
        "relay-guest: rmmod while open refused ok",
        "unloading with an open channel file is refused",
    ),
    (
        "relay-guest: blktrace ok",
        "relay's blktrace decoder matches blkparse on a real trace, events and summary",
    ),
    (
        "relay-guest: relay blktrace ok",
        "relay blktrace traced a RAM disk live on every CPU: blkparse reads its saved files as relay cat does, the live events are the same, btt reads its dump",
    ),
    (
        "relay-guest: relay blktrace ctrl-c ok",
        "SIGINT ends relay blktrace cleanly: events, summary, trace torn down, exit 0",
    ),
    (
        "relay-guest: relay blktrace after kill -9 ok",
        "a trace left set up by a killed relay is torn down by the next run",
    ),
    ("relay-guest: rmmod ok", "rmmod succeeded"),
    ("relay_kmod: unloaded", "the module's exit ran"),
    ("relay-guest: module not loaded", "the module is gone"),
    ("relay-guest: done", "the guest finished its script"),
];

/// Lines only the -O2 kernel's log has: the benchmarks.
const REQUIRED_RELEASE: &[(&str, &str)] = &[
    (
        "relay-guest: relay-bpf bench: cpus=4",
        "BPF programs on every vCPU: the kfuncs against the BPF ring buffer and the perf buffer",
    ),
    (
        "relay-guest: relay-bpf bench: cpus=2",
        "the same on two vCPUs, which run truly in parallel on the two host cores",
    ),
    (
        "relay-guest: bench: size=64 clock=monotonic",
        "the benchmark against relay_write() ran (64 B)",
    ),
    (
        "relay-guest: bench: size=1024 clock=monotonic",
        "the benchmark against relay_write() ran (1 KiB)",
    ),
    (
        "relay-guest: bench: size=64 clock=local",
        "the same stamped with local_clock()",
    ),
    (
        "relay-guest: bench: size=64 clock=tsc",
        "the same stamped with rdtsc",
    ),
    (
        "relay-guest: bench: size=1024 clock=tsc",
        "1 KiB stamped with rdtsc",
    ),
];

/// Lines only the checking kernel's log has.
const REQUIRED_DEBUG: &[(&str, &str)] = &[
    (
        "relay-guest: soak ok",
        "the soak: every context and BPF writing, a consumer verifying, snapshots, scribbled consumer pages, channel churn, rmmod refused",
    ),
    (
        "relay-guest-test: fuzz ok",
        "the system-call fuzzer ran through the soak and reports its calls",
    ),
    (
        "relay-guest: kmemleak ok",
        "kmemleak found no unreferenced objects after the scenarios",
    ),
];

/// Substrings that fail the run wherever they appear in kernel output.
/// The checkers' reports: lockdep and most others say WARNING or BUG:
/// (KASAN, KFENCE, soft lockups, sleeping in atomic context); SLUB's own
/// checks say `BUG <cache>`; then UBSAN, hung tasks, RCU stalls, debug
/// objects, kmemleak, NMIs nobody claimed.
const FORBIDDEN: &[&str] = &[
    "WARNING:",
    "BUG:",
    "] BUG ",
    "UBSAN:",
    "DEBUG_LOCKS_WARN_ON",
    "INFO: task",
    "detected stall",
    "ODEBUG:",
    "unreferenced object",
    "NMI received for unknown reason",
    "Oops",
    "Call Trace",
    "panic",
    "FAILED",
    "general protection",
    "segfault",
    "Unable to handle",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn die(msg: &str) -> ! {
    eprintln!("\nxtask vm-test: FAILED: {msg}");
    exit(1)
}

fn header(step: &str) {
    println!("\n==> {step}");
}

/// Runs `cmd`, echoing it; exits on failure.
fn sh(step: &str, cmd: &mut Command) {
    let shown = format!("{cmd:?}").replace('"', "");
    println!("    {step}: {shown}");
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let status = cmd
        .status()
        .unwrap_or_else(|e| die(&format!("cannot start {shown}: {e}")));
    if !status.success() {
        die(&format!("step '{step}' failed ({status}): {shown}"));
    }
    println!("    ok in {:.1}s", start.elapsed().as_secs_f64());
}

/// Runs `cmd` and returns its stdout, or `None` if it cannot run or fails.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Step timings, printed at the end.
struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let r = f();
        self.0.push((name, start.elapsed()));
        r
    }
}

pub fn run(args: &[String]) {
    if let Some(a) = args.first() {
        if a == "-h" || a == "--help" {
            println!("usage: cargo xtask vm-test\n\n{}", module_doc());
            return;
        }
        die(&format!(
            "unknown argument {a:?} (usage: cargo xtask vm-test)"
        ));
    }
    let root = workspace_root();
    let vm = root.join("target/vm");
    fs::create_dir_all(&vm).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", vm.display())));
    let start = Instant::now();
    let mut t = Timings(Vec::new());

    t.time("packages (apt)", || {
        install_packages("kernel tests", PACKAGES)
    });
    let bindgen = t.time("bindgen-cli", ensure_bindgen);
    let kernels = [Kernel::release(&root, &vm), Kernel::debug(&root, &vm)];
    let test = t.time("guest test", || build_guest_test(&root, &vm));
    let relay = t.time("relay CLI", || build_relay_cli(&root, &vm));
    let (bpf_obj, bpf_loader) = t.time("BPF programs", || build_bpf(&root, &vm));
    let mut failed = Vec::new();
    for k in &kernels {
        let kdir = t.time(k.step("kernel"), || build_kernel(k, &bindgen));
        let ko = t.time(k.step("module"), || build_module(&root, k, &kdir));
        let initramfs = t.time(k.step("initramfs"), || {
            pack_initramfs(
                &k.dir,
                &kdir,
                &[&ko, &test, &relay, &bpf_obj, &bpf_loader],
                &root,
            )
        });
        let log = t.time(k.step("boot"), || boot(k, &kdir, &initramfs));
        if let Err(e) = check_log(&log, &k.dir.join("console.log"), k.required) {
            // The other kernel still runs: both logs' findings at once.
            failed.push(format!("the {} kernel: {e}", k.name));
        }
    }
    if !failed.is_empty() {
        die(&failed.join("\n"));
    }

    println!("\n==> timings");
    for (name, d) in &t.0 {
        println!("    {name:<20} {:>7.1}s", d.as_secs_f64());
    }
    println!(
        "    {:<20} {:>7.1}s",
        "total",
        start.elapsed().as_secs_f64()
    );
    println!("\nxtask vm-test: ok");
}

fn module_doc() -> &'static str {
    "Builds two 6.12 kernels (-O2 under target/vm/, the checking kernel under\n\
     target/vm/debug/) and relay_kmod.ko for each, boots each in qemu (TCG, 4\n\
     vCPUs), runs the guest's scenarios (relay-kmod/guest/init) and checks each\n\
     console log (target/vm/[debug/]console.log)."
}

/// One of the test kernels.
struct Kernel {
    /// "release" (-O2, the benchmarks) or "debug" (the checkers).
    name: &'static str,
    /// Where its source tree, module build, initramfs and log live.
    dir: PathBuf,
    /// Config fragments, applied in order on tinyconfig (later lines win).
    fragments: Vec<PathBuf>,
    /// Built with clang (LLVM=1).
    llvm: bool,
    /// Extra kernel command line.
    append: &'static str,
    memory: &'static str,
    /// Lines only this kernel's log has.
    required: &'static [(&'static str, &'static str)],
}

impl Kernel {
    fn release(root: &Path, vm: &Path) -> Kernel {
        Kernel {
            name: "release",
            dir: vm.to_path_buf(),
            fragments: vec![root.join("relay-kmod/kernel.config")],
            llvm: false,
            append: "",
            memory: "512M",
            required: REQUIRED_RELEASE,
        }
    }

    /// The checking kernel: its guest skips the benchmarks and runs the
    /// soak. `slub_debug=FZPU`: SLUB's sanity checks, red zones, poisoning
    /// and owner tracking; KFENCE samples every 5 ms (the config's default);
    /// kmemleak on; an unknown NMI panics (one nobody claimed).
    fn debug(root: &Path, vm: &Path) -> Kernel {
        Kernel {
            name: "debug",
            dir: vm.join("debug"),
            fragments: vec![
                root.join("relay-kmod/kernel.config"),
                root.join("relay-kmod/kernel-debug.config"),
            ],
            llvm: true,
            append: " relay.profile=debug slub_debug=FZPU kmemleak=on unknown_nmi_panic=1",
            memory: "1G",
            required: REQUIRED_DEBUG,
        }
    }

    /// A step's name in the timings table.
    fn step(&self, what: &'static str) -> &'static str {
        match (self.name, what) {
            ("release", "kernel") => "kernel (-O2)",
            ("release", "module") => "module (-O2)",
            ("release", "initramfs") => "initramfs (-O2)",
            ("release", "boot") => "boot (-O2)",
            (_, "kernel") => "kernel (debug)",
            (_, "module") => "module (debug)",
            (_, "initramfs") => "initramfs (debug)",
            _ => "boot (debug)",
        }
    }
}

// ---------------------------------------------------------------------------
// 1. packages

fn missing_packages(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]));
            !matches!(status, Some(s) if s.contains("install ok installed"))
        })
        .collect()
}

/// Installs the `packages` that are missing (apt, as root).
pub fn install_packages(what: &str, packages: &[&'static str]) {
    header(&format!("apt packages ({what})"));
    let missing = missing_packages(packages);
    if missing.is_empty() {
        println!("    all {} packages installed", packages.len());
        return;
    }
    println!("    missing: {}", missing.join(" "));
    if !is_root() {
        die("apt packages are missing and this is not root: install them, or run as root");
    }
    sh(
        "apt-get update",
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    sh(
        "apt-get install",
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    let still = missing_packages(packages);
    if !still.is_empty() {
        die(&format!(
            "still missing after apt-get install: {}",
            still.join(" ")
        ));
    }
}

// ---------------------------------------------------------------------------
// 2. bindgen

fn cargo_home_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn ensure_bindgen() -> PathBuf {
    header("bindgen-cli");
    let installed = cargo_home_bin().join("bindgen");
    if let Some(p) =
        find_in_path("bindgen").or_else(|| installed.is_file().then_some(installed.clone()))
    {
        println!("    found {}", p.display());
        return p;
    }
    sh(
        "cargo install bindgen-cli",
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "install",
            "--locked",
            "bindgen-cli",
        ]),
    );
    if !installed.is_file() {
        die(&format!(
            "cargo install bindgen-cli did not produce {}",
            installed.display()
        ));
    }
    installed
}

// ---------------------------------------------------------------------------
// 3. kernel

/// The kernel make invocation: Debian's rustc for the Rust side (the host
/// rustc too: the `macros` proc-macro must come from the same compiler).
fn kmake(kdir: &Path, bindgen: &Path, llvm: bool) -> Command {
    let mut c = Command::new("make");
    if llvm {
        c.arg("LLVM=1");
    }
    c.current_dir(kdir)
        .arg(format!("RUSTC={DEBIAN_RUSTC}"))
        .arg(format!("HOSTRUSTC={DEBIAN_RUSTC}"))
        .arg(format!("RUSTDOC={DEBIAN_RUSTDOC}"))
        .arg(format!("BINDGEN={}", bindgen.display()));
    c
}

/// The options of `fragment` that `config` does not have as asked. Blank
/// lines and comments are skipped, except `# CONFIG_X is not set`.
fn config_mismatches(fragment: &str, config: &str) -> Vec<String> {
    let have: Vec<&str> = config.lines().collect();
    let mut bad = Vec::new();
    for line in fragment.lines().map(str::trim) {
        if let Some(opt) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            let set = format!("{opt}=");
            if have.iter().any(|l| l.starts_with(&set)) {
                bad.push(line.to_string());
            }
        } else if line.starts_with("CONFIG_") && !have.contains(&line) {
            bad.push(line.to_string());
        }
    }
    bad
}

fn rustc_version_config() -> String {
    let v = output(Command::new(DEBIAN_RUSTC).arg("--version"))
        .unwrap_or_else(|| die(&format!("{DEBIAN_RUSTC} --version failed")));
    format!("CONFIG_RUSTC_VERSION_TEXT=\"{}\"", v.trim())
}

/// The fragments as one, each option as its last fragment sets it.
fn merged_fragments(fragments: &[PathBuf]) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    for path in fragments {
        let text =
            fs::read_to_string(path).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
        for line in text.lines().map(str::trim) {
            let opt = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
                .or_else(|| line.split_once('=').map(|(o, _)| o))
                .filter(|o| o.starts_with("CONFIG_"));
            if let Some(opt) = opt {
                lines.retain(|(o, _)| o != opt);
                lines.push((opt.to_string(), line.to_string()));
            }
        }
    }
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

fn build_kernel(k: &Kernel, bindgen: &Path) -> PathBuf {
    header(&format!("kernel ({})", k.name));
    fs::create_dir_all(&k.dir).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", k.dir.display())));
    let kdir = k.dir.join(KERNEL_DIR);
    if !kdir.join("Makefile").is_file() {
        sh(
            "unpack kernel source",
            Command::new("tar")
                .arg("-C")
                .arg(&k.dir)
                .args(["-xf", KERNEL_TARBALL]),
        );
    }
    let fragment = merged_fragments(&k.fragments);
    let shown: Vec<String> = k
        .fragments
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let shown = shown.join(" + ");
    // The fragments plus "built by this rustc": a new rustc rebuilds the kernel.
    let wanted = format!("{fragment}\n{}\n", rustc_version_config());
    let config = fs::read_to_string(kdir.join(".config")).unwrap_or_default();
    let bzimage = kdir.join("arch/x86/boot/bzImage");
    let symvers = kdir.join("Module.symvers");
    let configured = config_mismatches(&wanted, &config).is_empty();
    if configured && bzimage.is_file() && symvers.is_file() {
        println!(
            "    cached: {} matches {shown} and bzImage exists",
            kdir.join(".config").display(),
        );
        return kdir;
    }
    if !configured {
        sh(
            "make tinyconfig",
            kmake(&kdir, bindgen, k.llvm).arg("tinyconfig"),
        );
        sh(
            "merge the config fragments",
            Command::new(kdir.join("scripts/kconfig/merge_config.sh"))
                .current_dir(&kdir)
                .args(["-m", ".config"])
                .args(&k.fragments),
        );
        sh(
            "make olddefconfig",
            kmake(&kdir, bindgen, k.llvm).arg("olddefconfig"),
        );
        let config = fs::read_to_string(kdir.join(".config")).unwrap_or_default();
        let bad = config_mismatches(&wanted, &config);
        if !bad.is_empty() {
            die(&format!(
                "the kernel configuration does not take these options (a dependency \
                 is missing: for CONFIG_RUST see `make rustavailable` in {}):\n  {}",
                kdir.display(),
                bad.join("\n  ")
            ));
        }
    }
    sh(
        "build bzImage and modules",
        kmake(&kdir, bindgen, k.llvm).args([JOBS, "bzImage", "modules"]),
    );
    for f in [&bzimage, &symvers] {
        if !f.is_file() {
            die(&format!("the kernel build did not produce {}", f.display()));
        }
    }
    kdir
}

// ---------------------------------------------------------------------------
// 4. module

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", to.display())));
    let entries =
        fs::read_dir(from).unwrap_or_else(|e| die(&format!("read {}: {e}", from.display())));
    for entry in entries.flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| {
                die(&format!("copy {} -> {}: {e}", src.display(), dst.display()))
            });
        }
    }
}

fn build_module(root: &Path, k: &Kernel, kdir: &Path) -> PathBuf {
    header(&format!(
        "relay-core for the kernel target + relay_kmod.ko ({})",
        k.name
    ));
    let vm = k.dir.as_path();
    // Build in a fresh copy so that no output lands in the source tree.
    let build = vm.join("kmod");
    if build.exists() {
        fs::remove_dir_all(&build)
            .unwrap_or_else(|e| die(&format!("rm -r {}: {e}", build.display())));
    }
    let src = root.join("relay-kmod");
    for part in ["Kbuild", "Makefile"] {
        fs::create_dir_all(&build).unwrap_or_else(|e| die(&format!("mkdir: {e}")));
        fs::copy(src.join(part), build.join(part))
            .unwrap_or_else(|e| die(&format!("copy {part}: {e}")));
    }
    for part in ["src", "scripts"] {
        copy_tree(&src.join(part), &build.join(part));
    }
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&build)
        .arg(format!("KDIR={}", kdir.display()))
        .arg(format!("RUSTC={DEBIAN_RUSTC}"))
        .args(k.llvm.then_some("LLVM=1"))
        .arg(format!(
            "CORE_TARGET_DIR={}",
            vm.join("relay-core-target").display()
        ))
        .env("RELAY_CORE", root.join("relay-core"))
        .env(
            "CARGO",
            env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        );
    // The output goes to a log too, to summarize objtool's findings.
    let log_path = vm.join("kmod-build.log");
    let log = fs::File::create(&log_path)
        .unwrap_or_else(|e| die(&format!("create {}: {e}", log_path.display())));
    let log_err = log
        .try_clone()
        .unwrap_or_else(|e| die(&format!("{}: {e}", log_path.display())));
    make.stdout(log).stderr(log_err);
    let start = Instant::now();
    let shown = format!("{make:?}").replace('"', "");
    println!("    make (relay-kmod/Makefile): {shown}");
    let result = make.status();
    let out = fs::read_to_string(&log_path).unwrap_or_default();
    for l in out.lines() {
        println!("    | {l}");
    }
    match result {
        Ok(s) if s.success() => println!("    ok in {:.1}s", start.elapsed().as_secs_f64()),
        Ok(s) => die(&format!(
            "the module build failed ({s}); log: {}",
            log_path.display()
        )),
        Err(e) => die(&format!("cannot start make: {e}")),
    }
    let objtool = out
        .lines()
        .filter(|l| l.contains("warning: objtool:"))
        .count();
    if objtool > 0 {
        println!(
            "    note: {objtool} objtool warning(s) (see above), not treated as failures. \
             The ones seen so far are \"falls through to next function\" after a call to \
             core::panicking::panic_const::panic_const_{{div,rem}}_by_zero (from `%` and \
             `chunks_exact` in relay-core), which Linux 6.12's objtool does not list as \
             noreturn: a gap in the checker, since the call never returns."
        );
    }
    let ko = build.join("relay_kmod.ko");
    if !ko.is_file() {
        die(&format!(
            "the module build did not produce {}",
            ko.display()
        ));
    }
    ko
}

/// The static userspace test run in the guest (`relay-kmod/guest/test`).
/// A static x86-64 binary built by cargo with `+crt-static`, in its own
/// target directory (the flags differ from the host build's).
fn static_build(step: &str, vm: &Path, target: &str, args: &[&str], bin: &str) -> PathBuf {
    let target_dir = vm.join(target);
    sh(
        step,
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "x86_64-unknown-linux-gnu"])
            .args(args)
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    );
    let path = target_dir
        .join("x86_64-unknown-linux-gnu/release")
        .join(bin);
    if !path.is_file() {
        die(&format!("{step} did not produce {}", path.display()));
    }
    path
}

fn build_guest_test(root: &Path, vm: &Path) -> PathBuf {
    header("guest bad-input test (static)");
    let manifest = root.join("relay-kmod/guest/test/Cargo.toml");
    static_build(
        "cargo build relay-guest-test",
        vm,
        "guest-test-target",
        &["--manifest-path", &manifest.to_string_lossy()],
        "relay-guest-test",
    )
}

fn build_relay_cli(root: &Path, vm: &Path) -> PathBuf {
    header("relay CLI for the guest (static)");
    let manifest = root.join("Cargo.toml");
    static_build(
        "cargo build -p relay-cli --bin relay",
        vm,
        "relay-cli-target",
        &[
            "--manifest-path",
            &manifest.to_string_lossy(),
            "-p",
            "relay-cli",
            "--bin",
            "relay",
        ],
        "relay",
    )
}

/// The BPF programs (clang's BPF target) and their loader (libbpf, static).
fn build_bpf(root: &Path, vm: &Path) -> (PathBuf, PathBuf) {
    header("BPF programs and loader");
    let src = root.join("relay-kmod/bpf");
    for name in ["relay_events", "relay_bench", "relay_reject"] {
        sh(
            &format!("clang -target bpf {name}.bpf.c"),
            Command::new("clang")
                .args([
                    "-O2",
                    "-g",
                    "-Wall",
                    "-target",
                    "bpf",
                    "-D__TARGET_ARCH_x86",
                ])
                .args(["-I/usr/include/x86_64-linux-gnu", "-c"])
                .arg(src.join(format!("{name}.bpf.c")))
                .arg("-o")
                .arg(vm.join(format!("{name}.bpf.o"))),
        );
    }
    let obj = vm.join("relay_events.bpf.o");
    let loader = vm.join("relay-bpf");
    sh(
        "cc -static relay_bpf.c -lbpf",
        Command::new("cc")
            .args(["-O2", "-Wall", "-static", "-o"])
            .arg(&loader)
            .arg(src.join("relay_bpf.c"))
            .args(["-lbpf", "-lelf", "-lz", "-lzstd", "-lpthread"]),
    );
    (obj, loader)
}

/// `path` and the shared libraries it loads (from `ldd`), for the
/// initramfs: (path in the guest, path on the host).
fn with_libraries(path: &str) -> Vec<(String, String)> {
    let mut files = vec![(path.to_string(), path.to_string())];
    let ldd =
        output(Command::new("ldd").arg(path)).unwrap_or_else(|| die(&format!("ldd {path} failed")));
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let lib = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap_or("");
        if lib.starts_with('/') {
            let real = fs::canonicalize(lib)
                .unwrap_or_else(|e| die(&format!("{lib}: {e}")))
                .to_string_lossy()
                .into_owned();
            files.push((lib.to_string(), real));
        }
    }
    files
}

// ---------------------------------------------------------------------------
// 5. initramfs and boot

fn pack_initramfs(vm: &Path, kdir: &Path, bins: &[&Path; 5], root: &Path) -> PathBuf {
    header("initramfs");
    let [ko, test, relay, bpf_obj, bpf_loader] = *bins;
    let init = root.join("relay-kmod/guest/init");
    for f in [
        Path::new(BUSYBOX),
        init.as_path(),
        ko,
        test,
        relay,
        bpf_obj,
        bpf_loader,
    ] {
        if !f.is_file() {
            die(&format!("{} is missing", f.display()));
        }
    }
    // Debian's blktrace and blkparse, with their libraries.
    let mut extra = String::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (tool, dest) in [
        ("/usr/sbin/blktrace", "/bin/blktrace"),
        ("/usr/bin/blkparse", "/bin/blkparse"),
        ("/usr/bin/btt", "/bin/btt"),
    ] {
        for (guest, host) in with_libraries(tool) {
            let guest = if guest == tool {
                dest.to_string()
            } else {
                guest
            };
            let mut d = Path::new(&guest).parent();
            while let Some(p) = d.filter(|p| *p != Path::new("/")) {
                dirs.insert(p.to_path_buf());
                d = p.parent();
            }
            extra.push_str(&format!("file {guest} {host} 0755 0 0\n"));
        }
    }
    let dirs: String = dirs
        .iter()
        .filter(|d| {
            !matches!(
                d.to_str(),
                Some("/bin" | "/dev" | "/proc" | "/sys" | "/tmp")
            )
        })
        .map(|d| format!("dir {} 0755 0 0\n", d.display()))
        .collect();
    // The kernel's own cpio generator: it can make /dev/console without root.
    let gen = vm.join("gen_init_cpio");
    sh(
        "build gen_init_cpio",
        Command::new("cc")
            .arg("-O2")
            .arg("-o")
            .arg(&gen)
            .arg(kdir.join("usr/gen_init_cpio.c")),
    );
    let spec = format!(
        "dir /dev 0755 0 0\n\
         nod /dev/console 0600 0 0 c 5 1\n\
         dir /proc 0755 0 0\n\
         dir /sys 0755 0 0\n\
         dir /tmp 1777 0 0\n\
         dir /bin 0755 0 0\n\
         file /bin/busybox {BUSYBOX} 0755 0 0\n\
         file /init {} 0755 0 0\n\
         file /relay_kmod.ko {} 0644 0 0\n\
         file /bin/relay-test {} 0755 0 0\n\
         file /bin/relay {} 0755 0 0\n\
         file /relay_events.bpf.o {} 0644 0 0\n\
         file /relay_bench.bpf.o {} 0644 0 0\n\
         file /relay_reject.bpf.o {} 0644 0 0\n\
         file /bin/relay-bpf {} 0755 0 0\n\
         {dirs}{extra}",
        init.display(),
        ko.display(),
        test.display(),
        relay.display(),
        bpf_obj.display(),
        bpf_obj.with_file_name("relay_bench.bpf.o").display(),
        bpf_obj.with_file_name("relay_reject.bpf.o").display(),
        bpf_loader.display()
    );
    let spec_path = vm.join("initramfs.list");
    fs::write(&spec_path, spec).unwrap_or_else(|e| die(&format!("write spec: {e}")));
    let cpio = vm.join("initramfs.cpio");
    let out = fs::File::create(&cpio).unwrap_or_else(|e| die(&format!("create cpio: {e}")));
    sh(
        "gen_init_cpio",
        Command::new(&gen).arg(&spec_path).stdout(out),
    );
    sh("gzip", Command::new("gzip").args(["-f", "-9"]).arg(&cpio));
    vm.join("initramfs.cpio.gz")
}

fn boot(k: &Kernel, kdir: &Path, initramfs: &Path) -> String {
    header(&format!("boot {} (qemu, TCG, 4 vCPUs)", k.name));
    let vm = k.dir.as_path();
    let log_path = vm.join("console.log");
    let log = fs::File::create(&log_path)
        .unwrap_or_else(|e| die(&format!("create {}: {e}", log_path.display())));
    let log_err = log
        .try_clone()
        .unwrap_or_else(|e| die(&format!("{}: {e}", log_path.display())));
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg",
        "-smp",
        "4",
        "-m",
        k.memory,
        "-nographic",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(kdir.join("arch/x86/boot/bzImage"))
    .arg("-initrd")
    .arg(initramfs)
    // `tsc=reliable`: TCG's virtual TSC is one counter for every vCPU, but
    // the clocksource watchdog, comparing it with an emulated HPET on a
    // loaded host, marks it unstable mid-run and switches timekeeping to
    // the HPET: every `ktime_get_mono_fast_ns()` then costs an emulated
    // MMIO read (200 ns to 1 us here), which distorted the benchmarks.
    .arg("-append")
    .arg(format!("console=ttyS0 panic=-1 tsc=reliable{}", k.append))
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log_err);
    let shown = format!("{qemu:?}").replace('"', "");
    println!("    {shown}\n    console -> {}", log_path.display());
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start qemu: {e}")));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > BOOT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                print_tail(&log, 40);
                die(&format!(
                    "the guest did not power off within {}s (log: {})",
                    BOOT_TIMEOUT.as_secs(),
                    log_path.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => die(&format!("waiting for qemu: {e}")),
        }
    };
    println!(
        "    qemu exited ({status}) after {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let log = fs::read(&log_path).unwrap_or_else(|e| die(&format!("{}: {e}", log_path.display())));
    let log = String::from_utf8_lossy(&log).into_owned();
    if !status.success() {
        print_tail(&log, 40);
        die(&format!("qemu failed: {status}"));
    }
    log
}

fn print_tail(log: &str, n: usize) {
    let lines: Vec<&str> = log.lines().collect();
    println!("    --- last {n} console lines ---");
    for l in &lines[lines.len().saturating_sub(n)..] {
        println!("    | {l}");
    }
}

/// Whether a console line is the kernel echoing its command line (which
/// contains `panic=-1`, not a panic).
fn is_command_line(line: &str) -> bool {
    line.contains("Command line:") || line.contains("Kernel command line:")
}

fn check_log(log: &str, path: &Path, extra: &[(&str, &str)]) -> Result<(), String> {
    header("console log checks");
    let excerpt: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("relay") || (!is_command_line(l) && FORBIDDEN.iter().any(|f| l.contains(f)))
        })
        .collect();
    println!("    --- excerpt of {} ---", path.display());
    for l in &excerpt {
        println!("    | {}", l.trim_end());
    }
    let mut problems = Vec::new();
    for (needle, meaning) in REQUIRED.iter().chain(extra) {
        if !log.contains(needle) {
            problems.push(format!("missing \"{needle}\" ({meaning})"));
        }
    }
    for line in log.lines().filter(|l| !is_command_line(l)) {
        if let Some(f) = FORBIDDEN.iter().find(|f| line.contains(*f)) {
            problems.push(format!("forbidden \"{f}\": {}", line.trim_end()));
        }
    }
    if !problems.is_empty() {
        let msg = format!(
            "the console log ({}) fails {} check(s):\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        );
        println!("    {msg}");
        return Err(msg);
    }
    println!(
        "    all {} required lines present; none of {} forbidden patterns",
        REQUIRED.len() + extra.len(),
        FORBIDDEN.len()
    );
    Ok(())
}
