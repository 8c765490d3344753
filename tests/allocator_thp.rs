//! The gateway runs with transparent huge pages off (mimalloc's `allow_thp` default, set in
//! src/main.rs before mimalloc starts), and `MIMALLOC_ALLOW_THP=1` turns them back on.
//! `THP_enabled` in /proc/PID/status is the process's `PR_SET_THP_DISABLE` flag, which
//! mimalloc sets when the option is off; this fails if the option index in src/main.rs is
//! wrong for the linked mimalloc, or if the constructor stops running before mimalloc's.

mod support;
use support::*;

fn status_field(pid: &str, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status (Linux 5.0 or later has it)"))
}

const CONFIG: &str = r#"
listeners: [{ name: web, address: "{listen}" }]
metrics: { address: "{metrics}" }
routes: [{ name: all, upstream: pool }]
upstreams: [{ name: pool, backends: [{ address: "BACKEND" }] }]
"#;

#[test]
fn huge_pages_are_off_by_default_and_the_environment_turns_them_on() {
    assert!(
        std::env::var_os("MIMALLOC_ALLOW_THP").is_none(),
        "unset MIMALLOC_ALLOW_THP to run this test: it checks the gateway's own default"
    );
    assert_eq!(
        status_field("self", "THP_enabled"),
        "1",
        "this test process was started with huge pages disabled (PR_SET_THP_DISABLE is \
         inherited), so the gateway's own choice cannot be seen"
    );
    let b = Backends::start(&["a"]);
    let yaml = CONFIG.replace("BACKEND", &b.addr(0).to_string());
    let c = client();

    let gw = Gateway::start(&yaml);
    for _ in 0..20 {
        assert_eq!(get(&c, &gw.url("/")), (200, "a".to_string()));
    }
    let pid = gw.pid().to_string();
    assert_eq!(
        status_field(&pid, "THP_enabled"),
        "0",
        "huge pages are on by default"
    );
    drop(gw);

    let on = Gateway::start_with_env(&binary(), &yaml, &[("MIMALLOC_ALLOW_THP", "1")]);
    assert_eq!(get(&c, &on.url("/")), (200, "a".to_string()));
    let pid = on.pid().to_string();
    assert_eq!(
        status_field(&pid, "THP_enabled"),
        "1",
        "MIMALLOC_ALLOW_THP=1 did not turn huge pages back on"
    );
}
