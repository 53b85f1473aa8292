use deployguard::storage::{ObjectKey, Storage, StorageError};
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

#[tokio::test]
async fn a_file_larger_than_a_part_goes_up_in_parts_and_comes_back_the_same() {
    use deployguard::storage::MIN_PART_SIZE;
    let env = TestEnv::new().await;
    let storage = env.storage().with_part_size(MIN_PART_SIZE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    // Two whole parts and a short last one, with content that shows a part out of place.
    let length = 2 * MIN_PART_SIZE as usize + 12_345;
    let data: Vec<u8> = (0..length).map(|i| (i / 4099 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let key = ObjectKey::SourceBundle(uuid::Uuid::now_v7());

    assert_eq!(storage.put_file(key, &path).await.unwrap(), length as u64);

    let back = dir.path().join("back.bin");
    assert_eq!(storage.get_file(key, &back).await.unwrap(), length as u64);
    assert!(std::fs::read(&back).unwrap() == data, "the object differs");

    // A store that cannot be reached: a plain error, and nothing stored.
    let proxy = TcpProxy::start(env.services.s3_addr()).await;
    proxy.cut().await;
    let mut vars = env.vars();
    vars.insert("S3_ENDPOINT_URL".into(), env.s3_url(Some(proxy.addr())));
    let unreachable =
        Storage::new(&TestEnv::config_from(&vars).storage).with_part_size(MIN_PART_SIZE);
    let other = ObjectKey::SourceBundle(uuid::Uuid::now_v7());
    let err = unreachable.put_file(other, &path).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    assert!(!storage.exists(other).await.unwrap());
}
