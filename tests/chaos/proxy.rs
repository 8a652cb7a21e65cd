//! A TCP proxy between workers and the server, to cut the network in tests.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Cut open connections and close new ones at once (a reset network).
    Refuse,
    /// Accept and never forward; open connections stop moving (a partition:
    /// packets vanish). On heal, the stalled connections are closed, as the
    /// peers' TCP stacks would eventually do.
    BlackHole,
}

/// A proxy listening on 127.0.0.1, forwarding to `upstream` unless told otherwise.
pub struct Proxy {
    pub url: String,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (mode, rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(handle(conn, upstream, rx.clone()));
            }
        });
        Self { url, mode, task }
    }

    /// Switch mode (open connections follow at once).
    pub fn set(&self, mode: Mode) {
        self.mode.send_if_modified(|m| {
            let changed = *m != mode;
            *m = mode;
            changed
        });
    }
}

async fn handle(mut conn: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let now = *mode.borrow_and_update();
    match now {
        Mode::Refuse => {}
        Mode::BlackHole => {
            // Hold it without reading until the network heals, then close.
            let _ = mode.changed().await;
        }
        Mode::Pass => {
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => {}
                _ = mode.changed() => {
                    if *mode.borrow_and_update() == Mode::BlackHole {
                        // Stop forwarding, keep both ends open until healed.
                        let _ = mode.changed().await;
                    }
                }
            }
        }
    }
}
