//! The `idsync` binary; see the `idsync_cli` crate docs.

fn main() -> std::process::ExitCode {
    idsync_cli::main_entry()
}
