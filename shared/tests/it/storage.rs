use deployguard::storage::{Storage, StorageError};
use deployguard_testkit::{TcpProxy, TestEnv};

#[tokio::test]
async fn check_tells_a_missing_bucket_from_an_unreachable_store() {
    let env = TestEnv::new().await;
    let mut config = env.config().storage;
    assert!(Storage::new(&config).check().await.is_ok());

    config.bucket = format!("{}-absent", env.bucket);
    let absent = Storage::new(&config);
    assert!(matches!(
        absent.check().await,
        Err(StorageError::NoSuchBucket(_))
    ));

    let proxy = TcpProxy::start(env.services.s3_addr()).await;
    proxy.cut().await;
    let mut vars = env.vars();
    vars.insert("S3_ENDPOINT_URL".into(), env.s3_url(Some(proxy.addr())));
    let unreachable = Storage::new(&TestEnv::config_from(&vars).storage);
    let err = unreachable.check().await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    let shown = err.to_string();
    assert!(!shown.contains(&env.services.s3_secret_key), "{shown}");
}

#[tokio::test]
async fn ensure_bucket_creates_once_and_is_idempotent() {
    let env = TestEnv::new().await;
    let mut config = env.config().storage;
    config.bucket = format!("{}-new", env.bucket);
    let storage = Storage::new(&config);
    storage.ensure_bucket().await.unwrap();
    storage.ensure_bucket().await.unwrap();
    storage.check().await.unwrap();
    storage
        .client()
        .delete_bucket()
        .bucket(storage.bucket())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_credentials_are_refused_by_the_store() {
    let env = TestEnv::new().await;
    let mut vars = env.vars();
    vars.insert("S3_SECRET_KEY".into(), "not-the-secret".into());
    let storage = Storage::new(&TestEnv::config_from(&vars).storage);
    assert!(matches!(
        storage.check().await,
        Err(StorageError::Unavailable(_))
    ));
}
