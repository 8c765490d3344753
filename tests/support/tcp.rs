//! TCP test helpers: echo backends (in-process and as a killable process), a gateway with one
//! TCP listener, and blocking socket helpers.

use super::{check_config, free_port, poll_until, ChildGuard, Gateway};
use portcullis::devtcp::{EchoOptions, TcpEcho};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn echo(name: &str, proxy: bool, trailer: usize) -> TcpEcho {
    let opts = EchoOptions {
        name: name.into(),
        proxy,
        trailer,
    };
    TcpEcho::start("127.0.0.1:0", opts).expect("start echo backend")
}

/// A gateway whose `{listen}` is an HTTP listener (for the harness) and with one TCP listener
/// on a port of its own, returned beside it. `upstream_extra` and `listener_extra` are YAML
/// lines (indented 4) added to the upstream and the TCP listener.
pub fn gateway(
    backends: &[SocketAddr],
    upstream_extra: &str,
    listener_extra: &str,
) -> (Gateway, SocketAddr) {
    let port = free_port();
    let gw = Gateway::start(&config(port, backends, upstream_extra, listener_extra));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_bound(addr);
    (gw, addr)
}

/// Wait until the gateway listens on `addr`, without connecting (a connection would be
/// proxied and counted): binding the port fails once it does.
pub fn wait_bound(addr: SocketAddr) {
    assert!(
        poll_until(WAIT, || std::net::TcpListener::bind(addr).is_err()),
        "the TCP listener never bound {addr}"
    );
}

pub fn config(
    port: u16,
    backends: &[SocketAddr],
    upstream_extra: &str,
    listener_extra: &str,
) -> String {
    let list: String = backends
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!(
        r#"listeners:
  - name: http
    address: "{{listen}}"
  - name: db
    address: "127.0.0.1:{port}"
    protocol: tcp
    upstream: pool
{listener_extra}
metrics:
  address: "{{metrics}}"
access_log:
  file: "{{dir}}/access.log"
upstreams:
  - name: pool
    backends:
{list}{upstream_extra}
"#
    )
}

/// Connect and read the backend's `NAME CLIENT` line.
pub fn open(addr: SocketAddr) -> (TcpStream, String) {
    let s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let line = first_line(&s).expect("the backend's greeting");
    (s, line)
}

pub fn first_line(s: &TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    let mut r = s;
    loop {
        match r.read(&mut b) {
            Ok(1) if b[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
}

pub fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// Send `data`, half-close, and return everything read back after the greeting.
pub fn round_trip(mut s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the echo");
    writer.join().unwrap();
    back
}

pub struct EchoProcess(pub ChildGuard, pub SocketAddr);

pub fn echo_process(name: &str) -> EchoProcess {
    let mut child = std::process::Command::new(super::example_binary("tcp_echo"))
        .args(["--name", name, "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tcp_echo");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on ")
        .parse()
        .expect("its address");
    EchoProcess(super::ChildGuard(child), addr)
}

pub fn still_echoes(s: &mut TcpStream) -> bool {
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut b = [0u8; 4];
    s.read_exact(&mut b).is_ok() && &b == b"ping"
}

pub fn expect_error(yaml: &str, expect: &str) {
    let (code, out) = check_config(yaml);
    assert_eq!(code, 1, "{yaml}: {out}");
    assert!(out.contains(expect), "expected `{expect}` in:\n{out}");
    assert!(out.contains("FILE:"), "located: {out}");
}
