//! The service's tasks as types ([`Task`]): what the API, beat and the periodic tasks
//! publish and what the worker's registry dispatches on. The names are the wire's
//! (`task` header), so messages published by earlier releases still run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::jobs::JobStatus;
use crate::queue::{PayloadError, Task, TaskMessage, WorkQueue};

/// The job a job task works on, and whose it is: the worker checks that the user owns
/// the job before it borrows their credentials. Other fields are ignored, so a message
/// from a newer release with an argument more still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: Uuid,
    pub user_id: String,
}

impl JobRef {
    pub fn new(job_id: Uuid, user_id: impl Into<String>) -> Self {
        Self {
            job_id,
            user_id: user_id.into(),
        }
    }
}

/// Clone a job's repository, scan every reachable blob, store the bundle and the
/// reports, and record what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScanRepository(pub JobRef);

impl Task for ScanRepository {
    const NAME: &'static str = "deployguard.scan_repository";
    const QUEUE: WorkQueue = WorkQueue::Scan;
}

/// Rewrite a job's history without its selected secrets and store the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CleanRepository(pub JobRef);

impl Task for CleanRepository {
    const NAME: &'static str = "deployguard.clean_repository";
    const QUEUE: WorkQueue = WorkQueue::Clean;
}

/// Push a job's cleaned repository to its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PushRepository(pub JobRef);

impl Task for PushRepository {
    const NAME: &'static str = "deployguard.push_repository";
    const QUEUE: WorkQueue = WorkQueue::Push;
}

/// The three job tasks, for code that picks one by a job's status or a task's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobTask {
    Scan,
    Clean,
    Push,
}

impl JobTask {
    pub const ALL: [JobTask; 3] = [Self::Scan, Self::Clean, Self::Push];

    pub fn name(self) -> &'static str {
        match self {
            Self::Scan => ScanRepository::NAME,
            Self::Clean => CleanRepository::NAME,
            Self::Push => PushRepository::NAME,
        }
    }

    pub fn queue(self) -> WorkQueue {
        match self {
            Self::Scan => ScanRepository::QUEUE,
            Self::Clean => CleanRepository::QUEUE,
            Self::Push => PushRepository::QUEUE,
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The task that moves a job on from `status`, or runs it while it is there.
    pub fn for_status(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Pending | JobStatus::Scanning => Some(Self::Scan),
            JobStatus::Cleaning => Some(Self::Clean),
            JobStatus::Pushing => Some(Self::Push),
            _ => None,
        }
    }

    /// The status a job is in while this task is due (queued, not yet begun).
    pub fn due_status(self) -> JobStatus {
        match self {
            Self::Scan => JobStatus::Pending,
            Self::Clean => JobStatus::Cleaning,
            Self::Push => JobStatus::Pushing,
        }
    }

    /// The message running this task for `job`, at the job's priority (0 … 9).
    pub fn message(self, job: JobRef, job_priority: i16) -> Result<TaskMessage, PayloadError> {
        let message = match self {
            Self::Scan => ScanRepository(job).message(),
            Self::Clean => CleanRepository(job).message(),
            Self::Push => PushRepository(job).message(),
        }?;
        Ok(message.with_job_priority(job_priority))
    }
}

/// When a periodic task was due (beat's scheduled time); absent when it was run by hand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// A time as beat has always written it (`2026-12-01T03:30:00+00:00`, what
/// `to_rfc3339` gives), so messages stay what operators and their tools know.
mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.serialize_str(&time.to_rfc3339()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<DateTime<Utc>>::deserialize(deserializer)
    }
}

/// Expire every job past its time and delete its stored objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CleanupExpiredJobs(pub Scheduled);

