//! `cargo xtask vm-test`: the kernel half's test harness (relay-kmod, issue 5).
//! Under construction: it fails loudly until the harness lands.

pub fn run(_args: &[String]) {
    eprintln!("xtask vm-test: the VM harness is not built yet (issue 5)");
    std::process::exit(1);
}
