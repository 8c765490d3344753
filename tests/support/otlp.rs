//! An OTLP/HTTP trace receiver on a 127.0.0.1 ephemeral port: it accepts
//! `POST /v1/traces` (protobuf), decodes each export with the OpenTelemetry protocol's own
//! message types and keeps the spans.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct Span {
    /// Hex ids.
    pub trace_id: String,
    /// Its id.
    pub span_id: String,
    /// Parent id, empty for a root.
    pub parent_id: String,
    /// Name.
    pub name: String,
    /// Kind (2: server).
    pub kind: i32,
    /// `service.name` of its resource.
    pub service: String,
    /// Attributes as text (arrays joined with `,`).
    pub attrs: HashMap<String, String>,
    /// Status code (2: error).
    pub status: i32,
}

/// The receiver; its thread lives as long as the test.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

fn text(v: &Option<Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|x| text(&x.value))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

fn spans_of(req: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value.as_ref().and_then(|v| v.value.clone())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: s.kind,
                    service: service.clone(),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                text(&kv.value.as_ref().and_then(|v| v.value.clone())),
                            )
                        })
                        .collect(),
                    status: s.status.as_ref().map_or(0, |st| st.code),
                });
            }
        }
    }
    out
}

/// Read one HTTP/1.1 request (headers, `Content-Length` body) and answer 200.
fn serve(stream: std::net::TcpStream, spans: &Mutex<Vec<Span>>) -> std::io::Result<()> {
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        if let Ok(req) = ExportTraceServiceRequest::decode(&body[..]) {
            spans.lock().unwrap().extend(spans_of(req));
        }
        w.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )?;
    }
}

impl Receiver {
    /// Listen on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&spans);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Receiver { addr, spans }
    }

    /// `http://ADDR/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Spans received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}
