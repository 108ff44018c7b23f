//! The control socket: a unix stream socket in the run directory, one JSON request line in, one
//! JSON response line out, then the server closes the connection.
//!
//! ```text
//! {"cmd":"sessions","proto":"udp","addr":"192.168.1.2"}  ->  {"ok":true,"sessions":[...]}
//! {"cmd":"stats"}                                        ->  {"ok":true,"stats":{...}}
//! {"cmd":"flush","addr":"192.168.1.2"}                   ->  {"ok":true,"flushed":3}
//! anything else                                          ->  {"ok":false,"error":"..."}
//! ```
//!
//! The socket is `<run-dir>/<netns tag><inside>-<outside>.sock` (mode 0600), so instances in other
//! network namespaces or on other interface pairs coexist; it is removed on exit. It is served
//! by a task on the tokio control loop: a slow or stuck client never touches the packet path.

use super::{Observer, SessionFilter, SessionRow, StatsReport};
use crate::control::host::netns_tag;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Sessions {
        #[serde(flatten)]
        filter: SessionFilter,
    },
    Stats,
    Flush {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<Ipv4Addr>,
    },
}

/// A response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flushed: Option<u64>,
}

impl Response {
    fn empty() -> Response {
        Response {
            ok: true,
            error: None,
            sessions: None,
            stats: None,
            flushed: None,
        }
    }
    fn error(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(e.into()),
            ..Response::empty()
        }
    }
}

/// The socket path of the instance on `inside`/`outside` in this network namespace.
pub fn socket_path(run_dir: &Path, inside: &str, outside: &str) -> PathBuf {
    run_dir.join(format!("{}{inside}-{outside}.sock", netns_tag()))
}

/// Answers one request.
pub fn answer(obs: &Observer, line: &str) -> Response {
    let req: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    match req {
        Request::Sessions { filter } => {
            if let Some(p) = &filter.proto
                && !["tcp", "udp", "icmp"].contains(&p.as_str())
            {
                return Response::error(format!("unknown protocol {p:?} (tcp, udp or icmp)"));
            }
            Response {
                sessions: Some(obs.sessions(&filter)),
                ..Response::empty()
            }
        }
        Request::Stats => Response {
            stats: Some(obs.stats()),
            ..Response::empty()
        },
        Request::Flush { addr } => {
            let n = obs.flush(addr);
            tracing::info!(
                flushed = n,
                addr = %addr.map_or("all".to_string(), |a| a.to_string()),
                "sessions flushed on request"
            );
            Response {
                flushed: Some(n as u64),
                ..Response::empty()
            }
        }
    }
}

/// The control socket file; removed on drop.
pub struct SocketFile(PathBuf);

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the control socket at `path` (mode 0600), replacing a stale file: the interface locks,
/// taken before, guarantee that no other live instance owns it.
pub fn bind(path: PathBuf) -> Result<(tokio::net::UnixListener, SocketFile)> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    let file = SocketFile(path);
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", file.path().display()))?;
    Ok((listener, file))
}

/// Accepts and answers clients until the task is dropped; each client gets 5 s.
pub async fn serve(listener: tokio::net::UnixListener, obs: Observer) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let obs = obs.clone();
                tokio::spawn(async move {
                    let r =
                        tokio::time::timeout(Duration::from_secs(5), serve_one(stream, obs)).await;
                    if let Ok(Err(e)) = r {
                        tracing::debug!("control socket client: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_one(stream: tokio::net::UnixStream, obs: Observer) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r).take(64 * 1024);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let resp = answer(&obs, &line);
    let mut text = serde_json::to_string(&resp).unwrap_or_else(|e| {
        serde_json::to_string(&Response::error(format!("cannot encode: {e}"))).unwrap_or_default()
    });
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    w.shutdown().await
}

/// Finds the socket of the instance a client subcommand talks to: the one on `inside`/`outside`
/// when both are given, else the only socket in `run_dir` of this network namespace that
/// matches the interface given (if any).
pub fn find_socket(run_dir: &Path, inside: Option<&str>, outside: Option<&str>) -> Result<PathBuf> {
    if let (Some(i), Some(o)) = (inside, outside) {
        let p = socket_path(run_dir, i, o);
        if !p.exists() {
            bail!(
                "no rnat running on --inside {i} --outside {o} in this network namespace ({} does \
                 not exist)",
                p.display()
            );
        }
        return Ok(p);
    }
    let tag = netns_tag();
    let entries = std::fs::read_dir(run_dir).with_context(|| {
        format!(
            "cannot read {} (is rnat running? pass --run-dir if it uses another directory)",
            run_dir.display()
        )
    })?;
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pair) = name
            .strip_prefix(&tag)
            .and_then(|n| n.strip_suffix(".sock"))
        else {
            continue;
        };
        // Interface names may contain '-': match the given one(s) at either end.
        if inside.is_some_and(|i| !pair.starts_with(&format!("{i}-")))
            || outside.is_some_and(|o| !pair.ends_with(&format!("-{o}")))
        {
            continue;
        }
        found.push(e.path());
    }
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no running rnat found in this network namespace (no control socket in {})",
            run_dir.display()
        ),
        _ => {
            let names: Vec<String> = found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            bail!(
                "several rnat instances are running ({}); choose one with --inside IF --outside IF",
                names.join(", ")
            )
        }
    }
}

/// Sends one request and returns the (successful) response.
pub fn request(path: &Path, req: &Request) -> Result<Response> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut resp = String::new();
    BufReader::new(s)
        .read_line(&mut resp)
        .with_context(|| format!("no answer from {}", path.display()))?;
    let r: Response = serde_json::from_str(&resp)
        .with_context(|| format!("bad answer from {}: {resp:?}", path.display()))?;
    if !r.ok {
        bail!("rnat: {}", r.error.unwrap_or_default());
    }
    Ok(r)
}
