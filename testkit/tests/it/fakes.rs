use deployguard_testkit::{CredentialRequest, FakeCredentialService, FakeGitHub};
use secrecy::SecretString;

#[tokio::test]
async fn credential_service_answers_only_the_owner() {
    let fake = FakeCredentialService::start().await;
    fake.add("cred-1", "alice", "alice-bot", "tok-alice");
    let client = reqwest::Client::new();
    let get = |user: Option<&'static str>| {
        let mut req = client.get(fake.url().join("api/credentials/cred-1").unwrap());
        if let Some(user) = user {
            req = req.header("X-User-ID", user);
        }
        req.send()
    };
    let own = get(Some("alice")).await.unwrap();
    assert_eq!(own.status(), 200);
    let body: serde_json::Value = own.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"username": "alice-bot", "token": "tok-alice"})
    );
    assert_eq!(get(Some("mallory")).await.unwrap().status(), 404);
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(
        fake.requests()[1],
        CredentialRequest {
            credential_id: "cred-1".into(),
            user_id: Some("mallory".into())
        }
    );
}

#[tokio::test]
async fn github_fake_speaks_octocrab() {
    let fake = FakeGitHub::start("ghp-test-token", "octo").await;
    fake.set_clone_base("http://127.0.0.1:1");
    let gh = deployguard_engine::github::client(&fake.url(), &SecretString::from("ghp-test-token"))
        .unwrap();

    let me = gh.current().user().await.unwrap();
    assert_eq!(me.login, "octo");

    let created: octocrab::models::Repository = gh
        .post(
            "/orgs/acme/repos",
            Some(&serde_json::json!({"name": "cleaned", "private": true})),
        )
        .await
        .unwrap();
    assert_eq!(created.name, "cleaned");
    assert_eq!(
        created.clone_url.unwrap().as_str(),
        "http://127.0.0.1:1/cleaned.git"
    );
    let fetched = gh.repos("acme", "cleaned").get().await.unwrap();
    assert_eq!(fetched.full_name.as_deref(), Some("acme/cleaned"));
    assert!(gh.repos("acme", "missing").get().await.is_err());

    let duplicate: Result<octocrab::models::Repository, _> = gh
        .post(
            "/orgs/acme/repos",
            Some(&serde_json::json!({"name": "cleaned"})),
        )
        .await;
    assert!(
        duplicate.is_err(),
        "creating an existing repository must fail"
    );

    let intruder =
        deployguard_engine::github::client(&fake.url(), &SecretString::from("wrong")).unwrap();
    assert!(intruder.current().user().await.is_err());
    assert_eq!(
        fake.requests(),
        vec![
            "GET /user",
            "POST /orgs/acme/repos",
            "GET /repos/acme/cleaned",
            "GET /repos/acme/missing",
            "POST /orgs/acme/repos"
        ]
    );
}
