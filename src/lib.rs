//! portcullis: a programmable HTTP gateway on Cloudflare's Pingora.
//!
//! Data flows one way: the YAML file ([`config`]) is validated and compiled into an immutable
//! [`runtime::Snapshot`] held by the [`gateway::Gateway`]; each request takes the snapshot,
//! is routed, and a [`balance`] strategy picks a backend whose live state lives in the
//! [`balance::StateStore`]; [`health`] checks run as a Pingora background service; [`observe`]
//! records metrics and access logs.
#![warn(missing_docs)]

pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod devserver;
pub mod devtcp;
pub mod discovery;
pub mod filters;
pub mod gateway;
pub mod health;
pub mod jobs;
pub mod l4;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod runtime;
pub mod server;
pub mod tls;

/// The plugin API (the `portcullis-plugin` crate): write your own filters against it.
pub use portcullis_plugin as plugin;

/// Run the daemon with the process's command line and the filters in `filters`; returns the
/// exit code. This is all a custom binary needs:
///
/// ```no_run
/// let mut filters = portcullis::filters::builtin();
/// // filters.register("my_filter", my_crate::factory);
/// std::process::exit(portcullis::run(filters));
/// ```
pub fn run(filters: plugin::FilterRegistry) -> i32 {
    run_with(gateway::Extensions {
        filters,
        strategies: balance::StrategyRegistry::builtin(),
        release_memory: None,
    })
}

/// Run the daemon with the filters and strategies of `ext` (see `examples/custom_gateway.rs`).
pub fn run_with(ext: gateway::Extensions) -> i32 {
    use clap::Parser;
    let cli = cli::Cli::parse();
    init_logging();
    match cli.command {
        Some(cli::Command::DemoBackend { ref name, listen }) => devserver::run_demo(name, listen),
        None => server::run(cli, ext),
    }
}

/// Log to stderr, `info` and above unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .try_init();
}
