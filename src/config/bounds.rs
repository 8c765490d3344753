//! Limits on a config file, checked before it is deserialized: size, nesting depth and the
//! node count after alias expansion ("billion laughs"). Deserializing recurses once per level,
//! so an unbounded file could overflow a thread's stack and abort the process; this check
//! streams the YAML events without recursion and stops at the first limit.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};

/// Largest config file, in bytes.
pub const MAX_BYTES: usize = 4 << 20;
/// Deepest nesting of mappings and sequences (the documented config needs about 8).
pub const MAX_DEPTH: usize = 64;
/// Most nodes once every alias is expanded.
pub const MAX_EXPANDED_NODES: u64 = 1_000_000;

/// A limit the text breaks: the 1-based line where it happened, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Line, when known.
    pub line: Option<usize>,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// The error for a file over [`MAX_BYTES`].
pub fn too_large() -> String {
    format!("the file is larger than the limit of {MAX_BYTES} bytes (4 MiB)")
}

/// Check `text` against the limits.
pub fn check(text: &str) -> Result<(), OutOfBounds> {
    if text.len() > MAX_BYTES {
        return Err(OutOfBounds {
            line: None,
            message: too_large(),
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    let mut nodes: u64 = 0;
    // Expanded size of each anchored node, and the anchored nodes still open.
    let mut sizes: HashMap<usize, u64> = HashMap::new();
    let mut open: Vec<(usize, usize, u64)> = Vec::new();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| OutOfBounds {
            line: Some(e.marker().line()),
            message: if e.info().contains("recursion limit") {
                // The scanner's own guard on flow collections (`[[[[...`).
                format!("nesting deeper than {MAX_DEPTH} levels")
            } else {
                format!("invalid YAML: {}", e.info())
            },
        })?;
        let line = Some(mark.line());
        match event {
            Event::StreamEnd => return Ok(()),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                depth += 1;
                nodes += 1;
                if depth > MAX_DEPTH {
                    return Err(OutOfBounds {
                        line,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                if anchor != 0 {
                    open.push((anchor, depth, nodes - 1));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(&(anchor, d, start)) = open.last() {
                    if d == depth {
                        sizes.insert(anchor, nodes - start);
                        open.pop();
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Scalar(_, _, anchor, _) => {
                nodes += 1;
                if anchor != 0 {
                    sizes.insert(anchor, 1);
                }
            }
            Event::Alias(anchor) => {
                nodes = nodes.saturating_add(sizes.get(&anchor).copied().unwrap_or(1));
            }
            _ => {}
        }
        if nodes > MAX_EXPANDED_NODES {
            return Err(OutOfBounds {
                line,
                message: format!(
                    "more than {MAX_EXPANDED_NODES} nodes once aliases are expanded \
                     (an alias bomb?)"
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_files_pass() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/portcullis.yaml"))
                .unwrap();
        assert_eq!(check(&text), Ok(()));
        assert_eq!(check("a: &x [1, 2]\nb: *x\n"), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_with_its_line() {
        let deep = "- ".repeat(5000) + "x\n";
        let e = check(&deep).unwrap_err();
        assert!(e.message.contains("nesting deeper than 64"), "{e:?}");
        let flow = "a:\n  b: ".to_string() + &"[".repeat(100_000);
        let e = check(&flow).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("nesting deeper than 64"), "{e:?}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = check(&text).unwrap_err();
        assert!(e.message.contains("aliases"), "{e:?}");
    }

    #[test]
    fn big_files_are_refused() {
        let big = "#".repeat(MAX_BYTES + 1);
        assert!(check(&big).unwrap_err().message.contains("limit"));
    }
}
