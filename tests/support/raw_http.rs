//! A hand-written HTTP/1.1 keep-alive backend on a raw socket, for tests that need what a
//! real server hides: each request head exactly as it arrived, and how many connections
//! were accepted and are still open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers every bodiless request with `200`, `x-backend: NAME` and the body NAME.
pub struct RawBackend {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Shared {
    name: &'static str,
    idle_close: Option<Duration>,
    heads: Arc<Mutex<Vec<String>>>,
    open: Arc<AtomicUsize>,
}

impl RawBackend {
    /// Start on an ephemeral port. With `idle_close`, a connection that has waited that long
    /// for its next request is closed, as a server with a short keep-alive timeout does (no
    /// `Connection: close` warns the client in advance).
    pub fn start(name: &'static str, idle_close: Option<Duration>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            name,
            idle_close,
            heads: Arc::default(),
            open: Arc::default(),
        };
        let (heads, open) = (Arc::clone(&shared.heads), Arc::clone(&shared.open));
        let counted = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                counted.fetch_add(1, SeqCst);
                shared.open.fetch_add(1, SeqCst);
                let shared = shared.clone();
                std::thread::spawn(move || {
                    serve(conn, &shared);
                    shared.open.fetch_sub(1, SeqCst);
                });
            }
        });
        RawBackend {
            addr,
            heads,
            accepted,
            open,
        }
    }

    /// The request heads read so far, in order, without their final blank line.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    /// Connections not yet closed by either side.
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }
}

/// Answer one head after another on `conn` until the peer closes it or `idle_close` passes
/// without a request.
fn serve(mut conn: TcpStream, s: &Shared) {
    let wait = s.idle_close.unwrap_or(Duration::from_secs(30));
    conn.set_read_timeout(Some(wait)).ok();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: {}\r\n\r\n{}",
        s.name.len(),
        s.name,
        s.name
    );
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            s.heads.lock().unwrap().push(head);
            if conn.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
