//! A TCP forwarder the tests cut and restore, to take a database or Redis away mid-run.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A TCP forwarder to `upstream` that can be cut (every connection closed, nothing accepted)
/// and restored on the same port.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    upstream: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = Proxy {
            addr,
            upstream,
            tasks: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every forwarded connection.
    pub(crate) fn cut(&mut self) {
        // Dropping the set aborts the accept loop, which drops (and so closes) every connection.
        self.tasks = None;
    }

    pub(crate) async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the proxy port");
        self.serve(listener);
    }
}
