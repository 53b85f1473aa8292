use deployguard_testkit::TcpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(sock: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    sock.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    sock.read_exact(&mut buf).await?;
    Ok(buf.to_vec())
}

#[tokio::test]
async fn cut_drops_connections_and_refuses_new_ones_until_restored() {
    let proxy = TcpProxy::start(echo_server().await).await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut open).await.unwrap(), b"ping");

    proxy.cut().await;
    assert!(
        round_trip(&mut open).await.is_err(),
        "open connection survives a cut"
    );
    assert!(
        TcpStream::connect(proxy.addr()).await.is_err(),
        "new connection accepted while cut"
    );

    proxy.restore().await;
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut again).await.unwrap(), b"ping");
}
