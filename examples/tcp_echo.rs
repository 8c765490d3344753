//! A TCP echo backend that says who it is (see `portcullis::devtcp`).
//!
//! `cargo run --example tcp_echo -- --name a --listen 127.0.0.1:9101 [--proxy] [--trailer N]`
//!
//! Prints `listening on ADDR` once ready (`--listen 127.0.0.1:0` picks a port). Runs until
//! killed.

use portcullis::devserver::arg;
use portcullis::devtcp::{EchoOptions, TcpEcho};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = EchoOptions {
        name: arg(&args, "--name").unwrap_or_else(|| "echo".into()),
        proxy: args.iter().any(|a| a == "--proxy"),
        trailer: arg(&args, "--trailer")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    };
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:9101".into());
    let echo = match TcpEcho::start(&listen, opts) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tcp_echo: cannot listen on {listen}: {e}");
            std::process::exit(2);
        }
    };
    println!("listening on {}", echo.addr());
    loop {
        std::thread::park();
    }
}
