//! The blocking client the CLI verbs use to talk to a running daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::ErrorBody;
use super::{API_ADDR_FILE, API_PREFIX, API_TOKEN_FILE};

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers at the address found (or none was found).
    #[error(
        "no ggen p2p daemon at {addr} ({why}); start one with `ggen p2p start --data-dir {dir}`"
    )]
    NoDaemon {
        /// The address tried, or where it was looked for.
        addr: String,
        /// What failed.
        why: String,
        /// The data directory the daemon should be started with.
        dir: String,
    },
    /// The daemon answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The daemon's one-line explanation.
        message: String,
    },
    /// Anything else (a broken connection mid-answer, an unexpected answer).
    #[error("{0}")]
    Other(String),
}

/// A connection to one daemon's API.
#[derive(Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// Finds the daemon of `data_dir` (its address file), or uses `api` when given, and
    /// checks that it answers `/healthz`. The token is read from `data_dir` when present.
    pub fn locate(data_dir: &Path, api: Option<&str>) -> Result<Client, ClientError> {
        let dir = data_dir.display().to_string();
        let addr = match api {
            Some(a) => a.to_string(),
            None => std::fs::read_to_string(data_dir.join(API_ADDR_FILE))
                .map(|s| s.trim().to_string())
                .map_err(|_| ClientError::NoDaemon {
                    addr: data_dir.join(API_ADDR_FILE).display().to_string(),
                    why: "no address file".into(),
                    dir: dir.clone(),
                })?,
        };
        let token = std::fs::read_to_string(data_dir.join(API_TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        let base = if addr.starts_with("http://") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        let c = Client { base, token, agent };
        match c.agent.get(format!("{}/healthz", c.base)).call() {
            Ok(r) if r.status().is_success() => Ok(c),
            Ok(r) => Err(ClientError::NoDaemon {
                addr,
                why: format!("health check answered {}", r.status()),
                dir,
            }),
            Err(e) => Err(ClientError::NoDaemon {
                addr,
                why: e.to_string(),
                dir,
            }),
        }
    }

    /// The daemon's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// `GET` a JSON answer.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in query {
            req = req.query(k, v);
        }
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        answer(req.call())
    }

    /// `POST` a JSON body, get a JSON answer.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let mut req = self.agent.post(self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        answer(req.send_json(body))
    }

    /// `POST` raw bytes with query parameters, get a JSON answer.
    pub fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &[u8],
    ) -> Result<T, ClientError> {
        let mut req = self.agent.post(self.url(path));
        for (k, v) in query {
            req = req.query(k, v);
        }
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        answer(req.content_type("application/gzip").send(body))
    }

    /// `GET` raw bytes, calling `progress(received, total)` as they arrive; at most `max`.
    pub fn get_bytes(
        &self,
        path: &str,
        max: u64,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, ClientError> {
        use std::io::Read;
        let mut req = self.agent.get(self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        let mut resp = req.call().map_err(|e| ClientError::Other(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(api_error(resp));
        }
        let total = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if total.is_some_and(|t| t > max) {
            return Err(ClientError::Other(format!(
                "the content is larger than {max} bytes"
            )));
        }
        let mut reader = resp.body_mut().with_config().limit(max).reader();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| ClientError::Other(format!("reading the content: {e}")))?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
            progress(out.len() as u64, total);
        }
        Ok(out)
    }
}

fn answer<T: DeserializeOwned>(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<T, ClientError> {
    let mut resp = r.map_err(|e| ClientError::Other(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(api_error(resp));
    }
    resp.body_mut()
        .read_json::<T>()
        .map_err(|e| ClientError::Other(format!("unexpected answer from the daemon: {e}")))
}

fn api_error(mut resp: ureq::http::Response<ureq::Body>) -> ClientError {
    let status = resp.status().as_u16();
    let message = resp
        .body_mut()
        .read_json::<ErrorBody>()
        .map(|b| b.error)
        .unwrap_or_else(|_| "the daemon refused the call".into());
    ClientError::Api { status, message }
}

/// The default data directory (the user's data dir, `ggen-p2p` under it).
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("ggen-p2p"))
}
