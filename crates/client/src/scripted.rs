//! A scripted HTTP server on 127.0.0.1 for the client's unit tests: one request per connection,
//! answered with whatever the script returns for the n-th request and its request line.

use std::net::SocketAddr;

/// Serves `reply(n, request_line)` (a whole HTTP/1.1 response) to the n-th connection.
pub(crate) async fn serve(
    reply: impl Fn(usize, &str) -> String + Send + Sync + 'static,
) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let line = head.lines().next().unwrap_or("");
            let _ = conn.write_all(reply(n, line).as_bytes()).await;
        }
    });
    addr
}

/// A `200 OK` JSON response whose `Link` header always announces a next page at `next`.
pub(crate) fn endless_page(next: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlink: <{next}>; rel=\"next\"\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
