//! Hostile config files: deep nesting, a huge file, alias bombs. Reloading any of them (SIGHUP
//! or POST /reload) leaves the running gateway serving its old config, and `-t` refuses them
//! quickly with a message.

mod support;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn good(b: &Backends) -> String {
    one_route(
        b,
        "",
        "",
        "admin: { address: \"{admin}\", token: secret-token-0123456789 }\n",
    )
}

/// (name, file text, what the error must say).
fn hostile_files() -> Vec<(&'static str, String, &'static str)> {
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 10].join(", ");
        laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let mut anchors = String::from("listeners:\n");
    for i in 0..500_000 {
        anchors.push_str(&format!("- &a{i} x\n- *a{i}\n"));
    }
    vec![
        (
            "nested 5,000",
            "- ".repeat(5_000) + "x\n",
            "nesting deeper than 64",
        ),
        (
            "nested 100,000",
            "- ".repeat(100_000) + "x\n",
            "nesting deeper than 64",
        ),
        (
            "flow 100,000",
            "a: ".to_string() + &"[".repeat(100_000),
            "nesting deeper than 64",
        ),
        (
            "10 MB",
            format!("# {}\n", "x".repeat(10 << 20)),
            "limit of 4194304 bytes",
        ),
        (
            "1,000,000 anchors and aliases",
            anchors,
            "limit of 4194304 bytes",
        ),
        ("billion laughs", laughs, "aliases are expanded"),
    ]
}

fn check_file(path: &Path) -> (i32, String, Duration) {
    let started = Instant::now();
    let out = Command::new(binary())
        .arg("-t")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run -t");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text, started.elapsed())
}

#[test]
fn hostile_files_are_refused_by_check_and_by_reload() {
    let b = Backends::start(&["a"]);
    let gw = Gateway::start(&good(&b));
    let c = client();
    for (name, text, expected) in hostile_files() {
        let path = gw.config_path().with_file_name("hostile.yaml");
        std::fs::write(&path, &text).unwrap();
        let (code, out, took) = check_file(&path);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(expected), "{name}: {out}");
        eprintln!("-t on {name} ({} bytes): exit 1 in {took:?}", text.len());
        assert!(took < Duration::from_secs(5), "{name}: -t took {took:?}");

        std::fs::write(gw.config_path(), &text).unwrap();
        gw.signal("HUP");
        let started = Instant::now();
        let r = match c
            .post(gw.admin_url("/reload"))
            .bearer_auth("secret-token-0123456789")
            .send()
        {
            Ok(r) => r,
            Err(e) => {
                let log = gw.stderr();
                let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                panic!(
                    "{name}: POST /reload after {:?}: {e}\nlast log lines, newest first:\n{tail}",
                    started.elapsed()
                );
            }
        };
        assert!(!r.status().is_success(), "{name}: reload accepted");
        let status: serde_json::Value = c
            .get(gw.admin_url("/status"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(status["last_reload"]["result"], "failure", "{name}");
        assert_eq!(status["config_generation"], 1, "{name}");
        let messages = status["last_reload"]["messages"].to_string();
        assert!(messages.contains(expected), "{name}: {messages}");
        assert_eq!(get(&c, &gw.url("/")).0, 200, "{name}: still serving");
    }
    assert!(gw.stderr().contains("nesting deeper than 64"));
}
