//! Beat's settings: the sections it shares with the other binaries, and its schedules
//! and probe address.

use std::net::SocketAddr;

use deployguard::env::{self, ConfigError, Load, Source};
use deployguard::service::Common;
use deployguard::tasks::Periodic;

/// Everything `deployguard-beat` reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    pub beat: BeatConfig,
}

impl Load for Settings {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            common: Common::from_source(src)?,
            beat: BeatConfig::from_source(src)?,
        })
    }
}

impl AsRef<Common> for Settings {
    fn as_ref(&self) -> &Common {
        &self.common
    }
}

/// One periodic task and when beat publishes it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub task: Periodic,
    /// The variable that set it.
    pub var: &'static str,
    /// A cron expression with seconds (`sec min hour day month weekday`).
    pub cron: croner::Cron,
}

/// Beat's own settings.
#[derive(Debug, Clone)]
pub struct BeatConfig {
    /// `BEAT_CLEANUP_EXPIRED_JOBS_CRON` (default `0 0 * * * *`, hourly),
    /// `BEAT_STORAGE_CLEANUP_CRON` (default `0 30 3 * * *`, daily at 03:30 UTC) and
    /// `BEAT_REQUEUE_STUCK_JOBS_CRON` (default `0 */5 * * * *`, every five minutes).
    pub schedules: Vec<Schedule>,
    /// `BEAT_METRICS_ADDR` (default `0.0.0.0:9101`): `/metrics` and the health probes.
    pub metrics_addr: SocketAddr,
}

impl BeatConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build();
        let mut schedules = Vec::new();
        for (task, var, default) in [
            (
                Periodic::CleanupExpiredJobs,
                "BEAT_CLEANUP_EXPIRED_JOBS_CRON",
                "0 0 * * * *",
            ),
            (
                Periodic::StorageCleanup,
                "BEAT_STORAGE_CLEANUP_CRON",
                "0 30 3 * * *",
            ),
            (
                Periodic::RequeueStuckJobs,
                "BEAT_REQUEUE_STUCK_JOBS_CRON",
                "0 */5 * * * *",
            ),
        ] {
            let raw = src.get(var).unwrap_or_else(|| default.to_owned());
            let cron = parser.parse(raw.trim()).map_err(|e| {
                ConfigError::malformed(
                    var,
                    format!("{raw:?} is not a cron expression with seconds: {e}"),
                )
            })?;
            schedules.push(Schedule { task, var, cron });
        }
        Ok(Self {
            schedules,
            metrics_addr: env::parse_or(
                src,
                "BEAT_METRICS_ADDR",
                Some(SocketAddr::from(([0, 0, 0, 0], 9101))),
                "an address like 0.0.0.0:9101",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn beat_schedules_default_to_hourly_and_daily_and_a_bad_one_is_named() {
        let beat = BeatConfig::from_source(&HashMap::<&str, &str>::new()).unwrap();
        let patterns: Vec<String> = beat
            .schedules
            .iter()
            .map(|s| s.cron.pattern.to_string())
            .collect();
        assert_eq!(patterns, ["0 0 * * * *", "0 30 3 * * *", "0 */5 * * * *"]);
        let vars = HashMap::from([("BEAT_STORAGE_CLEANUP_CRON", "every day")]);
        let err = BeatConfig::from_source(&vars).unwrap_err().to_string();
        assert!(err.contains("BEAT_STORAGE_CLEANUP_CRON"), "{err}");
        // Five fields (no seconds) are refused rather than read as something else.
        let vars = HashMap::from([("BEAT_CLEANUP_EXPIRED_JOBS_CRON", "0 * * * *")]);
        assert!(BeatConfig::from_source(&vars).is_err());
    }

    #[test]
    fn beat_needs_no_object_store() {
        let vars = HashMap::from([
            ("DATABASE_URL", "postgresql://u:p@db:5432/deployguard"),
            ("AMQP_URL", "amqp://u:p@rabbitmq:5672/%2f"),
        ]);
        assert!(Settings::from_source(&vars).is_ok());
    }
}
