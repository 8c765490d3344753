//! Reading the YAML file: shape (serde), and placing every problem on a file, line and key path.
//!
//! Meaning (references, duplicates, ranges, strategy parameters) is checked while compiling the
//! runtime snapshot, see [`crate::runtime::compile`]; its errors come back here to be located.

pub mod bounds;
pub mod client;
pub mod compression;
pub mod discover;
pub mod duration;
pub mod error;
pub mod health;
pub mod listener;
pub mod locate;
pub mod mirror;
pub mod model;
pub mod tcp;
pub mod tracing;
pub mod upstream;

pub use error::{ConfigError, ConfigErrors, PathError};
pub use model::Config;

use locate::LineIndex;
use std::path::{Path, PathBuf};

/// The text a config was read from, kept to place later errors on lines.
#[derive(Debug)]
pub struct Source {
    /// Path of the file.
    pub path: PathBuf,
    lines: LineIndex,
}

impl Source {
    /// Attach file and line to errors found below the document root.
    pub fn locate(&self, errors: Vec<PathError>) -> ConfigErrors {
        ConfigErrors(
            errors
                .into_iter()
                .map(|e| ConfigError {
                    file: self.path.clone(),
                    line: self.lines.line_of(&e.path),
                    path: e.path,
                    message: e.message,
                })
                .collect(),
        )
    }
}

/// Read and parse a config file. Only the shape is checked here. At most
/// [`bounds::MAX_BYTES`] are read, whatever the file's size.
pub fn read_file(path: &Path) -> Result<(Config, Source), ConfigErrors> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| ConfigErrors::file_level(path, format!("cannot read the file: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(bounds::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > bounds::MAX_BYTES {
        return Err(ConfigErrors::file_level(path, bounds::too_large()));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| ConfigErrors::file_level(path, format!("the file is not UTF-8: {e}")))?;
    parse_str(path, &text)
}

/// Parse config text; `path` only names the source in errors. The text is checked against
/// [`bounds`] first, so no input can exhaust the stack or memory.
pub fn parse_str(path: &Path, text: &str) -> Result<(Config, Source), ConfigErrors> {
    if let Err(e) = bounds::check(text) {
        return Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: e.line,
            path: String::new(),
            message: e.message,
        }]));
    }
    let source = Source {
        path: path.to_path_buf(),
        lines: LineIndex::build(text),
    };
    let de = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Config>(de) {
        Ok(config) => Ok((config, source)),
        Err(e) => {
            let mut key_path = e.path().to_string();
            if key_path == "." {
                key_path.clear();
            }
            let inner = e.into_inner();
            // The exact key (e.g. an unknown field) is more precise than serde_yaml's position,
            // which points at the enclosing map.
            let line = source
                .lines
                .line_of_exact(&key_path)
                .or_else(|| inner.location().map(|l| l.line()))
                .or_else(|| source.lines.line_of(&key_path));
            let message = error::clean_serde_message(&inner.to_string());
            Err(ConfigErrors(vec![ConfigError {
                file: source.path.clone(),
                line,
                path: key_path,
                message,
            }]))
        }
    }
}
