//! The task message, shaped like Celery's protocol 2 so operators recognise it in the
//! management UI: headers `task`, `id`, `retries`, `root_id`, `parent_id`, `origin`,
//! `expires`, `timelimit`; a JSON body with the job id and the user id; the task id as
//! `correlation_id` and `message_id`; persistent delivery; the job's priority.
//!
//! Nothing secret travels in a message: credentials are resolved by id at run time.

use chrono::{DateTime, TimeZone, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::topology::{MAX_PRIORITY, NORMAL_PRIORITY, WorkQueue, message_priority};

/// Our own header: when the message was first published, in milliseconds since the
/// epoch (the AMQP `timestamp` property has whole seconds only). Feeds the
/// publish-to-start latency metric.
pub const PUBLISHED_AT_HEADER: &str = "x-published-at-ms";
/// On a dead-lettered message: why it was parked, and where it came from.
pub const REASON_HEADER: &str = "x-deployguard-reason";
pub const ORIGINAL_QUEUE_HEADER: &str = "x-deployguard-queue";

/// The JSON body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Task-specific arguments (a JSON object); empty for job tasks.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub args: serde_json::Map<String, serde_json::Value>,
}

/// One task to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The task's registered name, e.g. `deployguard.scan_repository`.
    pub task: String,
    /// The task id: stable across retries and redeliveries.
    pub id: Uuid,
    /// How many times this task has been retried so far.
    pub retries: u32,
    pub root_id: Uuid,
    pub parent_id: Option<Uuid>,
    /// Who published it (`deployguard-api@host`, …).
    pub origin: String,
    /// A task still queued after this instant is discarded (recorded as revoked).
    pub expires: Option<DateTime<Utc>>,
    /// Soft and hard time limits in seconds, overriding the worker's defaults.
    pub timelimit: (Option<u64>, Option<u64>),
    pub queue: WorkQueue,
    /// The broker level: 0 (low) … [`MAX_PRIORITY`] (high).
    pub priority: u8,
    pub published_at_ms: Option<i64>,
    pub body: TaskBody,
}

impl TaskMessage {
    /// A new root task (its own root, no parent).
    pub fn new(task: impl Into<String>, queue: WorkQueue, body: TaskBody) -> Self {
        let id = Uuid::now_v7();
        Self {
            task: task.into(),
            id,
            retries: 0,
            root_id: id,
            parent_id: None,
            origin: origin(),
            expires: None,
            timelimit: (None, None),
            queue,
            priority: NORMAL_PRIORITY,
            published_at_ms: None,
            body,
        }
    }

    /// Sets the broker level directly (clamped to [`MAX_PRIORITY`]).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority.min(MAX_PRIORITY);
        self
    }

    /// Sets the level for a job's priority (0 lowest … 9 highest).
    pub fn with_job_priority(self, job_priority: i16) -> Self {
        self.with_priority(message_priority(job_priority))
    }

    /// The AMQP properties and body of this message. `published_at_ms` is kept if set
    /// (a retry keeps the first publish time) and stamped otherwise.
    pub fn encode(&self) -> (BasicProperties, Vec<u8>) {
        let published_at = self
            .published_at_ms
            .unwrap_or_else(|| Utc::now().timestamp_millis());
        let mut headers = FieldTable::default();
        let mut put = |key: &str, value: AMQPValue| {
            headers.insert(ShortString::from(key), value);
        };
        put("task", text(&self.task));
        put("id", text(&self.id.to_string()));
        put(
            "retries",
            AMQPValue::LongInt(self.retries.min(i32::MAX as u32) as i32),
        );
        put("root_id", text(&self.root_id.to_string()));
        put(
            "parent_id",
            self.parent_id
                .map_or(AMQPValue::Void, |p| text(&p.to_string())),
        );
        put("origin", text(&self.origin));
        put(
            "expires",
            self.expires
                .map_or(AMQPValue::Void, |e| text(&e.to_rfc3339())),
        );
        let limit =
            |l: Option<u64>| l.map_or(AMQPValue::Void, |s| AMQPValue::LongLongInt(s as i64));
        put(
            "timelimit",
            AMQPValue::FieldArray(FieldArray::from(vec![
                limit(self.timelimit.0),
                limit(self.timelimit.1),
            ])),
        );
        put(PUBLISHED_AT_HEADER, AMQPValue::LongLongInt(published_at));

        let body = serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec());
        let id = ShortString::from(self.id.to_string());
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_priority(self.priority.min(MAX_PRIORITY))
            .with_correlation_id(id.clone())
            .with_message_id(id)
            .with_timestamp((published_at / 1000).max(0) as u64)
            .with_headers(headers);
        (properties, body)
    }

    /// Reads a delivered message. A message that cannot be understood is a [`Poison`]
    /// carrying whatever ids could still be read, so its job can be failed.
    pub fn decode(
        properties: &BasicProperties,
        routing_key: &str,
        data: &[u8],
    ) -> Result<Self, Poison> {
        let empty = FieldTable::default();
        let headers = properties.headers().as_ref().unwrap_or(&empty);
        let body: Result<TaskBody, _> = serde_json::from_slice(data);
        let job_id = body
            .as_ref()
            .ok()
            .and_then(|b| b.job_id)
            .or_else(|| loose_job_id(data));
        let task_id = header_uuid(headers, "id");
        let poison = |reason: String| Poison {
            reason,
            task_id,
            job_id,
            task: header_text(headers, "task"),
        };

        let task = header_text(headers, "task").ok_or_else(|| poison("no task header".into()))?;
        let id = task_id.ok_or_else(|| poison("no valid id header".into()))?;
        let queue = WorkQueue::parse(routing_key)
            .ok_or_else(|| poison(format!("routed with unknown key {routing_key:?}")))?;
        let body = body.map_err(|e| poison(format!("body is not a task body: {e}")))?;
        let retries = match headers.inner().get("retries") {
            None | Some(AMQPValue::Void) => 0,
            Some(value) => integer(value)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| poison("retries header is not a count".into()))?,
        };
        let expires = match header_text(headers, "expires") {
            None => None,
            Some(raw) => Some(
                DateTime::parse_from_rfc3339(&raw)
                    .map_err(|_| poison("expires header is not an RFC 3339 time".into()))?
                    .with_timezone(&Utc),
            ),
        };
        let timelimit = match headers.inner().get("timelimit") {
            Some(AMQPValue::FieldArray(items)) => {
                let at = |i: usize| {
                    items
                        .as_slice()
                        .get(i)
                        .and_then(integer)
                        .and_then(|n| u64::try_from(n).ok())
                };
                (at(0), at(1))
            }
            _ => (None, None),
        };
        Ok(Self {
            task,
            id,
            retries,
            root_id: header_uuid(headers, "root_id").unwrap_or(id),
            parent_id: header_uuid(headers, "parent_id"),
            origin: header_text(headers, "origin").unwrap_or_default(),
            expires,
            timelimit,
            queue,
            priority: properties.priority().unwrap_or(0).min(MAX_PRIORITY),
            published_at_ms: headers.inner().get(PUBLISHED_AT_HEADER).and_then(integer),
            body,
        })
    }
}