impl Task for CleanupExpiredJobs {
    const NAME: &'static str = "deployguard.cleanup_expired_jobs";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// Delete the stored objects no live job owns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StorageCleanup(pub Scheduled);

impl Task for StorageCleanup {
    const NAME: &'static str = "deployguard.storage_cleanup";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// Queue again the task of jobs whose task will not run by itself, or fail them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequeueStuckJobs {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// A job queued this long with no task activity is stuck (default 3600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_secs: Option<f64>,
    /// A working job silent this long is stuck (default: the hard time limit plus
    /// three leases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_secs: Option<f64>,
}

impl Task for RequeueStuckJobs {
    const NAME: &'static str = "deployguard.requeue_stuck_jobs";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// The tasks beat publishes on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Periodic {
    CleanupExpiredJobs,
    StorageCleanup,
    RequeueStuckJobs,
}

impl Periodic {
    pub const ALL: [Periodic; 3] = [
        Self::CleanupExpiredJobs,
        Self::StorageCleanup,
        Self::RequeueStuckJobs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::CleanupExpiredJobs => CleanupExpiredJobs::NAME,
            Self::StorageCleanup => StorageCleanup::NAME,
            Self::RequeueStuckJobs => RequeueStuckJobs::NAME,
        }
    }

    /// The message for the time `slot`.
    pub fn message(self, slot: DateTime<Utc>) -> Result<TaskMessage, PayloadError> {
        let scheduled = Scheduled {
            scheduled_for: Some(slot),
        };
        match self {
            Self::CleanupExpiredJobs => CleanupExpiredJobs(scheduled).message(),
            Self::StorageCleanup => StorageCleanup(scheduled).message(),
            Self::RequeueStuckJobs => RequeueStuckJobs {
                scheduled_for: scheduled.scheduled_for,
                ..RequeueStuckJobs::default()
            }
            .message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_tasks_keep_the_wire_format_of_earlier_releases() {
        let job = JobRef::new(Uuid::now_v7(), "user-1");
        let message = JobTask::Clean.message(job.clone(), 9).unwrap();
        assert_eq!(message.task, "deployguard.clean_repository");
        assert_eq!(message.queue, WorkQueue::Clean);
        assert_eq!(
            serde_json::to_value(&message.body).unwrap(),
            serde_json::json!({"job_id": job.job_id, "user_id": "user-1"})
        );
        assert_eq!(CleanRepository::from_message(&message).unwrap().0, job);
        assert!(
            ScanRepository::from_message(&TaskMessage::new(
                ScanRepository::NAME,
                WorkQueue::Scan,
                Default::default()
            ))
            .is_err(),
            "a job task without its job is refused"
        );
    }

    #[test]
    fn periodic_tasks_carry_their_time_under_args() {
        let slot = DateTime::parse_from_rfc3339("2026-12-01T03:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let message = Periodic::StorageCleanup.message(slot).unwrap();
        assert_eq!(message.task, "deployguard.storage_cleanup");
        assert_eq!(
            serde_json::to_value(&message.body).unwrap(),
            serde_json::json!({"args": {"scheduled_for": "2026-12-01T03:30:00+00:00"}})
        );
        let read = StorageCleanup::from_message(&message).unwrap();
        assert_eq!(read.0.scheduled_for, Some(slot));
        // Run by hand, with its own arguments.
        let mut by_hand = TaskMessage::new(
            RequeueStuckJobs::NAME,
            WorkQueue::Default,
            Default::default(),
        );
        by_hand.body.args.insert("queued_secs".into(), 5.0.into());
        let read = RequeueStuckJobs::from_message(&by_hand).unwrap();
        assert_eq!((read.queued_secs, read.scheduled_for), (Some(5.0), None));
    }

    #[test]
    fn every_job_status_that_needs_a_task_names_one() {
        for task in JobTask::ALL {
            assert_eq!(JobTask::for_status(task.due_status()), Some(task));
            assert_eq!(JobTask::named(task.name()), Some(task));
        }
        assert_eq!(JobTask::for_status(JobStatus::AwaitingSelection), None);
    }
}
