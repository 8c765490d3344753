//! A demo backend that answers with its own name.
//!
//! `cargo run --example demo_backend -- --name a --listen 127.0.0.1:9001`
//!
//! Every request gets `<name>\n` and an `x-backend: <name>` header; `GET /healthz` answers
//! `ok`. Stops on Ctrl-C or SIGTERM.

use portcullis::devserver::{arg, DevServer};
use std::net::SocketAddr;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = arg(&args, "--name").unwrap_or_else(|| "demo".into());
    let listen: SocketAddr = match arg(&args, "--listen")
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo_backend: bad --listen address: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo_backend: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let server = match DevServer::start(&name, listen).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("demo_backend {name}: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("demo_backend {name} listening on http://{}", server.addr());
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("demo_backend: cannot watch SIGTERM: {e}");
                    std::process::exit(1);
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        server.stop();
    });
}
