//! SIGINT (fast shutdown, e.g. Ctrl-C) always ends the process promptly. Pingora's accept loop
//! used to spin on "A Tokio 1.x context was found, but it is being shutdown" when its runtime
//! went away under it: 100% CPU, millions of log lines, no exit (1 SIGINT in about 20; see
//! vendor/README.md). 200 gateways, 4 at a time, each with three listeners (clients, metrics,
//! admin), are interrupted right after serving a request.

mod support;
use std::time::Duration;
use support::*;

const GATEWAYS: usize = 200;
const AT_ONCE: usize = 4;

#[test]
fn sigint_always_exits_promptly() {
    let b = Backends::start(&["a"]);
    let yaml = format!(
        "listeners: [{{ name: web, address: \"{{listen}}\" }}]\n\
         metrics: {{ address: \"{{metrics}}\" }}\n\
         admin: {{ address: \"{{admin}}\" }}\n\
         access_log: off\n\
         routes: [{{ name: r, upstream: u }}]\n\
         upstreams: [{{ name: u, backends: [{{ address: \"{}\" }}] }}]\n",
        b.addr(0)
    );
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..AT_ONCE {
            let (yaml, failures) = (&yaml, &failures);
            s.spawn(move || {
                let c = client();
                for i in (t..GATEWAYS).step_by(AT_ONCE) {
                    let mut gw = Gateway::start(yaml);
                    assert_eq!(get(&c, &gw.url("/")).0, 200);
                    gw.signal("INT");
                    let exited = gw.wait_exit(Duration::from_secs(5));
                    let spins = gw.stderr().matches("Accept() failed").count();
                    if exited.is_none() || spins > 10 {
                        let what = format!("gateway {i}: exited {exited:?}, {spins} accept errors");
                        failures.lock().unwrap().push(what);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}
