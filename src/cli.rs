//! Command line: `portcullis -c conf/portcullis.yaml [-t] [-d] [-u]`.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// portcullis: a programmable HTTP gateway on Pingora.
#[derive(Debug, Clone, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long = "conf", default_value = "conf/portcullis.yaml")]
    pub conf: PathBuf,
    /// Check the configuration, print every problem, and exit (0 = valid).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Run in the background (Pingora daemon mode).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Take over the listeners of a running instance (graceful upgrade): start this process
    /// with -u, then send SIGQUIT to the old one.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Do not reload when the config file changes (SIGHUP and the admin API still reload).
    #[arg(long = "no-watch")]
    pub no_watch: bool,
    /// Something other than the gateway (`portcullis demo-backend --help`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// A demo backend for `make run`: answers every request with its own name (header
    /// `x-backend`), `GET /healthz` with `ok`. Stops on Ctrl-C or SIGTERM.
    DemoBackend {
        /// The name it answers with.
        #[arg(long, default_value = "demo")]
        name: String,
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
}
