//! Reading the optional TOML configuration file into a [`Settings`] layer.

use std::path::Path;

use super::{ConfigError, Settings};

/// Reads and parses `path`; any problem is one line naming the file and where.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    parse(&text).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
}

/// Parses TOML text; the error is a single line with the line number.
pub fn parse(text: &str) -> Result<Settings, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().replace('\n', " ");
        match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kebab_case_keys() {
        let s = parse("listen = \"127.0.0.1:9000\"\nheartbeat-secs = 5\n").unwrap();
        assert!(s.listen.unwrap().ends_with(":9000"));
        assert_eq!(s.heartbeat_secs, Some(5));
    }

    #[test]
    fn errors_are_one_line_with_a_line_number() {
        let err = parse("shards = 2\nbogus = 1\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(!err.contains('\n'));
        let err = parse("shards = \"two\"\n").unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
    }
}
