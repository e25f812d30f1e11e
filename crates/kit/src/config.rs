//! The typed error every case's configuration table returns from validation.
//!
//! Each case validates its own table (`[uber]`, `[whatsapp]`, …) and names the
//! dotted key at fault, so the binary can say where the bad value came from (file or
//! environment variable), which key, and what was expected — before anything starts.

use std::fmt;

/// A configuration value that cannot be used: the dotted key and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    message: String,
}

impl ConfigError {
    /// `key` (dotted, e.g. `uber.http_port`) is wrong: `message` says how.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The dotted key at fault.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What was wrong and what was expected.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_key_colon_message() {
        let e = ConfigError::new("uber.city", "must be 1-64 characters");
        assert_eq!(e.to_string(), "uber.city: must be 1-64 characters");
        assert_eq!(
            (e.key(), e.message()),
            ("uber.city", "must be 1-64 characters")
        );
    }
}
