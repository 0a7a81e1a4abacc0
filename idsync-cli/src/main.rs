//! The `idsync` binary; see the `idsync_cli` crate docs.
#![forbid(unsafe_code)]

/// mimalloc instead of the system allocator: with glibc's malloc, planning a million
/// accounts takes about three times as long (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    idsync_cli::main_entry()
}
