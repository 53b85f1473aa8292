use std::time::Duration;

use deployguard::queue::Broker;
use deployguard_testkit::{TcpProxy, TestEnv};

async fn eventually_connected(broker: &Broker, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if broker.connection().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connection_survives_an_outage_without_a_restart() {
    let env = TestEnv::new().await;
    let proxy = TcpProxy::start(env.services.amqp_addr()).await;
    let mut vars = env.vars();
    vars.insert("AMQP_URL".into(), env.amqp_url(Some(proxy.addr())));
    let broker = Broker::new(&TestEnv::config_from(&vars).broker, "broker-test");

    let conn = broker.connection().await.unwrap();
    conn.create_channel().await.unwrap();

    proxy.cut().await;
    let started = tokio::time::Instant::now();
    let mut unavailable = false;
    while started.elapsed() < Duration::from_secs(10) {
        if broker.connection().await.is_err() {
            unavailable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        unavailable,
        "broker still reported connected after the outage"
    );

    proxy.restore().await;
    assert!(
        eventually_connected(&broker, Duration::from_secs(20)).await,
        "no reconnection after the broker came back"
    );
    broker
        .connection()
        .await
        .unwrap()
        .create_channel()
        .await
        .unwrap();
    broker.close().await;
}

#[tokio::test]
async fn a_broker_that_never_answered_is_reported_quickly() {
    let env = TestEnv::new().await;
    let proxy = TcpProxy::start(env.services.amqp_addr()).await;
    proxy.cut().await;
    let mut vars = env.vars();
    vars.insert("AMQP_URL".into(), env.amqp_url(Some(proxy.addr())));
    let broker = Broker::new(&TestEnv::config_from(&vars).broker, "broker-test");
    let started = std::time::Instant::now();
    let err = broker.connection().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(!err.to_string().contains("guest:guest"));
}
