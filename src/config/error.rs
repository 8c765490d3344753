//! Configuration errors that speak to the operator: file, line, key path, and what is allowed.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line of the offending key, when it could be located.
    pub line: Option<usize>,
    /// Key path in the document, e.g. `upstreams[1].backends[0].weight` (empty for the root).
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration file (never empty when returned as an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single error not tied to a key (for example: the file cannot be read).
    pub fn file_level(file: &Path, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: None,
            path: String::new(),
            message: message.into(),
        }])
    }

    /// Whether no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterate over the problems.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem found below some key path, before the file and line are known.
///
/// Typed sub-configs (strategy parameters, filter configs) report problems with a path relative
/// to their own root; the loader prefixes it and attaches the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// Key path relative to the value being checked (empty = the value itself).
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl PathError {
    /// An error about the value itself.
    pub fn here(message: impl Into<String>) -> Self {
        PathError {
            path: String::new(),
            message: message.into(),
        }
    }

    /// An error about a key below the value.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        PathError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Prefix the path with `parent` (joined the way serde_path_to_error prints paths).
    pub fn under(mut self, parent: &str) -> Self {
        self.path = join_path(parent, &self.path);
        self
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Join two key paths: `a` + `b` → `a.b`, `a` + `[0].b` → `a[0].b`.
pub fn join_path(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (false, true) => parent.to_string(),
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

/// Deserialize a typed sub-config from a YAML value, reporting the failing key path.
///
/// This is how strategies turn their free-form `serde_yaml::Value` into typed,
/// `deny_unknown_fields` config with errors the loader can place on a line. It is the plugin
/// API's `parse_config`, so filters and strategies report config errors the same way.
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: &serde_yaml::Value,
) -> Result<T, PathError> {
    portcullis_plugin::build::parse_config(value).map_err(|e| PathError::at(e.path, e.message))
}

pub(crate) use portcullis_plugin::build::clean_serde_message;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths_like_serde_path_to_error() {
        assert_eq!(
            join_path("upstreams[1]", "backends[0].weight"),
            "upstreams[1].backends[0].weight"
        );
        assert_eq!(join_path("routes", "[2]"), "routes[2]");
        assert_eq!(join_path("", "a"), "a");
        assert_eq!(join_path("a", ""), "a");
    }

    #[test]
    fn display_names_file_line_and_path() {
        let e = ConfigError {
            file: "conf/x.yaml".into(),
            line: Some(12),
            path: "upstreams[0].backends[0].weight".into(),
            message: "must be at least 1".into(),
        };
        assert_eq!(
            e.to_string(),
            "conf/x.yaml:12: upstreams[0].backends[0].weight: must be at least 1"
        );
    }
}
