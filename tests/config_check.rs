//! `portcullis -t` on broken files: non-zero exit, every problem with file, line and key path.

mod support;
use std::process::Command;
use support::{binary, check_config};

const VALID: &str = r#"
listeners:
  - name: web
    address: 127.0.0.1:18080
routes:
  - name: all
    upstream: pool
upstreams:
  - name: pool
    backends:
      - address: 127.0.0.1:9001
        weight: 2
"#;

#[test]
fn a_valid_file_passes() {
    let (code, out) = check_config(VALID);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is valid"));
}

#[test]
fn broken_files_fail_and_name_file_line_and_key_path() {
    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "        wieght: 2\n", "FILE:12: upstreams[0].backends[0].wieght: unknown field `wieght`, expected one of `address`, `weight`, `backup`"),
        ("weight 0", "        weight: 0\n", "FILE:12: upstreams[0].backends[0].weight: weight must be between 1 and 1000, got 0"),
        ("bad address", "        weight: 2\n      - address: 300.1.1.1:80\n", "FILE:13: upstreams[0].backends[1].address: `300.1.1.1:80` is not a valid IP address and port"),
        ("unknown strategy", "        weight: 2\n    strategy: fastest\n", "FILE:13: upstreams[0].strategy.kind: unknown strategy `fastest` (allowed: adaptive, consistent_hash"),
        ("bad strategy param", "        weight: 2\n    strategy: { kind: least_conn, choise: all }\n", "FILE:13: upstreams[0].strategy.choise: unknown field `choise`"),
    ];
    // Each case replaces the last line of VALID (`        weight: 2`).
    for (what, replacement, want) in cases {
        let yaml = VALID.replace("        weight: 2\n", replacement);
        let (code, out) = check_config(&yaml);
        assert_ne!(code, 0, "{what}: {out}");
        assert!(out.contains(want), "{what}: expected `{want}` in:\n{out}");
    }
}

#[test]
fn semantic_errors_are_all_reported_with_lines() {
    let yaml = r#"
listeners:
  - name: web
    address: 127.0.0.1:18080
  - name: web
    address: not-an-address
routes:
  - name: all
    upstream: missing
upstreams:
  - name: pool
    backends: []
  - name: pool
    backends:
      - address: 127.0.0.1:9001
"#;
    let (code, out) = check_config(yaml);
    assert_ne!(code, 0);
    for want in [
        "FILE:5: listeners[1].name: duplicate listener name `web`",
        "FILE:6: listeners[1].address: `not-an-address` is not a valid listen address",
        "FILE:12: upstreams[0].backends: at least one backend is required",
        "FILE:13: upstreams[1].name: duplicate upstream name `pool`",
        "FILE:9: routes[0].upstream: unknown upstream `missing` (defined: pool, pool)",
    ] {
        assert!(out.contains(want), "expected `{want}` in:\n{out}");
    }
    assert!(out.contains("5 problem(s)"), "{out}");
}

#[test]
fn a_missing_or_unparsable_file_is_an_error_not_a_panic() {
    let out = Command::new(binary())
        .args(["-t", "-c", "/nonexistent/portcullis.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
    let (code, out) = check_config("listeners: [unclosed");
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn every_shipped_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(binary())
                .arg("-t")
                .arg("-c")
                .arg(&path)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "conf/ has the demo and the container configs");
}
