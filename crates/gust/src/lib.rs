//! `gust` as a library: the server composition root and the CLI, so that tools such as
//! `gust-bench` can run a real server process from their own binary.

pub mod cli;
pub mod server;
pub mod worker;
