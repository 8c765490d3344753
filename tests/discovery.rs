//! DNS service discovery against a real DNS server (dnsmasq on a loopback port): A records
//! that change under load, SRV weights and priorities, a server that stops answering, and
//! config errors.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use support::dns::Dnsmasq;
use support::load::Load;
use support::{poll_until, Backends, Gateway};

/// Backends `names[i]` on 127.0.0.(2+i), all on one port (A records carry no port).
fn on_one_port(names: &[&str]) -> (Backends, u16) {
    for _ in 0..20 {
        let port = support::free_port();
        let addrs: Vec<SocketAddr> = (0..names.len())
            .map(|i| SocketAddr::from(([127, 0, 0, 2 + i as u8], port)))
            .collect();
        let free = addrs.iter().all(|a| std::net::TcpListener::bind(a).is_ok());
        if free {
            return (Backends::start_at(names, &addrs), port);
        }
    }
    panic!("no port free on 127.0.0.2-4");
}

fn config(discover: &str, extra: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
metrics: {{ address: "{{metrics}}" }}
admin: {{ address: "{{admin}}" }}
routes:
  - {{ name: all, upstream: pool }}
upstreams:
  - name: pool
    discover: {discover}
{extra}"#
    )
}

/// The members of `pool` in the admin API: address -> (origin, healthy).
fn members(g: &Gateway) -> Vec<(String, String, bool)> {
    let text = support::client()
        .get(g.admin_url("/upstreams"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let ups = v
        .get("upstreams")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pool = ups
        .iter()
        .find(|u| u["name"] == "pool")
        .cloned()
        .unwrap_or(Value::Null);
    pool["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    (
                        b["address"].as_str().unwrap_or("").to_string(),
                        b["origin"].as_str().unwrap_or("").to_string(),
                        b["healthy"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn addrs(g: &Gateway) -> Vec<String> {
    let mut a: Vec<String> = members(g).into_iter().map(|m| m.0).collect();
    a.sort();
    a
}

#[test]
fn a_records_change_under_load_and_no_request_fails() {
    let (b, port) = on_one_port(&["a", "b", "c"]);
    let dns = Dnsmasq::start("127.0.0.2 api.test\n127.0.0.3 api.test\n", &[]);
    // c fails its health check until the test lets it pass.
    b.state(2).set_health_status(503);
    let discover = format!(
        "{{ dns: api.test, port: {port}, resolvers: [\"{}\"], refresh: {{ min: 200ms, max: 1s }} }}",
        dns.addr()
    );
    let extra = "    health_check: { kind: http, path: /healthz, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }\n    retry: { attempts: 2 }\n";
    let g = Gateway::start(&config(&discover, extra));
    let (a_addr, b_addr, c_addr) = (
        b.addr(0).to_string(),
        b.addr(1).to_string(),
        b.addr(2).to_string(),
    );
    assert!(
        poll_until(Duration::from_secs(10), || addrs(&g)
            == [a_addr.clone(), b_addr.clone()]),
        "a and b discovered: {:?}",
        members(&g)
    );
    let load = Load::start(&g.url("/"), 4, 20_000, Duration::from_secs(30));
    assert!(poll_until(Duration::from_secs(5), || b.requests(0) > 20
        && b.requests(1) > 20));

    dns.set_hosts("127.0.0.3 api.test\n127.0.0.4 api.test\n");
    assert!(
        poll_until(Duration::from_secs(5), || addrs(&g)
            == [b_addr.clone(), c_addr.clone()]),
        "b and c discovered: {:?}",
        members(&g)
    );
    // c is a member but unhealthy: it gets nothing; a left and drained.
    let a_after = b.requests(0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        b.requests(2),
        0,
        "c gets no traffic before its check passes"
    );
    assert!(
        b.requests(0) - a_after <= 4,
        "a gets nothing new once it left"
    );
    let c_member = members(&g).into_iter().find(|m| m.0 == c_addr).unwrap();
    assert_eq!((c_member.1.as_str(), c_member.2), ("discovered", false));

    b.state(2).set_health_status(200);
    assert!(
        poll_until(Duration::from_secs(5), || b.requests(2) > 20),
        "c serves once its check passes"
    );
    let r = load.finish();
    println!(
        "load: {:?}, a {} b {} c {}",
        r.statuses,
        b.requests(0),
        b.requests(1),
        b.requests(2)
    );
    let log = std::fs::read_to_string(g.dir.path().join("stdout.log")).unwrap_or_default();
    let bad: Vec<&str> = log.lines().filter(|l| l.contains("503")).take(3).collect();
    assert_eq!(
        r.failures(),
        0,
        "no request failed: {:?} {:?}\n{}\n{bad:?}",
        r.statuses,
        r.errors,
        g.stderr()
    );
    assert_eq!(
        g.metric_sum("portcullis_discovery_backends", &[("upstream", "pool")]),
        2.0
    );
    assert!(
        g.metric_sum(
            "portcullis_discovery_resolutions_total",
            &[("result", "ok")]
        ) >= 2.0
    );
}

#[test]
fn srv_weights_and_priorities_are_honoured() {
    let b = Backends::start(&["light", "heavy", "spare"]);
    let srv = |i: usize, prio: u16, weight: u16| {
        format!(
            "srv-host=_http._tcp.api.test,{}.test,{},{prio},{weight}",
            ["light", "heavy", "spare"][i],
            b.addr(i).port()
        )
    };
    let (s0, s1, s2) = (srv(0, 0, 1), srv(1, 0, 3), srv(2, 1, 100));
    let dns = Dnsmasq::start(
        "127.0.0.1 light.test\n127.0.0.1 heavy.test\n127.0.0.1 spare.test\n",
        &[&s0, &s1, &s2],
    );
    let discover = format!(
        "{{ dns: _http._tcp.api.test, type: SRV, resolvers: [\"{}\"] }}",
        dns.addr()
    );
    let g = Gateway::start(&config(&discover, "    strategy: weighted_round_robin\n"));
    assert!(
        poll_until(Duration::from_secs(10), || members(&g).len() == 3),
        "three SRV targets: {:?}",
        members(&g)
    );
    let c = support::client();
    for _ in 0..400 {
        assert_eq!(support::get(&c, &g.url("/")).0, 200);
    }
    let (light, heavy, spare) = (b.requests(0), b.requests(1), b.requests(2));
    println!("light {light} heavy {heavy} spare {spare}");
    assert_eq!(light + heavy, 400);
    assert!((90..=110).contains(&light), "weight 1 of 4: {light}");
    assert_eq!(spare, 0, "priority 1 is a backup while priority 0 serves");
}

#[test]
fn aaaa_records_give_ipv6_backends() {
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    let b = Backends::start_at(&["six"], &[v6]);
    let dns = Dnsmasq::start("::1 api6.test\n", &[]);
    let discover = format!(
        "{{ dns: api6.test, type: AAAA, port: {}, resolvers: [\"{}\"] }}",
        b.addr(0).port(),
        dns.addr()
    );
    let g = Gateway::start(&config(&discover, ""));
    let want = [b.addr(0).to_string()];
    assert!(
        poll_until(Duration::from_secs(10), || addrs(&g) == want),
        "[::1] discovered: {:?}",
        members(&g)
    );
    assert_eq!(support::get(&support::client(), &g.url("/")).0, 200);
    assert_eq!(b.requests(0), 1);
}

#[test]
fn a_failing_dns_server_keeps_the_last_good_set() {
    let (b, port) = on_one_port(&["a", "b"]);
    let mut dns = Dnsmasq::start("127.0.0.2 api.test\n127.0.0.3 api.test\n", &[]);
    let discover = format!(
        "{{ dns: api.test, port: {port}, resolvers: [\"{}\"], refresh: {{ min: 100ms, max: 200ms }}, timeout: 300ms }}",
        dns.addr()
    );
    let g = Gateway::start(&config(&discover, ""));
    assert!(poll_until(Duration::from_secs(10), || members(&g).len() == 2));
    let errors = || {
        g.metric_sum(
            "portcullis_discovery_resolutions_total",
            &[("result", "error")],
        )
    };
    // The name disappears (NXDOMAIN): an empty answer never empties the upstream.
    dns.set_hosts("127.0.0.9 other.test\n");
    assert!(
        poll_until(Duration::from_secs(5), || errors() >= 2.0),
        "failures counted"
    );
    assert_eq!(members(&g).len(), 2, "last good set kept");
    // The server stops: the same.
    dns.stop();
    let before = errors();
    assert!(poll_until(Duration::from_secs(5), || errors() >= before + 2.0));
    let c = support::client();
    for _ in 0..40 {
        assert_eq!(support::get(&c, &g.url("/")).0, 200);
    }
    assert!(
        b.requests(0) >= 10 && b.requests(1) >= 10,
        "both still serve"
    );
    assert!(g.stderr().contains("keeping its last good set"));
    // A reload while DNS is down keeps the discovered members.
    let generation = || g.metric_sum("portcullis_config_generation", &[]);
    let before = generation();
    g.write_config(&config(&discover, "    strategy: least_conn\n"));
    g.signal("HUP");
    assert!(poll_until(Duration::from_secs(5), || generation() > before));
    assert_eq!(members(&g).len(), 2, "discovered members survive a reload");
    // It comes back with a new set: discovery resumes.
    dns.restart();
    dns.set_hosts("127.0.0.3 api.test\n");
    assert!(
        poll_until(Duration::from_secs(5), || addrs(&g)
            == [b.addr(1).to_string()]),
        "resumed: {:?}",
        members(&g)
    );
}

#[test]
fn discover_config_errors_name_file_line_and_key() {
    for (discover, want) in [
        (
            "{ dns: 'bad name!', port: 80 }",
            "upstreams[0].discover.dns: `bad name!` is not a DNS name",
        ),
        (
            "{ dns: api.test }",
            "upstreams[0].discover.port: A and AAAA discovery needs a port",
        ),
        (
            "{ dns: api.test, type: SRV, port: 80 }",
            "upstreams[0].discover.port: SRV records carry their own ports",
        ),
        (
            "{ dns: api.test, port: 80, resolvers: [dns.local] }",
            "upstreams[0].discover.resolvers[0]: `dns.local` is not an IP address",
        ),
        (
            "{ dns: api.test, port: 80, refresh: { min: 10s, max: 1s } }",
            "upstreams[0].discover.refresh: need 100ms <= min <= max",
        ),
        (
            "{ dns: api.test, port: 80, type: MX }",
            "upstreams[0].discover.type: unknown variant `MX`",
        ),
    ] {
        let yaml = config(discover, "");
        let line = yaml.lines().position(|l| l.contains("discover:")).unwrap() + 1;
        let (code, out) = support::check_config(&yaml);
        assert_eq!(code, 1, "{discover}: {out}");
        assert!(out.contains(want), "{discover}: want `{want}` in:\n{out}");
        let at = format!("FILE:{line}:");
        assert!(out.contains(&at), "{discover}: want {at} in:\n{out}");
    }
    // Without `discover`, backends are still required.
    let (code, out) = support::check_config(&config("null", ""));
    assert_eq!(code, 1);
    assert!(out.contains("at least one backend"), "{out}");
}
