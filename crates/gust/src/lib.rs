//! `gust` as a library: the server composition root and the CLI, so that tools such as
//! `gust-bench` can run a real server process from their own binary.

pub mod cli;
pub mod client_tls;
pub mod host;
pub mod server;
pub mod worker;

/// Runs the sandbox init that process environments start through, when this process was
/// started as one (`BINARY __sandbox-init ...`, see `gust_runtime::init`); returns its exit
/// code, or None for any other command line. A binary that runs `gust server` or `gust worker`
/// calls this first thing in `main`, before parsing its own arguments.
pub fn sandbox_init_if_requested() -> Option<std::process::ExitCode> {
    let mut argv = std::env::args_os();
    if argv.nth(1).is_none_or(|a| a != gust_runtime::init::SUBCOMMAND) {
        return None;
    }
    let code = gust_runtime::init::main(argv);
    Some(std::process::ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
}
