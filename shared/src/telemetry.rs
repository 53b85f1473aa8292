//! Logging for every binary: `tracing` with human (`text`) or JSON output and an
//! `EnvFilter` built from `LOG_LEVEL`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::env::{ConfigError, Source};

/// Logging: `LOG_LEVEL` (a level such as `INFO`, or filter directives such as
/// `info,sqlx=warn`) and `LOG_FORMAT` (`text` or `json`).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let filter = src.get("LOG_LEVEL").unwrap_or_else(|| "info".into());
        let filter =
            validate_filter(&filter).map_err(|why| ConfigError::malformed("LOG_LEVEL", why))?;
        let format = match src
            .get("LOG_FORMAT")
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => LogFormat::Text,
            Some(f) if f == "text" || f == "pretty" => LogFormat::Text,
            Some(f) if f == "json" => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::malformed(
                    "LOG_FORMAT",
                    format!("{other:?} is neither \"text\" nor \"json\""),
                ));
            }
        };
        Ok(Self { filter, format })
    }
}

/// Normalises `LOG_LEVEL` and checks it parses. The specification's style (`INFO`,
/// `WARNING`) is accepted beside `tracing` filter directives (`info,sqlx=warn`).
pub fn validate_filter(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let normalised = match trimmed.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" => "error".to_owned(),
        lower if !lower.contains(['=', ',']) => lower.to_owned(),
        _ => trimmed.to_owned(),
    };
    let is_level = matches!(
        normalised.as_str(),
        "trace" | "debug" | "info" | "warn" | "error" | "off"
    );
    if !is_level && !normalised.contains(['=', ',']) {
        return Err(format!(
            "{trimmed:?} is not a level (trace, debug, info, warn, error, off) or filter directives"
        ));
    }
    EnvFilter::try_new(&normalised)
        .map_err(|e| format!("{trimmed:?} is not a valid filter: {e}"))?;
    Ok(normalised)
}

/// Installs the global subscriber. Logs go to stderr so that stdout stays free for
/// command output (the CLI prints reports there).
pub fn init(config: &LogConfig) {
    // `validate_filter` ran when the configuration was loaded, so this parses.
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    // A second init (tests spawning several apps in one process) keeps the first.
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_levels_are_normalised() {
        assert_eq!(validate_filter("INFO").unwrap(), "info");
        assert_eq!(validate_filter("WARNING").unwrap(), "warn");
        assert_eq!(validate_filter(" debug ").unwrap(), "debug");
    }

    #[test]
    fn directives_pass_through() {
        assert_eq!(
            validate_filter("info,deployguard=debug").unwrap(),
            "info,deployguard=debug"
        );
    }

    #[test]
    fn log_settings_default_to_text_at_info_and_name_a_bad_value() {
        use std::collections::HashMap;
        let config = LogConfig::from_source(&HashMap::<&str, &str>::new()).unwrap();
        assert_eq!(
            (config.filter.as_str(), config.format),
            ("info", LogFormat::Text)
        );
        let env = HashMap::from([("LOG_LEVEL", "WARNING")]);
        assert_eq!(LogConfig::from_source(&env).unwrap().filter, "warn");
        let env = HashMap::from([("LOG_LEVEL", "info,sqlx=warn"), ("LOG_FORMAT", "JSON")]);
        let config = LogConfig::from_source(&env).unwrap();
        assert_eq!(
            (config.filter.as_str(), config.format),
            ("info,sqlx=warn", LogFormat::Json)
        );
        for (var, bad) in [("LOG_LEVEL", "loud"), ("LOG_FORMAT", "xml")] {
            let env = HashMap::from([(var, bad)]);
            assert_eq!(LogConfig::from_source(&env).unwrap_err().var, var);
        }
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(validate_filter("verbose").is_err());
        assert!(validate_filter("info,=[").is_err());
    }
}
