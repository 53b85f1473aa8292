use std::collections::HashMap;
use std::net::SocketAddr;

use deployguard_api::AppState;
use deployguard_testkit::TestEnv;
use tokio::sync::oneshot;

/// The API on port 0 of this machine, on the test's own services.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    /// Spawns the API with `vars` as its environment.
    pub async fn spawn(vars: &HashMap<String, String>) -> Self {
        let state = AppState::new(TestEnv::config_from(vars)).expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(deployguard_api::serve(state, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            served,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.served).await.unwrap().unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.served.abort();
    }
}
