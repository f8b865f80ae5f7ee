//! Compiles the C models of the kernel's writers (`c/`) with the flags the
//! kernel's x86-64 build uses for them: -O2, no SIMD in the models' own code.

fn main() {
    for file in ["c/relay.c", "c/ringbuf.c"] {
        println!("cargo:rerun-if-changed={file}");
    }
    cc::Build::new()
        .files(["c/relay.c", "c/ringbuf.c"])
        .opt_level(2)
        .flag("-fno-strict-aliasing")
        .flag("-mno-sse")
        .flag("-mno-avx")
        .warnings(true)
        .compile("kernel_models");
}
