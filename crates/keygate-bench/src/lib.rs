//! What Keygate's load tools share (docs/PERFORMANCE.md, docs/RELIABILITY.md): a minimal
//! HTTP/1.1 keep-alive client, the server's command line, cookie reading, percentiles and fresh
//! PostgreSQL schemas. The binaries: `keygate-bench` (throughput as ratios to `/healthz`) and
//! `keygate-torture` (`crash`: kill -9 under load and check nothing acknowledged is lost;
//! `soak`: hours of mixed load sampled every 10 s).

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: &str) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), String> {
        let headers: Vec<(&str, String)> = bearer
            .map(|token| ("authorization", format!("Bearer {token}")))
            .into_iter()
            .collect();
        self.call_with(method, path, &headers, body.map_or(Body::Empty, Body::Json))
            .await
            .map(|(status, _, bytes)| (status, bytes))
    }

    /// A request with `headers`; the status, the `Set-Cookie` values and the body.
    pub async fn call_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<(u16, Vec<String>, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench");
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let body = match body {
            Body::Json(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            Body::Form(form) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            Body::Empty => Full::new(Bytes::new()),
        };
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req.body(body).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, cookies, bytes))
    }
}

/// A request body.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    Form(String),
}

/// A command that runs the Keygate binary at `binary` with no `KEYGATE_*` variable from this
/// process's environment (`keygate_testkit::keygate_command`): a harness's own settings
/// (`KEYGATE_TORTURE_BIN_DIR`, `KEYGATE_SOAK_ARGS`, …) or the caller's shell must not reach it.
/// The caller sets what the run needs with `.env(…)`.
pub fn keygate_command(binary: &std::path::Path) -> tokio::process::Command {
    tokio::process::Command::from(keygate_testkit::keygate_command(binary))
}

/// The value of cookie `name` among `Set-Cookie` header values.
pub fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies
        .iter()
        .filter_map(|v| cookie::Cookie::parse(v.as_str()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The `p` quantile of sorted microsecond latencies, in milliseconds.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

pub use keygate_testkit::{drop_schema, fresh_schema};
