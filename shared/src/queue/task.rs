//! Tasks as types: a task kind names itself, picks its queue and is its own payload.
//! Publishers build messages from a value ([`Task::message`]); the worker's registry
//! reads the value back from a delivered message ([`Task::from_message`]).
//!
//! The payload travels in the Celery-like body the runtime already understands:
//! `job_id` and `user_id` at the top (the runtime's bookkeeping reads them whatever the
//! task), every other field under `args`. Messages published before tasks were types
//! have exactly this shape, so they stay readable.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::message::{TaskBody, TaskMessage};
use super::topology::WorkQueue;

/// The body fields the runtime reads itself; the rest of a payload goes under `args`.
const TOP_LEVEL: [&str; 2] = ["job_id", "user_id"];

/// One kind of task.
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The registered name (the message's `task` header), e.g. `deployguard.scan_repository`.
    const NAME: &'static str;
    /// Where its messages go.
    const QUEUE: WorkQueue;

    /// A new message running this task, at the normal priority.
    fn message(&self) -> Result<TaskMessage, PayloadError> {
        Ok(TaskMessage::new(Self::NAME, Self::QUEUE, to_body(self)?))
    }

    /// The payload of a delivered message of this kind.
    fn from_message(message: &TaskMessage) -> Result<Self, PayloadError> {
        from_body(&message.body)
    }
}

/// A payload that is not a JSON object, or a body that is not this task's payload.
#[derive(Debug, thiserror::Error)]
#[error("task payload: {0}")]
pub struct PayloadError(String);

/// `payload` as a message body.
pub fn to_body<T: Serialize>(payload: &T) -> Result<TaskBody, PayloadError> {
    let value = serde_json::to_value(payload).map_err(|e| PayloadError(e.to_string()))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(PayloadError("a payload must be a JSON object".into()));
    };
    let mut take = |name: &str| fields.remove(name).filter(|v| !v.is_null());
    let job_id = take("job_id")
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| PayloadError(format!("job_id: {e}")))?;
    let user_id = take("user_id")
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| PayloadError(format!("user_id: {e}")))?;
    Ok(TaskBody {
        job_id,
        user_id,
        args: fields,
    })
}

/// The payload a body carries. The error names what does not fit, never a value.
pub fn from_body<T: DeserializeOwned>(body: &TaskBody) -> Result<T, PayloadError> {
    let mut fields = body.args.clone();
    if let Some(clash) = TOP_LEVEL.iter().find(|name| fields.contains_key(**name)) {
        return Err(PayloadError(format!("args must not carry {clash}")));
    }
    if let Some(job_id) = body.job_id {
        fields.insert("job_id".into(), job_id.to_string().into());
    }
    if let Some(user_id) = &body.user_id {
        fields.insert("user_id".into(), user_id.clone().into());
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| {
        // serde_json quotes offending values in some messages; keep only the kind.
        let text = e.to_string();
        let kind = text.split(" at line").next().unwrap_or(&text);
        PayloadError(
            kind.split(": ")
                .next()
                .unwrap_or("not this task's arguments")
                .to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use uuid::Uuid;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        job_id: Uuid,
        user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<f64>,
    }

    impl Task for Probe {
        const NAME: &'static str = "deployguard.test.probe";
        const QUEUE: WorkQueue = WorkQueue::Default;
    }

    #[test]
    fn job_and_user_travel_at_the_top_and_the_rest_under_args() {
        let probe = Probe {
            job_id: Uuid::now_v7(),
            user_id: "user-1".into(),
            seconds: Some(1.5),
        };
        let message = probe.message().unwrap();
        assert_eq!(message.task, "deployguard.test.probe");
        assert_eq!(message.queue, WorkQueue::Default);
        assert_eq!(message.body.job_id, Some(probe.job_id));
        assert_eq!(message.body.user_id.as_deref(), Some("user-1"));
        assert_eq!(message.body.args.get("seconds"), Some(&1.5.into()));
        assert_eq!(Probe::from_message(&message).unwrap(), probe);
    }

    #[test]
    fn a_body_that_is_not_the_payload_is_an_error_that_quotes_nothing() {
        let mut message = Probe {
            job_id: Uuid::now_v7(),
            user_id: "user-1".into(),
            seconds: None,
        }
        .message()
        .unwrap();
        message
            .body
            .args
            .insert("seconds".into(), "hunter2-secret".into());
        let err = Probe::from_message(&message).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        message.body.args.clear();
        message.body.job_id = None;
        assert!(Probe::from_message(&message).is_err(), "job_id is required");
        message.body.args.insert("user_id".into(), "other".into());
        assert!(Probe::from_message(&message).is_err());
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_refused() {
        assert!(to_body(&5).is_err());
    }
}
