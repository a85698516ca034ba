//! `gust` as a library: the server composition root and the CLI, so that tools such as
//! `gust-bench` can run a real server process from their own binary.

pub mod cli;
pub mod client_tls;
pub mod host;
pub mod node;
pub mod otlp;
pub mod peers;
pub mod server;
pub mod worker;

/// Runs one of the binary's internal entry points when this process was started as one, and
/// returns its exit code; None for any other command line:
/// - the sandbox init that process environments start through (`BINARY __sandbox-init ...`,
///   see `gust_runtime::init`);
/// - the compiler child that compiles an untrusted wasm module under hard limits
///   (`BINARY __compile ...`, see `gust_runtime::wasm::Compiler`).
///
/// A binary that runs `gust server` or `gust worker` calls this first thing in `main`, before
/// parsing its own arguments (which are not the CLI's here, and must not reach clap).
pub fn internal_command_if_requested() -> Option<std::process::ExitCode> {
    let mut argv = std::env::args_os();
    let command = argv.nth(1)?;
    let code = if command == gust_runtime::init::SUBCOMMAND {
        gust_runtime::init::main(argv)
    } else if command == gust_runtime::wasm::COMPILE_SUBCOMMAND {
        gust_runtime::wasm::compile_main(argv)
    } else {
        return None;
    };
    Some(std::process::ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
}

/// Prints a line a script or test reads (the listening banner) and flushes it. A closed stdout
/// (the reader took the first line and went, or `gust server | head -1`) changes nothing: the
/// process goes on serving, where `println!` would panic on the broken pipe.
pub fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
}
