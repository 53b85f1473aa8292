//! Beat as it runs in production: its real binary, two at once, against the real
//! database and broker, with schedules compressed to seconds.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deployguard::queue::WorkQueue;
use deployguard::tasks::Periodic;
use deployguard_testkit::{Process, TestEnv, free_addr};
use lapin::options::BasicGetOptions;

const SECS: Duration = Duration::from_secs(1);
const EVERY_2S: &str = "*/2 * * * * *";

struct Beat {
    process: Process,
    /// Its `/metrics` and health probes.
    http: String,
}

impl Beat {
    fn start(env: &TestEnv, cron: &str) -> Self {
        let addr = free_addr().to_string();
        let mut vars: HashMap<String, String> = env.vars();
        for (k, v) in [
            ("BEAT_CLEANUP_EXPIRED_JOBS_CRON", cron),
            ("BEAT_STORAGE_CLEANUP_CRON", cron),
            ("BEAT_REQUEUE_STUCK_JOBS_CRON", cron),
            ("BEAT_METRICS_ADDR", addr.as_str()),
            ("LOG_LEVEL", "info,sqlx=warn"),
        ] {
            vars.insert(k.into(), v.into());
        }
        Self {
            process: Process::start(env!("CARGO_BIN_EXE_deployguard-beat"), &[], &vars),
            http: format!("http://{addr}"),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.http)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The end of this beat's instance name in `beat_runs`.
    fn instance_suffix(&self) -> String {
        format!(":{}", self.process.pid())
    }

    fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    async fn stop(mut self) -> String {
        self.signal("TERM");
        let exited = self.process.exited(10 * SECS).await;
        let log = self.process.log();
        assert!(exited.is_some_and(|s| s.success()), "{log}");
        log
    }
}

/// `beat_runs` as `(task, scheduled_for, instance)`, oldest first.
async fn runs(env: &TestEnv) -> Vec<(String, DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT task_name, scheduled_for, instance FROM beat_runs ORDER BY scheduled_for, task_name",
    )
    .fetch_all(&env.db)
    .await
    .unwrap()
}

/// Every message waiting in the default queue, as `(task, scheduled_for)`.
async fn published(env: &TestEnv) -> Vec<(String, String)> {
    let conn = env.amqp_connection().await;
    let channel = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(
            WorkQueue::Default.name().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let headers = message.delivery.properties.headers().clone().unwrap();
        let task = headers
            .inner()
            .get("task")
            .unwrap()
            .as_long_string()
            .unwrap()
            .to_string();
        let body: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
        out.push((
            task,
            body["args"]["scheduled_for"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// Checks each task's scheduled times: every 2 s with no gap, each once, each
/// published exactly once.
async fn assert_each_time_once(env: &TestEnv) -> Vec<(String, DateTime<Utc>, String)> {
    let rows = runs(env).await;
    for task in Periodic::ALL.map(Periodic::name) {
        let times: Vec<DateTime<Utc>> = rows
            .iter()
            .filter(|(t, _, _)| t == task)
            .map(|(_, at, _)| *at)
            .collect();
        assert!(times.len() >= 3, "{task}: {times:?}");
        for pair in times.windows(2) {
            assert_eq!(
                (pair[1] - pair[0]).num_seconds(),
                2,
                "{task}: a time lost or doubled: {times:?}"
            );
        }
    }
    let messages = published(env).await;
    let unique: BTreeSet<(String, String)> = messages.iter().cloned().collect();
    assert_eq!(unique.len(), messages.len(), "a time published twice");
    let claimed: BTreeSet<(String, String)> = rows
        .iter()
        .map(|(task, at, _)| (task.clone(), at.to_rfc3339()))
        .collect();
    assert_eq!(unique, claimed, "published ≠ claimed");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_beats_publish_each_scheduled_time_exactly_once() {
    let env = TestEnv::new().await;
    let first = Beat::start(&env, EVERY_2S);
    let second = Beat::start(&env, EVERY_2S);
    tokio::time::sleep(9 * SECS).await;
    // Each answers its probes; the leader's metrics count what it fired.
    let mut leaders = Vec::new();
    for beat in [&first, &second] {
        assert_eq!(beat.get("/health").await.0, 200);
        assert_eq!(beat.get("/health/ready").await.0, 200);
        let (status, metrics) = beat.get("/metrics").await;
        assert_eq!(status, 200);
        if metrics.lines().any(|l| l == "deployguard_beat_leader 1") {
            leaders.push(metrics);
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let fired: u64 = leaders[0]
        .lines()
        .filter(|l| l.starts_with("deployguard_beat_runs_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(fired >= 9, "{}", leaders[0]);
    let first_log = first.stop().await;
    let second_log = second.stop().await;

    let rows = assert_each_time_once(&env).await;
    // One of them led throughout.
    let instances: BTreeSet<&str> = rows.iter().map(|(_, _, i)| i.as_str()).collect();
    assert_eq!(instances.len(), 1, "{instances:?}");
    let leading = |log: &str| log.contains("leading");
    assert!(
        leading(&first_log) != leading(&second_log),
        "exactly one leads\n{first_log}\n{second_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_killed_the_other_takes_over_without_losing_a_time() {
    let env = TestEnv::new().await;
    let mut first = Beat::start(&env, EVERY_2S);
    let led = async {
        for _ in 0..100 {
            if !runs(&env).await.is_empty() {
                return true;
            }
            tokio::time::sleep(SECS / 10).await;
        }
        false
    };
    assert!(led.await, "the first beat never fired");
    let second = Beat::start(&env, EVERY_2S);
    tokio::time::sleep(4 * SECS).await;
    first.signal("KILL");
    assert!(first.process.exited(10 * SECS).await.is_some());
    tokio::time::sleep(7 * SECS).await;
    let (first_name, second_name) = (first.instance_suffix(), second.instance_suffix());
    let log = second.stop().await;

    let rows = assert_each_time_once(&env).await;
    let by = |name: &str| rows.iter().filter(|(_, _, i)| i.ends_with(name)).count();
    assert!(by(&first_name) > 0, "the first beat led first");
    assert!(
        by(&second_name) > 0,
        "the second beat never took over\n{log}"
    );
    assert_eq!(by(&first_name) + by(&second_name), rows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_missed_while_no_beat_ran_fires_once_and_a_restart_fires_nothing_twice() {
    let env = TestEnv::new().await;
    // Yearly (1 January, 00:00:00 UTC): this year's time has passed and the next one
    // cannot come during the test.
    let yearly = "0 0 0 1 1 *";
    let beat = Beat::start(&env, yearly);
    tokio::time::sleep(4 * SECS).await;
    beat.stop().await;
    let first = runs(&env).await;
    assert_eq!(first.len(), 3, "one missed time per task: {first:?}");
    let beat = Beat::start(&env, yearly);
    tokio::time::sleep(4 * SECS).await;
    beat.stop().await;
    assert_eq!(
        runs(&env)
            .await
            .iter()
            .map(|(t, at, _)| (t.clone(), *at))
            .collect::<Vec<_>>(),
        first
            .iter()
            .map(|(t, at, _)| (t.clone(), *at))
            .collect::<Vec<_>>()
    );
    assert_eq!(published(&env).await.len(), 3);
}
