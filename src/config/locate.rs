//! Maps key paths (`upstreams[1].backends[0].weight`) to source lines.
//!
//! serde_yaml reports a position only for parse and type errors. Semantic checks (duplicate
//! names, unknown references) run after deserialization, so this index re-reads the document's
//! events once and records the line where every key path starts.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line numbers of every key path in one YAML document.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

enum Frame {
    Map {
        key: Option<String>,
        expecting_key: bool,
    },
    Seq {
        index: usize,
    },
}

struct Builder {
    stack: Vec<(Frame, String)>,
    lines: HashMap<String, usize>,
}

impl Builder {
    /// Path of the node about to start, or `None` when the next scalar is a mapping key.
    fn value_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some((
                Frame::Map {
                    expecting_key: true,
                    ..
                },
                _,
            )) => None,
            Some((Frame::Map { key, .. }, path)) => {
                Some(super::error::join_path(path, key.as_deref().unwrap_or("")))
            }
            Some((Frame::Seq { index }, path)) => Some(format!("{path}[{index}]")),
        }
    }

    /// A value finished: advance the parent container.
    fn finish_value(&mut self) {
        match self.stack.last_mut() {
            Some((Frame::Map { expecting_key, .. }, _)) => *expecting_key = true,
            Some((Frame::Seq { index }, _)) => *index += 1,
            None => {}
        }
    }

    fn start_node(&mut self, line: usize) -> Option<String> {
        let path = self.value_path()?;
        self.lines.entry(path.clone()).or_insert(line);
        Some(path)
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) => {
                if let Some((Frame::Map { key, expecting_key }, parent)) = self.stack.last_mut() {
                    if *expecting_key {
                        let path = super::error::join_path(parent, &value);
                        self.lines.entry(path).or_insert(line);
                        *key = Some(value);
                        *expecting_key = false;
                        return;
                    }
                }
                self.start_node(line);
                self.finish_value();
            }
            Event::Alias(_) => {
                self.start_node(line);
                self.finish_value();
            }
            Event::MappingStart(..) => {
                let path = self.start_node(line).unwrap_or_default();
                self.stack.push((
                    Frame::Map {
                        key: None,
                        expecting_key: true,
                    },
                    path,
                ));
            }
            Event::SequenceStart(..) => {
                let path = self.start_node(line).unwrap_or_default();
                self.stack.push((Frame::Seq { index: 0 }, path));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.finish_value();
            }
            _ => {}
        }
    }
}

impl LineIndex {
    /// Index a YAML document. A document that does not parse gives an empty index.
    pub fn build(source: &str) -> Self {
        let mut builder = Builder {
            stack: Vec::new(),
            lines: HashMap::new(),
        };
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut builder, false).is_err() {
            return LineIndex::default();
        }
        LineIndex {
            lines: builder.lines,
        }
    }

    /// Line of exactly `path`, if the document has that key.
    pub fn line_of_exact(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }

    /// Line of `path`, or of its nearest ancestor that exists in the document.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            if p.is_empty() {
                return None;
            }
            p = parent_path(p);
        }
    }
}

fn parent_path(path: &str) -> &str {
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return &path[..i];
        }
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - name: web
    address: 127.0.0.1:8080
upstreams:
  - name: a
    backends:
      - address: 127.0.0.1:1
        weight: 0
      - { address: 127.0.0.1:2, weight: 3 }
";

    #[test]
    fn finds_nested_keys() {
        let idx = LineIndex::build(DOC);
        assert_eq!(idx.line_of("listeners[0].address"), Some(3));
        assert_eq!(idx.line_of("upstreams[0].backends[0].weight"), Some(8));
        assert_eq!(idx.line_of("upstreams[0].backends[1].weight"), Some(9));
        assert_eq!(idx.line_of("upstreams[0].name"), Some(5));
    }

    #[test]
    fn falls_back_to_nearest_ancestor() {
        let idx = LineIndex::build(DOC);
        assert_eq!(idx.line_of("upstreams[0].backends[0].missing"), Some(7));
        assert_eq!(idx.line_of("upstreams[0].strategy"), Some(5));
    }
}