/// A message that cannot be run, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Poison {
    pub reason: String,
    pub task_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub task: Option<String>,
}

/// `program@hostname`, as Celery's `origin` header.
pub fn origin() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".into());
    let program = std::env::args()
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "deployguard".into());
    format!("{program}@{host}")
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

pub(crate) fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_uuid(headers: &FieldTable, key: &str) -> Option<Uuid> {
    header_text(headers, key).and_then(|s| Uuid::parse_str(&s).ok())
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::ShortShortInt(n) => Some(n.into()),
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::ShortInt(n) => Some(n.into()),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::LongInt(n) => Some(n.into()),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::LongLongInt(n) => Some(n),
        AMQPValue::Timestamp(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

/// The job id of a body that is not a valid task body but is JSON with a `job_id`.
fn loose_job_id(data: &[u8]) -> Option<Uuid> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    Uuid::parse_str(value.get("job_id")?.as_str()?).ok()
}

/// Milliseconds since the epoch as a time, for metrics.
pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TaskMessage {
        let mut msg = TaskMessage::new(
            "deployguard.scan_repository",
            WorkQueue::Scan,
            TaskBody {
                job_id: Some(Uuid::new_v4()),
                user_id: Some("user-1".into()),
                args: serde_json::Map::new(),
            },
        )
        .with_job_priority(8);
        msg.retries = 2;
        msg.parent_id = Some(Uuid::new_v4());
        msg.expires = Some(Utc.timestamp_opt(1_900_000_000, 0).unwrap());
        msg.timelimit = (Some(3300), Some(3600));
        msg.published_at_ms = Some(1_800_000_000_123);
        msg
    }

    #[test]
    fn a_message_survives_encoding() {
        let msg = sample();
        let (properties, body) = msg.encode();
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(properties.priority(), &Some(MAX_PRIORITY));
        assert_eq!(
            properties
                .correlation_id()
                .as_ref()
                .map(ShortString::as_str),
            Some(msg.id.to_string().as_str())
        );
        let back = TaskMessage::decode(&properties, "deployguard.scan", &body).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn garbage_is_poison_with_what_could_be_read() {
        let msg = sample();
        let (properties, _) = msg.encode();
        let job = Uuid::new_v4();
        let body = format!(r#"{{"job_id":"{job}","surprise":1}}"#);
        let poison =
            TaskMessage::decode(&properties, "deployguard.scan", body.as_bytes()).unwrap_err();
        assert_eq!(poison.job_id, Some(job));
        assert_eq!(poison.task_id, Some(msg.id));
        assert!(poison.reason.contains("body"), "{}", poison.reason);

        let bare = BasicProperties::default();
        let poison = TaskMessage::decode(&bare, "deployguard.scan", b"\xff\xfe").unwrap_err();
        assert_eq!(poison.reason, "no task header");
        assert_eq!(poison.job_id, None);

        let (properties, body) = msg.encode();
        let poison = TaskMessage::decode(&properties, "elsewhere", &body).unwrap_err();
        assert!(poison.reason.contains("elsewhere"));
    }
}
