//! The worker-side job transitions against the real schema.

use deployguard::jobs::JobStatus;
use deployguard::jobs::work;
use deployguard_testkit::{JobRow, TestEnv};
use uuid::Uuid;

async fn pending_job(env: &TestEnv, task_id: Option<Uuid>) -> Uuid {
    JobRow::new().task_id(task_id).insert(env).await
}

#[tokio::test]
async fn only_the_message_a_job_was_queued_with_begins_its_work() {
    let env = TestEnv::new().await;
    let scan = (JobStatus::Pending, JobStatus::Scanning);
    let (current, superseded) = (Uuid::now_v7(), Uuid::now_v7());
    let job = pending_job(&env, Some(current)).await;

    let skipped = work::begin(&env.db, job, scan, "cloning", superseded)
        .await
        .unwrap();
    assert!(
        skipped.is_none(),
        "a superseded copy must not start the job"
    );
    assert_eq!(env.job_status(job).await, "pending");

    let started = work::begin(&env.db, job, scan, "cloning", current)
        .await
        .unwrap();
    assert_eq!(started.map(|j| j.status), Some(JobStatus::Scanning));
    // Its redelivery resumes it; the superseded copy still does not.
    assert!(
        work::begin(&env.db, job, scan, "cloning", current)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        work::begin(&env.db, job, scan, "cloning", superseded)
            .await
            .unwrap()
            .is_none()
    );

    // A job that names no message takes any.
    let open = pending_job(&env, None).await;
    assert!(
        work::begin(&env.db, open, scan, "cloning", Uuid::now_v7())
            .await
            .unwrap()
            .is_some()
    );
}
