//! Configuration: defaults, an optional `pathfed.toml`, then `PATHFED_*` environment variables.
//!
//! The environment wins so that one file can serve several deployments. Keys outside the
//! top-level ones map as `PATHFED_<SECTION>_<KEY>`, e.g. `PATHFED_SLIDE_MAX_PIXELS`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::SlideLimits;

/// Where the configuration could not be read or was invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file exists but could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or the environment holds a value of the wrong shape.
    #[error("invalid configuration{origin}: {message}")]
    Invalid {
        /// " in FILE" or " in the environment".
        origin: String,
        /// What was wrong.
        message: String,
    },
}

/// Deep Zoom tiling defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TilesConfig {
    /// Tile size in pixels; 0 means "the slide's own tile size when square, else 254".
    pub tile_size: u32,
    /// Pixels each tile overlaps its neighbours.
    pub overlap: u32,
    /// JPEG quality of re-encoded tiles (1–100).
    pub jpeg_quality: u8,
}

impl Default for TilesConfig {
    fn default() -> Self {
        Self {
            tile_size: 0,
            overlap: 0,
            jpeg_quality: 80,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Directory for the database, local objects, the slide cache and keys.
    pub data_dir: PathBuf,
    /// Limits for untrusted slide files.
    pub slide: SlideLimits,
    /// Deep Zoom tiling.
    pub tiles: TilesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            slide: SlideLimits::default(),
            tiles: TilesConfig::default(),
        }
    }
}

impl Config {
    /// Loads `path` if given (an error if it is missing), else `./pathfed.toml` if present,
    /// then applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PATHFED_"))
            .collect();
        let (file, must_exist) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("pathfed.toml"), false),
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => None,
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        Self::from_sources(text.as_deref(), &file, &env)
    }

    /// Builds the configuration from a file's text (if any) and environment variables.
    pub fn from_sources(
        file_text: Option<&str>,
        file: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file_text {
            Some(text) => text
                .parse::<toml::Table>()
                .map_err(|e| invalid(format!(" in {}", file.display()), e))?,
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|e| invalid(" (file and environment together)".into(), e))
    }
}

fn invalid(origin: String, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        origin,
        message: e.to_string(),
    }
}

/// Top-level keys that are not sections; every other variable is `PATHFED_<SECTION>_<KEY>`.
const TOP_LEVEL: &[&str] = &["listen", "data_dir"];
/// Sections the environment may set.
const SECTIONS: &[&str] = &["slide", "tiles"];

fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("PATHFED_") else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        // Only known sections take part, so unrelated PATHFED_* variables (used by tests and
        // scripts) do not make the configuration invalid.
        let value = parse_env_value(raw);
        if TOP_LEVEL.contains(&key.as_str()) {
            table.insert(key, value);
            continue;
        }
        let Some((section, field)) = key.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(invalid(
                " in the environment".into(),
                format!("{section} is not a section"),
            ));
        };
        section_table.insert(field.to_string(), value);
    }
    Ok(())
}

/// Environment values are strings; numbers and booleans are recognised so that typed fields
/// deserialise.
fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_file_or_environment() {
        let c = Config::from_sources(None, Path::new("pathfed.toml"), &env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_file() {
        let file = "listen = \"0.0.0.0:9000\"\n[slide]\nmax_pixels = 5\nmax_ifds = 7\n";
        let c = Config::from_sources(
            Some(file),
            Path::new("x.toml"),
            &env(&[
                ("PATHFED_SLIDE_MAX_PIXELS", "10"),
                ("PATHFED_LISTEN", "127.0.0.1:1"),
                ("PATHFED_UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.slide.max_pixels, 10);
        assert_eq!(c.slide.max_ifds, 7);
    }

    #[test]
    fn bad_values_are_reported_with_their_origin() {
        let err = Config::from_sources(
            Some("[slide]\nmax_pixels = \"many\""),
            Path::new("a.toml"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_pixels"), "{err}");
        let err = Config::from_sources(
            None,
            Path::new("a.toml"),
            &env(&[("PATHFED_SLIDE_MAX_IFDS", "-3")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_ifds"), "{err}");
        let err =
            Config::from_sources(Some("listen = "), Path::new("a.toml"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("a.toml"), "{err}");
    }
}
