//! A WebSocket echo backend on its own threads (tungstenite), and a client helper.
//!
//! Each server answers a text message `who` with its name and echoes every other message
//! byte for byte. It counts the sessions it holds open.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

/// A running echo server.
pub struct WsEcho {
    /// Its address.
    pub addr: SocketAddr,
    /// Sessions open now.
    pub open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl WsEcho {
    /// Start one named server on a free loopback port.
    pub fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s, name) = (open.clone(), stop.clone(), name.to_string());
        std::thread::spawn(move || {
            while !s.load(SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (o, name) = (o.clone(), name.clone());
                        std::thread::spawn(move || serve(stream, &name, &o));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        WsEcho { addr, open, stop }
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn serve(stream: TcpStream, name: &str, open: &AtomicUsize) {
    let _ = stream.set_nonblocking(false);
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    open.fetch_add(1, SeqCst);
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if t == "who" => {
                if ws.send(Message::Text(name.to_string())).is_err() {
                    break;
                }
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    open.fetch_sub(1, SeqCst);
}

/// A client session through `gateway` (`ws://` on a plain TCP connection).
pub type Session = WebSocket<TcpStream>;

/// Open a session to `gateway` on `path`.
pub fn connect(gateway: SocketAddr, path: &str) -> Session {
    let stream = TcpStream::connect(gateway).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{gateway}{path}");
    let (ws, resp) =
        tungstenite::client(url.as_str(), stream).expect("upgrade through the gateway");
    assert_eq!(resp.status(), 101);
    ws
}

/// Which backend serves `ws`.
pub fn who(ws: &mut Session) -> String {
    ws.send(Message::Text("who".into())).expect("send");
    match ws.read().expect("answer") {
        Message::Text(t) => t,
        m => panic!("unexpected {m:?}"),
    }
}

/// Send `data` and read it back; whether it came back byte for byte.
pub fn echoes(ws: &mut Session, data: &[u8]) -> bool {
    if ws.send(Message::Binary(data.to_vec())).is_err() {
        return false;
    }
    matches!(ws.read(), Ok(Message::Binary(b)) if b == data)
}
