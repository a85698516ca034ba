//! `gust`: one binary for the server (embedded shape: store, service, HTTP API and a local
//! worker in one process) and the CLI that talks to it.

/// mimalloc: under gust's many small allocations per request on several threads it measured
/// ~15% more function URL requests per second than glibc's malloc (BENCHMARKS.md, session 8).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use gust::{cli, server, worker};

fn main() -> ExitCode {
    // The sandbox init that process environments start through and the wasm compiler child:
    // not part of the CLI (their arguments are gust's own, and a function's environment must
    // not reach clap).
    if let Some(code) = gust::internal_command_if_requested() {
        return code;
    }
    let args = match cli::Cli::parse_args() {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    match args.command {
        cli::Command::Server(opts) => match server::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gust server: {e:#}");
                ExitCode::from(2)
            }
        },
        cli::Command::Worker(opts) => match worker::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gust worker: {e:#}");
                ExitCode::from(2)
            }
        },
        command => cli::run(args.global, command),
    }
}
