//! The scheduling loop: hold the leadership lock, and while holding it fire every task
//! whose latest scheduled time is not yet claimed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use deployguard::db::DatabaseConfig;

use crate::settings::Schedule;
use deployguard::queue::Publisher;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;

use crate::fire::{self, Fired};
use crate::metrics::Metrics;

/// The advisory lock only the leading beat holds ("dgbeat" in ASCII).
pub const LOCK_KEY: i64 = 0x6467_6265_6174;
/// How often a follower asks for the lock and the leader looks for due times.
pub const TICK: Duration = Duration::from_secs(1);
/// A lock connection that does not answer within this is dropped (and with it, on the
/// server's side, the lock).
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Scheduler {
    pub db: PgPool,
    pub lock_db: DatabaseConfig,
    pub publisher: Publisher,
    pub schedules: Vec<Schedule>,
    pub instance: String,
    pub metrics: Arc<Metrics>,
    /// Woken by the cron jobs at each scheduled time.
    pub wake: Arc<Notify>,
}

impl Scheduler {
    /// Runs until `stop` resolves; the lock goes with the connection.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut lock: Option<PgConnection> = None;
        let mut leading = false;
        // The latest time fired (or found claimed) per task, so a tick costs no query
        // when nothing is due.
        let mut fired: HashMap<&'static str, DateTime<Utc>> = HashMap::new();
        loop {
            leading = self.lead(&mut lock, leading).await;
            if !leading {
                fired.clear();
            }
            self.metrics.leader.set(i64::from(leading));
            if leading {
                self.fire_due(&mut fired).await;
                if let Err(err) = fire::record_outcomes(&self.db).await {
                    tracing::warn!(error = %err, "recording periodic task outcomes failed");
                }
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(TICK) => {}
                () = self.wake.notified() => {}
            }
        }
        if let Some(conn) = lock {
            let _ = conn.close().await;
        }
    }

    /// Keeps or seeks the lock; whether this process leads now.
    async fn lead(&self, lock: &mut Option<PgConnection>, leading: bool) -> bool {
        if lock.is_none() {
            match deployguard::db::connect_options(&self.lock_db) {
                // The server's keepalives on this session: if this process's host or
                // network goes, PostgreSQL ends the session (and frees the lock) in
                // about 25 s instead of the system default of two hours.
                Ok(options) => match tokio::time::timeout(
                    LOCK_TIMEOUT,
                    PgConnection::connect_with(&options.options([
                        ("tcp_keepalives_idle", "10"),
                        ("tcp_keepalives_interval", "5"),
                        ("tcp_keepalives_count", "3"),
                    ])),
                )
                .await
                {
                    Ok(Ok(conn)) => *lock = Some(conn),
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "beat cannot reach the database")
                    }
                    Err(_) => tracing::warn!("beat's database connection timed out"),
                },
                Err(err) => tracing::warn!(error = %err, "beat cannot reach the database"),
            }
        }
        let Some(conn) = lock.as_mut() else {
            return false;
        };
        let query = if leading {
            // Still connected means still holding it.
            sqlx::query_scalar::<_, bool>("SELECT true")
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY)
        };
        let answer = tokio::time::timeout(LOCK_TIMEOUT, query.fetch_one(conn))
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
        match answer {
            Ok(true) => {
                if !leading {
                    tracing::info!(instance = %self.instance, "leading: this beat publishes the periodic tasks");
                }
                true
            }
            Ok(false) => false,
            Err(err) => {
                if leading {
                    tracing::warn!(error = %err, "lost the leadership connection");
                }
                *lock = None;
                false
            }
        }
    }

    async fn fire_due(&self, fired: &mut HashMap<&'static str, DateTime<Utc>>) {
        // Cron times are whole seconds; croner keeps the fraction it is given.
        let now = Utc::now().trunc_subsecs(0);
        for schedule in &self.schedules {
            let Ok(slot) = schedule.cron.find_previous_occurrence(&now, true) else {
                continue;
            };
            let task = schedule.task.name();
            if fired.get(task).is_some_and(|last| *last >= slot) {
                continue;
            }
            match fire::fire(
                &self.db,
                &self.publisher,
                &self.instance,
                schedule.task,
                slot,
            )
            .await
            {
                Ok(outcome) => {
                    fired.insert(task, slot);
                    if outcome != Fired::AlreadyClaimed {
                        tracing::info!(task, scheduled_for = %slot, ?outcome, "periodic task fired");
                        self.metrics.fired(task, slot);
                    }
                }
                Err(err) => {
                    tracing::warn!(task, error = %err, "firing a periodic task failed; next tick tries again");
                    self.metrics.failed(task);
                }
            }
        }
    }
}
